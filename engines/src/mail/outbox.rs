//! Embedded mailer for `pbx up`: files each message as an `.eml` file in a directory
//! instead of sending it, for the operator to read or hand to a real mail system.

use super::message::{build_message, parse_mailbox};
use super::{Email, MailError, Mailer};
use async_trait::async_trait;
use lettre::message::Mailbox;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// [`Mailer`] that writes RFC 5322 files named `{unix_ms}-{uuid}.eml` into a directory.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

/// Temp files start with a dot and do not end in `.eml`, so readers of the outbox that
/// look for `*.eml` never see a message half-written.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        // The rename is durable only once the directory entry is on disk.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl OutboxMailer {
    /// `dir` is created on first use; `from` is the sender (`Name <addr@host>` or `addr@host`).
    pub fn new(dir: impl Into<PathBuf>, from: &str) -> Result<Self, MailError> {
        Ok(Self {
            dir: dir.into(),
            from: parse_mailbox(from)?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let bytes = build_message(&self.from, email)?.formatted();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{unix_ms}-{}.eml", uuid::Uuid::new_v4());
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| MailError::Transport(format!("outbox task failed: {e}")))?
            .map_err(|e| MailError::Transport(format!("outbox {}: {e}", self.dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::conformance::FROM;
    use crate::testkit::read_dir_files;
    use std::ops::Deref;
    use tempfile::TempDir;

    pub(crate) struct Fixture {
        mailer: OutboxMailer,
        dir: TempDir,
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            Self {
                mailer: OutboxMailer::new(dir.path().join("outbox"), FROM).expect("mailer"),
                dir,
            }
        }
    }

    impl Deref for Fixture {
        type Target = OutboxMailer;
        fn deref(&self) -> &OutboxMailer {
            &self.mailer
        }
    }

    async fn received(fixture: &Fixture) -> Vec<Vec<u8>> {
        read_dir_files(&fixture.dir.path().join("outbox"))
    }

    crate::mail::conformance::mail_conformance_tests!(Fixture::new(), received);

    #[tokio::test]
    async fn files_are_named_by_time_and_uuid_with_no_temp_left() {
        let fixture = Fixture::new().await;
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis();
        for i in 0..3 {
            fixture
                .send(&Email {
                    to: vec!["a@x.test".to_owned()],
                    subject: format!("n{i}"),
                    text_body: "body".to_owned(),
                    html_body: None,
                })
                .await
                .expect("send");
        }
        let mut names: Vec<String> = fs::read_dir(fixture.dir())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        for name in &names {
            let stem = name.strip_suffix(".eml").expect(".eml");
            let (ms, id) = stem.split_once('-').expect("{unix_ms}-{uuid}");
            let ms: u128 = ms.parse().expect("unix ms");
            assert!(ms >= before && ms < before + 60_000, "{name}");
            uuid::Uuid::parse_str(id).expect("uuid");
        }
    }

    #[test]
    fn an_invalid_sender_is_refused() {
        assert!(matches!(
            OutboxMailer::new("/tmp/x", "not an address"),
            Err(MailError::InvalidAddress(_))
        ));
    }
}
