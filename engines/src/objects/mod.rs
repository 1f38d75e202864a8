//! Object storage: recordings, prompts, exports. Keys always start with the tenant id.

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

#[cfg(test)]
pub(crate) mod conformance;
pub mod dir;
pub mod s3;

pub use self::dir::DirObjectStore;
pub use self::s3::{S3Config, S3ObjectStore};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("no object at key {0:?}")]
    NotFound(String),
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    #[error("object store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` at `key`, replacing what was there. Atomic: a reader sees the old or the
    /// new object, never a part.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError>;
    async fn get(&self, key: &str) -> Result<Bytes, ObjectError>;
    /// Deletes `key`; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;
    /// A URL that lets anyone holding it GET the object until `expires_in` has passed.
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, ObjectError>;
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), ObjectError>;
}

/// The longest key accepted, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// Segment prefix reserved for the directory store's temporary files.
pub(crate) const TEMP_PREFIX: &str = ".pbx-tmp-";

/// Checks a key the same way for every store, so a key that works with `pbx up` works in
/// production and back: `/`-separated non-empty segments, none `.` or `..` or starting with
/// [`TEMP_PREFIX`], not absolute, no backslash, no NUL or other control character, at most
/// [`MAX_KEY_LEN`] bytes (S3's limit).
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    let invalid = || Err(ObjectError::InvalidKey(key.to_owned()));
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.starts_with('/') || key.contains('\\') {
        return invalid();
    }
    if key.chars().any(char::is_control) {
        return invalid();
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || segment.starts_with(TEMP_PREFIX) {
            return invalid();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for ok in ["t1/rec/a.wav", "a", "t1/.hidden", "t1/a..b", "t1/ü ñ"] {
            assert!(validate_key(ok).is_ok(), "{ok:?} is valid");
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        assert!(validate_key(&long[..MAX_KEY_LEN]).is_ok());
        assert!(validate_key(&long).is_err());
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "../a",
            "a/..",
            "a\\b",
            "a\0b",
            "a\nb",
            "t1/.pbx-tmp-x",
        ] {
            assert!(
                matches!(validate_key(bad), Err(ObjectError::InvalidKey(k)) if k == bad),
                "{bad:?} is invalid"
            );
        }
    }
}
