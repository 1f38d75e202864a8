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
use pbx_edge_node::media::MediaConfig;
use pbx_edge_node::sip::service::{parse_algorithms, SipOptions};
use pbx_edge_node::sip::tls::{self, SniResolver};
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
    /// RTP relay port range, `min-max`.
    pub rtp_ports: String,
    /// The address put into SDP (default: the SIP address, or the outbound interface's).
    pub media_ip: Option<std::net::IpAddr>,
    /// SIP over TLS / WebSocket / secure WebSocket: an address, `off`, or None for the
    /// default (5061 / 5066 / 7443 on the SIP address's IP; port 0 when --sip has port 0).
    /// Seconds between NAT keep-alive OPTIONS to UDP phones; 0: none.
    pub sip_keepalive: u64,
    /// Seconds without media either way after which an answered call is hung up.
    pub media_timeout: u64,
    pub sip_tls: Option<String>,
    pub sip_ws: Option<String>,
    pub sip_wss: Option<String>,
    /// Redis for the live state instead of memory (so that a restart keeps it), and its key
    /// prefix.
    pub live_redis: Option<String>,
    pub live_redis_prefix: String,
}

/// A stream listener address: given, `off`, or the default port on the SIP IP.
fn listener_addr(
    flag: &str,
    given: &Option<String>,
    sip: std::net::SocketAddr,
    default_port: u16,
) -> Result<Option<std::net::SocketAddr>> {
    match given.as_deref() {
        Some("off") => Ok(None),
        Some(a) => a
            .parse()
            .map(Some)
            .with_context(|| format!("{flag} {a:?} is not an address (or \"off\")")),
        None => Ok(Some(std::net::SocketAddr::new(
            sip.ip(),
            if sip.port() == 0 { 0 } else { default_port },
        ))),
    }
}

pub const TOKEN_FILE: &str = "operator.token";
pub const API_URL_FILE: &str = "api-url";

/// The edge's certificates under `pbx up`: a local certificate authority, made once and kept
/// in the data directory (`tls/ca-cert.pem` is what phones and browsers import), issues a
/// certificate for each tenant name on its first TLS handshake.
fn edge_certificates(data: &Path, base_domain: &str) -> Result<Arc<SniResolver>> {
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_path, key_path) = (dir.join("ca-cert.pem"), dir.join("ca-key.pem"));
    let ca = if cert_path.exists() && key_path.exists() {
        tls::LocalCa::load(
            &std::fs::read_to_string(&cert_path)?,
            &std::fs::read_to_string(&key_path)?,
        )?
    } else {
        let (ca, cert, key) = tls::LocalCa::create()?;
        write_private(&key_path, &key)?;
        std::fs::write(&cert_path, cert)?;
        ca
    };
    Ok(Arc::new(SniResolver::with_local_ca(ca, base_domain)?))
}

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
    // one live-state store for the control plane and the edge (queue live state, bindings)
    let live: Arc<dyn pbx_engines::live::LiveState> = match &opts.live_redis {
        Some(url) => Arc::new(
            pbx_engines::live::RedisLiveState::connect(url)
                .await
                .context("connecting to --live-redis")?
                .with_prefix(opts.live_redis_prefix.clone()),
        ),
        None => Arc::new(MemoryLiveState::new()),
    };
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
        stripe: None,
        acme: None,
        dns: pbx_control_plane::dns::DnsSettings::with_resolver(None),
    };
    let dir_objects_for_edge: Arc<dyn pbx_engines::objects::ObjectStore> = dir_objects.clone();
    let state = AppState::new(
        Engines {
            db,
            bus: bus.clone(),
            objects: dir_objects.clone(),
            dir_objects: Some(dir_objects.clone()),
            mailer,
            live: live.clone(),
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
    let (port_min, port_max) = parse_port_range(&opts.rtp_ports)?;
    let tls_addr = listener_addr("--sip-tls", &opts.sip_tls, sip_addr, 5061)?;
    let ws_addr = listener_addr("--sip-ws", &opts.sip_ws, sip_addr, 5066)?;
    let wss_addr = listener_addr("--sip-wss", &opts.sip_wss, sip_addr, 7443)?;
    let certificates = if tls_addr.is_some() || wss_addr.is_some() {
        Some(edge_certificates(&data, &opts.base_domain)?)
    } else {
        None
    };
    let sip_opts = SipOptions {
        udp: Some(sip_addr),
        tcp: Some(sip_addr),
        tls: tls_addr,
        ws: ws_addr,
        wss: wss_addr,
        certificates,
        keepalive_interval: (opts.sip_keepalive > 0).then(|| Duration::from_secs(opts.sip_keepalive)),
        media_timeout: Duration::from_secs(opts.media_timeout.max(1)),
        digest_algorithms: parse_algorithms(&opts.sip_digest)
            .map_err(|e| anyhow::anyhow!("--sip-digest: {e}"))?,
        nonce_lifetime: Duration::from_secs(opts.sip_nonce_lifetime),
        media: Some(MediaConfig {
            bind_ip: sip_addr.ip(),
            advertise_ip: opts.media_ip.unwrap_or_else(|| advertise_ip_for(sip_addr.ip())),
            port_min,
            port_max,
            spool_dir: data.join("spool").join("recordings"),
        }),
    };
    let edge = serve::start_edge(
        EdgeConfig {
            node_id: "local".into(),
            region: "local".into(),
            control_plane_url: public_url.clone(),
            edge_token,
        },
        bus,
        live,
        Some(sip_opts),
        edge_listener,
        Some(dir_objects_for_edge),
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
        if let Some(a) = sip.server.local_tls() {
            println!(
                "  SIP over TLS:     {a}   (self-signed for *.{})",
                opts.base_domain
            );
        }
        if let Some(a) = sip.server.local_ws() {
            println!("  SIP over WebSocket: ws://{a}");
        }
        if let Some(a) = sip.server.local_wss() {
            println!("  SIP over secure WebSocket: wss://{a}");
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

/// `min-max`, both even-able and in order, e.g. `20000-29999`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("--rtp-ports {s:?}: expected MIN-MAX, e.g. 20000-29999"))?;
    let min: u16 = a
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--rtp-ports {s:?}: {a:?} is not a port"))?;
    let max: u16 = b
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--rtp-ports {s:?}: {b:?} is not a port"))?;
    if min < 1024 || max <= min + 3 {
        anyhow::bail!("--rtp-ports {s:?}: the range must lie above 1023 and hold at least two port pairs");
    }
    Ok((min, max))
}

/// The address to advertise in SDP when media binds to `bind`: itself, or for a wildcard
/// bind the address of the interface that routes outwards (loopback when there is none).
pub fn advertise_ip_for(bind: std::net::IpAddr) -> std::net::IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    // connect() on UDP sends nothing; it only picks the route and so the source address
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    }
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
