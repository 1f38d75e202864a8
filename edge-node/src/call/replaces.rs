//! The `Replaces` header (RFC 3891) and its place in a REFER's `Refer-To` URI (RFC 5589 §7):
//! which dialog an attended transfer or a take-over names. Pure: parsing and matching only.
//!
//! The tags are seen from the recipient's side (§3): `to-tag` is the recipient's own tag in
//! the dialog, `from-tag` the other party's. The edge is the recipient of every Replaces a
//! phone sends about its dialog with the edge, so `to-tag` is the edge's tag (the key of the
//! router's dialog table) and `from-tag` the phone's.

use crate::sip::message::Uri;

/// A parsed `Replaces` value: `call-id;to-tag=..;from-tag=..[;early-only]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    /// The recipient's (our) tag.
    pub to_tag: String,
    /// The other party's tag.
    pub from_tag: String,
    /// Only an early (ringing) dialog may be replaced (§6.1).
    pub early_only: bool,
}

impl Replaces {
    /// Parses a header value; `None` when the Call-ID or either tag is missing.
    pub fn parse(value: &str) -> Option<Replaces> {
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim();
        if call_id.is_empty() || call_id.contains(char::is_whitespace) {
            return None;
        }
        let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
        for p in parts {
            let (name, val) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            if name.eq_ignore_ascii_case("to-tag") {
                to_tag = val.filter(|v| !v.is_empty()).map(str::to_owned);
            } else if name.eq_ignore_ascii_case("from-tag") {
                from_tag = val.filter(|v| !v.is_empty()).map(str::to_owned);
            } else if name.eq_ignore_ascii_case("early-only") {
                early_only = true;
            }
        }
        Some(Replaces {
            call_id: call_id.to_owned(),
            to_tag: to_tag?,
            from_tag: from_tag?,
            early_only,
        })
    }

    /// The Replaces a REFER's target URI carries as a URI header (`?Replaces=...`, its `;`
    /// and `=` %-escaped). `None`: there is none (a blind transfer); `Some(None)`: there is
    /// one that does not parse.
    pub fn from_refer_to(uri: &Uri) -> Option<Option<Replaces>> {
        let (_, raw) = uri
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Replaces"))?;
        Some(percent_decode(raw).and_then(|v| Replaces::parse(&v)))
    }

    /// Whether this names the dialog with `local_tag` (ours) and `remote_tag` (the phone's).
    pub fn names(&self, call_id: &str, local_tag: &str, remote_tag: Option<&str>) -> bool {
        self.call_id == call_id && self.to_tag == local_tag && remote_tag == Some(self.from_tag.as_str())
    }
}

/// `%XX` escapes decoded (RFC 3261 §19.1.2); `None` on a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaces_header_gives_call_id_tags_and_early_only() {
        let r = Replaces::parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff").unwrap();
        assert_eq!(r.call_id, "98732@sip.example.com");
        assert_eq!(r.to_tag, "ff87ff");
        assert_eq!(r.from_tag, "r33th4x0r");
        assert!(!r.early_only);
        let r = Replaces::parse("c1 ; To-Tag = a ; FROM-TAG=b;early-only").unwrap();
        assert_eq!(
            (r.call_id.as_str(), r.to_tag.as_str(), r.from_tag.as_str()),
            ("c1", "a", "b")
        );
        assert!(r.early_only);
    }

    #[test]
    fn a_replaces_without_a_tag_or_call_id_is_refused() {
        for bad in [
            "c1;to-tag=a",
            "c1;from-tag=b",
            ";to-tag=a;from-tag=b",
            "c1;to-tag=;from-tag=b",
            "c 1;to-tag=a;from-tag=b",
            "",
        ] {
            assert_eq!(Replaces::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_refer_to_uri_carries_an_escaped_replaces() {
        let uri = Uri::parse(
            "sip:103@acme.localhost?Replaces=call-2%40host%3Bto-tag%3Dedge7%3Bfrom-tag%3Dphone1&Require=replaces",
        )
        .unwrap();
        let r = Replaces::from_refer_to(&uri).unwrap().unwrap();
        assert_eq!(r.call_id, "call-2@host");
        assert_eq!(r.to_tag, "edge7");
        assert_eq!(r.from_tag, "phone1");
        // lower-case escapes and an unescaped value are read too
        let uri =
            Uri::parse("sip:103@acme.localhost?replaces=x%3bto-tag%3da%3bfrom-tag%3db%3bearly-only").unwrap();
        let r = Replaces::from_refer_to(&uri).unwrap().unwrap();
        assert_eq!(
            (r.call_id.as_str(), r.to_tag.as_str(), r.from_tag.as_str()),
            ("x", "a", "b")
        );
        assert!(r.early_only);
        // no Replaces: a blind transfer
        let uri = Uri::parse("sip:103@acme.localhost").unwrap();
        assert_eq!(Replaces::from_refer_to(&uri), None);
        // a broken escape or missing tag is an unreadable Replaces
        let uri = Uri::parse("sip:103@acme.localhost?Replaces=x%3Bto-tag%3Da%3Bfrom-tag%3").unwrap();
        assert_eq!(Replaces::from_refer_to(&uri), Some(None));
        let uri = Uri::parse("sip:103@acme.localhost?Replaces=x%3Bto-tag%3Da").unwrap();
        assert_eq!(Replaces::from_refer_to(&uri), Some(None));
    }

    #[test]
    fn the_tags_are_matched_from_the_recipient_side() {
        let r = Replaces::parse("c1;to-tag=edge;from-tag=phone").unwrap();
        assert!(r.names("c1", "edge", Some("phone")));
        // swapped tags, another Call-ID, or a dialog without the phone's tag are not it
        assert!(!r.names("c1", "phone", Some("edge")));
        assert!(!r.names("c2", "edge", Some("phone")));
        assert!(!r.names("c1", "edge", None));
    }
}
