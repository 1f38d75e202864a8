//! The uploader: moves finished recordings from the local spool to the object store.
//!
//! It scans the spool (see [`super::recording`] for the layout), oldest first, puts each
//! `{name}.wav` at the key of its `{name}.json` sidecar and deletes both files only after the
//! put succeeded. A failed put is retried with capped exponential backoff, forever: a
//! recording is never given up. At start it first finalizes `.part` files a crashed process
//! left, then uploads whatever a previous process left finished. Only a recording the store
//! refuses outright (an invalid key) is set aside as `{name}.wav.rejected` and logged, so it
//! does not block the others; it stays on disk.

use super::recording::{self, Sidecar, CONTENT_TYPE, PART_SUFFIX, SIDECAR_SUFFIX, WAV_SUFFIX};
use crate::backoff::{Backoff, BackoffPolicy};
use bytes::Bytes;
use pbx_engines::objects::{ObjectError, ObjectStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the spool is scanned for finished recordings.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Uploads spooled recordings; see the module docs.
#[derive(Debug)]
pub struct RecordingUploader;

impl RecordingUploader {
    /// Uploads every finished recording in the spool to the object store, deletes the local
    /// files only after a successful put, retries failures with backoff forever, and on start
    /// picks up what a previous process left. Stops when `cancel` fires (between uploads).
    pub fn spawn(
        spool_dir: PathBuf,
        store: Arc<dyn ObjectStore>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        };
        Self::spawn_with(spool_dir, store, cancel, policy, SCAN_INTERVAL)
    }

    /// [`Self::spawn`] with the retry policy and scan interval given (tests use short ones).
    pub fn spawn_with(
        spool_dir: PathBuf,
        store: Arc<dyn ObjectStore>,
        cancel: CancellationToken,
        retry: BackoffPolicy,
        scan_interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let dir = spool_dir.clone();
            let recovered = tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot create the recording spool");
                }
                recording::recover_parts(&dir)
            })
            .await
            .unwrap_or(0);
            if recovered > 0 {
                tracing::info!(recovered, "recordings of a previous process finalized");
            }
            let mut backoff = Backoff::new(retry);
            loop {
                let wait = match upload_pass(&spool_dir, store.as_ref(), &cancel).await {
                    Ok(()) => {
                        backoff.reset();
                        scan_interval
                    }
                    Err(()) => backoff.next_delay(),
                };
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

/// The names (without suffix) of finished recordings, oldest first, and sidecars left alone
/// (their recording was uploaded but the process died before deleting them).
async fn scan(dir: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let mut wavs = Vec::new();
    let mut sidecars = Vec::new();
    let mut parts = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(PART_SUFFIX) {
            parts.push(stem.to_owned());
        } else if let Some(stem) = name.strip_suffix(WAV_SUFFIX) {
            wavs.push(stem.to_owned());
        } else if let Some(stem) = name.strip_suffix(SIDECAR_SUFFIX) {
            sidecars.push(stem.to_owned());
        }
    }
    wavs.sort();
    let orphans = sidecars
        .into_iter()
        .filter(|s| !wavs.contains(s) && !parts.contains(s))
        .collect();
    Ok((wavs, orphans))
}

/// One pass over the spool. Err(()) when an upload failed and the pass should be retried after
/// a backoff.
async fn upload_pass(dir: &Path, store: &dyn ObjectStore, cancel: &CancellationToken) -> Result<(), ()> {
    let (wavs, orphans) = match scan(dir).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the recording spool");
            return Err(());
        }
    };
    for name in orphans {
        // Re-check: a writer creates the .part before the sidecar, so a sidecar alone is a
        // leftover of an upload that finished.
        let part = dir.join(format!("{name}{PART_SUFFIX}"));
        let wav = recording::wav_path(dir, &name);
        if !part.exists() && !wav.exists() {
            let _ = tokio::fs::remove_file(recording::sidecar_path(dir, &name)).await;
        }
    }
    for name in wavs {
        if cancel.is_cancelled() {
            return Ok(());
        }
        upload_one(dir, &name, store).await?;
    }
    Ok(())
}

async fn upload_one(dir: &Path, name: &str, store: &dyn ObjectStore) -> Result<(), ()> {
    let wav = recording::wav_path(dir, name);
    let sidecar_path = recording::sidecar_path(dir, name);
    let sidecar: Sidecar = match tokio::fs::read(&sidecar_path).await {
        Ok(json) => match serde_json::from_slice(&json) {
            Ok(s) => s,
            Err(e) => {
                set_aside(&wav, &format!("unreadable sidecar: {e}")).await;
                return Ok(());
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            set_aside(&wav, "no sidecar").await;
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(recording = name, error = %e, "cannot read a recording's sidecar");
            return Err(());
        }
    };
    let body = match tokio::fs::read(&wav).await {
        Ok(b) => Bytes::from(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()), // raced with another uploader
        Err(e) => {
            tracing::warn!(recording = name, error = %e, "cannot read a spooled recording");
            return Err(());
        }
    };
    let size = body.len();
    match store.put(&sidecar.object_key, body, CONTENT_TYPE).await {
        Ok(()) => {
            if let Err(e) = tokio::fs::remove_file(&wav).await {
                tracing::warn!(recording = name, error = %e, "uploaded, but cannot delete the spooled file");
            }
            let _ = tokio::fs::remove_file(&sidecar_path).await;
            tracing::debug!(key = %sidecar.object_key, size, "recording uploaded");
            Ok(())
        }
        Err(ObjectError::InvalidKey(key)) => {
            set_aside(&wav, &format!("the object store refuses the key {key:?}")).await;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(key = %sidecar.object_key, error = %e, "recording upload failed; will retry");
            Err(())
        }
    }
}

/// Renames a recording that can never be uploaded out of the way, keeping it on disk.
async fn set_aside(wav: &Path, why: &str) {
    let mut rejected = wav.as_os_str().to_owned();
    rejected.push(".rejected");
    tracing::error!(file = %wav.display(), why, "recording cannot be uploaded; kept as .wav.rejected");
    if let Err(e) = tokio::fs::rename(wav, PathBuf::from(rejected)).await {
        tracing::error!(file = %wav.display(), error = %e, "cannot set a recording aside");
    }
}
