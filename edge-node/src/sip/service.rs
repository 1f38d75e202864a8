//! The edge's SIP service: the network server, the registrar and the request dispatch,
//! composed. What the `pbx` binary starts.

use super::auth::{DigestAlgorithm, DigestConfig, LockoutPolicy};
use super::message::{Method, SipRequest, SipResponse};
use super::registrar::handler::EdgeSipHandler;
use super::registrar::{Registrar, RegistrarConfig, RegistrarStats};
use super::server::{Inbound, RequestHandler, ServerTx, SipServer, SipServerConfig, SipServerHandle};
use super::transaction::Timers;
use crate::call::{CallConfig, CallRouter};
use crate::media::{MediaConfig, MediaRelay};
use crate::sip::keepalive;
use crate::sip::tls::SniResolver;
use crate::{EdgeError, EventSink, SnapshotStore};
use pbx_contract::Secret;
use pbx_engines::live::LiveState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SipOptions {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    /// SIP over TLS (certificates from `certificates`, chosen by SNI).
    pub tls: Option<SocketAddr>,
    /// SIP over WebSocket (RFC 7118), for browsers.
    pub ws: Option<SocketAddr>,
    /// SIP over secure WebSocket.
    pub wss: Option<SocketAddr>,
    /// The certificates TLS and WSS serve, by SNI = tenant FQDN.
    pub certificates: Option<Arc<SniResolver>>,
    /// Offered in this order (RFC 8760: preferred first).
    pub digest_algorithms: Vec<DigestAlgorithm>,
    pub nonce_lifetime: Duration,
    /// The RTP relay calls are anchored on; without it SDP passes through unchanged.
    pub media: Option<MediaConfig>,
    /// NAT keep-alive OPTIONS to UDP phones this often; None: no keep-alives.
    pub keepalive_interval: Option<Duration>,
    /// An answered call with no media either way this long is hung up.
    pub media_timeout: Duration,
}

impl Default for SipOptions {
    fn default() -> Self {
        Self {
            udp: None,
            tcp: None,
            tls: None,
            ws: None,
            wss: None,
            certificates: None,
            digest_algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            media: None,
            keepalive_interval: Some(keepalive::DEFAULT_KEEPALIVE_INTERVAL),
            media_timeout: Duration::from_secs(180),
        }
    }
}

/// Parses `sha-256,md5` (any case, any order; the order is kept).
pub fn parse_algorithms(list: &str) -> Result<Vec<DigestAlgorithm>, EdgeError> {
    let algs = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            DigestAlgorithm::from_token(s)
                .ok_or_else(|| EdgeError::Config(format!("unknown digest algorithm {s:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algs.is_empty() {
        return Err(EdgeError::Config(
            "at least one digest algorithm is needed".into(),
        ));
    }
    Ok(algs)
}

struct Dispatch {
    edge: EdgeSipHandler,
    calls: Arc<CallRouter>,
}

#[async_trait::async_trait]
impl RequestHandler for Dispatch {
    async fn handle(&self, request: SipRequest, inbound: Inbound, tx: ServerTx) -> Option<SipResponse> {
        let transport = inbound.transport.as_str();
        match request.method {
            Method::Register | Method::Options | Method::Extension(_) => {
                Some(self.edge.handle(request, inbound.source, transport).await)
            }
            _ => match self.edge.precheck(&request, inbound.source) {
                Some(refusal) => Some(refusal),
                None => self.calls.handle(request, inbound, tx).await,
            },
        }
    }

    async fn on_ack(&self, request: SipRequest, _inbound: Inbound) {
        self.calls.on_ack(request);
    }
}

pub struct SipService {
    pub server: SipServerHandle,
    pub registrar: Arc<Registrar>,
    pub calls: Arc<CallRouter>,
    pub media: Option<MediaRelay>,
    pub keepalives: Arc<keepalive::KeepAliveStats>,
    stop_keepalives: CancellationToken,
}

impl SipService {
    /// Starts listening. Nonces are keyed from the edge token, so every edge of the platform
    /// accepts the nonces of the others (a tenant can move between edges).
    pub async fn start(
        opts: SipOptions,
        store: SnapshotStore,
        events: EventSink,
        live: Arc<dyn LiveState>,
        edge_token: &Secret,
    ) -> Result<Self, EdgeError> {
        if let Some(c) = &opts.certificates {
            // Certificates the control plane issued (ACME) arrive with the snapshots.
            store.attach_certificates(Arc::clone(c));
        }
        let nonce_key = hmac_sha256(edge_token.expose().as_bytes(), b"pbx sip digest nonce v1");
        let digest = DigestConfig {
            algorithms: opts.digest_algorithms.clone(),
            nonce_lifetime: opts.nonce_lifetime,
            ..DigestConfig::default()
        };
        let registrar = Arc::new(
            Registrar::new(
                store.clone(),
                live,
                &nonce_key,
                digest,
                LockoutPolicy::default(),
                RegistrarConfig::default(),
            )
            .with_event_sink(events.clone()),
        );
        let media = match &opts.media {
            Some(config) => Some(
                MediaRelay::start(config.clone())
                    .await
                    .map_err(|e| EdgeError::Config(format!("starting the RTP relay: {e}")))?,
            ),
            None => None,
        };
        let calls = Arc::new(CallRouter::new(
            store.clone(),
            registrar.clone(),
            Some(events.clone()),
            CallConfig {
                media_timeout: opts.media_timeout,
                ..CallConfig::default()
            },
            media.clone(),
        ));
        let handler = Arc::new(Dispatch {
            edge: EdgeSipHandler::new(registrar.clone(), store),
            calls: calls.clone(),
        });
        let server = SipServer::start(
            SipServerConfig {
                udp: opts.udp,
                tcp: opts.tcp,
                tls: opts.tls,
                ws: opts.ws,
                wss: opts.wss,
                tls_config: match &opts.certificates {
                    Some(c) => Some(c.server_config().map_err(|e| EdgeError::Config(e.to_string()))?),
                    None => None,
                },
                timers: Timers::default(),
                max_message_bytes: 64 * 1024,
            },
            handler,
        )
        .await
        .map_err(|e| EdgeError::Config(format!("starting SIP: {e}")))?;
        calls.attach(server.client());
        calls.resume_queues();
        let keepalives = Arc::new(keepalive::KeepAliveStats::default());
        let stop_keepalives = CancellationToken::new();
        if let Some(every) = opts.keepalive_interval {
            keepalive::spawn(
                registrar.clone(),
                server.client(),
                every,
                keepalives.clone(),
                stop_keepalives.clone(),
            );
        }
        Ok(Self {
            server,
            registrar,
            calls,
            media,
            keepalives,
            stop_keepalives,
        })
    }

    /// Stops the keep-alives and the server (handlers in flight get their grace period).
    pub async fn shutdown(self) {
        self.stop_keepalives.cancel();
        self.server.shutdown().await;
    }

    pub fn stats(&self) -> RegistrarStats {
        self.registrar.stats()
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}
