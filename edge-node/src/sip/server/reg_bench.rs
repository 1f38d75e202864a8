//! CPU-per-registration harness (issue 3, load test (a)): the sipp `reg_auth` exchange,
//! REGISTER → 401, REGISTER with credentials → 200, through the real UDP server, dispatch,
//! registrar and `MemoryLiveState`, on a single-threaded runtime so that instruction counts
//! are repeatable. Not a test: run it under callgrind (see load-tests/register/README.md):
//!
//! ```text
//! cargo test --release -p pbx-edge-node --lib reg_bench -- --ignored --exact sip::server::reg_bench::reg_auth_pairs
//! REG_BENCH_N=2000 valgrind --tool=callgrind <test binary> --ignored --exact sip::server::reg_bench::reg_auth_pairs
//! ```
//!
//! The phone's side (formatting requests, MD5 of the answer) is kept to plain string work so
//! that its share of the count does not move when the server's parser changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sip::auth::{compute_response, DigestAlgorithm, DigestConfig, LockoutPolicy, ResponseInput};
use crate::sip::registrar::handler::EdgeSipHandler;
use crate::sip::registrar::{Registrar, RegistrarConfig};
use crate::sync::snapshots::SnapshotStore;
use pbx_contract::{ExtensionConfig, ExtensionId, Plan, Secret, TenantId, TenantSnapshot, TenantState};
use pbx_engines::live::{LiveState, MemoryLiveState};

const DOMAIN: &str = "bench.example.test";
const USERS: usize = 100;

fn password(user: usize) -> String {
    format!("pw-{user}-s3cret")
}

/// What the production `Dispatch` does for REGISTER.
struct Edge(EdgeSipHandler);

#[async_trait::async_trait]
impl RequestHandler for Edge {
    async fn handle(&self, request: SipRequest, inbound: Inbound, _tx: ServerTx) -> Option<SipResponse> {
        Some(
            self.0
                .handle(request, inbound.source, inbound.transport.as_str())
                .await,
        )
    }
}

fn handler() -> Edge {
    let store = SnapshotStore::new();
    store.apply_snapshot(TenantSnapshot {
        tenant_id: TenantId::new(),
        slug: "bench".to_owned(),
        fqdn: DOMAIN.to_owned(),
        plan: Plan::Enterprise,
        state: TenantState::Active,
        features: Plan::Enterprise.features(),
        version: 1,
        extensions: (0..USERS)
            .map(|u| ExtensionConfig {
                id: ExtensionId::new(),
                number: format!("{}", 1000 + u),
                display_name: format!("Ext {u}"),
                email: None,
                sip_secret: Secret::new(password(u)),
                recording: Default::default(),
                ring_timeout_secs: 30,
            })
            .collect(),
        queues: Vec::new(),
        prompts: Vec::new(),
        queue_options: Default::default(),
        certificate: None,
        ring_groups: Vec::new(),
        ivrs: Vec::new(),
        schedules: Vec::new(),
        domains: Vec::new(),
        platform_certificate: None,
    });
    let live: Arc<dyn LiveState> = Arc::new(MemoryLiveState::new());
    let registrar = Registrar::new(
        store.clone(),
        live,
        b"bench nonce key",
        // `pbx up --sip-digest md5`, as load-tests/register/run.sh starts it
        DigestConfig {
            algorithms: vec![DigestAlgorithm::Md5],
            ..DigestConfig::default()
        },
        LockoutPolicy::default(),
        RegistrarConfig::default(),
    );
    Edge(EdgeSipHandler::new(Arc::new(registrar), store))
}

/// A REGISTER as sipp's `reg_auth` sends it (load-tests/register uses the anchor's scenario).
fn register(i: usize, cseq: u32, phone: SocketAddr, auth: Option<&str>) -> Vec<u8> {
    let user = 1000 + i % USERS;
    let port = phone.port();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{i}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@{DOMAIN}>;tag={i}SIPpTag00{cseq}\r\n\
         To: <sip:{user}@{DOMAIN}>\r\n\
         Call-ID: {i}-reg@127.0.0.1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:{port}>\r\n\
         Expires: 3600\r\n\
         {auth}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `name="value"` out of a challenge.
fn param<'a>(challenge: &'a str, name: &str) -> &'a str {
    let start = challenge.find(&format!("{name}=\"")).expect("param") + name.len() + 2;
    let len = challenge[start..].find('"').expect("closing quote");
    &challenge[start..start + len]
}

fn answer(response: &str, i: usize) -> String {
    let user = format!("{}", 1000 + i % USERS);
    let challenge = response
        .split("\r\n")
        .find(|l| l.starts_with("WWW-Authenticate:") && l.contains("algorithm=MD5"))
        .expect("an MD5 challenge");
    let (nonce, opaque) = (param(challenge, "nonce"), param(challenge, "opaque"));
    let uri = format!("sip:{DOMAIN}");
    let response = compute_response(&ResponseInput {
        algorithm: DigestAlgorithm::Md5,
        username: &user,
        realm: DOMAIN,
        password: &password(i % USERS),
        method: "REGISTER",
        uri: &uri,
        nonce,
        qop_auth: Some(("00000001", "6b8b4567")),
    });
    format!(
        "Digest username=\"{user}\",realm=\"{DOMAIN}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{response}\",\
         algorithm=MD5,cnonce=\"6b8b4567\",qop=auth,nc=00000001,opaque=\"{opaque}\""
    )
}

#[tokio::test]
#[ignore = "a benchmark harness, run under callgrind"]
async fn reg_auth_pairs() {
    let n: usize = std::env::var("REG_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let config = SipServerConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..SipServerConfig::default()
    };
    let server = SipServer::start(config, Arc::new(handler())).await.unwrap();
    let to = server.local_udp().unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = phone.local_addr().unwrap();
    let mut buf = vec![0u8; 65_536];
    for i in 0..n {
        phone.send_to(&register(i, 1, me, None), to).await.unwrap();
        let len = phone.recv(&mut buf).await.unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("SIP/2.0 401 "), "{text}");
        let auth = answer(text, i);
        phone.send_to(&register(i, 2, me, Some(&auth)), to).await.unwrap();
        let len = phone.recv(&mut buf).await.unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("SIP/2.0 200 "), "{text}");
    }
    server.shutdown().await;
}
