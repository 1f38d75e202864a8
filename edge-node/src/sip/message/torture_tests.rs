//! RFC 4475 torture messages at the parse + validate level, and a no-panic mutation run.
//!
//! The messages and expectations live in shared/conformance/rfc4475 beside the checkout;
//! without it these tests fail (they must not pass vacuously).

use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance/rfc4475");

fn kit_messages() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(KIT).join("messages");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "RFC 4475 messages not found at {} ({e}): these tests need shared/ checked out beside \
             the repository",
            dir.display()
        )
    });
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(
        out.len(),
        49,
        "expected the 49 RFC 4475 messages in {}",
        dir.display()
    );
    out
}

/// name -> (class, expect, lenient)
fn expectations() -> BTreeMap<String, (String, String, String)> {
    let path = PathBuf::from(KIT).join("expectations.tsv");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{} not readable ({e})", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                (f[2].to_string(), f[3].to_string(), f[4].to_string()),
            )
        })
        .collect()
}

/// What the facade does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `parse` refused it (the transport answers 400 if it can, else drops it).
    Rejected,
    /// A response: never answered, whatever it contains.
    Response,
    /// A request that parses and validates: the application layer decides.
    Valid,
    /// A request `validate` refuses with 400.
    Invalid400,
    /// A request `validate` refuses with 505.
    Invalid505,
}

fn outcome(bytes: &[u8]) -> Outcome {
    match parse(bytes) {
        Err(_) => Outcome::Rejected,
        Ok(SipMessage::Response(_)) => Outcome::Response,
        Ok(SipMessage::Request(r)) => match validate(&r) {
            Ok(()) => Outcome::Valid,
            Err(e) if e.status() == 505 => Outcome::Invalid505,
            Err(_) => Outcome::Invalid400,
        },
    }
}

/// Outcomes consistent with the kit's expectation for a server acting as UAS/registrar.
fn acceptable(expect: &str, lenient: &str) -> Vec<Outcome> {
    let mut ok = Vec::new();
    for e in expect.split('|').chain(lenient.split('|')) {
        match e {
            "400" => ok.extend([Outcome::Rejected, Outcome::Invalid400]),
            "505" => ok.push(Outcome::Invalid505),
            "none" => ok.extend([Outcome::Response, Outcome::Rejected]),
            "-" => {}
            // wellformed, 2xx, 401, 404, 416, 420, 415, 501, ...: the request reaches the
            // application layer, which picks the answer
            _ => ok.push(Outcome::Valid),
        }
    }
    ok
}

/// Messages whose parse+validate outcome is known not to match the expectation (strict or
/// lenient column), with the reason (docs/adr/0001-sip-stack.md). Empty today; if a listed
/// one starts matching, or an unlisted one stops, the test fails so the table is updated.
const EXPECTED_TO_DIFFER: &[(&str, Outcome, &str)] = &[];

/// Lenient passes only (the strict column would want 400/406): listed so a change shows up.
const LENIENT_ONLY: &[(&str, &str)] = &[(
    "badaspec",
    "spaces inside <addr-spec> are trimmed (RFC 4475 allows ignoring them)",
)];

#[test]
fn rfc4475_torture_messages_at_parse_and_validate_level() {
    let exp = expectations();
    let mut matched = 0;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (name, bytes) in kit_messages() {
        let (class, expect, lenient) = exp
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing from expectations.tsv"));
        let got = outcome(&bytes);
        let ok = acceptable(expect, lenient).contains(&got);
        let strict = acceptable(expect, "-").contains(&got);
        let listed_lenient = LENIENT_ONLY.iter().any(|(n, _)| *n == name);
        if ok && strict == listed_lenient {
            failures.push(format!(
                "{name}: strict={strict}, but LENIENT_ONLY says {listed_lenient}"
            ));
        }
        report.push(format!("{name:12} {class:16} {expect:14} {got:?}"));
        match (ok, EXPECTED_TO_DIFFER.iter().find(|(n, _, _)| *n == name)) {
            (true, None) => matched += 1,
            (true, Some(_)) => {
                failures.push(format!("{name}: listed as differing but now matches ({got:?})"))
            }
            (false, Some((_, o, _))) if *o == got => {}
            (false, Some((_, o, _))) => failures.push(format!("{name}: listed as {o:?}, got {got:?}")),
            (false, None) => failures.push(format!(
                "{name}: expected {expect} (lenient {lenient}), got {got:?}"
            )),
        }
        // valid-class messages must parse
        if class == "valid" {
            assert!(got != Outcome::Rejected, "{name} is valid and must parse");
        }
    }
    println!("{}", report.join("\n"));
    println!(
        "rfc4475 parse+validate: {matched}/49 as expected ({} of them lenient only: {:?}), {} listed as differing",
        LENIENT_ONLY.len(),
        LENIENT_ONLY.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        EXPECTED_TO_DIFFER.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(matched + EXPECTED_TO_DIFFER.len(), 49);
}

#[test]
fn torture_details_the_registrar_relies_on() {
    let msgs: BTreeMap<String, Vec<u8>> = kit_messages().into_iter().collect();
    let req = |n: &str| match parse(&msgs[n]) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{n}: {other:?}"),
    };
    // semiuri: the user part keeps ';par=u%40example.net'
    assert_eq!(
        req("semiuri").uri.user.as_deref(),
        Some("user;par=u%40example.net")
    );
    // escnull: two contacts, %00 not truncating anything
    assert_eq!(req("escnull").contacts().unwrap().len(), 2);
    // dblreq: the trailing INVITE is not part of the body
    assert!(req("dblreq").body.is_empty());
    // esc02: RE%47IST%45R is an extension method, not REGISTER
    assert!(matches!(req("esc02").method, Method::Extension(_)));
    // cparam01: unknownparam is a contact param; cparam02: a URI param
    let contact = |n: &str| match req(n).contacts().unwrap().remove(0) {
        Contact::Addr(a) => a,
        Contact::Star => panic!("star"),
    };
    assert!(contact("cparam01").params.contains("unknownparam"));
    assert!(contact("cparam02").uri.params.contains("unknownparam"));
    // regescrt: the escaped Route stays in the bound URI
    assert_eq!(contact("regescrt").uri.headers.len(), 1);
    // mpart01: binary body intact
    let m = req("mpart01");
    assert_eq!(
        m.content_length().unwrap().map(|n| n as usize),
        Some(m.body.len())
    );
    // transports: odd transports in lower Vias are fine
    assert!(req("transports")
        .vias()
        .unwrap()
        .iter()
        .any(|v| v.transport == "UNKNOWN"));
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = b"\r\n \t:;,<>\"\\@?&=%/[]*0-9SIP/2.0\x00\xff\xc3";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(6) {
            0 => b.truncate(rng.below(len + 1)),
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                b.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let j = (i + rng.below(64)).min(len);
                b.drain(i..j);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let j = (i + rng.below(128)).min(len);
                let chunk = b[i..j].to_vec();
                let at = rng.below(b.len() + 1);
                b.splice(at..at, chunk);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                b[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            _ => {}
        }
    }
    b
}

/// Every accessor, validation and response building on whatever parses.
fn exercise(bytes: &[u8]) {
    let source = std::net::SocketAddr::from(([192, 0, 2, 1], 5060));
    if let Ok(msg) = parse(bytes) {
        let _ = msg.to_bytes();
        if let SipMessage::Request(r) = msg {
            let _ = validate(&r);
            let _ = (r.vias(), r.from(), r.to(), r.call_id(), r.cseq(), r.contacts());
            let _ = (
                r.expires(),
                r.max_forwards(),
                r.content_length(),
                r.uri.user_host(),
            );
            let resp = SipResponse::for_request(&r, 400, "Bad Request", source).with_to_tag("t");
            let _ = parse(&resp.to_bytes());
        }
    }
}

#[test]
fn parse_never_panics_on_torture_messages_and_mutations() {
    let msgs = kit_messages();
    for (_, bytes) in &msgs {
        exercise(bytes);
        for cut in (0..bytes.len()).step_by(7) {
            exercise(&bytes[..cut]);
        }
    }
    let mut rng = Rng(0x5eed_4475_3261_0001);
    for _ in 0..10_000 {
        let (_, base) = &msgs[rng.below(msgs.len())];
        exercise(&mutate(&mut rng, base));
    }
}
