//! `pbx up`: the control plane and one edge node in one process, on embedded engines
//! (SQLite file, in-process bus, directory object store, outbox folder for mail), all kept
//! in one data directory.

use crate::serve::{self, EventsOptions};
use anyhow::{bail, Context, Result};
use pbx_contract::Secret;
use pbx_control_plane::crypto::{random_token, MasterKey};
use pbx_control_plane::db::Db;
use pbx_control_plane::service::auth::bootstrap_operator;
use pbx_control_plane::{AppState, Engines, Settings};
use pbx_edge_node::sip::service::{parse_algorithms, SipOptions};
use pbx_edge_node::EdgeConfig;
use pbx_engines::bus::{Bus, MemoryBus};
use pbx_engines::live::MemoryLiveState;
use pbx_engines::mail::OutboxMailer;
use pbx_engines::objects::DirObjectStore;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct UpOptions {
    pub data_dir: PathBuf,
    pub http: String,
    pub sip: String,
    pub base_domain: String,
    /// Optional health/metrics/introspection port of the embedded edge node.
    pub edge_http: Option<String>,
    /// Digest algorithms offered to phones, preferred first (`sha-256,md5`).
    pub sip_digest: String,
    pub sip_nonce_lifetime: u64,
}

pub const TOKEN_FILE: &str = "operator.token";
pub const API_URL_FILE: &str = "api-url";

/// Writes a file only its owner can read (keys and tokens).
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Reads a private file, or creates it with `make()` on first start.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = make();
            write_private(path, &v)?;
            Ok(v)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub async fn run(opts: UpOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating {}", opts.data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&opts.data_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let data = opts.data_dir.canonicalize()?;
    let master = MasterKey::from_base64(&read_or_create(&data.join("master.key"), || {
        MasterKey::generate().to_base64()
    })?)
    .context("master.key is corrupt")?;
    let edge_token = Secret::new(read_or_create(&data.join("edge.token"), || random_token(32))?);

    let listener = tokio::net::TcpListener::bind(&opts.http)
        .await
        .with_context(|| format!("binding HTTP {}", opts.http))?;
    let addr = listener.local_addr()?;
    let public_url = format!("http://{addr}");

    let db = Db::connect(&format!("sqlite://{}", data.join("pbx.db").display())).await?;
    db.migrate().await?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let dir_objects = Arc::new(DirObjectStore::new(
        data.join("objects"),
        &public_url,
        master.derive("pbx object-url v1").to_vec(),
    ));
    let mailer = Arc::new(OutboxMailer::new(
        data.join("outbox"),
        &format!("Cloud PBX <no-reply@{}>", opts.base_domain),
    )?);
    let settings = Settings {
        base_domain: opts.base_domain.clone(),
        public_url: public_url.clone(),
        access_token_ttl_secs: 900,
        refresh_token_ttl_secs: 30 * 24 * 3600,
        edge_token: edge_token.clone(),
        max_body_bytes: 1024 * 1024,
        request_timeout_secs: 30,
        trust_forwarded_for: false,
    };
    let state = AppState::new(
        Engines {
            db,
            bus: bus.clone(),
            objects: dir_objects.clone(),
            dir_objects: Some(dir_objects),
            mailer,
        },
        &master,
        settings,
    );

    let operator_email = format!("admin@{}", opts.base_domain);
    let token_path = data.join(TOKEN_FILE);
    let boot = bootstrap_operator(&state, &operator_email, !token_path.exists()).await?;
    if let Some(key) = &boot.api_key {
        write_private(&token_path, key)?;
    }
    write_private(&data.join(API_URL_FILE), &public_url)?;

    let cp = serve::start_control_plane(
        state.clone(),
        listener,
        EventsOptions {
            consumer: "local".into(),
            claim_after: Duration::from_secs(30),
        },
    );
    let edge_listener = match &opts.edge_http {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding edge HTTP {a}"))?,
        ),
        None => None,
    };
    let edge_url = edge_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}"));
    let sip_addr: std::net::SocketAddr = opts
        .sip
        .parse()
        .with_context(|| format!("--sip {:?} is not an address", opts.sip))?;
    let sip_opts = SipOptions {
        udp: Some(sip_addr),
        tcp: Some(sip_addr),
        digest_algorithms: parse_algorithms(&opts.sip_digest)
            .map_err(|e| anyhow::anyhow!("--sip-digest: {e}"))?,
        nonce_lifetime: Duration::from_secs(opts.sip_nonce_lifetime),
    };
    let edge = serve::start_edge(
        EdgeConfig {
            node_id: "local".into(),
            region: "local".into(),
            control_plane_url: public_url.clone(),
            edge_token,
        },
        bus,
        Arc::new(MemoryLiveState::new()),
        Some(sip_opts),
        edge_listener,
    )
    .await?;

    println!("Cloud PBX is up.");
    println!("  API and console:  {public_url}   (OpenAPI: {public_url}/api/openapi.json)");
    println!("  Operator login:   {}", boot.email);
    match &boot.one_time_password {
        Some(p) => println!("  One-time password: {p}   (shown once; you choose your own at first login)"),
        None => println!("  Password:         the one you set (the account exists since the first start)"),
    }
    println!("  CLI token file:   {}", token_path.display());
    println!(
        "  Tenants:          {{slug}}.{}   (phones register to that domain)",
        opts.base_domain
    );
    if let Some(sip) = &edge.sip {
        if let Some(a) = sip.server.local_udp() {
            println!("  SIP over UDP:     {a}");
        }
        if let Some(a) = sip.server.local_tcp() {
            println!("  SIP over TCP:     {a}");
        }
    }
    if let Some(u) = &edge_url {
        println!("  Edge node health: {u}/readyz   (what it holds: {u}/tenants)");
    }
    println!("  Data directory:   {}", data.display());
    std::io::stdout().flush()?;

    serve::shutdown_signal().await;
    tracing::info!("shutting down");
    edge.stop().await;
    cp.stop().await;
    println!("Cloud PBX stopped.");
    Ok(())
}

pub fn validate_base_domain(d: &str) -> Result<()> {
    if d.is_empty()
        || d.starts_with('.')
        || d.ends_with('.')
        || !d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        bail!("--base-domain {d:?} is not a domain name");
    }
    Ok(())
}
