//! ACME against a real server: Debian's `pebble`, started here. The control plane issues a
//! certificate for a tenant's FQDN, keeps its key sealed, and an in-process edge node serves
//! it on its TLS listener for that SNI; a renewal replaces it without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::acme::{self, AcmeSettings};
use crate::db::{self, certificates as certs, Db};
use crate::testkit::{TestApp, EDGE_TOKEN};
use pbx_contract::{Secret, TenantId};
use pbx_edge_node::sip::service::{SipOptions, SipService};
use pbx_edge_node::sip::tls::{certified_key, self_signed, SniResolver};
use pbx_edge_node::{EdgeConfig, EdgeNode};
use pbx_engines::bus::{Bus, MemoryBus};
use reqwest::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;

const PEBBLE: &str = "/usr/bin/pebble";

struct Pebble {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    directory_url: String,
    /// The certificate of pebble's own HTTPS listener (trusted to talk ACME).
    listener_pem: String,
    /// The root pebble issues under.
    issuing_root_pem: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How pebble validates.
#[derive(Default)]
struct PebbleOptions {
    /// Resolve names at this DNS server (`-dnsserver`).
    dns_server: Option<std::net::SocketAddr>,
    /// Fetch HTTP-01 answers from this port (the control plane's).
    http_port: Option<u16>,
    /// Validate for real (the resolver and the ports above); otherwise every challenge passes.
    validate: bool,
}

/// Starts pebble, or None (test skipped) when it is not installed and not required.
async fn start_pebble() -> Option<Pebble> {
    start_pebble_with(PebbleOptions::default()).await
}

async fn start_pebble_with(opts: PebbleOptions) -> Option<Pebble> {
    let bin = std::env::var("PBX_TEST_PEBBLE").unwrap_or_else(|_| PEBBLE.into());
    if !std::path::Path::new(&bin).exists() {
        if std::env::var_os("PBX_TEST_REQUIRE_PEBBLE").is_some() {
            panic!("pebble not found at {bin} but PBX_TEST_REQUIRE_PEBBLE is set (apt-get install pebble)");
        }
        eprintln!("SKIPPED: pebble not found at {bin} (apt-get install pebble; PBX_TEST_REQUIRE_PEBBLE=1 makes this an error)");
        return None;
    }
    // Debian's pebble ships no certificate for its listener: make one.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let (api, mgmt) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{api}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": dir.path().join("cert.pem"),
        "privateKey": dir.path().join("key.pem"),
        "httpPort": opts.http_port.unwrap_or_else(free_port),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
    let mut command = tokio::process::Command::new(&bin);
    command.arg("-config").arg(dir.path().join("pebble.json"));
    if let Some(dns) = opts.dns_server {
        command.arg("-dnsserver").arg(dns.to_string());
    }
    if !opts.validate {
        command.env("PEBBLE_VA_ALWAYS_VALID", "1");
    }
    let child = command
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::crypto::install_crypto_provider();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap();
    let directory_url = format!("https://127.0.0.1:{api}/dir");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(&directory_url).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "pebble did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let root = http
        .get(format!("https://127.0.0.1:{mgmt}/roots/0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(root.contains("BEGIN CERTIFICATE"), "pebble root: {root}");
    Some(Pebble {
        _child: child,
        _dir: dir,
        directory_url,
        listener_pem: cert,
        issuing_root_pem: root,
    })
}

/// The leaf a TLS server at `addr` presents for SNI `name`, verified against `root_pem`.
async fn presented_leaf(addr: std::net::SocketAddr, name: &str, root_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .expect("handshake verified against pebble's root");
    let (_, session) = tls.get_ref();
    session.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::on_both_backends!(
    pebble_issues_a_tenant_certificate_the_edge_serves_by_sni,
    |db: Db| async move {
        let Some(pebble) = start_pebble().await else {
            return;
        };
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let app = TestApp::start_with_bus(db, Arc::clone(&bus)).await;
        let settings = AcmeSettings {
            directory_url: pebble.directory_url.clone(),
            contact_email: Some("ops@example.test".into()),
            extra_root_pem: Some(pebble.listener_pem.clone()),
            interval: Duration::from_secs(60),
            challenge: acme::ChallengeKind::Http01,
            wildcard: false,
            dns_listen: None,
        };
        let (tenant_id, admin) = app.tenant_with_admin("acme").await;
        let tenant: TenantId = tenant_id.parse().unwrap();
        let fqdn = "acme.example.test";

        // The control plane answers HTTP-01 from the database, on plain HTTP, without a token.
        {
            let mut c = app.state.db.acquire().await.unwrap();
            certs::challenge_put(&mut c, "tok-123", "tok-123.thumb", db::now_ms() + 60_000)
                .await
                .unwrap();
        }
        let r = reqwest::get(format!("{}/.well-known/acme-challenge/tok-123", app.url))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.text().await.unwrap(), "tok-123.thumb");
        let r = reqwest::get(format!("{}/.well-known/acme-challenge/unknown", app.url))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);

        // An edge with a TLS listener whose default certificate is not the tenant's.
        let edge = EdgeNode::start(
            EdgeConfig {
                node_id: "edge-acme".into(),
                region: "test".into(),
                control_plane_url: app.url.clone(),
                edge_token: Secret::new(EDGE_TOKEN),
            },
            Arc::clone(&bus),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), edge.wait_ready())
            .await
            .unwrap();
        let resolver = Arc::new(SniResolver::new());
        let (chain, key) = self_signed(&["default.invalid".into()]).unwrap();
        resolver.set_default(certified_key(chain.as_bytes(), key.as_bytes()).unwrap());
        let sip = SipService::start(
            SipOptions {
                tls: Some("127.0.0.1:0".parse().unwrap()),
                certificates: Some(Arc::clone(&resolver)),
                keepalive_interval: None,
                ..SipOptions::default()
            },
            edge.store().clone(),
            edge.events().clone(),
            Arc::new(pbx_engines::live::MemoryLiveState::new()),
            &Secret::new(EDGE_TOKEN),
        )
        .await
        .unwrap();
        let tls_addr = sip.server.local_tls().unwrap();
        assert!(
            resolver.lookup(Some(fqdn)).unwrap().cert[0].as_ref() == chain_der(&chain).as_slice(),
            "before issuance the default is served"
        );

        // Issue.
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 1);
        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/certificate", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["state"], "issued", "{}", r.text);
        assert_eq!(r.body["name"], fqdn);
        assert!(
            r.body["issuer"].as_str().unwrap().contains("Pebble"),
            "{}",
            r.text
        );
        let not_after = r.body["not_after_ms"].as_i64().unwrap();
        assert!(not_after > db::now_ms());
        // Renewal is scheduled 30 days before expiry.
        assert_eq!(
            r.body["next_attempt_at_ms"].as_i64().unwrap(),
            not_after - acme::RENEW_BEFORE_MS
        );

        // The key is sealed at rest; the account too.
        let row = {
            let mut c = app.state.db.acquire().await.unwrap();
            certs::get(&mut c, tenant, fqdn).await.unwrap().unwrap()
        };
        let sealed = row.key_sealed.clone().unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("PRIVATE KEY"));
        let key_pem = app
            .state
            .secrets
            .open(&sealed, &certs::key_context(tenant, fqdn))
            .unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));
        {
            let mut c = app.state.db.acquire().await.unwrap();
            let account = certs::account_get(&mut c, &settings.directory_url)
                .await
                .unwrap()
                .unwrap();
            assert!(account.starts_with("v1:") && !account.contains("key_pkcs8"));
        }
        // Nothing left to do: a second pass issues nothing.
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 0);

        // The edge got it through the cfg stream and serves it for the tenant's SNI.
        let first_leaf = chain_der(row.chain_pem.as_deref().unwrap());
        eventually("edge serves the issued certificate", || {
            let resolver = Arc::clone(&resolver);
            let want = first_leaf.clone();
            async move {
                resolver
                    .lookup(Some(fqdn))
                    .is_some_and(|k| k.cert[0].as_ref() == want.as_slice())
            }
        })
        .await;
        let leaf = presented_leaf(tls_addr, fqdn, &pebble.issuing_root_pem).await;
        assert_eq!(leaf, first_leaf);
        assert_eq!(dns_names(&leaf), vec![fqdn.to_owned()]);

        // A renewal replaces it on the running listener.
        {
            let mut c = app.state.db.acquire().await.unwrap();
            assert!(certs::schedule(&mut c, tenant, fqdn, 0).await.unwrap());
        }
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 1);
        let renewed = {
            let mut c = app.state.db.acquire().await.unwrap();
            chain_der(
                certs::get(&mut c, tenant, fqdn)
                    .await
                    .unwrap()
                    .unwrap()
                    .chain_pem
                    .as_deref()
                    .unwrap(),
            )
        };
        assert_ne!(renewed, first_leaf);
        eventually("edge serves the renewed certificate", || {
            let resolver = Arc::clone(&resolver);
            let want = renewed.clone();
            async move {
                resolver
                    .lookup(Some(fqdn))
                    .is_some_and(|k| k.cert[0].as_ref() == want.as_slice())
            }
        })
        .await;
        assert_eq!(
            presented_leaf(tls_addr, fqdn, &pebble.issuing_root_pem).await,
            renewed
        );

        sip.shutdown().await;
        edge.shutdown().await.unwrap();
        app.stop().await;
    }
);

/// The first certificate of a PEM chain, DER.
fn chain_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

crate::on_both_backends!(a_failed_attempt_is_recorded_and_backed_off, |db: Db| async move {
    let app = TestApp::start(db).await;
    let (tenant_id, admin) = app.tenant_with_admin("bravo").await;
    let tenant: TenantId = tenant_id.parse().unwrap();
    // No ACME server listens here.
    let settings = AcmeSettings {
        directory_url: format!("https://127.0.0.1:{}/dir", free_port()),
        contact_email: None,
        extra_root_pem: None,
        interval: Duration::from_secs(60),
        challenge: acme::ChallengeKind::Http01,
        wildcard: false,
        dns_listen: None,
    };
    let before = db::now_ms();
    // The account cannot be created: the pass fails, and the row records why and backs off.
    assert!(acme::run_once(&app.state, &settings).await.is_err());
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/bravo/certificate", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["state"], "failed", "{}", r.text);
    assert_eq!(r.body["attempts"], 1);
    assert!(
        r.body["last_error"].as_str().unwrap().contains("ACME"),
        "{}",
        r.text
    );
    let next = r.body["next_attempt_at_ms"].as_i64().unwrap();
    assert!(next >= before + 60_000, "backed off a minute");
    // Not due yet: the next pass leaves it alone; made due, it fails again and waits longer.
    assert!(acme::run_once(&app.state, &settings).await.is_ok());
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/bravo/certificate", None)
        .await;
    assert_eq!(r.body["attempts"], 1);
    {
        let mut c = app.state.db.acquire().await.unwrap();
        assert!(certs::schedule(&mut c, tenant, "bravo.example.test", 0)
            .await
            .unwrap());
    }
    let again = db::now_ms();
    assert!(acme::run_once(&app.state, &settings).await.is_err());
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/bravo/certificate", None)
        .await;
    assert_eq!(r.body["attempts"], 2);
    assert!(
        r.body["next_attempt_at_ms"].as_i64().unwrap() >= again + 120_000,
        "doubled"
    );
    // Another tenant's certificate is 404 for this admin.
    let r = app
        .call(&admin, Method::GET, "/api/v1/tenants/acme/certificate", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.stop().await;
});

/// The DNS the test world sees (pebble and the CNAME checks ask it): static A and CNAME
/// records the test sets, and `_acme-challenge.*` questions relayed to the control plane's
/// DNS-01 responder, as a delegation would send them.
struct TestDns {
    addr: std::net::SocketAddr,
    records: Arc<std::sync::Mutex<std::collections::HashMap<String, TestRecord>>>,
    /// Every question asked, as `name TYPE`.
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
enum TestRecord {
    A(std::net::Ipv4Addr),
    Cname(String),
}

impl TestDns {
    async fn start(challenge_responder: std::net::SocketAddr) -> Self {
        use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
        use hickory_resolver::proto::rr::{rdata, Name, RData, Record, RecordType};
        let socket = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let records: Arc<std::sync::Mutex<std::collections::HashMap<String, TestRecord>>> = Arc::default();
        let table = Arc::clone(&records);
        let asked: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&asked);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let datagram = buf[..len].to_vec();
                let Some(q) = crate::dns::parse_question(&datagram) else {
                    continue;
                };
                log.lock().unwrap().push(format!("{} {}", q.name, q.record_type));
                if q.is_challenge() {
                    // Relay to the control plane's responder, and its answer back.
                    let socket = Arc::clone(&socket);
                    tokio::spawn(async move {
                        let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        relay.send_to(&datagram, challenge_responder).await.unwrap();
                        let mut rsp = vec![0u8; 4096];
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(Duration::from_secs(5), relay.recv(&mut rsp)).await
                        {
                            let _ = socket.send_to(&rsp[..n], peer).await;
                        }
                    });
                    continue;
                }
                let mut m = Message::new();
                m.set_id(q.request.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(q.request.op_code())
                    .set_recursion_desired(q.request.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true)
                    .set_response_code(ResponseCode::NoError)
                    .add_queries(q.request.queries().to_vec());
                let table = table.lock().unwrap().clone();
                let mut owner = q.request.queries()[0].name().clone();
                let mut name = q.name.clone();
                // Follow CNAMEs (a recursive resolver's answer), at most a few.
                for _ in 0..4 {
                    match table.get(&name) {
                        Some(TestRecord::Cname(target)) => {
                            let target_name = Name::from_ascii(format!("{target}.")).unwrap();
                            m.add_answer(Record::from_rdata(
                                owner.clone(),
                                0,
                                RData::CNAME(rdata::CNAME(target_name.clone())),
                            ));
                            if q.record_type == RecordType::CNAME {
                                break;
                            }
                            owner = target_name;
                            name = target.clone();
                        }
                        Some(TestRecord::A(ip)) => {
                            if q.record_type == RecordType::A {
                                m.add_answer(Record::from_rdata(owner.clone(), 0, RData::A(rdata::A(*ip))));
                            }
                            break;
                        }
                        None => break,
                    }
                }
                let _ = socket.send_to(&m.to_vec().unwrap(), peer).await;
            }
        });
        Self {
            addr,
            records,
            asked,
            task,
        }
    }

    fn was_asked(&self, question: &str) -> bool {
        self.asked.lock().unwrap().iter().any(|q| q == question)
    }

    fn set(&self, name: &str, record: TestRecord) {
        self.records.lock().unwrap().insert(name.to_owned(), record);
    }

    fn remove(&self, name: &str) {
        self.records.lock().unwrap().remove(name);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An in-process edge node with a SIP-TLS listener whose default certificate is nobody's.
struct TlsEdge {
    edge: pbx_edge_node::EdgeNodeHandle,
    sip: SipService,
    resolver: Arc<SniResolver>,
    addr: std::net::SocketAddr,
}

async fn start_tls_edge(app: &TestApp, bus: &Arc<dyn Bus>, node: &str) -> TlsEdge {
    let edge = EdgeNode::start(
        EdgeConfig {
            node_id: node.into(),
            region: "test".into(),
            control_plane_url: app.url.clone(),
            edge_token: Secret::new(EDGE_TOKEN),
        },
        Arc::clone(bus),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), edge.wait_ready())
        .await
        .unwrap();
    let resolver = Arc::new(SniResolver::new());
    let (chain, key) = self_signed(&["default.invalid".into()]).unwrap();
    resolver.set_default(certified_key(chain.as_bytes(), key.as_bytes()).unwrap());
    let sip = SipService::start(
        SipOptions {
            tls: Some("127.0.0.1:0".parse().unwrap()),
            certificates: Some(Arc::clone(&resolver)),
            keepalive_interval: None,
            ..SipOptions::default()
        },
        edge.store().clone(),
        edge.events().clone(),
        Arc::new(pbx_engines::live::MemoryLiveState::new()),
        &Secret::new(EDGE_TOKEN),
    )
    .await
    .unwrap();
    let addr = sip.server.local_tls().unwrap();
    TlsEdge {
        edge,
        sip,
        resolver,
        addr,
    }
}

/// Whether the resolver serves, for `name`, exactly the leaf of `chain_pem`.
fn serves(resolver: &SniResolver, name: &str, chain_pem: &str) -> bool {
    let want = chain_der(chain_pem);
    resolver
        .lookup(Some(name))
        .is_some_and(|k| k.cert[0].as_ref() == want.as_slice())
}

crate::on_both_backends!(
    dns01_wildcard_and_custom_domains_verified_by_cname_against_pebble,
    |db: Db| async move {
        use crate::db::domains as domains_repo;
        use crate::dns::DnsSettings;
        use crate::service::domains;
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let app = TestApp::start_with_bus(db, Arc::clone(&bus)).await;
        let app_port: u16 = url::Url::parse(&app.url).unwrap().port().unwrap();
        // The control plane's DNS-01 responder, and the world's DNS in front of it.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let responder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let responder_addr = responder.local_addr().unwrap();
        tokio::spawn(crate::dns::serve(app.state.clone(), responder, stop_rx));
        let world = TestDns::start(responder_addr).await;
        world.set("acme.example.test", TestRecord::A([127, 0, 0, 1].into()));
        world.set("globex.example.test", TestRecord::A([127, 0, 0, 1].into()));
        // Pebble validates for real: DNS-01 through that DNS, HTTP-01 on the control plane.
        let Some(pebble) = start_pebble_with(PebbleOptions {
            dns_server: Some(world.addr),
            http_port: Some(app_port),
            validate: true,
        })
        .await
        else {
            return;
        };
        let settings = AcmeSettings {
            directory_url: pebble.directory_url.clone(),
            contact_email: Some("ops@example.test".into()),
            extra_root_pem: Some(pebble.listener_pem.clone()),
            interval: Duration::from_secs(60),
            challenge: acme::ChallengeKind::Dns01,
            wildcard: true,
            dns_listen: None,
        };
        let dns_settings = DnsSettings::with_resolver(Some(world.addr));
        let (acme_id, admin) = app.tenant_with_admin("acme").await;
        let (globex_id, globex_admin) = app.tenant_with_admin("globex").await;
        let acme_tenant: TenantId = acme_id.parse().unwrap();
        let globex_tenant: TenantId = globex_id.parse().unwrap();
        let e = start_tls_edge(&app, &bus, "edge-dns01").await;

        // The wildcard, by DNS-01: one certificate for every tenant FQDN.
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 1);
        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/certificate", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["state"], "issued", "{}", r.text);
        assert_eq!(r.body["name"], "*.example.test", "{}", r.text);
        let wildcard = {
            let mut c = app.state.db.acquire().await.unwrap();
            // No per-tenant certificate was ordered.
            assert!(certs::get(&mut c, acme_tenant, "acme.example.test")
                .await
                .unwrap()
                .is_none());
            // The TXT record is withdrawn once validated.
            assert!(certs::dns_records(&mut c, "_acme-challenge.example.test", 0)
                .await
                .unwrap()
                .is_empty());
            certs::get_scoped(&mut c, certs::Scope::Platform, "*.example.test")
                .await
                .unwrap()
                .unwrap()
        };
        let sealed = wildcard.key_sealed.clone().unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("PRIVATE KEY"));
        let wildcard_pem = wildcard.chain_pem.clone().unwrap();
        for fqdn in ["acme.example.test", "globex.example.test"] {
            eventually("the edge serves the wildcard", || {
                let resolver = Arc::clone(&e.resolver);
                let pem = wildcard_pem.clone();
                async move { serves(&resolver, fqdn, &pem) }
            })
            .await;
            let leaf = presented_leaf(e.addr, fqdn, &pebble.issuing_root_pem).await;
            assert_eq!(leaf, chain_der(&wildcard_pem));
            assert_eq!(dns_names(&leaf), vec!["*.example.test".to_owned()]);
        }
        // Pebble did look the challenge up (through the control plane's responder).
        assert!(world.was_asked("_acme-challenge.example.test TXT"));
        // Nothing left to do.
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 0);

        // Custom domains: validated, unique across tenants, never the platform's names.
        let custom = "pbx.customer.test";
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/domains",
                Some(serde_json::json!({"name": "PBX.Customer.test."})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["name"], custom);
        assert_eq!(r.body["state"], "pending");
        assert_eq!(r.body["cname_target"], "acme.example.test");
        let domain_id = r.body["id"].as_str().unwrap().to_owned();
        let r = app
            .call(
                &globex_admin,
                Method::POST,
                "/api/v1/tenants/globex/domains",
                Some(serde_json::json!({"name": custom})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        for platform_name in ["example.test", "globex.example.test", "x.acme.example.test"] {
            let r = app
                .call(
                    &globex_admin,
                    Method::POST,
                    "/api/v1/tenants/globex/domains",
                    Some(serde_json::json!({"name": platform_name})),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{platform_name}: {}",
                r.text
            );
        }
        // Globex claims a name whose CNAME points at acme, not at globex.
        world.set(
            "evil.customer.test",
            TestRecord::Cname("acme.example.test".into()),
        );
        let r = app
            .call(
                &globex_admin,
                Method::POST,
                "/api/v1/tenants/globex/domains",
                Some(serde_json::json!({"name": "evil.customer.test"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let evil_id = r.body["id"].as_str().unwrap().to_owned();

        // No CNAME yet: both stay pending, with the reason, and select nobody.
        assert_eq!(domains::check_once(&app.state, &dns_settings).await.unwrap(), 0);
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/acme/domains/{domain_id}"),
                None,
            )
            .await;
        assert_eq!(r.body["state"], "pending", "{}", r.text);
        assert!(
            r.body["last_error"].as_str().unwrap().contains("no CNAME"),
            "{}",
            r.text
        );
        assert!(r.body["checked_at_ms"].as_i64().is_some());
        let r = app
            .call(
                &globex_admin,
                Method::GET,
                &format!("/api/v1/tenants/globex/domains/{evil_id}"),
                None,
            )
            .await;
        assert_eq!(r.body["state"], "pending", "{}", r.text);
        assert!(
            r.body["last_error"]
                .as_str()
                .unwrap()
                .contains("acme.example.test"),
            "{}",
            r.text
        );
        assert!(e.edge.store().by_fqdn(custom).is_none());
        assert!(e.edge.store().by_fqdn("evil.customer.test").is_none());

        // The CNAME appears: verified at the next check, in the snapshot, then certified.
        world.set(custom, TestRecord::Cname("acme.example.test".into()));
        {
            let mut c = app.state.db.acquire().await.unwrap();
            assert!(domains_repo::schedule(&mut c, acme_tenant, &domain_id, 0)
                .await
                .unwrap());
            assert!(domains_repo::schedule(&mut c, globex_tenant, &evil_id, 0)
                .await
                .unwrap());
        }
        assert_eq!(domains::check_once(&app.state, &dns_settings).await.unwrap(), 1);
        let r = app
            .call(&admin, Method::GET, "/api/v1/tenants/acme/domains", None)
            .await;
        assert_eq!(r.body["domains"][0]["state"], "verified", "{}", r.text);
        assert!(r.body["domains"][0]["verified_at_ms"].as_i64().is_some());
        eventually("the verified domain selects the tenant at the edge", || {
            let store = e.edge.store().clone();
            async move { store.by_fqdn(custom).is_some_and(|t| t.tenant_id == acme_tenant) }
        })
        .await;
        assert!(e.edge.store().by_fqdn("evil.customer.test").is_none());
        // HTTP-01 for the custom domain: pebble resolves it through the CNAME to this
        // control plane and fetches the answer.
        assert_eq!(acme::run_once(&app.state, &settings).await.unwrap(), 1);
        assert!(
            world.was_asked("pbx.customer.test A"),
            "pebble resolved the domain"
        );
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/acme/domains/{domain_id}"),
                None,
            )
            .await;
        assert_eq!(r.body["certificate"]["state"], "issued", "{}", r.text);
        let custom_pem = {
            let mut c = app.state.db.acquire().await.unwrap();
            assert!(certs::get(&mut c, globex_tenant, "evil.customer.test")
                .await
                .unwrap()
                .is_none());
            certs::get(&mut c, acme_tenant, custom)
                .await
                .unwrap()
                .unwrap()
                .chain_pem
                .unwrap()
        };
        eventually("the edge serves the custom domain's certificate", || {
            let resolver = Arc::clone(&e.resolver);
            let pem = custom_pem.clone();
            async move { serves(&resolver, custom, &pem) }
        })
        .await;
        let leaf = presented_leaf(e.addr, custom, &pebble.issuing_root_pem).await;
        assert_eq!(dns_names(&leaf), vec![custom.to_owned()]);
        // The FQDN keeps the wildcard.
        assert!(serves(&e.resolver, "acme.example.test", &wildcard_pem));

        // The CNAME goes away: failed, dropped by the edge with its certificate.
        world.remove(custom);
        {
            let mut c = app.state.db.acquire().await.unwrap();
            assert!(domains_repo::schedule(&mut c, acme_tenant, &domain_id, 0)
                .await
                .unwrap());
        }
        assert_eq!(domains::check_once(&app.state, &dns_settings).await.unwrap(), 1);
        let r = app
            .call(
                &admin,
                Method::GET,
                &format!("/api/v1/tenants/acme/domains/{domain_id}"),
                None,
            )
            .await;
        assert_eq!(r.body["state"], "failed", "{}", r.text);
        assert!(
            r.body["last_error"].as_str().unwrap().contains("no CNAME"),
            "{}",
            r.text
        );
        assert!(r.body["certificate"].is_null(), "{}", r.text);
        eventually("the edge forgets the failed domain", || {
            let store = e.edge.store().clone();
            let resolver = Arc::clone(&e.resolver);
            let pem = custom_pem.clone();
            async move { store.by_fqdn(custom).is_none() && !serves(&resolver, custom, &pem) }
        })
        .await;

        // Audited; another tenant's domain is 404; deletion.
        {
            let mut c = app.state.db.acquire().await.unwrap();
            let log = db::audit::list_for_tenant(&mut c, acme_tenant, 50).await.unwrap();
            let actions: Vec<&str> = log.iter().map(|a| a.action.as_str()).collect();
            assert!(actions.contains(&"domain.create"), "{actions:?}");
            assert_eq!(
                actions.iter().filter(|a| **a == "domain.state").count(),
                2,
                "{actions:?}"
            );
        }
        let r = app
            .call(
                &admin,
                Method::DELETE,
                &format!("/api/v1/tenants/globex/domains/{evil_id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = app
            .call(
                &admin,
                Method::DELETE,
                &format!("/api/v1/tenants/acme/domains/{evil_id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = app
            .call(
                &globex_admin,
                Method::DELETE,
                &format!("/api/v1/tenants/globex/domains/{evil_id}"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        // Freed: acme may claim it now.
        let r = app
            .call(
                &admin,
                Method::POST,
                "/api/v1/tenants/acme/domains",
                Some(serde_json::json!({"name": "evil.customer.test"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

        let _ = stop_tx.send(true);
        e.sip.shutdown().await;
        e.edge.shutdown().await.unwrap();
        app.stop().await;
    }
);

/// A DNS provider that publishes nothing (a misconfigured delegation).
struct SilentDns(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl acme::DnsProvider for SilentDns {
    async fn set_txt(&self, record: &str, _value: &str) -> crate::error::Result<()> {
        self.0.lock().unwrap().push(format!("set {record}"));
        Ok(())
    }
    async fn remove_txt(&self, record: &str, _value: &str) -> crate::error::Result<()> {
        self.0.lock().unwrap().push(format!("remove {record}"));
        Ok(())
    }
}

crate::on_both_backends!(
    dns01_without_the_txt_record_is_refused_by_pebble_and_backed_off,
    |db: Db| async move {
        let app = TestApp::start(db).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let responder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let responder_addr = responder.local_addr().unwrap();
        tokio::spawn(crate::dns::serve(app.state.clone(), responder, stop_rx));
        let world = TestDns::start(responder_addr).await;
        let Some(pebble) = start_pebble_with(PebbleOptions {
            dns_server: Some(world.addr),
            http_port: None,
            validate: true,
        })
        .await
        else {
            return;
        };
        let settings = AcmeSettings {
            directory_url: pebble.directory_url.clone(),
            contact_email: None,
            extra_root_pem: Some(pebble.listener_pem.clone()),
            interval: Duration::from_secs(60),
            challenge: acme::ChallengeKind::Dns01,
            wildcard: true,
            dns_listen: None,
        };
        let provider = SilentDns(std::sync::Mutex::default());
        let before = db::now_ms();
        assert_eq!(
            acme::run_once_with(&app.state, &settings, &provider)
                .await
                .unwrap(),
            0
        );
        // The provider was asked to publish and to withdraw the record, at the base name.
        assert_eq!(
            *provider.0.lock().unwrap(),
            vec![
                "set _acme-challenge.example.test".to_owned(),
                "remove _acme-challenge.example.test".to_owned()
            ]
        );
        assert!(world.was_asked("_acme-challenge.example.test TXT"));
        let row = {
            let mut c = app.state.db.acquire().await.unwrap();
            certs::get_scoped(&mut c, certs::Scope::Platform, "*.example.test")
                .await
                .unwrap()
                .unwrap()
        };
        assert_eq!(row.state, certs::CertState::Failed);
        assert!(row.chain_pem.is_none());
        assert!(row.last_error.as_deref().unwrap().contains("ACME"), "{row:?}");
        assert!(row.next_attempt_at_ms >= before + 60_000, "backed off");
        let _ = stop_tx.send(true);
        app.stop().await;
    }
);
