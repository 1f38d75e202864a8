//! Object store in a local directory, for `pbx up`.
//!
//! Each object is one file at `{root}/{key}`. Writes go to a temporary file in the same
//! directory (named with [`TEMP_PREFIX`], which keys may not use), are fsynced, and renamed
//! over the target, so readers see the old or the new object, never a part.
//!
//! Presigned URLs point at the control plane's `/objects/{key}` route, signed with
//! HMAC-SHA256 over `"{key}\n{expires}"`; the route checks them with
//! [`DirObjectStore::verify_presigned`] before serving the bytes.

use super::{validate_key, ObjectError, ObjectMeta, ObjectStore, TEMP_PREFIX};
use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{self, ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// [`ObjectStore`] over a local directory.
pub struct DirObjectStore {
    root: PathBuf,
    public_base_url: String,
    signing_key: Vec<u8>,
}

impl fmt::Debug for DirObjectStore {
    // Never print the signing key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirObjectStore")
            .field("root", &self.root)
            .field("public_base_url", &self.public_base_url)
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_segment(segment: &str, out: &mut String) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn unavailable(op: &str, key: &str, e: &io::Error) -> ObjectError {
    ObjectError::Unavailable(format!("{op} {key:?}: {e}"))
}

/// Runs blocking filesystem work off the async workers.
async fn blocking<T, F>(f: F) -> Result<T, ObjectError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ObjectError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Unavailable(format!("filesystem task failed: {e}")))?
}

/// Writes `body` to `path` atomically and durably: temp file, fsync, rename, fsync the dir.
fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "object path has no parent"))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is on disk.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Collects every object under `dir` (whose key is `dir_key`) whose key starts with `prefix`.
fn walk(dir: &Path, dir_key: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8: cannot be a key
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = if dir_key.is_empty() {
            name
        } else {
            format!("{dir_key}/{name}")
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            let as_dir = format!("{key}/");
            // Descend only where keys can still match the prefix.
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            out.push(ObjectMeta {
                key,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

impl DirObjectStore {
    /// `root` is created on first write; `public_base_url` is where the control plane serves
    /// `/objects/...` (e.g. `https://pbx.example.com`); `signing_key` signs presigned URLs and
    /// must stay secret (use at least 32 random bytes).
    pub fn new(root: impl Into<PathBuf>, public_base_url: impl Into<String>, signing_key: Vec<u8>) -> Self {
        let public_base_url = public_base_url.into().trim_end_matches('/').to_owned();
        Self {
            root: root.into(),
            public_base_url,
            signing_key,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`, for serving it as a stream rather than reading it whole.
    pub fn object_path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        validate_key(key)?;
        Ok(key.split('/').fold(self.root.clone(), |p, s| p.join(s)))
    }

    fn signature(&self, key: &str, expires: u64) -> Option<[u8; 32]> {
        let mut mac = HmacSha256::new_from_slice(&self.signing_key).ok()?;
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// Whether `sig` (hex) is this store's signature of `key` until `expires` (unix seconds)
    /// and `now_unix` is not past `expires`. The comparison is constant-time.
    pub fn verify_presigned(&self, key: &str, expires: u64, sig: &str, now_unix: u64) -> bool {
        if validate_key(key).is_err() || now_unix > expires {
            return false;
        }
        let Ok(given) = hex::decode(sig) else {
            return false;
        };
        let Some(expected) = self.signature(key, expires) else {
            return false;
        };
        bool::from(expected.as_slice().ct_eq(given.as_slice()))
    }
}

#[async_trait]
impl ObjectStore for DirObjectStore {
    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<(), ObjectError> {
        let path = self.object_path(key)?;
        let key = key.to_owned();
        blocking(move || {
            write_atomically(&path, &body).map_err(|e| match e.kind() {
                // A key that needs an existing object as a folder, or names a folder.
                ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::AlreadyExists => {
                    ObjectError::InvalidKey(key)
                }
                _ => unavailable("put", &key, &e),
            })
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let path = self.object_path(key)?;
        match tokio::fs::read(&path).await {
            Ok(body) => Ok(Bytes::from(body)),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
                ) =>
            {
                Err(ObjectError::NotFound(key.to_owned()))
            }
            Err(e) => Err(unavailable("get", key, &e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.object_path(key)?;
        // Empty folders are left behind: removing them would race with a concurrent put
        // into the same folder, and list never reports folders.
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("delete", key, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        // Start at the deepest folder the prefix names in full. If one of its segments could
        // not be part of a valid key, nothing matches (and nothing outside root is read).
        let (dir_key, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        if !dir_key.is_empty() && validate_key(dir_key).is_err() {
            return Ok(Vec::new());
        }
        let start = if dir_key.is_empty() {
            self.root.clone()
        } else {
            self.object_path(dir_key)?
        };
        let dir_key = dir_key.to_owned();
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut out = Vec::new();
            walk(&start, &dir_key, &prefix, &mut out).map_err(|e| unavailable("list", &prefix, &e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String, ObjectError> {
        validate_key(key)?;
        // Round up so the URL lives at least `expires_in`.
        let secs = expires_in
            .as_secs()
            .saturating_add(u64::from(expires_in.subsec_nanos() > 0));
        let expires = now_unix().saturating_add(secs);
        let sig = self
            .signature(key, expires)
            .ok_or_else(|| ObjectError::Unavailable("cannot sign URLs with this key".into()))?;
        let mut url = format!("{}/objects/", self.public_base_url);
        for (i, segment) in key.split('/').enumerate() {
            if i > 0 {
                url.push('/');
            }
            encode_segment(segment, &mut url);
        }
        let _ = write!(url, "?expires={expires}&sig={}", hex::encode(sig));
        Ok(url)
    }

    async fn ping(&self) -> Result<(), ObjectError> {
        let root = self.root.clone();
        blocking(move || {
            fs::create_dir_all(&root).map_err(|e| unavailable("ping", "", &e))?;
            if fs::metadata(&root)
                .map_err(|e| unavailable("ping", "", &e))?
                .is_dir()
            {
                Ok(())
            } else {
                Err(ObjectError::Unavailable(format!(
                    "{} is not a directory",
                    root.display()
                )))
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Deref;
    use tempfile::TempDir;

    pub(crate) struct Fixture {
        store: DirObjectStore,
        _dir: TempDir,
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            Self {
                store: DirObjectStore::new(
                    dir.path().join("objects"),
                    "http://pbx.test:8080/",
                    b"0123456789abcdef0123456789abcdef".to_vec(),
                ),
                _dir: dir,
            }
        }
    }

    impl Deref for Fixture {
        type Target = DirObjectStore;
        fn deref(&self) -> &DirObjectStore {
            &self.store
        }
    }

    /// The control plane's side of a presigned URL: parse it, verify it, serve the object.
    async fn fetch(store: &DirObjectStore, url: &str) -> Option<Vec<u8>> {
        let (key, expires, sig) = parse_url(url)?;
        if !store.verify_presigned(&key, expires, &sig, now_unix()) {
            return None;
        }
        store.get(&key).await.ok().map(|b| b.to_vec())
    }

    fn percent_decode(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }

    fn parse_url(url: &str) -> Option<(String, u64, String)> {
        let rest = url.strip_prefix("http://pbx.test:8080/objects/")?;
        let (path, query) = rest.split_once('?')?;
        let key = path
            .split('/')
            .map(percent_decode)
            .collect::<Option<Vec<_>>>()?
            .join("/");
        let mut expires = None;
        let mut sig = None;
        for pair in query.split('&') {
            match pair.split_once('=')? {
                ("expires", v) => expires = v.parse().ok(),
                ("sig", v) => sig = Some(v.to_owned()),
                _ => return None,
            }
        }
        Some((key, expires?, sig?))
    }

    async fn fetch_fixture(fixture: &Fixture, url: &str) -> Option<Vec<u8>> {
        fetch(fixture, url).await
    }

    crate::objects::conformance::object_conformance_tests!(Fixture::new(), fetch_fixture);

    #[tokio::test]
    async fn presigned_urls_are_checked() {
        let fixture = Fixture::new().await;
        let store: &DirObjectStore = &fixture;
        let key = "t1/recordings/call 1 (ü).wav";
        let url = store
            .presign_get(key, Duration::from_secs(60))
            .await
            .expect("presign");
        assert!(
            url.starts_with(
                "http://pbx.test:8080/objects/t1/recordings/call%201%20%28%C3%BC%29.wav?expires="
            ),
            "{url}"
        );
        let (parsed_key, expires, sig) = parse_url(&url).expect("parse");
        assert_eq!(parsed_key, key);
        let now = now_unix();
        assert!(expires >= now + 59 && expires <= now + 61, "expires {expires}");
        assert_eq!(sig.len(), 64, "hex of a SHA-256 MAC");

        assert!(store.verify_presigned(key, expires, &sig, now));
        assert!(
            store.verify_presigned(key, expires, &sig, expires),
            "valid up to and including expires"
        );
        assert!(
            !store.verify_presigned(key, expires, &sig, expires + 1),
            "expired"
        );
        assert!(
            !store.verify_presigned("t1/recordings/other.wav", expires, &sig, now),
            "another key"
        );
        assert!(
            !store.verify_presigned(key, expires + 3600, &sig, now),
            "a later expiry is not covered by the signature"
        );
        let mut tampered = sig.clone().into_bytes();
        tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).expect("hex");
        assert!(!store.verify_presigned(key, expires, &tampered, now), "tampered");
        assert!(!store.verify_presigned(key, expires, "", now), "empty sig");
        assert!(!store.verify_presigned(key, expires, "zz", now), "not hex");
        assert!(
            !store.verify_presigned(key, expires, &sig[..62], now),
            "truncated"
        );
        assert!(
            store.verify_presigned(key, expires, &sig.to_uppercase(), now),
            "hex case does not matter"
        );

        let other = DirObjectStore::new(
            store.root(),
            "http://pbx.test:8080",
            b"another signing key".to_vec(),
        );
        assert!(
            !other.verify_presigned(key, expires, &sig, now),
            "another signing key"
        );
    }

    #[tokio::test]
    async fn objects_are_plain_files_and_temp_files_are_gone() {
        let fixture = Fixture::new().await;
        let store: &DirObjectStore = &fixture;
        store
            .put(
                "t1/a/b.bin",
                Bytes::from_static(b"abc"),
                "application/octet-stream",
            )
            .await
            .expect("put");
        let path = store.object_path("t1/a/b.bin").expect("path");
        assert_eq!(path, store.root().join("t1").join("a").join("b.bin"));
        assert_eq!(fs::read(&path).expect("read"), b"abc");
        let names: Vec<String> = fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["b.bin".to_owned()], "no temp file left behind");

        // A stray temp file (say from a crash mid-put) is not listed.
        fs::write(path.with_file_name(format!("{TEMP_PREFIX}x")), b"junk").expect("write");
        let listed = store.list("t1/").await.expect("list");
        assert_eq!(listed.len(), 1);

        // A key that would need an object as a folder is refused, not half-written.
        let err = store
            .put("t1/a/b.bin/c", Bytes::from_static(b"x"), "text/plain")
            .await
            .expect_err("conflict");
        assert!(matches!(err, ObjectError::InvalidKey(_)), "{err:?}");
        let err = store
            .put("t1/a", Bytes::from_static(b"x"), "text/plain")
            .await
            .expect_err("conflict");
        assert!(matches!(err, ObjectError::InvalidKey(_)), "{err:?}");
        assert!(matches!(store.get("t1/a").await, Err(ObjectError::NotFound(_))));
    }

    #[tokio::test]
    async fn list_never_leaves_the_root() {
        let fixture = Fixture::new().await;
        let store: &DirObjectStore = &fixture;
        store
            .put("t1/x", Bytes::from_static(b"x"), "text/plain")
            .await
            .expect("put");
        // A sibling of the root that a traversal would reach.
        fs::create_dir_all(store.root().parent().expect("parent").join("secret")).expect("mkdir");
        fs::write(store.root().parent().expect("parent").join("secret/file"), b"s").expect("write");
        for prefix in ["../", "../secret/", "t1/../../secret/", "/etc/", "t1/./"] {
            assert!(store.list(prefix).await.expect("list").is_empty(), "{prefix:?}");
        }
    }
}
