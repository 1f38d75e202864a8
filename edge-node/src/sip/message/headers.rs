//! Typed views of the headers the registrar and B2BUA use (RFC 3261 §20, §25.1).

use super::{Method, Uri};
use std::fmt;

/// Why a header accessor could not give a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} header appears more than once")]
    Repeated(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
}

/// RFC 3261 token characters. (`matches!` rather than `"...".contains(c)`: this runs for
/// every character of most header values, and a string search per character was ~6% of a
/// registration's instructions.)
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '!' | '%' | '*' | '_' | '+' | '`' | '\'' | '~')
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

/// 1*DIGIT that fits a u32 (no sign, no spaces).
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The byte offset of the first `b` (an ASCII delimiter) in `s`. The pieces of a header
/// are short: a plain scan is cheaper than `str::find(char)`'s generic searcher, whose setup
/// cost was ~3% of a registration over the URI and header splits.
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|c| c == b)
}

/// `s.split_once(b)` for an ASCII delimiter, see [`find_byte`].
pub(crate) fn split_once_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, b)?;
    // `b` is ASCII, so `i` and `i + 1` are character boundaries
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Splits a header value at commas outside quoted strings and `<...>`; `None` when an
/// element is empty or a quote/bracket is unbalanced.
pub(crate) fn split_list(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = false;
    // by byte: every delimiter is ASCII, and a byte of a multi-byte character is none of
    // them (after a backslash such a byte is skipped as the escaped one, and the rest of
    // its character matches nothing), so the cut points are the same as by `char`
    for (i, c) in s.bytes().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            b'"' => in_quotes = true,
            b'<' if !angle => angle = true,
            b'>' if angle => angle = false,
            b',' if !angle => {
                let part = s[start..i].trim();
                if part.is_empty() {
                    return None;
                }
                out.push(part);
                start = i + 1;
            }
            _ => {}
        }
    }
    if in_quotes || angle {
        return None;
    }
    let part = s[start..].trim();
    if part.is_empty() {
        return None;
    }
    out.push(part);
    Some(out)
}

/// `;name[=value]` parameters in order; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// Parses `name[=value]` items separated by `;` (the leading `;` already removed).
    /// `None` on an empty item or a name that is not a token.
    pub(crate) fn parse(s: &str) -> Option<Params> {
        let mut out = Vec::new();
        if s.trim().is_empty() {
            return None;
        }
        for item in s.split(';') {
            let item = item.trim();
            let (name, value) = match split_once_byte(item, b'=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            if !is_token(name) {
                return None;
            }
            if let Some(v) = value {
                let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
                if v.is_empty()
                    || (!quoted
                        && !v
                            .chars()
                            .all(|c| is_token_char(c) || matches!(c, '[' | ']' | ':')))
                {
                    return None;
                }
            }
            out.push((name.to_string(), value.map(str::to_string)));
        }
        Some(Params(out))
    }
    /// `Some(value)` for a present parameter (`Some(None)` when it has no value).
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Sets (replacing) a parameter.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            slot.1 = value;
        } else {
            self.0.push((name.to_string(), value));
        }
    }
}

impl Params {
    /// Appends the `;name[=value]` form (what `Display` writes, without the formatting
    /// machinery: responses are built on every request).
    pub(crate) fn push_to(&self, out: &mut String) {
        for (n, v) in &self.0 {
            out.push(';');
            out.push_str(n);
            if let Some(v) = v {
                out.push('=');
                out.push_str(v);
            }
        }
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// Splits `"...";rest` / `<...>;rest` / `x;rest` params: returns (before, params).
fn split_params(s: &str) -> Option<(&str, Params)> {
    match split_once_byte(s, b';') {
        None => Some((s, Params::default())),
        Some((head, rest)) => Some((head, Params::parse(rest)?)),
    }
}

/// From/To/Contact/Route value: `[display-name] <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Unquoted display name (escapes resolved), if any.
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the URI), e.g. `tag`, `expires`, `q`.
    pub params: Params,
}

impl NameAddr {
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim();
        let (display_name, rest) = if let Some(stripped) = s.strip_prefix('"') {
            // quoted-string display name
            let mut name = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in stripped.char_indices() {
                if escaped {
                    name.push(c);
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                } else {
                    name.push(c);
                }
            }
            let end = end?;
            let rest = stripped[end + 1..].trim_start();
            if !rest.starts_with('<') {
                return None;
            }
            (Some(name), rest)
        } else if let Some(lt) = find_byte(s, b'<') {
            let dn = s[..lt].trim();
            if !dn.split_whitespace().all(is_token) {
                return None;
            }
            (
                (!dn.is_empty()).then(|| dn.split_whitespace().collect::<Vec<_>>().join(" ")),
                &s[lt..],
            )
        } else {
            (None, s)
        };
        if let Some(inner) = rest.strip_prefix('<') {
            let gt = find_byte(inner, b'>')?;
            let uri = Uri::parse(inner[..gt].trim())?;
            let after = inner[gt + 1..].trim();
            let params = if after.is_empty() {
                Params::default()
            } else {
                Params::parse(after.strip_prefix(';')?)?
            };
            Some(NameAddr {
                display_name,
                uri,
                params,
            })
        } else {
            // addr-spec without brackets: the URI may carry no params, headers or commas;
            // everything after the first ';' is a header parameter (RFC 3261 §20).
            let (uri, params) = split_params(rest)?;
            if uri.contains(['?', ',', '>']) {
                return None;
            }
            Some(NameAddr {
                display_name,
                uri: Uri::parse(uri.trim())?,
                params,
            })
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dn) = &self.display_name {
            write!(f, "\"{}\" ", dn.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// One Contact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *` (remove all bindings).
    Star,
    Addr(Box<NameAddr>),
}

impl Contact {
    pub(crate) fn parse_list(s: &str) -> Option<Vec<Contact>> {
        if s.trim() == "*" {
            return Some(vec![Contact::Star]);
        }
        split_list(s)?
            .into_iter()
            .map(|p| NameAddr::parse(p).map(|a| Contact::Addr(Box::new(a))))
            .collect()
    }
    /// The `expires` contact parameter: `None` when absent, `Some(None)` when not a
    /// valid delta-seconds.
    pub fn expires(&self) -> Option<Option<u32>> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => a.params.get("expires").map(|v| v.and_then(parse_u32)),
        }
    }
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, e.g. `SIP/2.0`.
    pub protocol: String,
    /// Upper-cased transport: `UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP` or another token.
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        const BAD: HeaderError = HeaderError::Malformed("Via");
        let (head, params) = split_params(s.trim()).ok_or(BAD)?;
        let mut parts = head.splitn(3, '/');
        let name = parts.next().ok_or(BAD)?.trim();
        let version = parts.next().ok_or(BAD)?.trim();
        let rest = parts.next().ok_or(BAD)?.trim_start();
        let split = rest.find(char::is_whitespace).ok_or(BAD)?;
        let transport = &rest[..split];
        // LWS is allowed around the ':' of sent-by; only then is a copy without it needed
        let sent_by = rest[split..].trim();
        let unfolded: String;
        let sent_by = if sent_by.contains(char::is_whitespace) {
            unfolded = sent_by.chars().filter(|c| !c.is_whitespace()).collect();
            unfolded.as_str()
        } else {
            sent_by
        };
        if !is_token(name) || !is_token(version) || !is_token(transport) || sent_by.is_empty() {
            return Err(BAD);
        }
        let (host, port) = super::uri::split_host_port(sent_by).ok_or(BAD)?;
        let mut protocol = String::with_capacity(name.len() + 1 + version.len());
        protocol.push_str(name);
        protocol.push('/');
        protocol.push_str(version);
        Ok(Via {
            protocol,
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }
    /// `None`: no rport; `Some(None)`: `;rport` without value (RFC 3581 request);
    /// `Some(Some(p))`: filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }
    /// Whether the branch carries the RFC 3261 magic cookie (and something after it).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

impl Via {
    /// Appends what `Display` writes, without the formatting machinery (the top Via of
    /// every response is written this way).
    pub(crate) fn push_to(&self, out: &mut String) {
        out.push_str(&self.protocol);
        out.push('/');
        out.push_str(&self.transport);
        out.push(' ');
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push(':');
            push_u32(out, u32::from(p));
        }
        self.params.push_to(out);
    }
}

/// Appends the decimal form of `n` (what `to_string` gives, without an allocation).
pub(crate) fn push_u32(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Appends `n` in decimal with at least two digits (`{n:02}`).
pub(crate) fn push_u32_2(out: &mut String, n: u32) {
    if n < 10 {
        out.push('0');
    }
    push_u32(out, n);
}

/// Appends lowercase hex of `bytes` (what `hex::encode` returns, without collecting chars).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// A random 64-bit tag in 16 hex digits (`format!("{:016x}", ..)` without the formatter).
pub fn random_tag() -> String {
    let mut out = String::with_capacity(16);
    push_hex(&mut out, &rand::random::<u64>().to_be_bytes());
    out
}

/// Appends an IP address as `to_string` writes it (IPv4 without the formatter, whose
/// padding support made it ~1% of a registration).
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u32(out, u32::from(*octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

/// CSeq: sequence number (< 2^31, RFC 3261 §8.1.1.5) and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Option<CSeq> {
        let mut it = s.split_whitespace();
        let seq = parse_u32(it.next()?)?;
        let method = it.next()?;
        if it.next().is_some() || seq >= 1 << 31 || !is_token(method) {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}
