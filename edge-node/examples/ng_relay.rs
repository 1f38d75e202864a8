//! A bench server: the subset of rtpengine's NG control protocol that the relay anchor's
//! `ng.py` speaks (bencode over UDP: `ping`, `offer`, `answer`, `delete`), driving our
//! [`MediaRelay`]. Lets `shared/bench/anchors/C_rtp/run.sh external` measure our relay with the
//! same load as rtpengine. See `load-tests/rtp/README.md`.
//!
//! Environment:
//! - `NG_LISTEN` (127.0.0.1:2223): where NG requests arrive (loopback only).
//! - `PORT_MIN`/`PORT_MAX` (20000/59999): the RTP port range, as the anchor gives rtpengine.
//! - `RELAY_THREADS` (the relay's default): relay threads.
//! - `RECORD` (0): 1 = record every session into `SPOOL` (a temporary directory by default);
//!   an uploader then reads each finished recording and hands it to a store that discards it
//!   (so a long benchmark does not fill the disk), like a real upload would read it.
//! - `STATS_SECS` (5): how often a stats line goes to stderr.
//!
//! Each request: `<cookie> <bencoded dict>`; each answer `<cookie> <bencoded dict>` with
//! `result` = `ok` (`pong` for ping) or `error` with `error-reason`.

use async_trait::async_trait;
use bytes::Bytes;
use pbx_contract::{CallId, TenantId};
use pbx_edge_node::media::{
    recording_key, Leg, MediaConfig, MediaRelay, RecordingMeta, RecordingUploader, RelayOptions,
    RelaySession, SdpOrigin, SessionDescription,
};
use pbx_engines::objects::{ObjectError, ObjectMeta, ObjectStore};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A bencoded value (BEP 3).
#[derive(Debug, Clone, PartialEq)]
enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value at `*i`; None on malformed input (never panics).
    fn decode(b: &[u8], i: &mut usize, depth: usize) -> Option<Bencode> {
        if depth > 32 {
            return None;
        }
        match *b.get(*i)? {
            b'i' => {
                let end = *i + b[*i..].iter().position(|&c| c == b'e')?;
                let n = std::str::from_utf8(&b[*i + 1..end]).ok()?.parse().ok()?;
                *i = end + 1;
                Some(Bencode::Int(n))
            }
            b'l' => {
                *i += 1;
                let mut l = Vec::new();
                while *b.get(*i)? != b'e' {
                    l.push(Bencode::decode(b, i, depth + 1)?);
                }
                *i += 1;
                Some(Bencode::List(l))
            }
            b'd' => {
                *i += 1;
                let mut d = BTreeMap::new();
                while *b.get(*i)? != b'e' {
                    let Bencode::Bytes(k) = Bencode::decode(b, i, depth + 1)? else {
                        return None;
                    };
                    let v = Bencode::decode(b, i, depth + 1)?;
                    d.insert(k, v);
                }
                *i += 1;
                Some(Bencode::Dict(d))
            }
            b'0'..=b'9' => {
                let colon = *i + b[*i..].iter().position(|&c| c == b':')?;
                let n: usize = std::str::from_utf8(&b[*i..colon]).ok()?.parse().ok()?;
                let start = colon + 1;
                let bytes = b.get(start..start.checked_add(n)?)?.to_vec();
                *i = start + n;
                Some(Bencode::Bytes(bytes))
            }
            _ => None,
        }
    }
}

fn dict(pairs: &[(&str, &str)]) -> Bencode {
    Bencode::Dict(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Bencode::Bytes(v.as_bytes().to_vec())))
            .collect(),
    )
}

fn field<'a>(d: &'a BTreeMap<Vec<u8>, Bencode>, key: &str) -> Option<&'a str> {
    match d.get(key.as_bytes())? {
        Bencode::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// An object store that reads nothing back and keeps nothing.
struct DiscardStore;

#[async_trait]
impl ObjectStore for DiscardStore {
    async fn put(&self, _key: &str, _body: Bytes, _content_type: &str) -> Result<(), ObjectError> {
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        Err(ObjectError::NotFound(key.into()))
    }
    async fn delete(&self, _key: &str) -> Result<(), ObjectError> {
        Ok(())
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        Ok(Vec::new())
    }
    async fn presign_get(&self, key: &str, _expires_in: Duration) -> Result<String, ObjectError> {
        Err(ObjectError::NotFound(key.into()))
    }
    async fn ping(&self) -> Result<(), ObjectError> {
        Ok(())
    }
}

/// One call of the NG protocol: the relay session and our o= line towards each side.
struct Call {
    session: RelaySession,
    origin_to_b: SdpOrigin,
    origin_to_a: SdpOrigin,
}

struct Server {
    relay: MediaRelay,
    calls: HashMap<String, Call>,
    record: bool,
    tenant: TenantId,
}

impl Server {
    async fn handle(&mut self, req: &BTreeMap<Vec<u8>, Bencode>) -> Result<Bencode, String> {
        let command = field(req, "command").ok_or("no command")?;
        match command {
            "ping" => Ok(dict(&[("result", "pong")])),
            "offer" => {
                let call_id = field(req, "call-id").ok_or("no call-id")?.to_owned();
                let sdp = SessionDescription::parse(field(req, "sdp").ok_or("no sdp")?)
                    .map_err(|e| e.to_string())?;
                if !self.calls.contains_key(&call_id) {
                    let session = self.relay.open_session().await.map_err(|e| e.to_string())?;
                    if self.record {
                        let call = CallId::new();
                        session
                            .start_recording(RecordingMeta {
                                tenant: self.tenant,
                                call_id: call,
                                object_key: recording_key(self.tenant, call, SystemTime::now()),
                            })
                            .map_err(|e| e.to_string())?;
                    }
                    let call = Call {
                        session,
                        origin_to_b: SdpOrigin::new(),
                        origin_to_a: SdpOrigin::new(),
                    };
                    self.calls.insert(call_id.clone(), call);
                }
                let call = self.calls.get_mut(&call_id).ok_or("call vanished")?;
                if let Some(addr) = sdp.audio_endpoint() {
                    call.session.set_peer(Leg::A, addr);
                }
                let out = sdp
                    .relay_offer(
                        self.relay.advertise_ip(),
                        call.session.port(Leg::B),
                        &mut call.origin_to_b,
                    )
                    .map_err(|e| e.to_string())?;
                Ok(dict(&[("result", "ok"), ("sdp", &out.to_string())]))
            }
            "answer" => {
                let call_id = field(req, "call-id").ok_or("no call-id")?;
                let sdp = SessionDescription::parse(field(req, "sdp").ok_or("no sdp")?)
                    .map_err(|e| e.to_string())?;
                let call = self.calls.get_mut(call_id).ok_or("unknown call-id")?;
                if let Some(addr) = sdp.audio_endpoint() {
                    call.session.set_peer(Leg::B, addr);
                }
                let out = sdp.relay_answer(
                    self.relay.advertise_ip(),
                    call.session.port(Leg::A),
                    &mut call.origin_to_a,
                );
                Ok(dict(&[("result", "ok"), ("sdp", &out.to_string())]))
            }
            "delete" => {
                let call_id = field(req, "call-id").ok_or("no call-id")?;
                let call = self.calls.remove(call_id).ok_or("unknown call-id")?;
                call.session.close().await;
                Ok(dict(&[("result", "ok")]))
            }
            other => Err(format!("unsupported command {other:?}")),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|_| format!("{name}={v:?} is not valid")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let listen: SocketAddr = env_or("NG_LISTEN", "127.0.0.1:2223".parse().map_err(|_| "default")?)?;
    if !listen.ip().is_loopback() {
        return Err("NG_LISTEN must be a loopback address (bench only)".into());
    }
    let record = env_or("RECORD", 0u8)? == 1;
    let spool_tmp = tempfile_dir()?;
    let spool = std::env::var("SPOOL").map_or(spool_tmp.clone(), Into::into);
    let mut options = RelayOptions::default();
    if let Ok(t) = std::env::var("RELAY_THREADS") {
        options.threads = t.parse().map_err(|_| "RELAY_THREADS")?;
    }
    let ip: IpAddr = listen.ip();
    let config = MediaConfig {
        bind_ip: ip,
        advertise_ip: ip,
        port_min: env_or("PORT_MIN", 20000)?,
        port_max: env_or("PORT_MAX", 59999)?,
        spool_dir: spool.clone(),
    };
    let threads = options.threads;
    let relay = MediaRelay::start_with(config, options)
        .await
        .map_err(|e| e.to_string())?;
    let cancel = tokio_util::sync::CancellationToken::new();
    if record {
        RecordingUploader::spawn(spool.clone(), Arc::new(DiscardStore), cancel.clone());
    }
    let sock = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "ng_relay: NG on {listen}, {threads} relay thread(s), recording {}",
        if record {
            format!("on (spool {})", spool.display())
        } else {
            "off".into()
        }
    );
    let stats_every = Duration::from_secs(env_or("STATS_SECS", 5u64)?.max(1));
    let stats_relay = relay.clone();
    tokio::spawn(async move {
        let mut last = stats_relay.stats();
        loop {
            tokio::time::sleep(stats_every).await;
            let s = stats_relay.stats();
            if s != last {
                eprintln!(
                    "ng_relay: sessions={} relayed={} (+{}/s) dropped={} recording_dropped={}",
                    s.sessions_open,
                    s.packets_relayed,
                    (s.packets_relayed - last.packets_relayed) / stats_every.as_secs(),
                    s.packets_dropped,
                    s.recording_packets_dropped
                );
            }
            last = s;
        }
    });

    let mut server = Server {
        relay,
        calls: HashMap::new(),
        record,
        tenant: TenantId::new(),
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => r.map_err(|e| e.to_string())?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let msg = &buf[..n];
        let Some(space) = msg.iter().position(|&c| c == b' ') else {
            continue;
        };
        let (cookie, body) = (&msg[..space], &msg[space + 1..]);
        let reply = match Bencode::decode(body, &mut 0, 0) {
            Some(Bencode::Dict(req)) => server.handle(&req).await,
            _ => Err("malformed bencode".into()),
        };
        let reply = reply.unwrap_or_else(|reason| dict(&[("result", "error"), ("error-reason", &reason)]));
        let mut out = cookie.to_vec();
        out.push(b' ');
        reply.encode(&mut out);
        let _ = sock.send_to(&out, from).await;
    }
    cancel.cancel();
    for (_, call) in server.calls.drain() {
        call.session.close().await;
    }
    if spool == spool_tmp {
        let _ = std::fs::remove_dir_all(&spool_tmp);
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ng_relay-spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
