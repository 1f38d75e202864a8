//! The relay, the recorder and the uploader over real UDP sockets on 127.0.0.1.

use super::recording::{sidecar_path, wav_path, Sidecar};
use super::*;
use crate::BackoffPolicy;
use async_trait::async_trait;
use bytes::Bytes;
use pbx_contract::{CallId, TenantId};
use pbx_engines::objects::{DirObjectStore, ObjectError, ObjectMeta, ObjectStore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const LOCALHOST: &str = "127.0.0.1";

/// Port ranges of these tests lie below Linux's ephemeral range (32768-60999), so no
/// socket the kernel hands out elsewhere can take one of them.
async fn relay(port_min: u16, port_max: u16, spool: &Path) -> MediaRelay {
    let ip = LOCALHOST.parse().unwrap();
    let config = MediaConfig {
        bind_ip: ip,
        advertise_ip: ip,
        port_min,
        port_max,
        spool_dir: spool.to_owned(),
    };
    MediaRelay::start_with(
        config,
        RelayOptions {
            threads: 2,
            ..RelayOptions::default()
        },
    )
    .await
    .unwrap()
}

/// An endpoint: an RTP socket on an even port and its RTCP socket on the next one.
async fn endpoint() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rtp.local_addr().unwrap().port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)).await {
            return (rtp, rtcp);
        }
    }
    panic!("no free even/odd port pair");
}

fn to(port: u16) -> SocketAddr {
    SocketAddr::new(LOCALHOST.parse().unwrap(), port)
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

async fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

#[tokio::test]
async fn media_relays_rtp_and_rtcp_both_ways() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14000, 14099, spool.path()).await;
    let s = relay.open_session().await.unwrap();
    let (pa, pb) = (s.port(Leg::A), s.port(Leg::B));
    assert!(pa % 2 == 0 && pb % 2 == 0 && pa != pb);
    let (a_rtp, a_rtcp) = endpoint().await;
    let (b_rtp, b_rtcp) = endpoint().await;
    s.set_peer(Leg::A, a_rtp.local_addr().unwrap());
    s.set_peer(Leg::B, b_rtp.local_addr().unwrap());

    for seq in 0..5u16 {
        let p = rtp_packet(0, seq, u32::from(seq) * 160, 0xa, &[0xff; 160]);
        a_rtp.send_to(&p, to(pa)).await.unwrap();
        let (got, from) = recv(&b_rtp).await.expect("B gets A's packet");
        assert_eq!(got, p, "relayed unchanged (SSRC included)");
        assert_eq!(from, to(pb), "B sees it come from the port it sends to");
        let q = rtp_packet(8, seq, u32::from(seq) * 160, 0xb, &[0xd5; 160]);
        b_rtp.send_to(&q, to(pb)).await.unwrap();
        let (got, from) = recv(&a_rtp).await.expect("A gets B's packet");
        assert_eq!((got, from), (q, to(pa)));
    }
    // RTCP on the next ports.
    a_rtcp.send_to(b"rtcp from a", to(pa + 1)).await.unwrap();
    assert_eq!(
        recv(&b_rtcp).await.unwrap(),
        (b"rtcp from a".to_vec(), to(pb + 1))
    );
    b_rtcp.send_to(b"rtcp from b", to(pb + 1)).await.unwrap();
    assert_eq!(
        recv(&a_rtcp).await.unwrap(),
        (b"rtcp from b".to_vec(), to(pa + 1))
    );

    assert_eq!(relay.stats().sessions_open, 1);
    let stats = s.close().await;
    assert_eq!(stats.packets_a_to_b, 6);
    assert_eq!(stats.packets_b_to_a, 6);
    assert_eq!(
        (stats.dropped, stats.lost(), stats.recording_key.clone()),
        (0, 0, None)
    );
    assert_eq!(s.close().await, stats, "close is idempotent");
    let totals = relay.stats();
    assert_eq!((totals.sessions_open, totals.packets_relayed), (0, 12));
    // The ports are free again.
    std::net::UdpSocket::bind(("127.0.0.1", pa)).unwrap();
    std::net::UdpSocket::bind(("127.0.0.1", pb + 1)).unwrap();
}

#[tokio::test]
async fn media_latching_follows_nat_and_drops_strangers() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14100, 14199, spool.path()).await;
    let s = relay.open_session().await.unwrap();
    let (pa, pb) = (s.port(Leg::A), s.port(Leg::B));
    let (b_rtp, _b_rtcp) = endpoint().await;
    let nat = UdpSocket::bind("127.0.0.1:0").await.unwrap(); // A's NAT-mapped source
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A's SDP says a private address nobody listens on; it really sends from `nat`.
    s.set_peer(Leg::A, "127.0.0.1:9".parse().unwrap());
    s.set_peer(Leg::B, b_rtp.local_addr().unwrap());

    let p = rtp_packet(0, 1, 160, 1, &[0xff; 160]);
    nat.send_to(&p, to(pa)).await.unwrap();
    assert_eq!(recv(&b_rtp).await.unwrap().0, p);
    let q = rtp_packet(0, 1, 160, 2, &[0x7f; 160]);
    b_rtp.send_to(&q, to(pb)).await.unwrap();
    assert_eq!(
        recv(&nat).await.unwrap().0,
        q,
        "B's media goes to where A really sends from"
    );

    // Latched: a stranger on A's port is dropped.
    stranger.send_to(b"spoofed", to(pa)).await.unwrap();
    assert!(recv(&b_rtp).await.is_none());
    nat.send_to(&p, to(pa)).await.unwrap();
    assert_eq!(recv(&b_rtp).await.unwrap().0, p, "A itself still passes");

    // re-INVITE: a new SDP re-opens latching, and the next source wins.
    s.set_peer(Leg::A, stranger.local_addr().unwrap());
    stranger.send_to(b"new phone", to(pa)).await.unwrap();
    assert_eq!(recv(&b_rtp).await.unwrap().0, b"new phone");
    nat.send_to(&p, to(pa)).await.unwrap();
    assert!(recv(&b_rtp).await.is_none(), "the old source is a stranger now");
    b_rtp.send_to(&q, to(pb)).await.unwrap();
    assert_eq!(recv(&stranger).await.unwrap().0, q);

    let stats = s.close().await;
    assert_eq!(stats.dropped, 2);
    assert_eq!(stats.packets_a_to_b, 3);
    assert_eq!(relay.stats().packets_dropped, 2);
}

#[tokio::test]
async fn media_ports_exhausted_then_freed() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14200, 14203, spool.path()).await; // two pairs: one session
    let first = relay.open_session().await.unwrap();
    let err = relay.open_session().await.unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::PortsExhausted {
                min: 14200,
                max: 14203
            }
        ),
        "{err}"
    );
    assert_eq!(err.sip_status(), 503);
    first.close().await;
    let again = relay.open_session().await.unwrap();
    drop(again); // dropping closes too
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.open_session().await.unwrap();
}

#[tokio::test]
async fn media_loss_is_counted_from_sequence_gaps() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14300, 14399, spool.path()).await;
    let s = relay.open_session().await.unwrap();
    let (a_rtp, _a) = endpoint().await;
    let (b_rtp, _b) = endpoint().await;
    s.set_peer(Leg::A, a_rtp.local_addr().unwrap());
    s.set_peer(Leg::B, b_rtp.local_addr().unwrap());
    for seq in [1u16, 2, 3, 6, 7, 10] {
        a_rtp
            .send_to(
                &rtp_packet(0, seq, u32::from(seq) * 160, 5, &[0xff; 160]),
                to(s.port(Leg::A)),
            )
            .await
            .unwrap();
        recv(&b_rtp).await.unwrap();
    }
    let stats = s.close().await;
    assert_eq!((stats.lost_from_a, stats.lost_from_b), (4, 0));
}

/// The G.711 byte that decodes nearest to `sample`.
fn encode(table: &[i16; 256], sample: i16) -> u8 {
    (0..=255u8)
        .min_by_key(|&b| (i32::from(table[usize::from(b)]) - i32::from(sample)).abs())
        .unwrap()
}

fn tone(freq: f64, start_sample: u32, table: &[i16; 256]) -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = f64::from(start_sample + i) / 8000.0;
            encode(
                table,
                (10_000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16,
            )
        })
        .collect()
}

/// Power of `freq` in `samples` (Goertzel).
fn goertzel(samples: &[i16], freq: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

fn read_wav(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..44], &wav::wav_header((bytes.len() - 44) as u32));
    let mut left = Vec::new();
    let mut right = Vec::new();
    for frame in bytes[44..].chunks_exact(4) {
        left.push(i16::from_le_bytes([frame[0], frame[1]]));
        right.push(i16::from_le_bytes([frame[2], frame[3]]));
    }
    (left, right)
}

fn spool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs one recorded call: A sends a 1 kHz PCMU tone, B a 2 kHz PCMA tone, for `packets` x 20 ms.
async fn recorded_call(relay: &MediaRelay, key: &str, packets: u16) -> SessionStats {
    let s = relay.open_session().await.unwrap();
    let (a_rtp, _a) = endpoint().await;
    let (b_rtp, _b) = endpoint().await;
    s.set_peer(Leg::A, a_rtp.local_addr().unwrap());
    s.set_peer(Leg::B, b_rtp.local_addr().unwrap());
    s.start_recording(RecordingMeta {
        tenant: TenantId::new(),
        call_id: CallId::new(),
        object_key: key.into(),
    })
    .unwrap();
    assert!(matches!(
        s.start_recording(RecordingMeta {
            tenant: TenantId::new(),
            call_id: CallId::new(),
            object_key: key.into(),
        }),
        Err(MediaError::AlreadyRecording)
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..packets {
        tick.tick().await;
        let ts = u32::from(i) * 160;
        // A's RTP sequence numbers also count the telephone-event packet sent after packet 20.
        let a_seq = if i > 20 { i + 1 } else { i };
        let a = rtp_packet(0, a_seq, 1000 + ts, 0xa, &tone(1000.0, ts, &g711::ULAW));
        let b = rtp_packet(8, i, 77_000 + ts, 0xb, &tone(2000.0, ts, &g711::ALAW));
        if i != 10 {
            a_rtp.send_to(&a, to(s.port(Leg::A))).await.unwrap(); // packet 10 of A is "lost"
        }
        b_rtp.send_to(&b, to(s.port(Leg::B))).await.unwrap();
        if i == 20 {
            let dtmf = rtp_packet(101, 21, 1000 + ts, 0xa, &[1, 0x80, 0, 160]);
            a_rtp.send_to(&dtmf, to(s.port(Leg::A))).await.unwrap(); // not recorded
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.close().await
}

#[tokio::test]
async fn media_recording_is_a_stereo_wav_with_a_left_and_b_right() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14400, 14499, spool.path()).await;
    let key = "tenant-x/recordings/2025/01/02/call.wav";
    let stats = recorded_call(&relay, key, 50).await;
    assert_eq!(stats.recording_key.as_deref(), Some(key));
    assert_eq!(stats.lost_from_a, 1);

    let files = spool_files(spool.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let name = files[0].strip_suffix(".json").unwrap();
    assert_eq!(files[1], format!("{name}.wav"));
    let sidecar: Sidecar =
        serde_json::from_slice(&std::fs::read(sidecar_path(spool.path(), name)).unwrap()).unwrap();
    assert_eq!(sidecar.object_key, key);

    let (left, right) = read_wav(&wav_path(spool.path(), name));
    let secs = left.len() as f64 / 8000.0;
    assert!((0.95..1.3).contains(&secs), "{secs} s recorded");
    let (l1, l2) = (goertzel(&left, 1000.0), goertzel(&left, 2000.0));
    let (r1, r2) = (goertzel(&right, 1000.0), goertzel(&right, 2000.0));
    assert!(l1 > 100.0 * l2, "left is A's 1 kHz: {l1:e} vs {l2:e}");
    assert!(r2 > 100.0 * r1, "right is B's 2 kHz: {r2:e} vs {r1:e}");
    // Aligned: both channels start together (within scheduling jitter).
    let first = |c: &[i16]| c.iter().position(|&s| s != 0).unwrap();
    assert!(
        first(&left).abs_diff(first(&right)) < 240,
        "{} vs {}",
        first(&left),
        first(&right)
    );
    // A's lost packet 10 left 20 ms of silence in its place; B's channel has no hole there.
    let lost = first(&left) + 10 * 160;
    assert!(left[lost + 10..lost + 150].iter().all(|&s| s == 0));
    assert!(right[lost + 10..lost + 150].iter().any(|&s| s != 0));
}

/// An object store that fails its first `failures` puts.
struct FlakyStore {
    inner: DirObjectStore,
    failures: AtomicUsize,
    puts_failed: AtomicUsize,
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.puts_failed.fetch_add(1, Ordering::SeqCst);
            return Err(ObjectError::Unavailable("store down".into()));
        }
        self.inner.put(key, body, content_type).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.inner.list(prefix).await
    }
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, ObjectError> {
        self.inner.presign_get(key, expires_in).await
    }
    async fn ping(&self) -> Result<(), ObjectError> {
        self.inner.ping().await
    }
}

fn flaky_store(root: &Path, failures: usize) -> Arc<FlakyStore> {
    Arc::new(FlakyStore {
        inner: DirObjectStore::new(root, "http://127.0.0.1:1", b"test-key".to_vec()),
        failures: AtomicUsize::new(failures),
        puts_failed: AtomicUsize::new(0),
    })
}

fn fast_uploader(
    spool: &Path,
    store: Arc<FlakyStore>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    RecordingUploader::spawn_with(
        spool.to_owned(),
        store,
        cancel.clone(),
        BackoffPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        Duration::from_millis(20),
    )
}

async fn wait_for_object(store: &FlakyStore, key: &str) -> Bytes {
    for _ in 0..500 {
        if let Ok(body) = store.get(key).await {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{key} never uploaded");
}

#[tokio::test]
async fn media_uploader_retries_until_the_store_takes_the_recording() {
    let spool = tempfile::tempdir().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let relay = relay(14500, 14599, spool.path()).await;
    let key = recording_key(TenantId::new(), CallId::new(), SystemTime::now());
    recorded_call(&relay, &key, 10).await;
    let local = std::fs::read(spool.path().join(spool_files(spool.path())[1].clone())).unwrap();

    let store = flaky_store(objects.path(), 3);
    let cancel = CancellationToken::new();
    let task = fast_uploader(spool.path(), store.clone(), &cancel);
    let body = wait_for_object(&store, &key).await;
    assert_eq!(body.as_ref(), local.as_slice(), "the object is the spooled WAV");
    assert_eq!(
        store.puts_failed.load(Ordering::SeqCst),
        3,
        "failed three times, then made it"
    );
    for _ in 0..100 {
        if spool_files(spool.path()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(spool_files(spool.path()).is_empty(), "deleted after the put");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn media_uploader_takes_what_a_previous_process_left() {
    let spool = tempfile::tempdir().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let sidecar = |key: &str| {
        serde_json::to_vec(&Sidecar {
            object_key: key.into(),
            tenant: TenantId::new(),
            call_id: CallId::new(),
            started_ms: 0,
        })
        .unwrap()
    };
    // A finished recording the previous process had no time to upload...
    let mut finished = wav::wav_header(8).to_vec();
    finished.extend_from_slice(&[1, 0, 2, 0, 3, 0, 4, 0]);
    std::fs::write(spool.path().join("rec-0001.wav"), &finished).unwrap();
    std::fs::write(
        spool.path().join("rec-0001.json"),
        sidecar("t/recordings/old.wav"),
    )
    .unwrap();
    // ...one it was writing when it crashed (stale header, half a frame at the end)...
    let mut partial = wav::wav_header(0).to_vec();
    partial.extend_from_slice(&[5, 0, 6, 0, 7]);
    std::fs::write(spool.path().join("rec-0002.wav.part"), &partial).unwrap();
    std::fs::write(
        spool.path().join("rec-0002.json"),
        sidecar("t/recordings/crashed.wav"),
    )
    .unwrap();
    // ...and a sidecar whose recording was uploaded just before the crash.
    std::fs::write(
        spool.path().join("rec-0000.json"),
        sidecar("t/recordings/done.wav"),
    )
    .unwrap();

    let store = flaky_store(objects.path(), 0);
    let cancel = CancellationToken::new();
    let task = fast_uploader(spool.path(), store.clone(), &cancel);
    assert_eq!(
        wait_for_object(&store, "t/recordings/old.wav").await.as_ref(),
        finished.as_slice()
    );
    let recovered = wait_for_object(&store, "t/recordings/crashed.wav").await;
    let mut expected = wav::wav_header(4).to_vec();
    expected.extend_from_slice(&[5, 0, 6, 0]);
    assert_eq!(recovered.as_ref(), expected.as_slice());
    for _ in 0..100 {
        if spool_files(spool.path()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        spool_files(spool.path()).is_empty(),
        "{:?}",
        spool_files(spool.path())
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn media_plays_prompts_into_a_leg_and_reports_keys_pressed_there() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14600, 14639, spool.path()).await;
    let session = relay.open_session().await.unwrap();
    let (phone, _rtcp) = endpoint().await;
    session.set_peer(Leg::A, phone.local_addr().unwrap());
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    session.watch(events_tx, [Some(101), None]);
    // 3 packets of audio: 480 samples of a 1 kHz tone, as PCMA
    let tone: Vec<i16> = (0..480)
        .map(|i| ((i as f64 * 2.0 * std::f64::consts::PI / 8.0).sin() * 8000.0) as i16)
        .collect();
    let prompt = Prompt::from_samples(tone.clone());
    session.play(
        Leg::A,
        Playback {
            id: 7,
            payload: prompt.encode(8).unwrap(),
            payload_type: 8,
            looped: false,
        },
    );
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    while got.len() < 3 {
        let (pkt, from) = recv(&phone).await.expect("the prompt's packets arrive");
        assert_eq!(from.port(), session.port(Leg::A), "sent from the leg's own port");
        got.push(pkt);
    }
    let spread = started.elapsed();
    assert!(
        spread >= Duration::from_millis(30),
        "paced at 20 ms, took {spread:?}"
    );
    let decoded: Vec<i16> = got
        .iter()
        .flat_map(|p| {
            assert_eq!(p[1] & 0x7f, 8);
            p[12..]
                .iter()
                .map(|&b| g711::ALAW[usize::from(b)])
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(decoded.len(), 480);
    for (a, b) in decoded.iter().zip(&tone) {
        assert!((i32::from(*a) - i32::from(*b)).abs() < 300, "{a} vs {b}");
    }
    let ev = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .unwrap();
    assert_eq!(ev, Some(MediaEvent::PlayDone { leg: Leg::A, id: 7 }));
    assert!(recv(&phone).await.is_none(), "nothing after the end");

    // The phone presses 5 (start, end x3) then #: two keys reported.
    let port = to(session.port(Leg::A));
    for (ts, payload) in [
        (100u32, [5u8, 0x0a, 0, 160]),
        (100, [5, 0x8a, 3, 0x20]),
        (100, [5, 0x8a, 3, 0x20]),
        (100, [5, 0x8a, 3, 0x20]),
        (900, [11, 0x8a, 3, 0x20]),
    ] {
        phone
            .send_to(&rtp_packet(101, ts as u16, ts, 42, &payload), port)
            .await
            .unwrap();
    }
    for want in ['5', '#'] {
        let ev = tokio::time::timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap();
        assert_eq!(
            ev,
            Some(MediaEvent::Dtmf {
                leg: Leg::A,
                key: want
            })
        );
    }

    // A looped playback runs until stopped.
    session.play(
        Leg::A,
        Playback {
            id: 8,
            payload: vec![0xd5; 160].into(),
            payload_type: 8,
            looped: true,
        },
    );
    for _ in 0..5 {
        assert!(recv(&phone).await.is_some());
    }
    session.stop_playing(Leg::A);
    tokio::time::sleep(Duration::from_millis(60)).await;
    while tokio::time::timeout(Duration::from_millis(5), phone.recv_from(&mut [0u8; 300]))
        .await
        .is_ok()
    {}
    assert!(recv(&phone).await.is_none(), "stopped");
    assert!(
        events.try_recv().is_err(),
        "a looped or stopped playback reports no end"
    );
    session.close().await;
}

#[tokio::test]
async fn what_the_relay_plays_to_a_side_replaces_the_audio_relayed_to_it() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14640, 14679, spool.path()).await;
    let session = relay.open_session().await.unwrap();
    let (a, _a_rtcp) = endpoint().await;
    let (b, _b_rtcp) = endpoint().await;
    session.set_peer(Leg::A, a.local_addr().unwrap());
    session.set_peer(Leg::B, b.local_addr().unwrap());
    let from_a = |seq: u16| rtp_packet(0, seq, u32::from(seq) * 160, 0xaaaa, &[0x11; 160]);
    // relayed while nothing plays
    a.send_to(&from_a(1), to(session.port(Leg::A))).await.unwrap();
    let (pkt, _) = recv(&b).await.expect("relayed to B");
    assert_eq!(&pkt[8..12], &0xaaaa_u32.to_be_bytes());
    // music on hold towards B: A's audio no longer reaches B, the music does
    session.play(
        Leg::B,
        Playback {
            id: 0,
            payload: vec![0x55; 160].into(),
            payload_type: 0,
            looped: true,
        },
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    for seq in 2..6 {
        a.send_to(&from_a(seq), to(session.port(Leg::A))).await.unwrap();
    }
    let mut ssrcs = std::collections::HashSet::new();
    for _ in 0..8 {
        let (pkt, _) = recv(&b).await.expect("music packets");
        ssrcs.insert(u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]));
    }
    assert!(
        !ssrcs.contains(&0xaaaa),
        "A's packets are held back while B hears music"
    );
    assert_eq!(ssrcs.len(), 1);
    // resume: relayed again
    session.stop_playing(Leg::B);
    tokio::time::sleep(Duration::from_millis(50)).await;
    while tokio::time::timeout(Duration::from_millis(5), b.recv_from(&mut [0u8; 300]))
        .await
        .is_ok()
    {}
    a.send_to(&from_a(9), to(session.port(Leg::A))).await.unwrap();
    let (pkt, _) = recv(&b).await.expect("relayed again");
    assert_eq!(&pkt[8..12], &0xaaaa_u32.to_be_bytes());
    session.close().await;
}

#[tokio::test]
async fn a_session_knows_how_long_its_media_has_been_idle() {
    let spool = tempfile::tempdir().unwrap();
    let relay = relay(14680, 14699, spool.path()).await;
    let session = relay.open_session().await.unwrap();
    let (a, _a_rtcp) = endpoint().await;
    session.set_peer(Leg::A, a.local_addr().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = session.media_idle();
    assert!(
        idle >= Duration::from_millis(250),
        "idle since the start: {idle:?}"
    );
    a.send_to(&rtp_packet(0, 1, 160, 7, &[0xff; 160]), to(session.port(Leg::A)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let idle = session.media_idle();
    assert!(idle < Duration::from_millis(250), "a packet arrived: {idle:?}");
    // a stranger's packet after latching does not count as the call's media
    let (stranger, _s) = endpoint().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stranger
        .send_to(&rtp_packet(0, 1, 160, 9, &[0xff; 160]), to(session.port(Leg::A)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(session.media_idle() >= Duration::from_millis(350));
    session.close().await;
}
