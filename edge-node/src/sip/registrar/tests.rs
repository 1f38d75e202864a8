use super::handler::EdgeSipHandler;
use super::*;
use crate::sip::auth::{compute_response, DigestAlgorithm, ResponseInput};
use crate::sip::message::{parse, SipMessage};
use pbx_contract::{ExtensionConfig, ExtensionId, Plan, Secret, TenantState};
use pbx_engines::live::MemoryLiveState;

const A: &str = "alpha.example.test";
const B: &str = "beta.example.test";
const PASS_A: &str = "Secr3t-pass";
const PASS_B: &str = "Other-S3cret";

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn src() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 7], 40_123))
}

fn tenant(fqdn: &str, secret: &str) -> TenantSnapshot {
    TenantSnapshot {
        tenant_id: TenantId::new(),
        slug: fqdn.split('.').next().unwrap_or("x").to_owned(),
        fqdn: fqdn.to_owned(),
        plan: Plan::Enterprise,
        state: TenantState::Active,
        features: Plan::Enterprise.features(),
        version: 1,
        extensions: vec![ExtensionConfig {
            id: ExtensionId::new(),
            number: "100".to_owned(),
            display_name: "Ext 100".to_owned(),
            email: None,
            sip_secret: Secret::new(secret),
            recording: Default::default(),
            ring_timeout_secs: 30,
        }],
        queues: Vec::new(),
        prompts: Vec::new(),
        queue_options: Default::default(),
        certificate: None,
        ring_groups: Vec::new(),
        ivrs: Vec::new(),
        schedules: Vec::new(),
        domains: Vec::new(),
        platform_certificate: None,
    }
}

struct Fx {
    reg: Arc<Registrar>,
    store: SnapshotStore,
    a: TenantId,
    b: TenantId,
}

fn fixture() -> Fx {
    let store = SnapshotStore::new();
    let ta = tenant(A, PASS_A);
    let tb = tenant(B, PASS_B);
    let (a, b) = (ta.tenant_id, tb.tenant_id);
    store.apply_snapshot(ta);
    store.apply_snapshot(tb);
    let live: Arc<dyn LiveState> = Arc::new(MemoryLiveState::new());
    let reg = Registrar::new(
        store.clone(),
        live,
        b"registrar test key",
        DigestConfig::default(),
        LockoutPolicy::default(),
        RegistrarConfig::default(),
    );
    Fx {
        reg: Arc::new(reg),
        store,
        a,
        b,
    }
}

/// A REGISTER as raw text. `ruri_host` is the Request-URI host, `aor_host` the To host.
struct Req<'a> {
    ruri_host: &'a str,
    aor_host: &'a str,
    user: &'a str,
    call_id: &'a str,
    cseq: u32,
    contacts: Vec<String>,
    expires: Option<u32>,
    auth: Option<String>,
}

impl<'a> Req<'a> {
    fn new(host: &'a str, cseq: u32) -> Self {
        Self {
            ruri_host: host,
            aor_host: host,
            user: "100",
            call_id: "call-1@phone",
            cseq,
            contacts: vec!["<sip:100@192.168.1.20:5060>".to_owned()],
            expires: None,
            auth: None,
        }
    }
    fn build(&self) -> SipRequest {
        let mut s = format!(
            "REGISTER sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-{}-{};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{}@{}>;tag=ft1\r\nTo: <sip:{}@{}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n\
             User-Agent: TestPhone/1.0\r\n",
            self.ruri_host, self.call_id, self.cseq, self.user, self.aor_host, self.user, self.aor_host, self.call_id, self.cseq
        );
        for c in &self.contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        if let Some(a) = &self.auth {
            s.push_str(&format!("Authorization: {a}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        request(&s)
    }
}

fn request(raw: &str) -> SipRequest {
    match parse(raw.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn param(challenge: &str, name: &str) -> String {
    let start = challenge
        .find(&format!("{name}=\""))
        .map(|i| i + name.len() + 2)
        .expect("param present");
    let end = challenge[start..].find('"').expect("closing quote") + start;
    challenge[start..end].to_owned()
}

fn challenges(resp: &SipResponse) -> Vec<String> {
    resp.headers
        .get_all("WWW-Authenticate")
        .map(str::to_owned)
        .collect()
}

/// What a phone sends back for `challenge`.
fn answer(challenge: &str, alg: DigestAlgorithm, user: &str, pass: &str, realm: &str, nc: u32) -> String {
    let nonce = param(challenge, "nonce");
    let opaque = param(challenge, "opaque");
    let uri = format!("sip:{realm}");
    let nc = format!("{nc:08x}");
    let response = compute_response(&ResponseInput {
        algorithm: alg,
        username: user,
        realm,
        password: pass,
        method: "REGISTER",
        uri: &uri,
        nonce: &nonce,
        qop_auth: Some((&nc, "c0ffee12")),
    });
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", \
         algorithm={alg}, cnonce=\"c0ffee12\", qop=auth, nc={nc}, opaque=\"{opaque}\""
    )
}

/// First challenge for `host`, at `now`.
async fn first_challenge(fx: &Fx, host: &str, now: SystemTime) -> String {
    let resp = fx
        .reg
        .register(&Req::new(host, 1).build(), src(), "udp", now)
        .await;
    assert_eq!(resp.status, 401);
    challenges(&resp).into_iter().next().expect("a challenge")
}

/// Registers `req` with the right credentials (fresh challenge, MD5).
async fn register_ok(fx: &Fx, mut req: Req<'_>, now: SystemTime) -> SipResponse {
    let ch = first_challenge(fx, req.ruri_host, now).await;
    let pass = if req.ruri_host == A { PASS_A } else { PASS_B };
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", pass, req.ruri_host, 1));
    fx.reg.register(&req.build(), src(), "udp", now).await
}

fn contacts(resp: &SipResponse) -> Vec<String> {
    resp.headers.get_all("Contact").map(str::to_owned).collect()
}

#[tokio::test]
async fn no_auth_gets_two_challenges_sha256_first() {
    let fx = fixture();
    let resp = fx.reg.register(&Req::new(A, 1).build(), src(), "udp", t(0)).await;
    assert_eq!(resp.status, 401);
    let ch = challenges(&resp);
    assert_eq!(ch.len(), 2);
    assert!(ch[0].contains("algorithm=SHA-256"), "{}", ch[0]);
    assert!(ch[1].contains("algorithm=MD5"), "{}", ch[1]);
    assert!(ch.iter().all(|c| c.contains("realm=\"alpha.example.test\"")));
    assert!(resp.to().expect("To").tag().is_some());
    assert_eq!(fx.reg.stats().auth_challenges, 1);
}

#[tokio::test]
async fn md5_and_sha256_register() {
    for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
        let fx = fixture();
        let ch = first_challenge(&fx, A, t(0)).await;
        let mut req = Req::new(A, 2);
        req.auth = Some(answer(&ch, alg, "100", PASS_A, A, 1));
        let resp = fx.reg.register(&req.build(), src(), "udp", t(1)).await;
        assert_eq!(resp.status, 200, "{alg}");
        assert_eq!(
            contacts(&resp),
            vec!["<sip:100@192.168.1.20:5060>;expires=3600".to_owned()]
        );
        assert!(resp.header("Date").is_some());
        assert!(resp.to().expect("To").tag().is_some());
        assert_eq!(fx.reg.stats().registrations_ok, 1);
    }
}

#[tokio::test]
async fn binding_records_public_source_and_transport() {
    let fx = fixture();
    let resp = register_ok(&fx, Req::new(A, 2), t(0)).await;
    assert_eq!(resp.status, 200);
    let b = fx.reg.bindings(fx.a, "100").await.expect("bindings");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contact, "sip:100@192.168.1.20:5060");
    assert_eq!(b[0].source, src());
    assert_eq!(b[0].transport, "udp");
    assert_eq!(b[0].cseq, 2);
    assert_eq!(b[0].call_id, "call-1@phone");
    assert_eq!(b[0].user_agent.as_deref(), Some("TestPhone/1.0"));
    assert_eq!(b[0].expires_at_ms, unix_ms(t(0)) + 3_600_000);
}

#[tokio::test]
async fn wrong_password_locks_on_fifth_then_expires() {
    let fx = fixture();
    let mut last_ch = first_challenge(&fx, A, t(0)).await;
    for i in 1..=5 {
        let mut req = Req::new(A, 1 + i);
        req.auth = Some(answer(&last_ch, DigestAlgorithm::Md5, "100", "wrong", A, 1));
        let resp = fx.reg.register(&req.build(), src(), "udp", t(1)).await;
        if i < 5 {
            assert_eq!(resp.status, 401, "attempt {i}");
            last_ch = challenges(&resp).into_iter().next().expect("fresh challenge");
        } else {
            assert_eq!(resp.status, 403, "attempt {i}");
        }
    }
    let events = fx.reg.take_lock_events();
    assert!(
        matches!(&events[..], [LockEvent::AccountLocked { account, .. }] if account.extension == "100" && account.tenant == fx.a),
        "{events:?}"
    );
    assert!(fx.reg.take_lock_events().is_empty());
    let stats = fx.reg.stats();
    assert_eq!(stats.auth_failures, 5);
    assert_eq!(stats.locks_started, 1);

    // Right password while locked: 403, no challenge.
    let mut req = Req::new(A, 10);
    req.auth = Some(answer(&last_ch, DigestAlgorithm::Md5, "100", PASS_A, A, 1));
    let resp = fx.reg.register(&req.build(), src(), "udp", t(2)).await;
    assert_eq!(resp.status, 403);
    assert!(challenges(&resp).is_empty());
    let resp = fx
        .reg
        .register(&Req::new(A, 11).build(), src(), "udp", t(3))
        .await;
    assert_eq!(resp.status, 403);

    // After the lock (300 s from t(1)), the right password works.
    let later = t(1 + 301);
    let resp = register_ok(&fx, Req::new(A, 12), later).await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let fx = fixture();
    // Tenant B's secret does not register A's 100, nor A's secret B's 100.
    let ch = first_challenge(&fx, A, t(0)).await;
    let mut req = Req::new(A, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_B, A, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        401
    );
    let ch = first_challenge(&fx, B, t(0)).await;
    let mut req = Req::new(B, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, B, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        401
    );
    // A nonce issued for A's realm is useless for B.
    let ch_a = first_challenge(&fx, A, t(0)).await;
    let mut req = Req::new(B, 3);
    req.auth = Some(answer(&ch_a, DigestAlgorithm::Md5, "100", PASS_B, B, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        401
    );

    assert_eq!(register_ok(&fx, Req::new(A, 5), t(1)).await.status, 200);
    assert_eq!(fx.reg.bindings(fx.a, "100").await.expect("a").len(), 1);
    assert!(fx.reg.bindings(fx.b, "100").await.expect("b").is_empty());
}

#[tokio::test]
async fn unknown_domain_and_foreign_aor_are_forbidden() {
    let fx = fixture();
    let resp = fx
        .reg
        .register(&Req::new("nobody.example.test", 1).build(), src(), "udp", t(0))
        .await;
    assert_eq!(resp.status, 403);
    let mut req = Req::new(A, 1);
    req.aor_host = B;
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        403
    );
    // Case-insensitive domain.
    let resp = fx
        .reg
        .register(&Req::new("ALPHA.Example.Test", 1).build(), src(), "udp", t(0))
        .await;
    assert_eq!(resp.status, 401);
}

#[tokio::test]
async fn suspended_tenant_is_forbidden() {
    let fx = fixture();
    let mut snap = (*fx.store.get(fx.a).expect("a")).clone();
    snap.state = TenantState::Suspended;
    fx.store.apply_snapshot(snap);
    let resp = fx.reg.register(&Req::new(A, 1).build(), src(), "udp", t(0)).await;
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn unknown_extension_is_challenged_then_fails() {
    let fx = fixture();
    let mut req = Req::new(A, 1);
    req.user = "999";
    let resp = fx.reg.register(&req.build(), src(), "udp", t(0)).await;
    assert_eq!(resp.status, 401);
    let ch = challenges(&resp).into_iter().next().expect("challenge");
    req.cseq = 2;
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "999", PASS_A, A, 1));
    let resp = fx.reg.register(&req.build(), src(), "udp", t(0)).await;
    assert_eq!(resp.status, 401);
    assert_eq!(fx.reg.stats().auth_failures, 1);
}

#[tokio::test]
async fn username_must_match_to_user() {
    let fx = fixture();
    let ch = first_challenge(&fx, A, t(0)).await;
    let mut req = Req::new(A, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "101", PASS_A, A, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        403
    );
}

#[tokio::test]
async fn malformed_authorization_is_400() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.auth = Some("Digest username=".to_owned());
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(0)).await.status,
        400
    );
}

#[tokio::test]
async fn stale_nonce_rechallenges_without_counting() {
    let fx = fixture();
    let ch = first_challenge(&fx, A, t(0)).await;
    let mut req = Req::new(A, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, A, 1));
    let resp = fx.reg.register(&req.build(), src(), "udp", t(301)).await;
    assert_eq!(resp.status, 401);
    let ch = challenges(&resp);
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|c| c.contains("stale=true")));
    assert_eq!(fx.reg.stats().auth_failures, 0);
}

#[tokio::test]
async fn nc_replay_is_rejected() {
    let fx = fixture();
    let ch = first_challenge(&fx, A, t(0)).await;
    let mut req = Req::new(A, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, A, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(1)).await.status,
        200
    );
    req.cseq = 3;
    let resp = fx.reg.register(&req.build(), src(), "udp", t(2)).await;
    assert_eq!(resp.status, 401);
    assert!(challenges(&resp).iter().all(|c| c.contains("stale=true")));
    // nc=2 on the same nonce is fine.
    req.cseq = 4;
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, A, 2));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(3)).await.status,
        200
    );
}

#[tokio::test]
async fn expires_zero_removes_one_binding() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.contacts = vec!["<sip:100@10.0.0.1>".to_owned(), "<sip:100@10.0.0.2>".to_owned()];
    assert_eq!(register_ok(&fx, req, t(0)).await.status, 200);
    let mut req = Req::new(A, 3);
    req.contacts = vec!["<sip:100@10.0.0.1>;expires=0".to_owned()];
    let resp = register_ok(&fx, req, t(1)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        contacts(&resp),
        vec!["<sip:100@10.0.0.2>;expires=3600".to_owned()]
    );
}

#[tokio::test]
async fn star_with_expires_zero_removes_all() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.contacts = vec!["<sip:100@10.0.0.1>".to_owned(), "<sip:100@10.0.0.2>".to_owned()];
    assert_eq!(register_ok(&fx, req, t(0)).await.status, 200);
    // "*" without Expires: 0 is invalid.
    let mut req = Req::new(A, 3);
    req.contacts = vec!["*".to_owned()];
    assert_eq!(register_ok(&fx, req, t(1)).await.status, 400);
    let mut req = Req::new(A, 4);
    req.contacts = vec!["*".to_owned()];
    req.expires = Some(0);
    let resp = register_ok(&fx, req, t(2)).await;
    assert_eq!(resp.status, 200);
    assert!(contacts(&resp).is_empty());
    assert!(fx.reg.bindings(fx.a, "100").await.expect("bindings").is_empty());
}

#[tokio::test]
async fn too_brief_is_423_and_long_is_clamped() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.expires = Some(30);
    let resp = register_ok(&fx, req, t(0)).await;
    assert_eq!(resp.status, 423);
    assert_eq!(resp.header("Min-Expires"), Some("60"));
    let mut req = Req::new(A, 3);
    req.contacts = vec!["<sip:100@10.0.0.1>;expires=99999".to_owned()];
    req.expires = Some(120);
    let resp = register_ok(&fx, req, t(1)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        contacts(&resp),
        vec!["<sip:100@10.0.0.1>;expires=3600".to_owned()]
    );
    let mut req = Req::new(A, 4);
    req.contacts = vec!["<sip:100@10.0.0.2>".to_owned()];
    req.expires = Some(120);
    let resp = register_ok(&fx, req, t(2)).await;
    assert!(contacts(&resp).contains(&"<sip:100@10.0.0.2>;expires=120".to_owned()));
}

#[tokio::test]
async fn three_contacts_three_bindings() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.contacts = vec![
        "<sip:100@10.0.0.1>;expires=600".to_owned(),
        "<sip:100@10.0.0.2>, <sip:100@10.0.0.3>;expires=900".to_owned(),
    ];
    req.expires = Some(1200);
    let resp = register_ok(&fx, req, t(0)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        contacts(&resp),
        vec![
            "<sip:100@10.0.0.1>;expires=600".to_owned(),
            "<sip:100@10.0.0.2>;expires=1200".to_owned(),
            "<sip:100@10.0.0.3>;expires=900".to_owned(),
        ]
    );
    assert_eq!(fx.reg.bindings(fx.a, "100").await.expect("bindings").len(), 3);
}

#[tokio::test]
async fn too_many_contacts_is_403_and_changes_nothing() {
    let fx = fixture();
    let mut req = Req::new(A, 2);
    req.contacts = (0..11).map(|i| format!("<sip:100@10.0.1.{i}>")).collect();
    let resp = register_ok(&fx, req, t(0)).await;
    assert_eq!(resp.status, 403);
    assert!(fx.reg.bindings(fx.a, "100").await.expect("bindings").is_empty());
}

#[tokio::test]
async fn out_of_order_cseq_fails_with_500() {
    let fx = fixture();
    assert_eq!(register_ok(&fx, Req::new(A, 10), t(0)).await.status, 200);
    // Same Call-ID, lower and equal CSeq: aborted, binding unchanged.
    for cseq in [9, 10] {
        let mut req = Req::new(A, cseq);
        req.expires = Some(0);
        assert_eq!(register_ok(&fx, req, t(1)).await.status, 500, "cseq {cseq}");
        assert_eq!(fx.reg.bindings(fx.a, "100").await.expect("b").len(), 1);
    }
    // Another Call-ID may update it whatever its CSeq.
    let mut req = Req::new(A, 1);
    req.call_id = "other@phone";
    req.expires = Some(0);
    assert_eq!(register_ok(&fx, req, t(2)).await.status, 200);
    assert!(fx.reg.bindings(fx.a, "100").await.expect("b").is_empty());
}

#[tokio::test]
async fn query_without_contact_lists_bindings() {
    let fx = fixture();
    assert_eq!(register_ok(&fx, Req::new(A, 2), t(0)).await.status, 200);
    let mut req = Req::new(A, 3);
    req.contacts.clear();
    let resp = register_ok(&fx, req, t(1)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(contacts(&resp).len(), 1);
}

fn handler(fx: &Fx) -> EdgeSipHandler {
    EdgeSipHandler::new(Arc::clone(&fx.reg), fx.store.clone())
}

fn simple(method: &str, host: &str) -> SipRequest {
    request(&format!(
        "{method} sip:100@{host} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-h1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:200@{host}>;tag=f1\r\nTo: <sip:100@{host}>\r\nCall-ID: h1@phone\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ))
}

#[tokio::test]
async fn handler_answers_options_invite_and_unknown_methods() {
    let fx = fixture();
    let h = handler(&fx);
    let resp = h.handle(simple("OPTIONS", A), src(), "udp").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("Allow"),
        Some("REGISTER, OPTIONS, INVITE, ACK, BYE, CANCEL, INFO")
    );
    assert_eq!(resp.header("Accept"), Some("application/sdp"));

    assert_eq!(
        h.handle(simple("INVITE", "nobody.example.test"), src(), "udp")
            .await
            .status,
        404
    );
    let resp = h.handle(simple("INVITE", A), src(), "udp").await;
    assert_eq!(resp.status, 480);
    assert!(resp
        .header("Warning")
        .is_some_and(|w| w.contains("calls are not served here")));

    let resp = h.handle(simple("NEWMETHOD", A), src(), "udp").await;
    assert_eq!(resp.status, 501);
    assert!(resp.header("Allow").is_some());
    let resp = h.handle(simple("SUBSCRIBE", A), src(), "udp").await;
    assert_eq!(resp.status, 405);
    assert!(resp.header("Allow").is_some());
    assert_eq!(h.handle(simple("BYE", A), src(), "udp").await.status, 481);
    assert!(!EdgeSipHandler::answers(&simple("ACK", A).method));

    // REGISTER goes to the registrar.
    let resp = h.handle(Req::new(A, 1).build(), src(), "tcp").await;
    assert_eq!(resp.status, 401);
}

/// `simple` with extra header lines and a body (Content-Length follows the body).
fn with_headers(method: &str, uri: &str, extra: &str, body: &str) -> SipRequest {
    let host = A;
    request(&format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-h2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:200@{host}>;tag=f1\r\nTo: <sip:100@{host}>\r\nCall-ID: h2@phone\r\n\
         CSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// RFC 3261 §8.2.2.1, §8.2.2.3, §8.2.3 and §21.4.7 (RFC 4475 unkscm, bext01, invut, sdp01).
#[tokio::test]
async fn handler_checks_scheme_require_and_content() {
    let fx = fixture();
    let h = handler(&fx);
    let uri = format!("sip:100@{A}");

    let resp = h
        .handle(
            with_headers("OPTIONS", "nobodyKnowsThisScheme:opaque", "", ""),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 416);

    let resp = h
        .handle(
            with_headers("OPTIONS", &uri, "Require: foo, bar\r\nRequire: baz\r\n", ""),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 420);
    assert_eq!(resp.header("Unsupported"), Some("foo, bar, baz"));
    // Proxy-Require is for proxies; CANCEL ignores Require
    let resp = h
        .handle(
            with_headers("OPTIONS", &uri, "Proxy-Require: foo\r\n", ""),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 200);
    let resp = h
        .handle(with_headers("CANCEL", &uri, "Require: foo\r\n", ""), src(), "udp")
        .await;
    assert_eq!(resp.status, 481);

    let sdp = "v=0\r\n";
    let resp = h
        .handle(
            with_headers("INVITE", &uri, "Content-Type: application/unknownformat\r\n", sdp),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 415);
    assert_eq!(resp.header("Accept"), Some("application/sdp"));
    let resp = h
        .handle(
            with_headers(
                "INVITE",
                &uri,
                "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
                sdp,
            ),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 415);
    let resp = h
        .handle(
            with_headers(
                "INVITE",
                &uri,
                "Accept: text/nobodyKnowsThis\r\nContent-Type: application/sdp\r\n",
                sdp,
            ),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 406);
    // a readable SDP offer, and an Accept that allows SDP, reach the normal answer
    let resp = h
        .handle(
            with_headers(
                "INVITE",
                &uri,
                "Accept: application/*;q=0.5\r\nContent-Type: Application/SDP\r\n",
                sdp,
            ),
            src(),
            "udp",
        )
        .await;
    assert_eq!(resp.status, 480);
}

struct Refuse;

#[async_trait::async_trait]
impl crate::sip::server::RequestHandler for Refuse {
    async fn handle(
        &self,
        request: SipRequest,
        inbound: crate::sip::server::Inbound,
        _tx: crate::sip::server::ServerTx,
    ) -> Option<SipResponse> {
        Some(SipResponse::for_request(&request, 500, "Test", inbound.source))
    }
}

#[tokio::test]
async fn keepalives_ping_udp_phones_and_mark_silent_ones_unreachable() {
    use crate::sip::keepalive::{ping_all, KeepAliveStats};
    use crate::sip::server::{SipServer, SipServerConfig};
    use crate::sip::transaction::Timers;
    use std::sync::atomic::Ordering;

    let fx = fixture();
    let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_addr = phone.local_addr().unwrap();
    let now = SystemTime::now();
    let register = |cseq| {
        let fx = &fx;
        async move {
            let ch = first_challenge(fx, A, now).await;
            let mut req = Req::new(A, cseq);
            req.contacts = vec![format!("<sip:100@{phone_addr}>")];
            req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, A, 1));
            fx.reg.register(&req.build(), phone_addr, "udp", now).await
        }
    };
    assert_eq!(register(2).await.status, 200);

    let fast = Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        t4: Duration::from_millis(80),
    };
    let server = SipServer::start(
        SipServerConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            timers: fast,
            ..SipServerConfig::default()
        },
        Arc::new(Refuse),
    )
    .await
    .unwrap();
    let client = server.client();
    let stats = Arc::new(KeepAliveStats::default());

    // Round 1: the phone answers the OPTIONS sent to its registered address.
    assert_eq!(ping_all(&fx.reg, &client, &stats).await, 1);
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), phone.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        from,
        server.local_udp().unwrap(),
        "sent from the port the phone registered to"
    );
    let ping = request(std::str::from_utf8(&buf[..n]).unwrap());
    assert_eq!(ping.method, crate::sip::message::Method::Options);
    assert_eq!(ping.uri.as_str(), format!("sip:100@{phone_addr}"));
    let ok = SipResponse::for_request(&ping, 200, "OK", from).with_to_tag("p");
    phone.send_to(&ok.to_bytes(), from).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while stats.answered.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "the answer never counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fx.reg.is_reachable(phone_addr));

    // Round 2: the phone stays silent; after Timer F (64*T1) it is unreachable.
    assert_eq!(ping_all(&fx.reg, &client, &stats).await, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stats.timed_out.load(Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "no timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!fx.reg.is_reachable(phone_addr));

    // Registering again makes it reachable at once.
    assert_eq!(register(3).await.status, 200);
    assert!(fx.reg.is_reachable(phone_addr));
    server.shutdown().await;
}

#[tokio::test]
async fn a_verified_custom_domain_selects_the_tenant_and_is_the_realm() {
    const CUSTOM: &str = "pbx.customer.test";
    let fx = fixture();
    // Not in the snapshot (pending, or never added): not ours.
    let resp = fx
        .reg
        .register(&Req::new(CUSTOM, 1).build(), src(), "udp", t(0))
        .await;
    assert_eq!(resp.status, 403);
    // Verified: the control plane lists it in the tenant's snapshot.
    let mut snap = (*fx.store.get(fx.a).expect("tenant a")).clone();
    snap.domains = vec![pbx_contract::TenantDomain {
        name: CUSTOM.to_owned(),
        certificate: None,
    }];
    snap.version += 1;
    fx.store.apply_snapshot(snap.clone());
    let ch = first_challenge(&fx, CUSTOM, t(1)).await;
    assert_eq!(param(&ch, "realm"), CUSTOM);
    let mut req = Req::new(CUSTOM, 2);
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, CUSTOM, 1));
    let resp = fx.reg.register(&req.build(), src(), "udp", t(2)).await;
    assert_eq!(resp.status, 200);
    // The binding is tenant a's extension 100, the same as through the FQDN.
    let b = fx.reg.bindings(fx.a, "100").await.expect("bindings");
    assert_eq!(b.len(), 1);
    assert!(fx.reg.bindings(fx.b, "100").await.expect("bindings").is_empty());
    // Tenant b's password does not work there, and the AOR must be in the addressed domain.
    let ch = first_challenge(&fx, CUSTOM, t(3)).await;
    let mut req = Req::new(CUSTOM, 3);
    req.aor_host = B;
    req.auth = Some(answer(&ch, DigestAlgorithm::Md5, "100", PASS_A, CUSTOM, 1));
    assert_eq!(
        fx.reg.register(&req.build(), src(), "udp", t(3)).await.status,
        403
    );
    // Withdrawn (failed or deleted): the domain selects nobody again.
    snap.domains.clear();
    snap.version += 1;
    fx.store.apply_snapshot(snap);
    assert!(fx.store.by_fqdn(CUSTOM).is_none());
    assert_eq!(fx.store.by_fqdn(A).map(|s| s.tenant_id), Some(fx.a));
    let resp = fx
        .reg
        .register(&Req::new(CUSTOM, 4).build(), src(), "udp", t(4))
        .await;
    assert_eq!(resp.status, 403);
}

/// The hand-written IPv4 `source` is what serde writes for a `SocketAddr`, and reads back.
#[test]
fn binding_source_serializes_as_serde_does() {
    for source in [
        "10.1.2.3:5060",
        "255.255.255.255:65535",
        "0.0.0.0:0",
        "[2001:db8::1]:5062",
    ] {
        let source: SocketAddr = source.parse().unwrap();
        let binding = Binding {
            contact: "sip:100@10.1.2.3:5060".to_owned(),
            source,
            transport: "udp".to_owned(),
            expires_at_ms: 1,
            call_id: "c".to_owned(),
            cseq: 2,
            user_agent: None,
        };
        let json = serde_json::to_value(&binding).unwrap();
        assert_eq!(json["source"], serde_json::to_value(source).unwrap());
        let back: Binding = serde_json::from_value(json).unwrap();
        assert_eq!(back, binding);
    }
}
