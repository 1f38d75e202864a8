//! Two baresip phones on `pbx up` (issue 3 acceptance): 1001 calls 1002 through the B2BUA
//! with media anchored on the relay. The caller plays a 1 kHz tone, the callee a 440 Hz one;
//! the test checks with a Goertzel filter that the callee heard 1 kHz, that the stored
//! recording (fetched by its presigned URL) has the caller's 1 kHz on the left channel and the
//! callee's 440 Hz on the right, and that the call log shows the call with its durations.
//! Driven through baresip's ctrl_tcp (see /work/shared/recipes/baresip).

use crate::support::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "Tone-secret-77";
const TALK: Duration = Duration::from_secs(3);

/// A mono S16LE 8 kHz WAV with a sine of `hz` (what baresip's aufile source needs).
fn tone_wav(path: &Path, hz: f64, secs: u32) {
    let rate = 8000u32;
    let n = rate * secs;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let v = (f64::from(i) * hz * 2.0 * std::f64::consts::PI / f64::from(rate)).sin() * 12_000.0;
        data.extend_from_slice(&(v as i16).to_le_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The channels of a 16-bit PCM WAV (any channel count), and its rate.
fn read_wav(bytes: &[u8]) -> (u32, Vec<Vec<f64>>) {
    assert!(
        bytes.len() > 44 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "not a WAV"
    );
    let mut pos = 12;
    let (mut channels, mut rate, mut bits) = (0usize, 0u32, 0u16);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len =
            u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        if id == b"fmt " {
            channels = u16::from_le_bytes([body[2], body[3]]) as usize;
            rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            bits = u16::from_le_bytes([body[14], body[15]]);
        } else if id == b"data" {
            assert_eq!(bits, 16, "16-bit PCM expected");
            let mut out = vec![Vec::new(); channels];
            for (i, s) in body.chunks_exact(2).enumerate() {
                out[i % channels].push(f64::from(i16::from_le_bytes([s[0], s[1]])));
            }
            return (rate, out);
        }
        pos += 8 + len + (len & 1);
    }
    panic!("WAV without data chunk");
}

/// Share of the signal's power at `hz` (Goertzel over 20 ms blocks that are not silent):
/// about 1.0 for a pure tone at `hz`, about 0 for another frequency or silence.
fn tone_power(samples: &[f64], rate: u32, hz: f64) -> f64 {
    let block = (rate / 50) as usize;
    let k = (0.5 + block as f64 * hz / f64::from(rate)).floor();
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * k / block as f64).cos();
    let (mut at_tone, mut total) = (0.0, 0.0);
    for b in samples.chunks_exact(block) {
        let energy: f64 = b.iter().map(|x| x * x).sum();
        if (energy / block as f64).sqrt() < 100.0 {
            continue; // silence: before the answer, gaps
        }
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in b {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        // a pure sine's Goertzel power is energy * N / 2
        at_tone += power;
        total += energy * block as f64 / 2.0;
    }
    if total == 0.0 {
        0.0
    } else {
        at_tone / total
    }
}

/// A UDP+TCP port whose next port is free too (baresip binds TLS on port+1).
fn free_sip_port() -> u16 {
    for _ in 0..200 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(p) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p > 65_000 {
            continue;
        }
        drop(u);
        let free = |port: u16| {
            UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        if free(p) && free(p + 1) && free(p + 2) {
            return p;
        }
    }
    panic!("no free port pair");
}

struct Phone {
    dir: PathBuf,
    child: Child,
    ctrl: u16,
}

impl Phone {
    /// Starts baresip as `ext` of acme, registered through the PBX at `sip`.
    fn start(root: &Path, ext: &str, sip: &str, tone_hz: f64, rtp: (u16, u16)) -> Phone {
        let dir = root.join(format!("phone-{ext}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        tone_wav(&dir.join("tone.wav"), tone_hz, 20);
        let port = free_sip_port();
        let ctrl = port + 2;
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\ncall_local_timeout 120\n\
             audio_buffer 20-160\naudio_player aubridge,nil\naudio_source aufile,tone.wav\naudio_alert aubridge,nil\n\
             ausrc_format s16\nauplay_format s16\nauenc_format s16\naudec_format s16\n\
             rtp_ports {}-{}\nrtcp_mux no\njitter_buffer_delay 5-10\nrtp_stats no\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule sndfile.so\nmodule aufile.so\nmodule aubridge.so\n\
             module_tmp account.so\nmodule_app menu.so\nmodule_app ctrl_tcp.so\n\
             snd_path .\nstatmode_default off\nctrl_tcp_listen 127.0.0.1:{ctrl}\n",
            rtp.0, rtp.1
        );
        std::fs::write(dir.join("config"), config).unwrap_or_else(|e| panic!("{e}"));
        let account = format!(
            "<sip:{ext}@acme.localhost>;auth_user={ext};auth_pass={SECRET};outbound=\"sip:{sip};transport=udp\";\
             regint=300;answermode=auto;audio_codecs=pcmu\n"
        );
        std::fs::write(dir.join("accounts"), account).unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap_or_else(|e| panic!("{e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("baresip")
            .args(["-f", ".", "-s"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("running baresip (apt-get install baresip-core): {e}"));
        Phone { dir, child, ctrl }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The WAV this phone recorded of what it received (sndfile's `*-dec.wav`).
    fn received_wav(&self) -> Vec<u8> {
        let found = std::fs::read_dir(&self.dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"));
        let path = found.unwrap_or_else(|| panic!("no -dec.wav in {}:\n{}", self.dir.display(), self.log()));
        std::fs::read(path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn stop(mut self) {
        // quit un-registers first; a second signal or a kill ends a lingering one
        let _ = Ctrl::connect(self.ctrl).map(|mut c| c.command("quit", ""));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ctrl_tcp connection: JSON commands in netstrings, responses and events back.
struct Ctrl {
    stream: TcpStream,
    buf: Vec<u8>,
    events: Vec<String>,
}

impl Ctrl {
    fn connect(port: u16) -> std::io::Result<Ctrl> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
                    return Ok(Ctrl {
                        stream,
                        buf: Vec::new(),
                        events: Vec::new(),
                    });
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn command(&mut self, command: &str, params: &str) -> serde_json::Value {
        let msg = serde_json::json!({"command": command, "params": params, "token": "t"}).to_string();
        self.stream
            .write_all(format!("{}:{msg},", msg.len()).as_bytes())
            .unwrap_or_else(|e| panic!("ctrl_tcp write: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for m in self.read() {
                if m["response"] == true {
                    return m;
                }
            }
        }
        panic!("no response to {command}");
    }

    /// Messages received within one read timeout.
    fn read(&mut self) -> Vec<serde_json::Value> {
        let mut chunk = [0u8; 65_536];
        if let Ok(n) = self.stream.read(&mut chunk) {
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let mut out = Vec::new();
        while let Some(colon) = self.buf.iter().position(|b| *b == b':') {
            let Some(len) = std::str::from_utf8(&self.buf[..colon])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                break;
            };
            if self.buf.len() < colon + 1 + len + 1 {
                break;
            }
            let body = self.buf[colon + 1..colon + 1 + len].to_vec();
            self.buf.drain(..colon + 1 + len + 1);
            if let Ok(m) = serde_json::from_slice::<serde_json::Value>(&body) {
                if m["event"] == true {
                    self.events
                        .push(m["type"].as_str().unwrap_or_default().to_owned());
                }
                out.push(m);
            }
        }
        out
    }

    fn wait_event(&mut self, kind: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.events.iter().position(|e| e == kind) {
                self.events.remove(i);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            self.read();
        }
    }

    /// Polls `reginfo` until the account is registered.
    fn wait_registered(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let r = self.command("reginfo", "");
            if r["data"].as_str().is_some_and(|d| d.contains("OK")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

#[tokio::test]
async fn baresip_call_carries_the_tone_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = tmp.path().to_owned();
    let mut cmd = pbx_command();
    cmd.arg("up").arg("--data-dir").arg(root.join("data")).args([
        "--http",
        "127.0.0.1:0",
        "--sip",
        "127.0.0.1:0",
        "--sip-digest",
        "md5",
        "--rtp-ports",
        "12000-12999",
        "--edge-http",
        "127.0.0.1:0",
    ]);
    let mut proc = Proc::spawn("pbx-up-baresip", cmd);
    proc.wait_stdout("the Data directory line", Duration::from_secs(60), |l| {
        l.contains("Data directory:")
    })
    .await;
    let out = proc.stdout_lines();
    let find = |label: &str| -> String {
        out.iter()
            .find_map(|l| field_after(l, label).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {label:?} line in {out:#?}"))
    };
    let (sip, api) = (find("SIP over UDP:"), find("API and console:"));
    let edge = find("Edge node health:")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .trim_end_matches("/readyz")
        .to_owned();
    let data = root.join("data").to_string_lossy().into_owned();
    let out = pbx_cli(&["tenant", "create", "--slug", "acme", "--data-dir", &data], &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    for (ext, recording) in [("1001", "off"), ("1002", "always")] {
        let args = [
            "extension",
            "create",
            "--tenant",
            "acme",
            "--number",
            ext,
            "--secret",
            SECRET,
            "--recording",
            recording,
            "--data-dir",
            &data,
        ];
        let out = pbx_cli(&args, &[]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }

    let (callee_phone, caller_phone, sip2) = (root.clone(), root.clone(), sip.clone());
    let (callee, caller) = tokio::task::spawn_blocking(move || {
        let callee = Phone::start(&callee_phone, "1002", &sip2, 440.0, (13100, 13199));
        let caller = Phone::start(&caller_phone, "1001", &sip2, 1000.0, (13000, 13099));
        (callee, caller)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let (callee_ctrl_port, caller_ctrl_port) = (callee.ctrl, caller.ctrl);
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut callee_ctrl = Ctrl::connect(callee_ctrl_port).map_err(|e| format!("callee ctrl: {e}"))?;
        let mut caller_ctrl = Ctrl::connect(caller_ctrl_port).map_err(|e| format!("caller ctrl: {e}"))?;
        if !callee_ctrl.wait_registered(Duration::from_secs(15)) {
            return Err("1002 did not register".into());
        }
        if !caller_ctrl.wait_registered(Duration::from_secs(15)) {
            return Err("1001 did not register".into());
        }
        caller_ctrl.command("dial", "1002");
        if !caller_ctrl.wait_event("CALL_ESTABLISHED", Duration::from_secs(15)) {
            return Err("the call was not established".into());
        }
        std::thread::sleep(TALK);
        caller_ctrl.command("hangup", "");
        if !callee_ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10)) {
            return Err("the callee never saw the BYE".into());
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = result {
        panic!(
            "{e}\n--- caller:\n{}\n--- callee:\n{}\n--- pbx:\n{}",
            caller.log(),
            callee.log(),
            proc.tail(40)
        );
    }

    // What the callee heard: the caller's 1 kHz tone, through the relay.
    let heard = callee.received_wav();
    let (rate, channels) = read_wav(&heard);
    let power = tone_power(&channels[0], rate, 1000.0);
    assert!(power > 0.5, "the callee heard no 1 kHz tone (power {power:.3})");
    let wrong = tone_power(&channels[0], rate, 440.0);
    assert!(wrong < 0.2, "the callee heard its own 440 Hz ({wrong:.3})");
    tokio::task::spawn_blocking(move || {
        caller.stop();
        callee.stop();
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The call log: answered, about TALK long, with a recording whose left channel is the
    // caller (1 kHz) and right channel the callee (440 Hz).
    let token = std::fs::read_to_string(root.join("data/operator.token")).unwrap_or_else(|e| panic!("{e}"));
    let token = token.trim().to_owned();
    let client = http_client();
    let list = format!("{api}/api/v1/tenants/acme/call-logs");
    let item = eventually("the call in the call log", Duration::from_secs(15), || {
        let (client, list, token) = (client.clone(), list.clone(), token.clone());
        async move {
            let r = try_call(&client, reqwest::Method::GET, &list, Some(&token), None).await?;
            r.json["items"]
                .as_array()
                .and_then(|a| a.first().cloned())
                .ok_or(r.text)
        }
    })
    .await;
    assert_eq!(item["disposition"], "answered", "{item:#}");
    assert_eq!(item["hangup_side"], "caller", "{item:#}");
    assert_eq!(
        (item["from"].as_str(), item["to"].as_str()),
        (Some("1001"), Some("1002"))
    );
    let talk = item["talk_ms"].as_i64().unwrap_or(0);
    assert!(
        (2_500..6_000).contains(&talk),
        "talk time {talk} ms for a {TALK:?} call"
    );
    assert_eq!(item["has_recording"], true, "{item:#}");
    let call_id = item["call_id"].as_str().unwrap_or_default().to_owned();
    let rec_url = format!("{api}/api/v1/tenants/acme/call-logs/{call_id}/recording");
    let wav = eventually(
        "the recording in the object store",
        Duration::from_secs(20),
        || {
            let (client, rec_url, token) = (client.clone(), rec_url.clone(), token.clone());
            async move {
                let r = try_call(&client, reqwest::Method::GET, &rec_url, Some(&token), None).await?;
                let url = r.json["url"].as_str().ok_or(r.text.clone())?.to_owned();
                let got = client.get(&url).send().await.map_err(|e| e.to_string())?;
                if !got.status().is_success() {
                    return Err(format!("{} fetching the recording", got.status()));
                }
                got.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string())
            }
        },
    )
    .await;
    let (rate, channels) = read_wav(&wav);
    assert_eq!((rate, channels.len()), (8000, 2), "8 kHz stereo expected");
    let left = tone_power(&channels[0], rate, 1000.0);
    let right = tone_power(&channels[1], rate, 440.0);
    assert!(left > 0.5, "left channel (caller) has no 1 kHz tone: {left:.3}");
    assert!(
        right > 0.5,
        "right channel (callee) has no 440 Hz tone: {right:.3}"
    );
    let seconds = channels[0].len() as f64 / f64::from(rate);
    assert!(
        (2.0..8.0).contains(&seconds),
        "a {seconds:.1} s recording for a {TALK:?} call"
    );

    // The edge's metrics count the call and the packets its relay carried.
    let metrics = client
        .get(format!("{edge}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert_eq!(value("pbx_calls_answered "), 1.0);
    assert_eq!(value("pbx_calls_active "), 0.0);
    // 3 s of 20 ms packets both ways is about 300
    assert!(value("pbx_rtp_packets_relayed ") > 200.0, "{metrics}");

    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}

#[test]
fn goertzel_tells_tones_apart() {
    let sine = |hz: f64| -> Vec<f64> {
        (0..8000)
            .map(|i| (f64::from(i) * hz * 2.0 * std::f64::consts::PI / 8000.0).sin() * 8000.0)
            .collect()
    };
    assert!(tone_power(&sine(1000.0), 8000, 1000.0) > 0.9);
    assert!(tone_power(&sine(440.0), 8000, 1000.0) < 0.05);
    assert_eq!(tone_power(&[0.0; 8000], 8000, 1000.0), 0.0);
}
