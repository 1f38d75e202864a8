//! URIs (RFC 3261 §19.1, RFC 3986 scheme syntax). SIP and SIPS URIs are taken apart;
//! other schemes (tel, soap.beep, ...) keep only the scheme and the opaque rest.

use super::headers::{find_byte, is_token_char, split_once_byte, Params};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower-cased scheme: `sip`, `sips`, `tel`, ...
    pub scheme: String,
    /// User part as on the wire (%-escapes kept, so `%00` does not truncate it).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Host for sip/sips (IPv6 references keep their brackets); empty for other schemes.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// `?name=value&...` URI headers.
    pub headers: Vec<(String, String)>,
    raw: String,
}

/// `host[:port]`, IPv6 in brackets. `None` when the host or port is not valid.
pub(crate) fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = find_byte(rest, b']')?;
        let host = &s[..end + 2];
        if !rest[..end]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        (host, &rest[end + 1..])
    } else {
        match find_byte(s, b':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    if host.is_empty()
        || !(host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return None;
    }
    let port = match port {
        "" => None,
        p => {
            let p = p.strip_prefix(':')?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(p.parse().ok()?)
        }
    };
    Some((host.to_ascii_lowercase(), port))
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

impl Uri {
    /// Parses a URI; `None` when it contains whitespace or is not a valid SIP/SIPS URI or
    /// `scheme:opaque` absolute URI.
    pub fn parse(s: &str) -> Option<Uri> {
        // ASCII (the usual case) checked by byte: its whitespace and controls are the bytes
        // up to SP and DEL
        let bad = if s.is_ascii() {
            s.bytes().any(|b| b <= b' ' || b == 0x7f)
        } else {
            s.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if s.is_empty() || bad {
            return None;
        }
        let (scheme, rest) = split_once_byte(s, b':')?;
        if !is_scheme(scheme) || rest.is_empty() {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let mut uri = Uri {
            scheme,
            user: None,
            password: None,
            host: String::new(),
            port: None,
            params: Params::default(),
            headers: Vec::new(),
            raw: s.to_string(),
        };
        if !uri.is_sip() {
            return Some(uri);
        }
        // userinfo ends at the first '@' ('@' is never unescaped in user, password,
        // host, params or headers), so `sip:user;par=u%40x@host` has user `user;par=u%40x`.
        let (userinfo, hostpart) = match find_byte(rest, b'@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if let Some(ui) = userinfo {
            let (user, password) = match split_once_byte(ui, b':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if user.is_empty()
                || !user.chars().all(|c| {
                    is_token_char(c)
                        || matches!(c, '%' | '&' | '=' | '+' | '$' | ',' | ';' | '?' | '/' | '(' | ')')
                })
            {
                return None;
            }
            uri.user = Some(user.to_string());
            uri.password = password.map(str::to_string);
        }
        let (before_headers, headers) = match split_once_byte(hostpart, b'?') {
            Some((b, h)) => (b, Some(h)),
            None => (hostpart, None),
        };
        let (hostport, params) = match split_once_byte(before_headers, b';') {
            Some((h, p)) => (h, Some(p)),
            None => (before_headers, None),
        };
        let (host, port) = split_host_port(hostport)?;
        uri.host = host;
        uri.port = port;
        if let Some(p) = params {
            uri.params = Params::parse(p)?;
        }
        if let Some(h) = headers {
            for item in h.split('&') {
                let (n, v) = item.split_once('=')?;
                if n.is_empty() {
                    return None;
                }
                uri.headers.push((n.to_string(), v.to_string()));
            }
        }
        Some(uri)
    }

    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// The URI as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `user@host` (or `host`) for sip/sips: the address-of-record key before tenant
    /// lookup. `None` for other schemes.
    pub fn user_host(&self) -> Option<String> {
        if !self.is_sip() {
            return None;
        }
        Some(match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        })
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}
