use super::*;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

const REGISTER: &str = "REGISTER sip:tenant1.pbx.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKx1\r\n\
Max-Forwards: 70\r\n\
To: \"Alice \\\"A\\\"\" <sip:201@tenant1.pbx.test>\r\n\
f: <sip:201@tenant1.pbx.test>;tag=456248\r\n\
i: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:201@10.0.0.5:5062;transport=udp>;expires=3600, <sip:201@[2001:db8::1]>;q=0.5\r\n\
Expires: 7200\r\n\
Authorization: Digest username=\"201\", realm=\"tenant1\"\r\n\
X-Custom:  folded\r\n  value\r\n\
Content-Length: 0\r\n\r\n";

fn request(s: &str) -> SipRequest {
    match parse(s.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("expected a request"),
    }
}

#[test]
fn a_register_exposes_what_the_registrar_needs() {
    let r = request(REGISTER);
    assert_eq!(r.method, Method::Register);
    assert_eq!(r.uri.scheme, "sip");
    assert_eq!(r.uri.host, "tenant1.pbx.test");
    assert_eq!(r.uri.user, None);
    let via = r.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!((via.host.as_str(), via.port), ("10.0.0.5", Some(5062)));
    assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(via.rport(), Some(None));
    assert!(via.has_rfc3261_branch());
    assert_eq!(r.vias().unwrap().len(), 2);
    let to = r.to().unwrap();
    assert_eq!(to.display_name.as_deref(), Some("Alice \"A\""));
    assert_eq!(to.uri.user.as_deref(), Some("201"));
    assert_eq!(to.tag(), None);
    assert_eq!(r.from().unwrap().tag(), Some("456248"));
    assert_eq!(r.call_id().unwrap(), "843817637684230@998sdasdh09");
    let cseq = r.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1826, Method::Register));
    let contacts = r.contacts().unwrap();
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0].expires(), Some(Some(3600)));
    let Contact::Addr(c1) = &contacts[1] else {
        panic!("star")
    };
    assert_eq!(c1.uri.host, "[2001:db8::1]");
    assert_eq!(c1.params.get("q"), Some(Some("0.5")));
    assert_eq!(r.expires().unwrap(), Some(7200));
    assert_eq!(r.max_forwards().unwrap(), Some(70));
    assert_eq!(
        r.authorization(),
        Some("Digest username=\"201\", realm=\"tenant1\"")
    );
    assert_eq!(r.header("x-custom"), Some("folded value"));
    assert_eq!(r.content_length().unwrap(), Some(0));
    assert_eq!(validate(&r), Ok(()));
}

#[test]
fn contact_star_and_extension_methods_parse() {
    let r = request(
        "REGISTER sip:a.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:1@a.test>\r\n\
From: <sip:1@a.test>;tag=1\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\nContact: *\r\nExpires: 0\r\n\r\n",
    );
    assert_eq!(r.contacts().unwrap(), vec![Contact::Star]);
    let m = request("FOO sip:a.test SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n");
    assert_eq!(m.method, Method::Extension("FOO".into()));
    // methods are case-sensitive
    let m = request("invite sip:a.test SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n");
    assert_eq!(m.method, Method::Extension("invite".into()));
}

#[test]
fn validate_flags_what_the_parser_lets_through() {
    let base = |extra: &str, cseq: &str| {
        format!(
            "OPTIONS sip:a.test SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:1@a.test>\r\n\
From: <sip:1@a.test>;tag=1\r\nCall-ID: x\r\nCSeq: {cseq}\r\n{extra}\r\n"
        )
    };
    assert_eq!(validate(&request(&base("", "1 OPTIONS"))), Ok(()));
    let err = |extra: &str, cseq: &str| validate(&request(&base(extra, cseq))).unwrap_err();
    assert!(matches!(
        err("", "1 INVITE"),
        InvalidReason::CSeqMethodMismatch { .. }
    ));
    assert_eq!(
        err("", "2147483648 OPTIONS"),
        InvalidReason::Header(HeaderError::Malformed("CSeq"))
    );
    assert_eq!(
        err("", "-1 OPTIONS"),
        InvalidReason::Header(HeaderError::Malformed("CSeq"))
    );
    assert_eq!(err("Max-Forwards: 256\r\n", "1 OPTIONS").status(), 400);
    assert_eq!(err("Expires: 4294967296\r\n", "1 OPTIONS").status(), 400);
    assert_eq!(err("Content-Length: -1\r\n", "1 OPTIONS").status(), 400);
    assert!(matches!(
        err("Content-Length: 10\r\n", "1 OPTIONS"),
        InvalidReason::ContentLengthExceedsBody {
            declared: 10,
            actual: 0
        }
    ));
    assert_eq!(
        err("Call-ID: y\r\n", "1 OPTIONS"),
        InvalidReason::Header(HeaderError::Repeated("Call-ID"))
    );
    let no_to = "OPTIONS sip:a.test SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:1@a.test>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(
        validate(&request(no_to)),
        Err(InvalidReason::Header(HeaderError::Missing("To")))
    );
    let v3 = base("", "1 OPTIONS").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    assert_eq!(validate(&request(&v3)).unwrap_err().status(), 505);
}

#[test]
fn a_response_copies_the_dialog_headers_and_stamps_the_via() {
    let r = request(REGISTER);
    let source: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let resp = SipResponse::for_request(&r, 401, "Unauthorized", source)
        .with_to_tag("as7f")
        .with_www_authenticate("Digest realm=\"tenant1\", nonce=\"n\", algorithm=SHA-256")
        .with_contact("sip:201@10.0.0.5:5062", Some(3600))
        .with_expires(3600)
        .with_allow(&[Method::Invite, Method::Ack, Method::Bye])
        .with_supported(&["path", "outbound"])
        .with_server("pbx")
        .with_date(UNIX_EPOCH + Duration::from_secs(1_289_690_940));
    let bytes = resp.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains(
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK776asdhds;rport=40000;received=203.0.113.9\r\n"
    ));
    assert!(text.contains("Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKx1\r\n"));
    assert!(text.contains("Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"), "{text}");
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    // and it parses back
    let SipMessage::Response(back) = parse(&bytes).unwrap() else {
        panic!("response")
    };
    assert_eq!(back.status, 401);
    assert_eq!(back.to().unwrap().tag(), Some("as7f"));
    assert_eq!(back.from().unwrap().tag(), Some("456248"));
    assert_eq!(back.cseq().unwrap().seq, 1826);
    assert_eq!(back.call_id().unwrap(), r.call_id().unwrap());
    let top = back.top_via().unwrap();
    assert_eq!(top.rport(), Some(Some(40000)));
    assert_eq!(top.received(), Some("203.0.113.9"));
    assert_eq!(
        back.header("WWW-Authenticate").map(|v| v.starts_with("Digest")),
        Some(true)
    );
    assert_eq!(back.contacts().unwrap()[0].expires(), Some(Some(3600)));
    // an existing To tag is kept
    let again = SipResponse::for_request(&r, 200, "OK", source)
        .with_to_tag("a")
        .with_to_tag("b");
    assert_eq!(again.to().unwrap().tag(), Some("a"));
}

#[test]
fn received_is_only_added_when_the_source_differs_and_no_rport_was_asked() {
    let r = request(&REGISTER.replace(";rport", ""));
    let same: SocketAddr = "10.0.0.5:5062".parse().unwrap();
    let resp = SipResponse::for_request(&r, 200, "OK", same);
    assert_eq!(resp.top_via().unwrap().received(), None);
    let other: SocketAddr = "10.0.0.6:5062".parse().unwrap();
    let resp = SipResponse::for_request(&r, 200, "OK", other);
    assert_eq!(resp.top_via().unwrap().received(), Some("10.0.0.6"));
    assert_eq!(resp.top_via().unwrap().rport(), None);
}

#[test]
fn request_serialization_round_trips_with_a_binary_body() {
    let mut r = request(REGISTER);
    r.body = vec![0, 159, 146, 150, 13, 10, 13, 10];
    let SipMessage::Request(back) = parse(&r.to_bytes()).unwrap() else {
        panic!("request")
    };
    assert_eq!(back.body, r.body);
    assert_eq!(back.content_length().unwrap(), Some(8));
    assert_eq!(back.top_via(), r.top_via());
}

#[test]
fn dates_format_as_rfc1123() {
    assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for input in [
        &b""[..],
        b"\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"INVITE sip:a SIP/2.0",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 4294967301 Big\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nNoColon\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\n folded-first: x\r\n\r\n",
        b"INVITE sip:a SIP/2.0\r\nX: \xff\r\n\r\n",
        b"INVITE  sip:a SIP/2.0\r\n\r\n",
        b"INVITE <sip:a> SIP/2.0\r\n\r\n",
        b"INVITE sip:[::1 SIP/2.0\r\n\r\n",
        b"INVITE sip:a:99999 SIP/2.0\r\n\r\n",
    ] {
        assert!(parse(input).is_err(), "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn salvage_reads_the_headers_of_refused_requests_only() {
    let lws = REGISTER.replacen(
        "REGISTER sip:tenant1.pbx.test SIP/2.0",
        "REGISTER  sip:tenant1.pbx.test SIP/2.0",
        1,
    );
    assert!(parse(lws.as_bytes()).is_err());
    let h = salvage_request_headers(lws.as_bytes()).unwrap();
    assert_eq!(h.count("Via"), 2);
    assert_eq!(h.get("Call-ID"), Some("843817637684230@998sdasdh09"));
    assert_eq!(h.get("X-Custom"), Some("folded value"));
    // no closing empty line (a datagram cut after the last header)
    let open = REGISTER.trim_end_matches("\r\n").to_string() + "\r\n";
    assert!(parse(open.as_bytes()).is_err());
    assert!(salvage_request_headers(open.as_bytes()).is_some());
    // never for responses, ACKs, garbage, or without a Via
    assert!(salvage_request_headers(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
    assert!(salvage_request_headers(b"ACK  sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
    assert!(salvage_request_headers(b"\x00\x01garbage\r\n\r\n").is_none());
    assert!(salvage_request_headers(b"OPTIONS  sip:x@y SIP/2.0\r\nCall-ID: a\r\n\r\n").is_none());
}

#[test]
fn the_fast_writers_match_display() {
    for v in [
        "SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK776asdhds;rport=5062;received=192.0.2.1",
        "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKx1;maddr",
        "SIP / 2.0 / UDP [2001:db8::1] : 65535;branch=z9hG4bK0",
    ] {
        let via = Via::parse(v).expect("a Via");
        let mut fast = String::new();
        via.push_to(&mut fast);
        assert_eq!(fast, via.to_string());
    }
    for n in [0, 7, 10, 200, 65_535, u32::MAX] {
        let mut s = String::new();
        headers::push_u32(&mut s, n);
        assert_eq!(s, n.to_string());
    }
}

#[test]
fn header_ids_agree_with_name_comparison() {
    // the fast spellings give the same id as the case-insensitive search
    for (i, name) in KNOWN_HEADERS.iter().enumerate() {
        assert_eq!(header_id(name), i as u8 + 1, "{name}");
        assert_eq!(header_id(&name.to_ascii_uppercase()), i as u8 + 1, "{name}");
        assert_eq!(header_id(&name.to_ascii_lowercase()), i as u8 + 1, "{name}");
    }
    for (compact, long) in [
        ("v", "Via"),
        ("F", "From"),
        ("t", "To"),
        ("i", "Call-ID"),
        ("m", "Contact"),
    ] {
        assert_eq!(header_id(compact), header_id(long));
    }
    assert_eq!(header_id("X-Custom"), 0);
    let mut h = Headers::new();
    h.push("x-CUSTOM", "1");
    h.push("v", "SIP/2.0/UDP a;branch=z9hG4bK1");
    h.push("X-Other", "2");
    h.push("VIA", "SIP/2.0/UDP b;branch=z9hG4bK2");
    assert_eq!(h.get("X-Custom"), Some("1"));
    assert_eq!(h.get("x-other"), Some("2"));
    assert_eq!(h.count("Via"), 2);
    assert_eq!(h.only(&["via", "X-CUSTOM"]).len(), 3);
    h.remove("Via");
    assert_eq!(h.len(), 2);
    assert_eq!(h.get("x-custom"), Some("1"));
}

/// The parsed views are computed once, and a change of the header lines drops them.
#[test]
fn parsed_views_follow_changes_of_the_lines() {
    let mut r = request(REGISTER);
    assert_eq!(r.to_ref().unwrap().uri.user.as_deref(), Some("201"));
    assert_eq!(r.cseq_ref().unwrap().seq, 1826);
    assert_eq!(r.top_via_ref().unwrap().host, "10.0.0.5");
    assert_eq!(r.contacts_ref().unwrap().len(), 2);
    // the owned accessors give the same values
    assert_eq!(r.to().unwrap(), *r.to_ref().unwrap());
    assert_eq!(r.top_via().unwrap(), *r.top_via_ref().unwrap());

    r.headers.set("To", "<sip:202@tenant1.pbx.test>");
    r.headers.set("CSeq", "1827 REGISTER");
    r.headers.remove("Via");
    r.headers.push("Via", "SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKnew");
    r.headers.remove("Contact");
    assert_eq!(r.to_ref().unwrap().uri.user.as_deref(), Some("202"));
    assert_eq!(r.cseq_ref().unwrap().seq, 1827);
    assert_eq!(r.top_via_ref().unwrap().host, "10.0.0.9");
    assert!(r.contacts_ref().unwrap().is_empty());

    // a response's To gets its tag: the To view is the new value
    let resp = SipResponse::for_request(&r, 200, "OK", "10.0.0.9:5060".parse().unwrap()).with_to_tag("abc");
    assert_eq!(resp.to_ref().unwrap().tag(), Some("abc"));
    // a malformed header is an error every time it is asked for
    r.headers.set("CSeq", "x REGISTER");
    assert!(r.cseq_ref().is_err());
    assert!(r.cseq().is_err());
}
