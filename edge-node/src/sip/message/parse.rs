//! Framing: start line, header lines, body (RFC 3261 §7, §7.5, §18.3, §25).

use super::headers::{is_token, parse_u32, split_once_byte};
use super::{Headers, Method, SipMessage, SipRequest, SipResponse, Uri};

/// Why bytes are not a SIP message. The transport answers 400 when it can still find a Via
/// to answer to, or drops the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no empty line ends the header section")]
    NoHeaderEnd,
    #[error("the header section is not UTF-8")]
    NotUtf8,
    #[error("malformed start line: {0}")]
    StartLine(&'static str),
    #[error("malformed Request-URI")]
    RequestUri,
    #[error("malformed status code")]
    StatusCode,
    #[error("malformed header line {0}")]
    HeaderLine(usize),
}

/// Messages larger than this are not SIP we accept (UDP max is 65 535; TCP framing reads
/// Content-Length first).
const MAX_MESSAGE: usize = 256 * 1024;

/// Parses one message. Over UDP a datagram may carry bytes after Content-Length: they are
/// ignored (RFC 3261 §18.3). A Content-Length larger than what arrived is kept as sent so
/// that [`super::validate`] rejects it.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ParseError::StartLine("message too large"));
    }
    // RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives)
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::NoHeaderEnd)?;
    let bytes = &bytes[start..];
    let end = header_end(bytes).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| ParseError::NotUtf8)?;
    let rest = &bytes[end + 4..];

    let mut lines = CrlfLines::new(head);
    let start_line = lines.next().ok_or(ParseError::StartLine("empty"))?;
    let headers = parse_headers(lines)?;

    // Body: cut at Content-Length when it parses and the datagram has more; otherwise all.
    let declared = headers.get("Content-Length").and_then(parse_u32);
    let body = match declared {
        Some(n) if (n as usize) < rest.len() => rest[..n as usize].to_vec(),
        _ => rest.to_vec(),
    };

    if let Some(status_rest) = start_line.strip_prefix("SIP/") {
        let (version, status, reason) = parse_status_line(status_rest)?;
        Ok(SipMessage::Response(SipResponse {
            version,
            status,
            reason,
            headers,
            body,
        }))
    } else {
        let (method, uri, version) = parse_request_line(start_line)?;
        Ok(SipMessage::Request(SipRequest {
            method,
            uri,
            version,
            headers,
            body,
        }))
    }
}

/// Where the first `\r\n\r\n` starts. When the fourth byte of a window is neither CR nor LF
/// no match can start in it, so most steps skip four bytes (`windows(4).position` compared
/// every window: ~5% of a registration's instructions with the line split below).
fn header_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&b) = bytes.get(i + 3) {
        match b {
            b'\n' if bytes[i..i + 4] == *b"\r\n\r\n" => return Some(i),
            b'\r' | b'\n' => i += 1,
            _ => i += 4,
        }
    }
    None
}

/// `s.split("\r\n")` without the generic substring searcher: lines end at a CR followed by
/// LF (a lone CR stays in its line, as with `split`).
struct CrlfLines<'a> {
    rest: &'a str,
    done: bool,
}

impl<'a> CrlfLines<'a> {
    fn new(s: &'a str) -> Self {
        Self { rest: s, done: false }
    }
}

impl<'a> Iterator for CrlfLines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let s = self.rest;
        let bytes = s.as_bytes();
        let mut from = 0;
        while let Some(off) = bytes.get(from..).and_then(|b| b.iter().position(|&c| c == b'\r')) {
            let at = from + off;
            if bytes.get(at + 1) == Some(&b'\n') {
                self.rest = s.get(at + 2..).unwrap_or_default();
                return s.get(..at);
            }
            from = at + 1;
        }
        self.done = true;
        Some(s)
    }
}

fn parse_version(v: &str) -> Option<String> {
    let rest = v.strip_prefix("SIP/")?;
    let (major, minor) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then(|| v.to_string())
}

/// `Method SP Request-URI SP SIP-Version`, exactly one SP each (RFC 3261 §7.1).
fn parse_request_line(line: &str) -> Result<(Method, Uri, String), ParseError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::StartLine("not Method SP Request-URI SP SIP-Version"));
    };
    if !is_token(method) {
        return Err(ParseError::StartLine("method is not a token"));
    }
    let version = parse_version(version).ok_or(ParseError::StartLine("bad SIP-Version"))?;
    let uri = Uri::parse(uri).ok_or(ParseError::RequestUri)?;
    Ok((Method::from_token(method), uri, version))
}

/// After `SIP/`: `x.y SP 3DIGIT SP Reason-Phrase` (an empty phrase, with or without the
/// second SP, is accepted).
fn parse_status_line(rest: &str) -> Result<(String, u16, String), ParseError> {
    let line = format!("SIP/{rest}");
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let version = parse_version(version).ok_or(ParseError::StartLine("bad SIP-Version"))?;
    let code = parts.next().ok_or(ParseError::StatusCode)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::StatusCode);
    }
    let status: u16 = code.parse().map_err(|_| ParseError::StatusCode)?;
    if !(100..=699).contains(&status) {
        return Err(ParseError::StatusCode);
    }
    let reason = parts.next().unwrap_or_default().to_string();
    Ok((version, status, reason))
}

/// The header lines of a *request* that [`parse`] refused, read as far as they can be, so
/// that the transport can still answer 400 (RFC 4475 §3.1.2: malformed start lines, LWS in
/// the Request-URI, a header section without its closing empty line in a datagram).
/// `None` for responses, ACKs (never answered), non-UTF-8 header sections and when no Via
/// line can be found. Lines that are not `name: value` are skipped.
pub fn salvage_request_headers(bytes: &[u8]) -> Option<Headers> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let bytes = &bytes[start..];
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let start_line = lines.next()?;
    let method = start_line.split([' ', '\t']).next().unwrap_or_default();
    if start_line.starts_with("SIP/") || method == "ACK" || !is_token(method) {
        return None;
    }
    let mut headers = Headers::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.lines_mut().last_mut() {
                last.value.push(' ');
                last.value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim_end_matches([' ', '\t']);
            if is_token(name) {
                headers.push(name, value.trim());
            }
        }
    }
    (headers.count("Via") > 0).then_some(headers)
}

/// Header lines; continuation lines (leading SP/HT) are folded into the previous one.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut headers = Headers::with_capacity(16);
    let mut current: Option<(String, String)> = None;
    for (i, line) in lines.enumerate() {
        if line.starts_with([' ', '\t']) {
            let (_, value) = current.as_mut().ok_or(ParseError::HeaderLine(i + 1))?;
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(line.trim());
            continue;
        }
        if let Some((name, value)) = current.take() {
            headers.push(name, value);
        }
        let (name, value) = split_once_byte(line, b':').ok_or(ParseError::HeaderLine(i + 1))?;
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(ParseError::HeaderLine(i + 1));
        }
        current = Some((name.to_string(), value.trim().to_string()));
    }
    if let Some((name, value)) = current {
        headers.push(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// The fast paths give what the std versions they replace give.
    #[test]
    fn header_end_and_lines_match_std() {
        let cases: [&[u8]; 12] = [
            b"",
            b"\r\n\r\n",
            b"a\r\n\r\n",
            b"ab\r\n\r\nbody",
            b"abc\r\r\n\r\n",
            b"abcd\n\r\n\r\n\r\n",
            b"x\r\ny\r\n\r",
            b"x\ry\r\nz\r\n\r\n",
            b"REGISTER sip:a SIP/2.0\r\nVia: x\r\n\r\n",
            b"\r\n\r",
            b"a\r\nb\r\n",
            b"\r\r\r\n\n\r\n\r\n",
        ];
        for c in cases {
            let std_end = c.windows(4).position(|w| w == b"\r\n\r\n");
            assert_eq!(header_end(c), std_end, "{c:?}");
            let s = std::str::from_utf8(c).unwrap_or_default();
            let ours: Vec<&str> = CrlfLines::new(s).collect();
            let std: Vec<&str> = s.split("\r\n").collect();
            assert_eq!(ours, std, "{s:?}");
        }
    }
}
