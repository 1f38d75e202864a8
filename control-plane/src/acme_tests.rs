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

/// Starts pebble, or None (test skipped) when it is not installed and not required.
async fn start_pebble() -> Option<Pebble> {
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
        "httpPort": free_port(),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
    let child = tokio::process::Command::new(&bin)
        .arg("-config")
        .arg(dir.path().join("pebble.json"))
        .env("PEBBLE_VA_ALWAYS_VALID", "1")
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
