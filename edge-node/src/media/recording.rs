//! Call recording: the object key, the spool files, and the writer thread that decodes relayed
//! G.711 into the stereo WAV (the format is described in the [`super`] module docs).
//!
//! Spool layout, one recording `{name}` (`rec-{uuid v7}`, so names sort by start time):
//! - `{name}.wav.part`: the WAV being written. Its writer holds an exclusive `flock` on it for
//!   as long as it writes, so anybody can tell a live file from one a crashed process left.
//! - `{name}.json`: the sidecar ([`Sidecar`]: object key, tenant, call, start time), written
//!   (temporary file + rename) right after the `.part` is created.
//! - `{name}.wav`: the finished recording; the `.part` is renamed to it after its header got
//!   the final sizes and it was fsynced. The uploader only ever takes `.wav` files.
//!
//! Crash recovery (decided: finalize what is readable): [`recover_parts`] runs when the relay
//! and the uploader start. Every `.part` nobody holds a lock on and that has a sidecar gets a
//! header matching its length (cut to whole frames) and becomes a `.wav`, uploaded like any
//! other: at most the last second or so of audio (the writer's buffer) is missing. A `.part`
//! without a sidecar cannot be uploaded (no key): it is left in place and logged.

use super::g711;
use super::relay::SessionStats;
use super::wav::{self, ChannelClock, StereoMixer, CHUNK_FRAMES, KEEP_FRAMES};
use super::MediaError;
use pbx_contract::{CallId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the uploader needs to know about a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingMeta {
    pub tenant: TenantId,
    pub call_id: CallId,
    /// Where the recording goes in the object store; see [`recording_key`].
    pub object_key: String,
}

/// The object key of a call's recording: `{tenant}/recordings/{yyyy}/{mm}/{dd}/{call_id}.wav`,
/// dated in UTC by when the call started.
pub fn recording_key(tenant: TenantId, call_id: CallId, started: SystemTime) -> String {
    let date = chrono::DateTime::<chrono::Utc>::from(started);
    format!("{tenant}/recordings/{}/{call_id}.wav", date.format("%Y/%m/%d"))
}

/// The sidecar of a spooled recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    pub object_key: String,
    pub tenant: TenantId,
    pub call_id: CallId,
    /// Milliseconds since the Unix epoch when recording started.
    pub started_ms: i64,
}

pub(crate) const PART_SUFFIX: &str = ".wav.part";
pub(crate) const WAV_SUFFIX: &str = ".wav";
pub(crate) const SIDECAR_SUFFIX: &str = ".json";
pub(crate) const CONTENT_TYPE: &str = "audio/wav";

pub(crate) fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{PART_SUFFIX}"))
}
pub(crate) fn wav_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{WAV_SUFFIX}"))
}
pub(crate) fn sidecar_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{SIDECAR_SUFFIX}"))
}

/// A recording whose spool files exist, not yet handed to the writer thread.
#[derive(Debug)]
pub(crate) struct NewRecording {
    dir: PathBuf,
    name: String,
    file: File,
    pub(crate) key: String,
}

/// Creates the `.part` (header only, locked) and the sidecar of a new recording.
pub(crate) fn create(dir: &Path, meta: &RecordingMeta) -> Result<NewRecording, MediaError> {
    pbx_engines::objects::validate_key(&meta.object_key)
        .map_err(|_| MediaError::InvalidObjectKey(meta.object_key.clone()))?;
    let name = format!("rec-{}", uuid::Uuid::now_v7().simple());
    let part = part_path(dir, &name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(|e| MediaError::io(format!("create {}", part.display()), e))?;
    file.try_lock().map_err(|e| {
        MediaError::io(
            format!("lock {}", part.display()),
            io::Error::other(e.to_string()),
        )
    })?;
    file.write_all(&wav::wav_header(0))
        .map_err(|e| MediaError::io(format!("write {}", part.display()), e))?;
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let sidecar = Sidecar {
        object_key: meta.object_key.clone(),
        tenant: meta.tenant,
        call_id: meta.call_id,
        started_ms,
    };
    let written = serde_json::to_vec_pretty(&sidecar)
        .map_err(io::Error::other)
        .and_then(|json| write_atomically(&sidecar_path(dir, &name), &json));
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(&part);
        return Err(MediaError::io(format!("write sidecar of {name}"), e));
    }
    Ok(NewRecording {
        dir: dir.to_owned(),
        name,
        file,
        key: meta.object_key.clone(),
    })
}

fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Finalizes every `.part` in `dir` that no live writer holds and that has a sidecar (see the
/// module docs). Returns how many became `.wav`. Never fails: problems are logged.
pub(crate) fn recover_parts(dir: &Path) -> usize {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the recording spool");
            return 0;
        }
    };
    let mut recovered = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(PART_SUFFIX)) else {
            continue;
        };
        match recover_one(dir, name) {
            Ok(true) => {
                recovered += 1;
                tracing::warn!(
                    recording = name,
                    "finalized a recording a previous process left unfinished"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!(recording = name, error = %e, "cannot recover a spooled recording"),
        }
    }
    recovered
}

fn recover_one(dir: &Path, name: &str) -> io::Result<bool> {
    let part = part_path(dir, name);
    let mut file = OpenOptions::new().read(true).write(true).open(&part)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false), // a live writer
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if !sidecar_path(dir, name).exists() {
        tracing::error!(
            recording = name,
            "spooled recording has no sidecar (no object key): left in the spool, not uploaded"
        );
        return Ok(false);
    }
    let data_len = wav::data_len_for_file(file.metadata()?.len());
    file.set_len(wav::HEADER_LEN as u64 + u64::from(data_len))?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&wav::wav_header(data_len))?;
    file.sync_all()?;
    fs::rename(&part, wav_path(dir, name))?;
    sync_dir(dir);
    Ok(true)
}

/// One relayed RTP payload to record; its bytes are `data[start..start + len]` of its batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecPacket {
    pub(crate) recording: u64,
    pub(crate) channel: u8,
    pub(crate) payload_type: u8,
    pub(crate) ssrc: u32,
    pub(crate) timestamp: u32,
    pub(crate) start: u32,
    pub(crate) len: u32,
    /// Arrival, in microseconds after the batch's `arrival`.
    pub(crate) arrival_us: u32,
}

/// Packets one relay thread recorded in a few turns of its loop.
#[derive(Debug)]
pub(crate) struct PacketBatch {
    pub(crate) arrival: Instant,
    pub(crate) packets: Vec<RecPacket>,
    pub(crate) data: Vec<u8>,
}

impl PacketBatch {
    pub(crate) fn new(arrival: Instant) -> Self {
        PacketBatch {
            arrival,
            packets: Vec::new(),
            data: Vec::new(),
        }
    }
}

/// What relay threads tell the writer thread.
#[derive(Debug)]
pub(crate) enum RecMsg {
    Start {
        recording: u64,
        new: Box<NewRecording>,
    },
    Data(PacketBatch),
    /// Finalize; then pass `stats` on to whoever closed the session.
    Finish {
        recording: u64,
        stats: SessionStats,
        reply: Option<tokio::sync::oneshot::Sender<SessionStats>>,
    },
}

/// One recording being written.
struct Active {
    dir: PathBuf,
    name: String,
    file: File,
    started: Instant,
    clocks: [ChannelClock; 2],
    mixer: StereoMixer,
    out: Vec<u8>,
    data_len: u64,
    failed: bool,
}

const MAX_DATA_LEN: u64 = (u32::MAX - 36) as u64 / 4 * 4;
const ZEROS: [u8; CHUNK_FRAMES * wav::BYTES_PER_FRAME as usize] =
    [0; CHUNK_FRAMES * wav::BYTES_PER_FRAME as usize];

impl Active {
    fn new(new: NewRecording) -> Self {
        Active {
            dir: new.dir,
            name: new.name,
            file: new.file,
            started: Instant::now(),
            clocks: Default::default(),
            mixer: StereoMixer::default(),
            out: Vec::with_capacity(CHUNK_FRAMES * 8),
            data_len: 0,
            failed: false,
        }
    }

    fn add(&mut self, p: &RecPacket, payload: &[u8], arrival: Instant) {
        let Some(table) = g711::table_for(p.payload_type) else {
            return; // telephone-event, comfort noise, anything unknown: not audio we record
        };
        let since = arrival.saturating_duration_since(self.started);
        let arrival_pos = (since.as_nanos() * u128::from(wav::SAMPLE_RATE) / 1_000_000_000) as u64;
        let channel = usize::from(p.channel.min(1));
        let pos = self.clocks[channel].place(p.ssrc, p.timestamp, arrival_pos);
        let samples = payload.iter().map(|&b| table[usize::from(b)]);
        let silence = self.mixer.write(channel, pos, samples, &mut self.out);
        if silence > 0 {
            self.flush_out();
            self.write_silence(silence);
        }
        if self.mixer.buffered() >= KEEP_FRAMES + CHUNK_FRAMES {
            self.mixer.drain(KEEP_FRAMES, &mut self.out);
            self.flush_out();
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        if self.failed || bytes.is_empty() {
            return;
        }
        let room = MAX_DATA_LEN.saturating_sub(self.data_len) as usize;
        let bytes = &bytes[..bytes.len().min(room)];
        if bytes.is_empty() {
            return; // WAV's 4 GiB (37 hours) are full: the rest is not recorded
        }
        match self.file.write_all(bytes) {
            Ok(()) => self.data_len += bytes.len() as u64,
            Err(e) => {
                self.failed = true;
                tracing::error!(recording = %self.name, error = %e, "recording write failed; the rest of the call is not recorded");
            }
        }
    }

    fn flush_out(&mut self) {
        let out = std::mem::take(&mut self.out);
        self.write_bytes(&out);
        self.out = out;
        self.out.clear();
    }

    fn write_silence(&mut self, frames: u64) {
        let mut left = frames * u64::from(wav::BYTES_PER_FRAME);
        while left > 0 && !self.failed && self.data_len < MAX_DATA_LEN {
            let n = left.min(ZEROS.len() as u64) as usize;
            self.write_bytes(&ZEROS[..n]);
            left -= n as u64;
        }
    }

    /// Writes what is buffered, the final header, fsyncs and renames to `.wav`.
    fn finish(mut self) -> io::Result<()> {
        self.mixer.drain(0, &mut self.out);
        self.flush_out();
        let data_len = u32::try_from(self.data_len).unwrap_or(u32::MAX - 36);
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&wav::wav_header(data_len))?;
        self.file.sync_all()?;
        fs::rename(part_path(&self.dir, &self.name), wav_path(&self.dir, &self.name))?;
        sync_dir(&self.dir);
        Ok(())
    }
}

/// The writer thread: runs until every sender is gone, finalizing what is still open then.
pub(crate) fn run_writer(rx: Receiver<RecMsg>) {
    let mut active: HashMap<u64, Active> = HashMap::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            RecMsg::Start { recording, new } => {
                active.insert(recording, Active::new(*new));
            }
            RecMsg::Data(batch) => {
                for p in &batch.packets {
                    let (start, end) = (p.start as usize, p.start as usize + p.len as usize);
                    let (Some(rec), Some(payload)) =
                        (active.get_mut(&p.recording), batch.data.get(start..end))
                    else {
                        continue;
                    };
                    rec.add(
                        p,
                        payload,
                        batch.arrival + Duration::from_micros(u64::from(p.arrival_us)),
                    );
                }
            }
            RecMsg::Finish {
                recording,
                stats,
                reply,
            } => {
                if let Some(rec) = active.remove(&recording) {
                    let name = rec.name.clone();
                    if let Err(e) = rec.finish() {
                        tracing::error!(recording = %name, error = %e, "cannot finalize a recording; it stays in the spool and is recovered at the next start");
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(stats);
                }
            }
        }
    }
    for (_, rec) in active.drain() {
        let name = rec.name.clone();
        if let Err(e) = rec.finish() {
            tracing::error!(recording = %name, error = %e, "cannot finalize a recording at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn key_format() {
        let tenant = TenantId(Uuid::parse_str("0190a0b0-0000-7000-8000-000000000001").unwrap());
        let call = CallId(Uuid::parse_str("0190a0b0-0000-7000-8000-0000000000ff").unwrap());
        // 2024-02-29T23:59:59Z
        let started = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(
            recording_key(tenant, call, started),
            "0190a0b0-0000-7000-8000-000000000001/recordings/2024/02/29/0190a0b0-0000-7000-8000-0000000000ff.wav"
        );
        assert!(pbx_engines::objects::validate_key(&recording_key(tenant, call, SystemTime::now())).is_ok());
    }

    #[test]
    fn create_and_recover_a_crashed_part() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RecordingMeta {
            tenant: TenantId::new(),
            call_id: CallId::new(),
            object_key: "t/recordings/x.wav".into(),
        };
        let mut new = create(dir.path(), &meta).unwrap();
        let name = new.name.clone();
        // A live (locked) part is left alone.
        new.file.write_all(&[1, 0, 2, 0, 3, 0, 4, 0, 9]).unwrap();
        assert_eq!(recover_parts(dir.path()), 0);
        assert!(part_path(dir.path(), &name).exists());
        // The "process" dies: the lock goes with the file.
        drop(new);
        assert_eq!(recover_parts(dir.path()), 1);
        let wav = fs::read(wav_path(dir.path(), &name)).unwrap();
        assert_eq!(wav.len(), 44 + 8, "cut to whole frames");
        assert_eq!(&wav[..44], &wav::wav_header(8));
        let sidecar: Sidecar =
            serde_json::from_slice(&fs::read(sidecar_path(dir.path(), &name)).unwrap()).unwrap();
        assert_eq!(sidecar.object_key, meta.object_key);
        assert_eq!(sidecar.call_id, meta.call_id);

        // A part without a sidecar stays.
        fs::write(part_path(dir.path(), "rec-orphan"), b"RIFF").unwrap();
        assert_eq!(recover_parts(dir.path()), 0);
        assert!(part_path(dir.path(), "rec-orphan").exists());
    }

    #[test]
    fn invalid_keys_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RecordingMeta {
            tenant: TenantId::new(),
            call_id: CallId::new(),
            object_key: "../escape.wav".into(),
        };
        assert!(matches!(
            create(dir.path(), &meta),
            Err(MediaError::InvalidObjectKey(_))
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
