//! `pbx`: the one binary of the cloud PBX.

/// mimalloc instead of glibc malloc: a SIP message is parsed into owned strings and answered
/// with a few more, and glibc's malloc/free were about a quarter of the instructions of a
/// registration (load-tests/register/README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod serve;
mod settings;
mod up;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use pbx_control_plane::crypto::MasterKey;
use pbx_control_plane::db::Db;
use pbx_control_plane::service::auth::bootstrap_operator;
use pbx_control_plane::{AppState, Engines, Settings};
use pbx_edge_node::sip::service::{parse_algorithms, SipOptions};
use pbx_edge_node::EdgeConfig;
use pbx_engines::bus::{Bus, RedisBus};
use pbx_engines::live::{LiveState, RedisLiveState};
use pbx_engines::mail::SmtpMailer;
use pbx_engines::objects::S3ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pbx", version, about = "Multi-tenant cloud PBX with a contact center")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Global, so they go anywhere: `pbx tenant list --data-dir D` as well as `pbx tenant --data-dir D list`.
#[derive(clap::Args)]
struct ApiArgs {
    /// API URL of the instance (default: the one `pbx up` runs in --data-dir).
    #[arg(long, env = "PBX_API", global = true)]
    api: Option<String>,
    /// Bearer token: an operator or reseller API key (default: --data-dir/operator.token).
    #[arg(long, env = "PBX_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The data directory of a local `pbx up`.
    #[arg(long, env = "PBX_DATA_DIR", default_value = "pbx-data", global = true)]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything on this machine with embedded engines: control plane and one edge node.
    Up {
        #[arg(long, env = "PBX_DATA_DIR", default_value = "pbx-data")]
        data_dir: PathBuf,
        /// API and console address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// SIP address, UDP and TCP (registrations and calls).
        #[arg(long, default_value = "0.0.0.0:5060")]
        sip: String,
        /// Digest algorithms offered to phones, preferred first. Old phones and sipp need md5 first.
        #[arg(long, default_value = "sha-256,md5")]
        sip_digest: String,
        /// Seconds a digest nonce stays valid; after that phones are re-challenged with stale=true.
        #[arg(long, default_value_t = 300)]
        sip_nonce_lifetime: u64,
        /// Tenants get {slug}.{base-domain}.
        #[arg(long, default_value = "localhost")]
        base_domain: String,
        /// Serve the embedded edge node's /healthz, /readyz, /metrics and /tenants here.
        #[arg(long)]
        edge_http: Option<String>,
        /// UDP ports of the RTP relay, MIN-MAX (each call takes two pairs).
        #[arg(long, default_value = "20000-29999")]
        rtp_ports: String,
        /// The address phones send RTP to (default: the SIP address, or this host's outbound one).
        #[arg(long)]
        media_ip: Option<std::net::IpAddr>,
        /// Seconds between NAT keep-alive OPTIONS to phones registered over UDP (0: none).
        #[arg(long, default_value_t = 25)]
        sip_keepalive: u64,
        /// Seconds without media either way after which an answered call is hung up.
        #[arg(long, default_value_t = 180)]
        media_timeout: u64,
        /// SIP over TLS address, or `off` (default: port 5061 on the --sip IP; port 0 if --sip has 0).
        #[arg(long)]
        sip_tls: Option<String>,
        /// SIP over WebSocket address, or `off` (default: port 5066 on the --sip IP).
        #[arg(long)]
        sip_ws: Option<String>,
        /// SIP over secure WebSocket address, or `off` (default: port 7443 on the --sip IP).
        #[arg(long)]
        sip_wss: Option<String>,
        /// Keep the live state (registrations, lockouts, queue sign-ins, pauses and registered
        /// callbacks) in this Redis (`redis://host:port`) instead of memory, so that a restart
        /// keeps it.
        #[arg(long, env = "PBX_LIVE_REDIS", hide_env_values = true)]
        live_redis: Option<String>,
        /// Key prefix in that Redis, to share it.
        #[arg(long, default_value = "pbx-up:")]
        live_redis_prefix: String,
    },
    /// The control plane on production engines (PostgreSQL, Redis, S3, SMTP).
    ControlPlane {
        #[arg(long)]
        config: PathBuf,
    },
    /// An edge node on production engines.
    EdgeNode {
        #[arg(long)]
        config: PathBuf,
    },
    /// Apply database migrations (PostgreSQL or SQLite) and exit.
    Migrate {
        /// A control-plane config file, or give --database-url.
        #[arg(long, conflicts_with = "database_url")]
        config: Option<PathBuf>,
        #[arg(long, env = "PBX_DATABASE__URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        action: TenantCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Manage extensions of a tenant.
    Extension {
        #[command(subcommand)]
        action: ExtensionCmd,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    Create {
        #[arg(long)]
        slug: String,
        #[arg(long, value_parser = ["standard", "enterprise", "ultimate"])]
        plan: Option<String>,
        #[arg(long)]
        admin_email: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    List,
    Delete {
        #[arg(long)]
        slug: String,
    },
}

#[derive(Subcommand)]
enum ExtensionCmd {
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        number: String,
        /// SIP password (or env PBX_SIP_SECRET, which keeps it out of the process list).
        #[arg(long, env = "PBX_SIP_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Record calls to and from the extension (default: off).
        #[arg(long, value_parser = ["off", "always"])]
        recording: Option<String>,
        /// Seconds a call rings before it ends unanswered, 5-300 (default: 30).
        #[arg(long, value_name = "SECS")]
        ring_timeout: Option<u32>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        number: String,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,aws=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    pbx_control_plane::crypto::install_crypto_provider();
    match cli.command {
        Cmd::Up {
            data_dir,
            http,
            sip,
            base_domain,
            edge_http,
            sip_digest,
            sip_nonce_lifetime,
            rtp_ports,
            media_ip,
            sip_keepalive,
            media_timeout,
            sip_tls,
            sip_ws,
            sip_wss,
            live_redis,
            live_redis_prefix,
        } => {
            init_tracing();
            up::validate_base_domain(&base_domain)?;
            up::run(up::UpOptions {
                data_dir,
                http,
                sip,
                base_domain,
                edge_http,
                sip_digest,
                sip_nonce_lifetime,
                rtp_ports,
                media_ip,
                sip_keepalive,
                media_timeout,
                sip_tls,
                sip_ws,
                sip_wss,
                live_redis,
                live_redis_prefix,
            })
            .await
        }
        Cmd::ControlPlane { config } => {
            init_tracing();
            control_plane(settings::ControlPlaneConfig::load(&config)?).await
        }
        Cmd::EdgeNode { config } => {
            init_tracing();
            edge_node(settings::EdgeNodeConfig::load(&config)?).await
        }
        Cmd::Migrate { config, database_url } => {
            init_tracing();
            let url = match (config, database_url) {
                (Some(c), _) => settings::ControlPlaneConfig::load(&c)?.database.url,
                (None, Some(u)) => u,
                (None, None) => anyhow::bail!("give --config FILE or --database-url URL"),
            };
            let db = Db::connect(&url).await?;
            db.migrate().await?;
            db.close().await;
            println!(
                "{}",
                serde_json::json!({"migrated": true, "backend": format!("{:?}", db.backend()).to_lowercase()})
            );
            Ok(())
        }
        Cmd::Tenant { action, api } => {
            let target = cli::ApiTarget::resolve(api.api, api.token, &api.data_dir)?;
            let cmd = match action {
                TenantCmd::Create {
                    slug,
                    plan,
                    admin_email,
                    name,
                } => cli::Command::TenantCreate {
                    slug,
                    plan,
                    admin_email,
                    name,
                },
                TenantCmd::List => cli::Command::TenantList,
                TenantCmd::Delete { slug } => cli::Command::TenantDelete { slug },
            };
            print_result(cli::run(&target, cmd).await)
        }
        Cmd::Extension { action, api } => {
            let target = cli::ApiTarget::resolve(api.api, api.token, &api.data_dir)?;
            let cmd = match action {
                ExtensionCmd::Create {
                    tenant,
                    number,
                    secret,
                    name,
                    email,
                    recording,
                    ring_timeout,
                } => cli::Command::ExtensionCreate {
                    tenant,
                    number,
                    secret,
                    name,
                    email,
                    recording,
                    ring_timeout_secs: ring_timeout,
                },
                ExtensionCmd::List { tenant } => cli::Command::ExtensionList { tenant },
                ExtensionCmd::Delete { tenant, number } => cli::Command::ExtensionDelete { tenant, number },
            };
            print_result(cli::run(&target, cmd).await)
        }
    }
}

fn print_result(r: Result<serde_json::Value>) -> Result<()> {
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}

async fn control_plane(cfg: settings::ControlPlaneConfig) -> Result<()> {
    let master =
        MasterKey::from_base64(cfg.secrets.master_key.expose()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let db = Db::connect(&cfg.database.url).await?;
    db.migrate().await?;
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect(&cfg.bus.redis_url)
            .await?
            .with_prefix(cfg.bus.key_prefix.clone()),
    );
    let objects = Arc::new(S3ObjectStore::new(&cfg.objects));
    let mailer = Arc::new(SmtpMailer::new(&cfg.mail)?);
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("binding {}", cfg.http.listen))?;
    let public_url = cfg
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", cfg.http.listen));
    let settings = Settings {
        base_domain: cfg.platform.base_domain.clone(),
        public_url,
        access_token_ttl_secs: cfg.auth.access_token_ttl_secs.unwrap_or(900),
        refresh_token_ttl_secs: cfg.auth.refresh_token_ttl_secs.unwrap_or(30 * 24 * 3600),
        edge_token: cfg.secrets.edge_token.clone(),
        max_body_bytes: cfg.http.max_body_bytes,
        request_timeout_secs: cfg.http.request_timeout_secs,
        trust_forwarded_for: cfg.http.trust_forwarded_for,
        stripe: cfg.stripe.as_ref().map(settings::StripeSection::to_settings),
        acme: match &cfg.acme {
            Some(a) => a.to_settings()?,
            None => None,
        },
        dns: cfg.dns.to_settings()?,
    };
    let state = AppState::new(
        Engines {
            db,
            bus,
            objects,
            dir_objects: None,
            mailer,
            live: Arc::new(
                RedisLiveState::connect(&cfg.bus.redis_url)
                    .await?
                    .with_prefix(cfg.bus.key_prefix.clone()),
            ),
        },
        &master,
        settings,
    );
    let boot = bootstrap_operator(&state, &cfg.platform.operator_email, false).await?;
    if let Some(p) = &boot.one_time_password {
        // Printed to the terminal (stdout) once, never to the log.
        println!("Operator login: {}  one-time password: {p}", boot.email);
    }
    let consumer = cfg
        .events
        .consumer
        .clone()
        .unwrap_or_else(|| format!("cp-{}", uuid::Uuid::new_v4().simple()));
    let tasks = serve::start_control_plane(
        state,
        listener,
        serve::EventsOptions {
            consumer,
            claim_after: Duration::from_secs(cfg.events.claim_after_secs.unwrap_or(30)),
        },
    );
    tracing::info!(listen = %cfg.http.listen, "control plane serving");
    serve::shutdown_signal().await;
    tasks.stop().await;
    Ok(())
}

async fn edge_node(cfg: settings::EdgeNodeConfig) -> Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(
        RedisBus::connect(&cfg.bus.redis_url)
            .await?
            .with_prefix(cfg.bus.key_prefix.clone()),
    );
    let live: Arc<dyn LiveState> = Arc::new(
        RedisLiveState::connect(&cfg.bus.redis_url)
            .await?
            .with_prefix(cfg.bus.key_prefix.clone()),
    );
    let sip = match &cfg.sip {
        None => {
            tracing::warn!("no [sip] section: this edge node serves no SIP");
            None
        }
        Some(s) => {
            let addr = |a: &Option<String>| -> Result<Option<std::net::SocketAddr>> {
                a.as_deref()
                    .map(|a| a.parse().with_context(|| format!("sip: {a:?} is not an address")))
                    .transpose()
            };
            let (tls, wss) = (addr(&s.tls)?, addr(&s.wss)?);
            let certificates = match (&s.cert_file, &s.key_file) {
                (Some(c), Some(k)) => {
                    let read = |p: &std::path::Path| {
                        std::fs::read(p).with_context(|| format!("sip: reading {}", p.display()))
                    };
                    let key = pbx_edge_node::sip::tls::certified_key(&read(c)?, &read(k)?)
                        .map_err(|e| anyhow::anyhow!("sip.cert_file/key_file: {e}"))?;
                    let resolver = pbx_edge_node::sip::tls::SniResolver::new();
                    resolver.set_default(key);
                    Some(Arc::new(resolver))
                }
                (None, None) if tls.is_none() && wss.is_none() => None,
                _ => anyhow::bail!("sip: tls and wss need both cert_file and key_file"),
            };
            Some(SipOptions {
                udp: addr(&s.udp)?,
                tcp: addr(&s.tcp)?,
                tls,
                ws: addr(&s.ws)?,
                wss,
                certificates,
                keepalive_interval: match s.keepalive_secs {
                    0 => None,
                    n => Some(Duration::from_secs(n)),
                },
                digest_algorithms: parse_algorithms(&s.digest_algorithms.join(","))
                    .map_err(|e| anyhow::anyhow!("sip.digest_algorithms: {e}"))?,
                nonce_lifetime: Duration::from_secs(s.nonce_lifetime_secs),
                media_timeout: Duration::from_secs(s.media_timeout_secs.max(1)),
                media: cfg.media.as_ref().map(|m| pbx_edge_node::media::MediaConfig {
                    bind_ip: m.bind_ip,
                    advertise_ip: m.advertise_ip,
                    port_min: m.port_min,
                    port_max: m.port_max,
                    spool_dir: m.spool_dir.clone(),
                }),
            })
        }
    };
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .with_context(|| format!("binding {}", cfg.http.listen))?;
    let edge = serve::start_edge(
        EdgeConfig {
            node_id: cfg.node.id,
            region: cfg.node.region,
            control_plane_url: cfg.control_plane.url,
            edge_token: cfg.control_plane.edge_token,
        },
        bus,
        live,
        sip,
        Some(listener),
        cfg.objects.as_ref().map(|o| {
            let store: Arc<dyn pbx_engines::objects::ObjectStore> = Arc::new(S3ObjectStore::new(o));
            store
        }),
    )
    .await?;
    tracing::info!(listen = %cfg.http.listen, "edge node serving");
    serve::shutdown_signal().await;
    edge.stop().await;
    Ok(())
}
