//! Test support: the real servers the production implementations are tested against.
//!
//! - Redis: an existing server at `PBX_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
//! - S3: [`S3sFs::start`] spawns its own `s3s-fs` on a free loopback port over a temp dir.
//! - SMTP: [`AioSmtpd::start`] spawns its own `python3 -m aiosmtpd` writing a Maildir.
//!
//! A missing server program makes the test fail with how to install it: these tests must
//! never pass by skipping. Spawned servers are killed when their handle drops.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn redis_url() -> String {
    std::env::var("PBX_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A port that was free a moment ago (the OS picks it; we release it for the server).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Waits until `port` accepts connections. Err(exit status) when the child exits first
/// (e.g. the port was taken after all), Err(None) on timeout.
fn wait_for_port(child: &mut Child, port: u16) -> Result<(), Option<String>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Some(status.to_string()));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(None)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Where `cargo install` puts binaries, for machines whose PATH lacks it.
fn cargo_bin(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let path = home.join("bin").join(name);
    path.is_file().then_some(path)
}

/// An `s3s-fs` server (S3 API over a directory) on a free loopback port; path-style only.
pub struct S3sFs {
    child: Child,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    _dir: TempDir,
}

pub const S3S_FS_INSTALL_HINT: &str =
    "install it with: cargo install s3s-fs --version 0.14.1 --features binary --locked \
     (or point PBX_TEST_S3S_FS at the binary)";

impl S3sFs {
    pub fn start() -> Self {
        let program = std::env::var_os("PBX_TEST_S3S_FS")
            .map(PathBuf::from)
            .or_else(|| {
                // Prefer PATH; fall back to cargo's bin dir.
                Command::new("s3s-fs")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .ok()
                    .map(|_| PathBuf::from("s3s-fs"))
            })
            .or_else(|| cargo_bin("s3s-fs"))
            .unwrap_or_else(|| panic!("s3s-fs not found: {S3S_FS_INSTALL_HINT}"));

        let access_key = "pbx-test-ak".to_owned();
        let secret_key = format!("pbx-test-sk-{}", uuid::Uuid::new_v4().simple());
        let mut last_error = String::new();
        // The free port may be taken between our probe and the server's bind: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let data = dir.path().join("data");
            std::fs::create_dir(&data).expect("data dir");
            let log_path = dir.path().join("s3s-fs.log");
            let log = std::fs::File::create(&log_path).expect("log file");
            let port = free_port();
            let mut child = Command::new(&program)
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--access-key")
                .arg(&access_key)
                .arg("--secret-key")
                .arg(&secret_key)
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}; {S3S_FS_INSTALL_HINT}", program.display()));
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    return Self {
                        child,
                        port,
                        access_key,
                        secret_key,
                        _dir: dir,
                    }
                }
                Err(status) => {
                    kill(&mut child);
                    last_error = format!(
                        "s3s-fs did not start on port {port} ({}): {}",
                        status.unwrap_or_else(|| "timed out".to_owned()),
                        read_log(&log_path)
                    );
                }
            }
        }
        panic!("{last_error}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

pub const AIOSMTPD_INSTALL_HINT: &str =
    "install it with: apt-get install python3-aiosmtpd (or pip install aiosmtpd), \
     or set PBX_TEST_PYTHON to a python that has it";

/// The Python to run aiosmtpd with: `PBX_TEST_PYTHON`, else the first of `/usr/bin/python3`
/// and `python3` that can import it.
fn python_with_aiosmtpd() -> PathBuf {
    let can_import = |py: &Path| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(py) = std::env::var_os("PBX_TEST_PYTHON").map(PathBuf::from) {
        assert!(
            can_import(&py),
            "PBX_TEST_PYTHON={} cannot import aiosmtpd; {AIOSMTPD_INSTALL_HINT}",
            py.display()
        );
        return py;
    }
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|py| can_import(py))
        .unwrap_or_else(|| panic!("no python3 with aiosmtpd found; {AIOSMTPD_INSTALL_HINT}"))
}

/// An aiosmtpd SMTP server (no TLS, no auth) on a free loopback port that files every
/// message it accepts into a Maildir (`DIR/new/`).
pub struct AioSmtpd {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl AioSmtpd {
    pub fn start() -> Self {
        let python = python_with_aiosmtpd();
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let log_path = dir.path().join("aiosmtpd.log");
            let log = std::fs::File::create(&log_path).expect("log file");
            let port = free_port();
            let mut child = Command::new(&python)
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(dir.path().join("maildir"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}; {AIOSMTPD_INSTALL_HINT}", python.display()));
            match wait_for_port(&mut child, port) {
                Ok(()) => return Self { child, port, dir },
                Err(status) => {
                    kill(&mut child);
                    last_error = format!(
                        "aiosmtpd did not start on port {port} ({}): {}",
                        status.unwrap_or_else(|| "timed out".to_owned()),
                        read_log(&log_path)
                    );
                }
            }
        }
        panic!("{last_error}");
    }

    /// Every message received so far, raw, oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        read_dir_files(&self.dir.path().join("maildir").join("new"))
    }
}

impl Drop for AioSmtpd {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The contents of the regular files directly in `dir` (none when it does not exist),
/// ordered by modification time, then name.
pub fn read_dir_files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| std::fs::read(p).expect("read received message"))
        .collect()
}
