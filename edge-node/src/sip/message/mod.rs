//! SIP messages: our own types, parser and serializer (RFC 3261 §7, §8.2, §19, §20, §25).
//!
//! The rest of the edge sees only these types. The parser is hand-written and owned here
//! (docs/adr/0001-sip-stack.md explains why rsipstack's was evaluated and not taken); it is
//! deliberately small, works on bytes, never panics and rejects what it cannot frame.
//!
//! Two levels of checking:
//! * [`parse`] frames the message: start line (strict RFC 3261 grammar: single SPs, no LWS
//!   in the Request-URI, `SIP/x.y`), header lines (folding, compact names), body (cut at
//!   Content-Length when the datagram carries more). Headers are kept as text and parsed on
//!   access ([`SipRequest::top_via`], [`SipRequest::from`], ...).
//! * [`validate`] applies the RFC 3261 §8.2 / RFC 4475 checks a UAS or registrar needs before
//!   acting on a request: mandatory headers, duplicates, CSeq method, numbers, Content-Length.
//!   A failure maps to a 400 (505 for the version), see [`InvalidReason::status`].

mod build;
mod headers;
mod parse;
mod uri;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod torture_tests;

pub use build::http_date;
pub(crate) use headers::split_list;
pub(crate) use headers::{push_hex, push_ip, push_u32};
pub use headers::{random_tag, CSeq, Contact, HeaderError, NameAddr, Params, Via};
pub use parse::{parse, salvage_request_headers, ParseError};
pub use uri::Uri;
pub use validate::{validate, InvalidReason};

use std::fmt;
use std::sync::OnceLock;

/// A SIP method. Methods are case-sensitive (RFC 3261 §7.1); anything that is not one of
/// the known ones is an [`Method::Extension`] (the UAS answers 501 to those).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Prack,
    Update,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    /// The method for a token (the caller has checked it is a token).
    pub fn from_token(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line as received (folded lines joined with a single SP, value trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
    /// [`header_id`] of the name, so that lookups compare one byte instead of two names.
    id: u8,
}

/// The header section, in order. Lookups are case-insensitive and know the compact forms
/// (`v` = Via, `f` = From, ...; RFC 3261 §7.3.3).
///
/// The typed views the transaction layer, `validate` and the registrar all need (To, From,
/// CSeq, top Via, Contacts) are parsed once, on first use, and kept with the lines (a
/// REGISTER had its To, CSeq and Contacts parsed two or three times each, its top Via three
/// times: ~15% of a registration). Every change of the lines drops them.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<Header>, OnceLock<Box<Views>>);

/// Parsed header values, see [`Headers`].
#[derive(Debug, Clone, Default)]
struct Views {
    to: OnceLock<Result<NameAddr, HeaderError>>,
    from: OnceLock<Result<NameAddr, HeaderError>>,
    cseq: OnceLock<Result<CSeq, HeaderError>>,
    top_via: OnceLock<Result<Via, HeaderError>>,
    contacts: OnceLock<Result<Vec<Contact>, HeaderError>>,
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Headers {}

/// Long name of a compact header name, if it is one.
fn expand_compact(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "x" | "X" => "Session-Expires",
        _ => name,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    expand_compact(a).eq_ignore_ascii_case(expand_compact(b))
}

/// Long names that get an id of their own (index + 1); every lookup names one of them.
const KNOWN_HEADERS: [&str; 28] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Content-Encoding",
    "Max-Forwards",
    "Expires",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Route",
    "Record-Route",
    "Subject",
    "Supported",
    "Event",
    "Allow-Events",
    "Refer-To",
    "Referred-By",
    "Session-Expires",
    "Require",
    "Allow",
    "User-Agent",
    "Date",
];

/// A one-byte name for header lookups (header lookups by name were ~7% of a registration):
/// the same id for two names iff [`same_name`] says so, except 0 (a name not in
/// [`KNOWN_HEADERS`]), for which the names themselves must be compared.
fn header_id(name: &str) -> u8 {
    // the usual spelling first: a length switch and one compare
    let exact = match name {
        "Via" => 1,
        "From" => 2,
        "To" => 3,
        "Call-ID" => 4,
        "CSeq" => 5,
        "Contact" => 6,
        "Content-Length" => 7,
        "Max-Forwards" => 10,
        "Expires" => 11,
        "Authorization" => 12,
        _ => 0,
    };
    if exact != 0 {
        return exact;
    }
    let long = expand_compact(name);
    KNOWN_HEADERS
        .iter()
        .position(|k| k.len() == long.len() && k.eq_ignore_ascii_case(long))
        .map_or(0, |i| i as u8 + 1)
}

impl Header {
    /// Whether this line has the name `name`, whose [`header_id`] is `id`.
    fn is(&self, name: &str, id: u8) -> bool {
        self.id == id && (id != 0 || same_name(&self.name, name))
    }
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }
    /// Room for `n` lines without growing (a REGISTER has ~10, a response ~8).
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n), OnceLock::new())
    }
    /// First value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        let id = header_id(name);
        self.0.iter().find(|h| h.is(name, id)).map(|h| h.value.as_str())
    }
    /// All header lines with this name, in order (one entry per line, not split at commas).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let id = header_id(name);
        self.0
            .iter()
            .filter(move |h| h.is(name, id))
            .map(|h| h.value.as_str())
    }
    /// The lines with any of these names, in order, in one pass.
    pub fn only(&self, names: &[&str]) -> Headers {
        let ids: Vec<(u8, &str)> = names.iter().map(|n| (header_id(n), *n)).collect();
        Headers(
            self.0
                .iter()
                .filter(|h| ids.iter().any(|(id, n)| h.is(n, *id)))
                .cloned()
                .collect(),
            OnceLock::new(),
        )
    }
    /// The lines, to change them: the parsed views no longer hold.
    fn lines_mut(&mut self) -> &mut Vec<Header> {
        self.1.take();
        &mut self.0
    }
    fn views(&self) -> &Views {
        self.1.get_or_init(Box::default)
    }
    /// The single value of a header that must appear at most once.
    fn single(&self, name: &'static str) -> Result<&str, HeaderError> {
        let mut it = self.get_all(name);
        let first = it.next().ok_or(HeaderError::Missing(name))?;
        if it.next().is_some() {
            return Err(HeaderError::Repeated(name));
        }
        Ok(first)
    }
    fn name_addr(&self, name: &'static str) -> Result<NameAddr, HeaderError> {
        NameAddr::parse(self.single(name)?).ok_or(HeaderError::Malformed(name))
    }
    /// The To value, parsed once.
    pub(crate) fn to_view(&self) -> Result<&NameAddr, HeaderError> {
        self.views()
            .to
            .get_or_init(|| self.name_addr("To"))
            .as_ref()
            .map_err(|e| *e)
    }
    /// The From value, parsed once.
    #[allow(clippy::wrong_self_convention)] // the From header, not a conversion
    pub(crate) fn from_view(&self) -> Result<&NameAddr, HeaderError> {
        self.views()
            .from
            .get_or_init(|| self.name_addr("From"))
            .as_ref()
            .map_err(|e| *e)
    }
    /// The CSeq value, parsed once.
    pub(crate) fn cseq_view(&self) -> Result<&CSeq, HeaderError> {
        self.views()
            .cseq
            .get_or_init(|| CSeq::parse(self.single("CSeq")?).ok_or(HeaderError::Malformed("CSeq")))
            .as_ref()
            .map_err(|e| *e)
    }
    /// The first value of the first Via line, parsed once.
    pub(crate) fn top_via_view(&self) -> Result<&Via, HeaderError> {
        self.views()
            .top_via
            .get_or_init(|| {
                let line = self.get("Via").ok_or(HeaderError::Missing("Via"))?;
                let parts = headers::split_list(line).ok_or(HeaderError::Malformed("Via"))?;
                let first = parts.first().ok_or(HeaderError::Malformed("Via"))?;
                Via::parse(first)
            })
            .as_ref()
            .map_err(|e| *e)
    }
    /// Every Via value parses (the top one through its view, so it is parsed once).
    pub(crate) fn check_vias(&self) -> Result<(), HeaderError> {
        self.top_via_view()?;
        for (i, line) in self.get_all("Via").enumerate() {
            let parts = headers::split_list(line).ok_or(HeaderError::Malformed("Via"))?;
            for part in parts.iter().skip(usize::from(i == 0)) {
                Via::parse(part)?;
            }
        }
        Ok(())
    }
    /// Every Contact value, parsed once; empty when there is none.
    pub(crate) fn contacts_view(&self) -> Result<&[Contact], HeaderError> {
        self.views()
            .contacts
            .get_or_init(|| {
                let mut out = Vec::new();
                for line in self.get_all("Contact") {
                    out.extend(Contact::parse_list(line).ok_or(HeaderError::Malformed("Contact"))?);
                }
                Ok(out)
            })
            .as_deref()
            .map_err(|e| *e)
    }
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let id = header_id(&name);
        self.lines_mut().push(Header {
            name,
            value: value.into(),
            id,
        });
    }
    /// Removes every line with this name.
    pub fn remove(&mut self, name: &str) {
        let id = header_id(name);
        self.lines_mut().retain(|h| !h.is(name, id));
    }
    /// Replaces every line with this name by one line.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed request. Header accessors parse on demand and say whether a header is missing,
/// repeated or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipRequest {
    pub method: Method,
    pub uri: Uri,
    /// As on the wire, e.g. `SIP/2.0`.
    pub version: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// A response (parsed, or built with [`SipResponse::for_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipResponse {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    Request(SipRequest),
    Response(SipResponse),
}

impl SipMessage {
    pub fn headers(&self) -> &Headers {
        match self {
            SipMessage::Request(r) => &r.headers,
            SipMessage::Response(r) => &r.headers,
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            SipMessage::Request(r) => r.to_bytes(),
            SipMessage::Response(r) => r.to_bytes(),
        }
    }
}

/// Accessors shared by requests and responses.
macro_rules! common_accessors {
    ($t:ty) => {
        impl $t {
            /// First value of any header, by name (compact forms understood).
            pub fn header(&self, name: &str) -> Option<&str> {
                self.headers.get(name)
            }
            /// The single value of a header that must appear at most once.
            fn single(&self, name: &'static str) -> Result<&str, HeaderError> {
                self.headers.single(name)
            }
            /// All Via values, top first (comma-separated values split).
            pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
                let mut out = Vec::new();
                for line in self.headers.get_all("Via") {
                    for part in headers::split_list(line).ok_or(HeaderError::Malformed("Via"))? {
                        out.push(Via::parse(part)?);
                    }
                }
                if out.is_empty() {
                    return Err(HeaderError::Missing("Via"));
                }
                Ok(out)
            }
            pub fn top_via(&self) -> Result<Via, HeaderError> {
                self.headers.top_via_view().cloned()
            }
            pub fn from(&self) -> Result<NameAddr, HeaderError> {
                self.headers.from_view().cloned()
            }
            pub fn to(&self) -> Result<NameAddr, HeaderError> {
                self.headers.to_view().cloned()
            }
            /// [`Self::top_via`] without a copy (parsed once per message).
            pub fn top_via_ref(&self) -> Result<&Via, HeaderError> {
                self.headers.top_via_view()
            }
            /// [`Self::from`] without a copy (parsed once per message).
            #[allow(clippy::wrong_self_convention)] // the From header, not a conversion
            pub fn from_ref(&self) -> Result<&NameAddr, HeaderError> {
                self.headers.from_view()
            }
            /// [`Self::to`] without a copy (parsed once per message).
            pub fn to_ref(&self) -> Result<&NameAddr, HeaderError> {
                self.headers.to_view()
            }
            pub fn call_id(&self) -> Result<&str, HeaderError> {
                let v = self.single("Call-ID")?;
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(HeaderError::Malformed("Call-ID"));
                }
                Ok(v)
            }
            pub fn cseq(&self) -> Result<CSeq, HeaderError> {
                self.headers.cseq_view().cloned()
            }
            /// [`Self::cseq`] without a copy (parsed once per message).
            pub fn cseq_ref(&self) -> Result<&CSeq, HeaderError> {
                self.headers.cseq_view()
            }
            /// All Contact values; `Ok(vec![])` when there is none.
            pub fn contacts(&self) -> Result<Vec<Contact>, HeaderError> {
                self.headers.contacts_view().map(<[Contact]>::to_vec)
            }
            /// [`Self::contacts`] without a copy (parsed once per message).
            pub fn contacts_ref(&self) -> Result<&[Contact], HeaderError> {
                self.headers.contacts_view()
            }
            /// Expires header (delta-seconds), `Ok(None)` when absent.
            pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
                self.optional_number("Expires")
            }
            /// Content-Length header, `Ok(None)` when absent.
            pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
                self.optional_number("Content-Length")
            }
            pub fn content_type(&self) -> Option<&str> {
                self.headers.get("Content-Type")
            }
            fn optional_number(&self, name: &'static str) -> Result<Option<u32>, HeaderError> {
                match self.single(name) {
                    Err(HeaderError::Missing(_)) => Ok(None),
                    Err(e) => Err(e),
                    Ok(v) => headers::parse_u32(v)
                        .map(Some)
                        .ok_or(HeaderError::Malformed(name)),
                }
            }
        }
    };
}

common_accessors!(SipRequest);
common_accessors!(SipResponse);

impl SipRequest {
    /// Max-Forwards (0..=255), `Ok(None)` when absent (RFC 2543 clients omit it).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        match self.single("Max-Forwards") {
            Err(HeaderError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
            Ok(v) => headers::parse_u32(v)
                .and_then(|n| u8::try_from(n).ok())
                .map(Some)
                .ok_or(HeaderError::Malformed("Max-Forwards")),
        }
    }
    /// Raw value of the Authorization header (the digest module parses it).
    pub fn authorization(&self) -> Option<&str> {
        self.headers.get("Authorization")
    }
    /// Raw value of the Proxy-Authorization header.
    pub fn proxy_authorization(&self) -> Option<&str> {
        self.headers.get("Proxy-Authorization")
    }
}
