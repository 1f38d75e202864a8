//! HTTP/SIP digest authentication, server side: challenges, stateless nonces, parsing of the
//! client's `Authorization` / `Proxy-Authorization` value and verification (RFC 7616, RFC 8760
//! for SIP, RFC 2617, and the RFC 2069 form for old phones).
//!
//! Decisions:
//! - Algorithms: `MD5` and `SHA-256`, offered in that preference order reversed (SHA-256 first,
//!   RFC 8760 §3). The `-sess` variants are implemented (HA1 = H(H(user:realm:pass):nonce:cnonce))
//!   and verified when listed in [`DigestConfig::algorithms`], but are not offered by default.
//! - `qop=auth` only; `auth-int` is refused ([`Verdict::BadResponse`]).
//! - RFC 2069 (no `qop`, no `cnonce`/`nc`) is accepted for MD5 only, and only when
//!   [`DigestConfig::allow_rfc2069`] is set (the default, for old phones). Without a nonce count
//!   such a nonce is single use: it counts as `nc=1`, so a second request with it gets
//!   [`Verdict::Replay`] and the registrar re-challenges with `stale=true`.
//! - Nonces are stateless: `base64url(timestamp_ms(8, BE) || random(8) || HMAC-SHA256(key,
//!   timestamp || random || realm)[..16])`, 43 characters. Any edge holding the key verifies them
//!   without storage; binding the realm means a nonce issued for one tenant is useless for
//!   another. A nonce older than [`DigestConfig::nonce_lifetime`] is stale; one dated more than
//!   [`CLOCK_SKEW`] in the future is invalid.
//! - The `opaque` is HMAC(key, realm)-derived, so it is the same on every edge. A client that
//!   omits it is tolerated (many phones do); a different value is [`Verdict::BadNonce`].
//! - Replay: the highest `nc` accepted per nonce is remembered in memory, only after the response
//!   proved correct (so a guesser cannot fill the table). See [`DigestAuthenticator`] for the bound.
//! - Responses are compared as bytes in constant time (`subtle`); hex case is not significant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far in the future a nonce's timestamp may be (clock differences between edges).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Longest `Authorization` value [`Credentials::parse`] looks at.
pub const MAX_HEADER_LEN: usize = 4096;

/// A digest hash algorithm (the `algorithm` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl DigestAlgorithm {
    /// The token as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Parses the token, case-insensitively; `None` for anything else (SHA-512-256...).
    pub fn from_token(token: &str) -> Option<Self> {
        [Self::Md5, Self::Md5Sess, Self::Sha256, Self::Sha256Sess]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(token))
    }

    fn is_sess(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }

    /// H(parts joined by ':').
    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Self::Md5 | Self::Md5Sess => run::<Md5>(parts),
            Self::Sha256 | Self::Sha256Sess => run::<Sha256>(parts),
        }
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What goes into a digest response; used by the verifier and by clients (tests, and later our
/// own registrations to carriers).
#[derive(Debug, Clone, Copy)]
pub struct ResponseInput<'a> {
    pub algorithm: DigestAlgorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `Some((nc, cnonce))` for `qop=auth`; `None` for the RFC 2069 form.
    pub qop_auth: Option<(&'a str, &'a str)>,
}

/// Lowercase hex (`hex::encode` collects `char`s one by one: ~1.5% of a registration).
fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    crate::sip::message::push_hex(&mut out, bytes);
    out
}

/// Hex (either case) into `out`; `None` when it is not hex or longer than `out` (a digest
/// response is at most a SHA-256, 32 bytes; without an allocation, unlike `hex::decode`).
fn decode_hex(s: &str, out: &mut [u8; 32]) -> Option<usize> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) || bytes.len() > out.len() * 2 {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(bytes.len() / 2)
}

fn response_bytes(i: &ResponseInput<'_>) -> Vec<u8> {
    let alg = i.algorithm;
    let mut ha1 = to_hex(&alg.hash(&[i.username.as_bytes(), i.realm.as_bytes(), i.password.as_bytes()]));
    if alg.is_sess() {
        let cnonce = i.qop_auth.map(|(_, c)| c).unwrap_or("");
        ha1 = to_hex(&alg.hash(&[ha1.as_bytes(), i.nonce.as_bytes(), cnonce.as_bytes()]));
    }
    let ha2 = to_hex(&alg.hash(&[i.method.as_bytes(), i.uri.as_bytes()]));
    match i.qop_auth {
        Some((nc, cnonce)) => alg.hash(&[
            ha1.as_bytes(),
            i.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]),
        None => alg.hash(&[ha1.as_bytes(), i.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// The `response` parameter a client sends (lowercase hex).
pub fn compute_response(input: &ResponseInput<'_>) -> String {
    to_hex(&response_bytes(input))
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: String,
    pub algorithm: DigestAlgorithm,
    pub stale: bool,
}

impl Challenge {
    /// The header value, e.g. `Digest realm="acme.example.com", nonce="...", opaque="...",
    /// algorithm=SHA-256, qop="auth"` (plus `, stale=true`).
    pub fn to_header_value(&self) -> String {
        // written into one buffer (every first REGISTER gets one; `format!` was ~1% of it)
        let mut v = String::with_capacity(self.realm.len() + self.nonce.len() + self.opaque.len() + 96);
        v.push_str("Digest realm=");
        quote_into(&mut v, &self.realm);
        v.push_str(", nonce=");
        quote_into(&mut v, &self.nonce);
        v.push_str(", opaque=");
        quote_into(&mut v, &self.opaque);
        v.push_str(", algorithm=");
        v.push_str(self.algorithm.as_str());
        v.push_str(", qop=\"auth\"");
        if self.stale {
            v.push_str(", stale=true");
        }
        v
    }
}

fn quote_into(out: &mut String, s: &str) {
    if !s.bytes().any(|b| b == b'"' || b == b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// What a nonce is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but expired: re-challenge with `stale=true`.
    Stale,
    /// Not ours (bad MAC, other realm, bad encoding) or dated in the future.
    Invalid,
}

/// The outcome of [`DigestAuthenticator::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Correct response on an expired (or forgotten) nonce: re-challenge with `stale=true`.
    Stale,
    /// Wrong password, or a malformed/unsupported response (missing cnonce, bad nc, auth-int).
    BadResponse,
    /// The realm is not this tenant's.
    BadRealm,
    /// The nonce (or opaque) was not issued by us for this realm.
    BadNonce,
    /// A nonce count not greater than one already accepted for this nonce.
    Replay,
    /// An algorithm we do not offer.
    UnsupportedAlgorithm,
}

/// Settings of a [`DigestAuthenticator`].
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// How long a nonce stays valid (default 300 s).
    pub nonce_lifetime: Duration,
    /// Offered and accepted algorithms, preferred first (default SHA-256, MD5).
    pub algorithms: Vec<DigestAlgorithm>,
    /// Accept the RFC 2069 form (no qop) for MD5 (default true).
    pub allow_rfc2069: bool,
    /// How many nonces the replay check remembers (default 100,000).
    pub max_tracked_nonces: usize,
}

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            allow_rfc2069: true,
            max_tracked_nonces: 100_000,
        }
    }
}

/// The credentials in an `Authorization` / `Proxy-Authorization` value, unquoted and unescaped.
/// Optional parameters are kept as sent; unknown parameters are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

/// Why an `Authorization` value did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("authorization value too long ({0} bytes, at most {MAX_HEADER_LEN})")]
    TooLong(usize),
    #[error("not a Digest authorization (scheme {0:?})")]
    NotDigest(String),
    #[error("malformed digest parameters at byte {at}: {reason}")]
    Syntax { at: usize, reason: &'static str },
    #[error("duplicate digest parameter {0:?}")]
    Duplicate(String),
    #[error("missing digest parameter {0:?}")]
    Missing(&'static str),
}

fn is_tchar(c: char) -> bool {
    // `matches!` rather than `"...".contains(c)`: this runs per character of every header
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '.' | '^' | '_' | '`' | '|' | '~'
        )
}

fn is_ctl(c: char) -> bool {
    (c < ' ' && c != '\t') || c == '\x7f'
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        // ASCII (every character of a well-formed header) without a UTF-8 decode
        match *self.s.as_bytes().get(self.pos)? {
            b if b.is_ascii() => Some(char::from(b)),
            _ => self.s.get(self.pos..).and_then(|r| r.chars().next()),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The byte at the cursor. The scans below go byte by byte: every byte they stop at or
    /// step over is ASCII (whitespace, token characters, delimiters), so the cursor stays on
    /// a character boundary, and a byte of a multi-byte character is never one of them (its
    /// `char::from` is U+0080..U+00FF, which no class here contains). Decoding a `char` per
    /// step made this parse ~4% of a registration.
    fn byte(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.byte(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.byte().is_some_and(|b| is_tchar(char::from(b))) {
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    fn err(&self, reason: &'static str) -> DigestParseError {
        DigestParseError::Syntax { at: self.pos, reason }
    }

    fn quoted(&mut self) -> Result<String, DigestParseError> {
        self.bump(); // opening quote
                     // the usual value has no escapes: one copy instead of a push per character
        let rest = self.s.get(self.pos..).unwrap_or("");
        let stop = rest
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || is_ctl(char::from(b)));
        if let Some(end) = stop {
            if rest.as_bytes()[end] == b'"' {
                self.pos += end + 1;
                return Ok(rest[..end].to_owned());
            }
        }
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("unterminated quoted string")),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    None => return Err(self.err("unterminated quoted string")),
                    Some(c) if is_ctl(c) => return Err(self.err("control character")),
                    Some(c) => out.push(c),
                },
                Some(c) if is_ctl(c) => return Err(self.err("control character")),
                Some(c) => out.push(c),
            }
        }
    }

    /// An unquoted value, leniently: anything up to a comma or whitespace.
    fn bare(&mut self) -> Result<String, DigestParseError> {
        let start = self.pos;
        while let Some(b) = self.byte() {
            match b {
                b',' | b' ' | b'\t' | b'\r' | b'\n' => break,
                b'"' => return Err(self.err("quote inside unquoted value")),
                b if is_ctl(char::from(b)) => return Err(self.err("control character")),
                _ => self.pos += 1,
            }
        }
        match self.s.get(start..self.pos) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(self.err("empty parameter value")),
        }
    }
}

impl Credentials {
    /// Parses `Digest username="..", realm="..", ...`. Scheme and parameter names are
    /// case-insensitive, values are quoted strings (with `\` escapes) or bare tokens; a missing
    /// required parameter (username, realm, nonce, uri, response) or a duplicate is an error.
    pub fn parse(value: &str) -> Result<Self, DigestParseError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(DigestParseError::TooLong(value.len()));
        }
        let mut cur = Cursor { s: value, pos: 0 };
        cur.skip_ws();
        let scheme = cur.token();
        if !scheme.eq_ignore_ascii_case("Digest") {
            let shown: String = scheme.chars().take(32).collect();
            return Err(DigestParseError::NotDigest(shown));
        }
        if !cur.skip_ws() && cur.peek().is_some() {
            return Err(cur.err("expected whitespace after the scheme"));
        }

        let mut fields: [Option<String>; 10] = Default::default();
        const NAMES: [&str; 10] = [
            "username",
            "realm",
            "nonce",
            "uri",
            "response",
            "algorithm",
            "cnonce",
            "qop",
            "nc",
            "opaque",
        ];
        loop {
            // #rule: empty list elements and surrounding whitespace are allowed
            while cur.skip_ws() || cur.peek() == Some(',') {
                if cur.peek() == Some(',') {
                    cur.bump();
                }
            }
            if cur.peek().is_none() {
                break;
            }
            let name = cur.token();
            if name.is_empty() {
                return Err(cur.err("expected a parameter name"));
            }
            cur.skip_ws();
            if cur.bump() != Some('=') {
                return Err(cur.err("expected '=' after a parameter name"));
            }
            cur.skip_ws();
            let val = if cur.peek() == Some('"') {
                cur.quoted()?
            } else {
                cur.bare()?
            };
            if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name)) {
                if fields[i].is_some() {
                    return Err(DigestParseError::Duplicate(NAMES[i].to_owned()));
                }
                fields[i] = Some(val);
            }
            cur.skip_ws();
            match cur.peek() {
                None => break,
                Some(',') => {}
                Some(_) => return Err(cur.err("expected ',' between parameters")),
            }
        }

        let [username, realm, nonce, uri, response, algorithm, cnonce, qop, nc, opaque] = fields;
        Ok(Self {
            username: username.ok_or(DigestParseError::Missing("username"))?,
            realm: realm.ok_or(DigestParseError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestParseError::Missing("nonce"))?,
            uri: uri.ok_or(DigestParseError::Missing("uri"))?,
            response: response.ok_or(DigestParseError::Missing("response"))?,
            algorithm,
            cnonce,
            qop,
            nc,
            opaque,
        })
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Issue nonces and verify digest responses for any number of realms (tenants).
///
/// Memory: besides the key, only the replay table, one entry (16-byte nonce id + 4-byte highest
/// `nc`, ~40 bytes with B-tree overhead) per nonce that produced an accepted response, at most
/// [`DigestConfig::max_tracked_nonces`] (100,000 ≈ 4 MB by default). Expired nonces are purged on
/// every call. When full, the oldest nonce is forgotten and every nonce issued up to it that is
/// not in the table answers [`Verdict::Stale`] (re-challenge) instead of being accepted without a
/// replay check: a full table costs clients a round trip, never opens a replay.
///
/// The table is per process; a tenant is served by one edge at a time per region, so that is
/// where its REGISTERs arrive.
pub struct DigestAuthenticator {
    /// HMAC-SHA256 keyed with the server key, cloned for each use.
    mac: HmacSha256,
    config: DigestConfig,
    /// nonce id (timestamp_ms BE || random) → highest nc accepted; ordered by issue time.
    seen: BTreeMap<[u8; 16], u32>,
    /// Nonces issued at or before this time (ms) and absent from `seen` may have been evicted.
    forgotten_through_ms: Option<u64>,
    /// `opaque` by realm. It never changes for a realm, and its HMAC was computed twice per
    /// registration (challenge, then verify). Cleared when it reaches [`MAX_CACHED_OPAQUES`].
    opaques: Mutex<HashMap<String, String>>,
}

/// Realms whose `opaque` is cached (a realm is a tenant; an edge serves far fewer).
const MAX_CACHED_OPAQUES: usize = 10_000;

impl std::fmt::Debug for DigestAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAuthenticator")
            .field("key", &"<redacted>")
            .field("config", &self.config)
            .field("tracked_nonces", &self.seen.len())
            .finish()
    }
}

impl DigestAuthenticator {
    /// `server_key` signs nonces; every edge that must accept another's nonces shares it.
    pub fn new(server_key: &[u8], config: DigestConfig) -> Self {
        let mac = match <HmacSha256 as Mac>::new_from_slice(server_key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Self {
            mac,
            config,
            seen: BTreeMap::new(),
            forgotten_through_ms: None,
            opaques: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    /// How many nonces the replay table holds now.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }

    fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    fn nonce_mac(&self, id: &[u8; 16], realm: &str) -> [u8; 16] {
        let mut m = self.mac();
        m.update(id);
        m.update(realm.as_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The `opaque` value for a realm (stable across edges sharing the key).
    pub fn opaque(&self, realm: &str) -> String {
        let mut cache = self.opaques.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(opaque) = cache.get(realm) {
            return opaque.clone();
        }
        let opaque = self.compute_opaque(realm);
        if cache.len() >= MAX_CACHED_OPAQUES {
            cache.clear();
        }
        cache.insert(realm.to_owned(), opaque.clone());
        opaque
    }

    fn compute_opaque(&self, realm: &str) -> String {
        let mut m = self.mac();
        m.update(b"opaque\0");
        m.update(realm.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// A fresh nonce for `realm`.
    pub fn new_nonce(&self, realm: &str, now: SystemTime) -> String {
        self.nonce_with_random(realm, now, rand::random())
    }

    fn nonce_with_random(&self, realm: &str, now: SystemTime, random: [u8; 8]) -> String {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&unix_ms(now).to_be_bytes());
        id[8..].copy_from_slice(&random);
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(&id);
        raw[16..].copy_from_slice(&self.nonce_mac(&id, realm));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// One challenge per configured algorithm, preferred first, all with the same nonce.
    pub fn challenges(&self, realm: &str, now: SystemTime, stale: bool) -> Vec<Challenge> {
        let nonce = self.new_nonce(realm, now);
        let opaque = self.opaque(realm);
        self.config
            .algorithms
            .iter()
            .map(|&algorithm| Challenge {
                realm: realm.to_owned(),
                nonce: nonce.clone(),
                opaque: opaque.clone(),
                algorithm,
                stale,
            })
            .collect()
    }

    /// Is `nonce` one of ours for `realm`, and still fresh?
    pub fn check_nonce(&self, nonce: &str, realm: &str, now: SystemTime) -> NonceCheck {
        self.inspect_nonce(nonce, realm, unix_ms(now)).0
    }

    fn inspect_nonce(&self, nonce: &str, realm: &str, now_ms: u64) -> (NonceCheck, [u8; 16]) {
        let mut id = [0u8; 16];
        if nonce.len() != 43 {
            return (NonceCheck::Invalid, id);
        }
        let mut raw = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(32) => {}
            _ => return (NonceCheck::Invalid, id),
        }
        id.copy_from_slice(&raw[..16]);
        let expected = self.nonce_mac(&id, realm);
        if !bool::from(expected.ct_eq(&raw[16..])) {
            return (NonceCheck::Invalid, id);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&id[..8]);
        let issued = u64::from_be_bytes(ts);
        if issued > now_ms.saturating_add(duration_ms(CLOCK_SKEW)) {
            return (NonceCheck::Invalid, id);
        }
        if now_ms > issued.saturating_add(duration_ms(self.config.nonce_lifetime)) {
            return (NonceCheck::Stale, id);
        }
        (NonceCheck::Valid, id)
    }

    fn purge(&mut self, now_ms: u64) {
        let lifetime = duration_ms(self.config.nonce_lifetime);
        while let Some((id, _)) = self.seen.first_key_value() {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&id[..8]);
            if u64::from_be_bytes(ts).saturating_add(lifetime) < now_ms {
                self.seen.pop_first();
            } else {
                break;
            }
        }
    }

    /// Checks `creds` against `password` for a request with `method` in `realm` (the tenant FQDN
    /// the request was addressed to). Does not look at `creds.username`: the caller used it to
    /// find `password`.
    pub fn verify(
        &mut self,
        creds: &Credentials,
        method: &str,
        password: &str,
        realm: &str,
        now: SystemTime,
    ) -> Verdict {
        let now_ms = unix_ms(now);
        self.purge(now_ms);

        let algorithm = match creds.algorithm.as_deref() {
            None => DigestAlgorithm::Md5,
            Some(t) => match DigestAlgorithm::from_token(t) {
                Some(a) => a,
                None => return Verdict::UnsupportedAlgorithm,
            },
        };
        if !self.config.algorithms.contains(&algorithm) {
            return Verdict::UnsupportedAlgorithm;
        }
        if creds.realm != realm {
            return Verdict::BadRealm;
        }
        let (nonce_state, id) = self.inspect_nonce(&creds.nonce, realm, now_ms);
        if nonce_state == NonceCheck::Invalid {
            return Verdict::BadNonce;
        }
        if creds.opaque.as_ref().is_some_and(|o| *o != self.opaque(realm)) {
            return Verdict::BadNonce;
        }

        // (nc as sent, nc value, cnonce) for qop=auth; None for RFC 2069
        let qop = match creds.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (creds.nc.as_deref(), creds.cnonce.as_deref()) else {
                    return Verdict::BadResponse;
                };
                let nc_value = match u32::from_str_radix(nc, 16) {
                    Ok(v) if nc.len() == 8 && v > 0 => v,
                    _ => return Verdict::BadResponse,
                };
                Some((nc, nc_value, cnonce))
            }
            Some(_) => return Verdict::BadResponse,
            None if algorithm == DigestAlgorithm::Md5 && self.config.allow_rfc2069 => None,
            None => return Verdict::BadResponse,
        };

        let expected = response_bytes(&ResponseInput {
            algorithm,
            username: &creds.username,
            realm: &creds.realm,
            password,
            method,
            uri: &creds.uri,
            nonce: &creds.nonce,
            qop_auth: qop.map(|(nc, _, cnonce)| (nc, cnonce)),
        });
        let mut given = [0u8; 32];
        let Some(len) = decode_hex(&creds.response, &mut given) else {
            return Verdict::BadResponse;
        };
        if !bool::from(given[..len].ct_eq(expected.as_slice())) {
            return Verdict::BadResponse;
        }
        if nonce_state == NonceCheck::Stale {
            return Verdict::Stale;
        }

        let nc_value = qop.map_or(1, |(_, v, _)| v);
        match self.seen.get_mut(&id) {
            Some(highest) if nc_value <= *highest => Verdict::Replay,
            Some(highest) => {
                *highest = nc_value;
                Verdict::Ok
            }
            None => {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&id[..8]);
                let issued = u64::from_be_bytes(ts);
                if self.forgotten_through_ms.is_some_and(|f| issued <= f) {
                    return Verdict::Stale;
                }
                self.seen.insert(id, nc_value);
                while self.seen.len() > self.config.max_tracked_nonces.max(1) {
                    if let Some((old, _)) = self.seen.pop_first() {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&old[..8]);
                        let t = u64::from_be_bytes(ts);
                        self.forgotten_through_ms = Some(self.forgotten_through_ms.map_or(t, |f| f.max(t)));
                    }
                }
                if self.seen.contains_key(&id) {
                    Verdict::Ok
                } else {
                    Verdict::Stale
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation-free hex decoder agrees with `hex::decode` for what a response can be.
    #[test]
    fn decode_hex_matches_the_hex_crate() {
        for s in [
            "",
            "00",
            "0aFf",
            "abc",
            "zz",
            "0g",
            &"ab".repeat(32),
            &"ab".repeat(33),
            "é1",
        ] {
            let mut out = [0u8; 32];
            let ours = decode_hex(s, &mut out).map(|n| out[..n].to_vec());
            let theirs = hex::decode(s).ok().filter(|v| v.len() <= 32);
            assert_eq!(ours, theirs, "{s:?}");
        }
    }

    const KEY: &[u8] = b"test server key, 32 bytes long!!";
    const REALM: &str = "acme.pbx.example";

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn auth() -> DigestAuthenticator {
        DigestAuthenticator::new(KEY, DigestConfig::default())
    }

    /// What a phone does with a challenge.
    fn answer(ch: &Challenge, user: &str, pass: &str, nc: u32, qop: bool) -> String {
        let nc = format!("{nc:08x}");
        let cnonce = "0a4f113b";
        let uri = "sip:acme.pbx.example";
        let response = compute_response(&ResponseInput {
            algorithm: ch.algorithm,
            username: user,
            realm: &ch.realm,
            password: pass,
            method: "REGISTER",
            uri,
            nonce: &ch.nonce,
            qop_auth: qop.then_some((nc.as_str(), cnonce)),
        });
        let mut v = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}, opaque=\"{}\"",
            ch.realm, ch.nonce, ch.algorithm, ch.opaque
        );
        if qop {
            v.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        v
    }

    fn challenge(a: &DigestAuthenticator, alg: DigestAlgorithm, now: SystemTime) -> Challenge {
        a.challenges(REALM, now, false)
            .into_iter()
            .find(|c| c.algorithm == alg)
            .unwrap()
    }

    fn verify(a: &mut DigestAuthenticator, header: &str, pass: &str, now: SystemTime) -> Verdict {
        let creds = Credentials::parse(header).unwrap();
        a.verify(&creds, "REGISTER", pass, REALM, now)
    }

    // RFC 7616 §3.9.1
    const RFC_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(algorithm: DigestAlgorithm) -> String {
        compute_response(&ResponseInput {
            algorithm,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: RFC_NONCE,
            qop_auth: Some(("00000001", RFC_CNONCE)),
        })
    }

    #[test]
    fn rfc7616_sha256_vector() {
        assert_eq!(
            rfc7616(DigestAlgorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_md5_vector() {
        assert_eq!(rfc7616(DigestAlgorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc2617_md5_vector() {
        let r = compute_response(&ResponseInput {
            algorithm: DigestAlgorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop_auth: Some(("00000001", "0a4f113b")),
        });
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn parses_the_rfc7616_authorization_example() {
        let h = "Digest username=\"Mufasa\",\r\n realm=\"http-auth@example.org\",\r\n \
                 uri=\"/dir/index.html\",\r\n algorithm=SHA-256,\r\n \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n nc=00000001,\r\n \
                 cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\",\r\n qop=auth,\r\n \
                 response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\",\r\n \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let c = Credentials::parse(h).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(c.uri, "/dir/index.html");
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(c.nonce, RFC_NONCE);
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(c.cnonce.as_deref(), Some(RFC_CNONCE));
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.response, rfc7616(DigestAlgorithm::Sha256));
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
    }

    #[test]
    fn parser_handles_escapes_case_commas_and_whitespace() {
        let h = "dIgEsT   USERNAME = \"a\\\"b\\\\c, d\" ,Realm=\"r\",, nonce=n1,\turi=\"sip:x@y;a=b\",\
                 response=\"ABCDEF\", foo=\"ignored, really\", bar=baz";
        let c = Credentials::parse(h).unwrap();
        assert_eq!(c.username, "a\"b\\c, d");
        assert_eq!(c.realm, "r");
        assert_eq!(c.nonce, "n1");
        assert_eq!(c.uri, "sip:x@y;a=b");
        assert_eq!(c.response, "ABCDEF");
        assert_eq!(c.algorithm, None);
        assert_eq!(c.qop, None);
    }

    #[test]
    fn parser_rejects_garbage_without_panicking() {
        let bad = [
            "",
            "Digest",
            "Basic dXNlcjpwYXNz",
            "Digestusername=\"a\"",
            "Digest username=\"a",
            "Digest username=\"a\\",
            "Digest username",
            "Digest username=",
            "Digest username=\"a\" realm=\"r\"",
            "Digest =\"a\"",
            "Digest username=a\"b\"",
            "Digest username=\"a\u{1}\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"",
            "Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"",
            "Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\"",
            "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"",
            "Digest username=\"é\", realm=\"€\", nonce=\"n\", uri=\"u\"",
            "\u{0}\u{ff}\u{10ffff}",
            "Digest ,,,,",
            "Digest username=\"a\";realm=\"r\"",
        ];
        for h in bad {
            assert!(Credentials::parse(h).is_err(), "accepted {h:?}");
        }
        let long = format!("Digest username=\"{}\"", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(
            Credentials::parse(&long),
            Err(DigestParseError::TooLong(long.len()))
        );
        assert_eq!(
            Credentials::parse("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\""),
            Err(DigestParseError::Missing("username"))
        );
        // every prefix of a valid header either parses or errors, never panics
        let good = answer(
            &challenge(&auth(), DigestAlgorithm::Sha256, t(0)),
            "100",
            "pw",
            1,
            true,
        );
        for (i, _) in good.char_indices() {
            let _ = Credentials::parse(&good[..i]);
        }
    }

    #[test]
    fn parser_and_verifier_survive_random_input() {
        let mut a = auth();
        let alphabet: Vec<char> = "Digest usernamrlocq=\",\\ \t\r\n0aZ/é\u{1}".chars().collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut h = String::from("Digest ");
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 80) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                h.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(c) = Credentials::parse(&h) {
                let _ = a.verify(&c, "REGISTER", "pw", REALM, t(0));
            }
        }
    }

    #[test]
    fn challenges_list_sha256_first_then_md5() {
        let a = auth();
        let ch = a.challenges(REALM, t(0), false);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].algorithm, DigestAlgorithm::Sha256);
        assert_eq!(ch[1].algorithm, DigestAlgorithm::Md5);
        assert_eq!(ch[0].nonce, ch[1].nonce);
        assert_eq!(ch[0].nonce.len(), 43);
        let v = ch[0].to_header_value();
        assert_eq!(
            v,
            format!(
                "Digest realm=\"acme.pbx.example\", nonce=\"{}\", opaque=\"{}\", \
                 algorithm=SHA-256, qop=\"auth\"",
                ch[0].nonce, ch[0].opaque
            )
        );
        assert!(ch[1].to_header_value().contains("algorithm=MD5, qop=\"auth\""));
        let stale = a.challenges(REALM, t(0), true);
        assert!(stale[0].to_header_value().ends_with(", stale=true"));
        // fresh nonce every time
        assert_ne!(stale[0].nonce, ch[0].nonce);
        assert_eq!(a.check_nonce(&ch[0].nonce, REALM, t(1)), NonceCheck::Valid);
    }

    #[test]
    fn round_trip_both_algorithms() {
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
            let mut a = auth();
            let ch = challenge(&a, alg, t(0));
            let h = answer(&ch, "100", "s3cret", 1, true);
            assert_eq!(verify(&mut a, &h, "s3cret", t(1)), Verdict::Ok, "{alg}");
            // the next request on the same nonce with a higher nc
            let h2 = answer(&ch, "100", "s3cret", 2, true);
            assert_eq!(verify(&mut a, &h2, "s3cret", t(2)), Verdict::Ok, "{alg}");
        }
    }

    #[test]
    fn another_edge_with_the_same_key_accepts_the_nonce() {
        let a = auth();
        let mut b = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let h = answer(&ch, "100", "pw", 1, true);
        assert_eq!(verify(&mut b, &h, "pw", t(1)), Verdict::Ok);
        let mut other = DigestAuthenticator::new(b"another key", DigestConfig::default());
        assert_eq!(verify(&mut other, &h, "pw", t(1)), Verdict::BadNonce);
    }

    #[test]
    fn sess_variants_when_enabled() {
        for alg in [DigestAlgorithm::Sha256Sess, DigestAlgorithm::Md5Sess] {
            let cfg = DigestConfig {
                algorithms: vec![alg],
                ..DigestConfig::default()
            };
            let mut a = DigestAuthenticator::new(KEY, cfg);
            let ch = challenge(&a, alg, t(0));
            assert!(ch.to_header_value().contains(alg.as_str()));
            assert_eq!(
                verify(&mut a, &answer(&ch, "1", "pw", 1, true), "pw", t(0)),
                Verdict::Ok
            );
            assert_eq!(
                verify(&mut a, &answer(&ch, "1", "bad", 2, true), "pw", t(0)),
                Verdict::BadResponse
            );
        }
        // not offered by default → refused
        let mut a = auth();
        let mut ch = challenge(&a, DigestAlgorithm::Md5, t(0));
        ch.algorithm = DigestAlgorithm::Md5Sess;
        let h = answer(&ch, "1", "pw", 1, true);
        assert_eq!(verify(&mut a, &h, "pw", t(0)), Verdict::UnsupportedAlgorithm);
    }

    #[test]
    fn wrong_password() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let h = answer(&ch, "100", "guess", 1, true);
        assert_eq!(verify(&mut a, &h, "s3cret", t(1)), Verdict::BadResponse);
        // a failed attempt does not burn the nc: the right one still goes through
        let h = answer(&ch, "100", "s3cret", 1, true);
        assert_eq!(verify(&mut a, &h, "s3cret", t(1)), Verdict::Ok);
    }

    #[test]
    fn wrong_realm() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let h = answer(&ch, "100", "pw", 1, true);
        let creds = Credentials::parse(&h).unwrap();
        assert_eq!(
            a.verify(&creds, "REGISTER", "pw", "other.pbx.example", t(1)),
            Verdict::BadRealm
        );
        // a nonce minted for another tenant, presented with that tenant's realm rewritten
        let other = a
            .challenges("other.pbx.example", t(0), false)
            .into_iter()
            .next()
            .unwrap();
        let forged = Challenge {
            realm: REALM.to_owned(),
            ..other
        };
        let h = answer(&forged, "100", "pw", 1, true);
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::BadNonce);
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Md5, t(0));
        assert_eq!(a.check_nonce(&ch.nonce, REALM, t(300)), NonceCheck::Valid);
        assert_eq!(a.check_nonce(&ch.nonce, REALM, t(301)), NonceCheck::Stale);
        let h = answer(&ch, "100", "pw", 1, true);
        assert_eq!(verify(&mut a, &h, "pw", t(301)), Verdict::Stale);
        assert_eq!(verify(&mut a, &h, "nope", t(301)), Verdict::BadResponse);
        // configurable lifetime
        let cfg = DigestConfig {
            nonce_lifetime: Duration::from_secs(10),
            ..DigestConfig::default()
        };
        let mut short = DigestAuthenticator::new(KEY, cfg);
        assert_eq!(verify(&mut short, &h, "pw", t(11)), Verdict::Stale);
        // dated in the future (beyond the clock skew allowance)
        let future = challenge(&a, DigestAlgorithm::Md5, t(1000));
        assert_eq!(a.check_nonce(&future.nonce, REALM, t(0)), NonceCheck::Invalid);
        assert_eq!(a.check_nonce(&future.nonce, REALM, t(990)), NonceCheck::Valid);
    }

    #[test]
    fn tampered_nonce_is_invalid() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let mut bytes = ch.nonce.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(a.check_nonce(&tampered, REALM, t(1)), NonceCheck::Invalid);
        for n in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            RFC_NONCE,
        ] {
            assert_eq!(a.check_nonce(n, REALM, t(1)), NonceCheck::Invalid, "{n}");
        }
        let forged = Challenge {
            nonce: tampered,
            ..ch.clone()
        };
        let h = answer(&forged, "100", "pw", 1, true);
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::BadNonce);
        // another opaque
        let h = answer(&ch, "100", "pw", 1, true).replace(&ch.opaque, "0000");
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::BadNonce);
        // no opaque at all is tolerated
        let h = answer(&ch, "100", "pw", 1, true).replace(&format!(", opaque=\"{}\"", ch.opaque), "");
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::Ok);
    }

    #[test]
    fn nonce_count_replay() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let h1 = answer(&ch, "100", "pw", 1, true);
        let h5 = answer(&ch, "100", "pw", 5, true);
        let h3 = answer(&ch, "100", "pw", 3, true);
        assert_eq!(verify(&mut a, &h1, "pw", t(1)), Verdict::Ok);
        assert_eq!(verify(&mut a, &h1, "pw", t(2)), Verdict::Replay);
        assert_eq!(verify(&mut a, &h5, "pw", t(3)), Verdict::Ok);
        assert_eq!(verify(&mut a, &h3, "pw", t(4)), Verdict::Replay);
        assert_eq!(verify(&mut a, &h5, "pw", t(4)), Verdict::Replay);
        assert_eq!(a.tracked_nonces(), 1);
        // once the nonce has expired it is purged, and a replay is merely stale
        assert_eq!(verify(&mut a, &h5, "pw", t(400)), Verdict::Stale);
        assert_eq!(a.tracked_nonces(), 0);
    }

    #[test]
    fn replay_table_is_bounded_and_fails_safe() {
        let cfg = DigestConfig {
            max_tracked_nonces: 3,
            ..DigestConfig::default()
        };
        let mut a = DigestAuthenticator::new(KEY, cfg);
        let chs: Vec<_> = (0..5)
            .map(|i| challenge(&a, DigestAlgorithm::Sha256, t(i)))
            .collect();
        for ch in &chs {
            assert_eq!(
                verify(&mut a, &answer(ch, "1", "pw", 1, true), "pw", t(10)),
                Verdict::Ok
            );
        }
        assert_eq!(a.tracked_nonces(), 3);
        // the two oldest were forgotten: their replay is not accepted but re-challenged
        assert_eq!(
            verify(&mut a, &answer(&chs[0], "1", "pw", 2, true), "pw", t(11)),
            Verdict::Stale
        );
        assert_eq!(
            verify(&mut a, &answer(&chs[4], "1", "pw", 1, true), "pw", t(11)),
            Verdict::Replay
        );
        assert_eq!(
            verify(&mut a, &answer(&chs[4], "1", "pw", 2, true), "pw", t(11)),
            Verdict::Ok
        );
    }

    #[test]
    fn rfc2069_form_for_md5_only_and_single_use() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Md5, t(0));
        let h = answer(&ch, "100", "pw", 0, false);
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::Ok);
        assert_eq!(verify(&mut a, &h, "pw", t(2)), Verdict::Replay);
        assert_eq!(
            verify(&mut a, &answer(&ch, "100", "no", 0, false), "pw", t(1)),
            Verdict::BadResponse
        );
        // without an algorithm parameter, MD5 is implied
        let ch2 = challenge(&a, DigestAlgorithm::Md5, t(0));
        let h = answer(&ch2, "100", "pw", 0, false).replace(", algorithm=MD5", "");
        assert_eq!(verify(&mut a, &h, "pw", t(1)), Verdict::Ok);
        // SHA-256 requires qop
        let ch3 = challenge(&a, DigestAlgorithm::Sha256, t(0));
        assert_eq!(
            verify(&mut a, &answer(&ch3, "100", "pw", 0, false), "pw", t(1)),
            Verdict::BadResponse
        );
        // and it can be switched off
        let cfg = DigestConfig {
            allow_rfc2069: false,
            ..DigestConfig::default()
        };
        let mut strict = DigestAuthenticator::new(KEY, cfg);
        let ch4 = challenge(&strict, DigestAlgorithm::Md5, t(0));
        assert_eq!(
            verify(&mut strict, &answer(&ch4, "100", "pw", 0, false), "pw", t(1)),
            Verdict::BadResponse
        );
    }

    #[test]
    fn malformed_responses_and_unknown_algorithms() {
        let mut a = auth();
        let ch = challenge(&a, DigestAlgorithm::Sha256, t(0));
        let good = answer(&ch, "100", "pw", 1, true);
        let cases = [
            (
                good.replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
                Verdict::UnsupportedAlgorithm,
            ),
            (good.replace("qop=auth", "qop=auth-int"), Verdict::BadResponse),
            (good.replace("nc=00000001", "nc=1"), Verdict::BadResponse),
            (good.replace("nc=00000001", "nc=0000000g"), Verdict::BadResponse),
            (good.replace("nc=00000001", "nc=00000000"), Verdict::BadResponse),
            (good.replace(", cnonce=\"0a4f113b\"", ""), Verdict::BadResponse),
            (good.replace("response=\"", "response=\"zz"), Verdict::BadResponse),
            (good.replace("uri=\"sip:", "uri=\"sips:"), Verdict::BadResponse),
        ];
        for (h, want) in cases {
            assert_eq!(verify(&mut a, &h, "pw", t(1)), want, "{h}");
        }
        // uppercase hex in the response is accepted
        let upper = {
            let c = Credentials::parse(&good).unwrap();
            good.replace(&c.response, &c.response.to_uppercase())
        };
        assert_eq!(verify(&mut a, &upper, "pw", t(1)), Verdict::Ok);
        // a different method changes HA2
        let creds = Credentials::parse(&answer(&ch, "100", "pw", 2, true)).unwrap();
        assert_eq!(
            a.verify(&creds, "INVITE", "pw", REALM, t(1)),
            Verdict::BadResponse
        );
    }
}
