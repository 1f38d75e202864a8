//! What every end-to-end test needs: the real `pbx` binary run as a child process that is
//! killed when its guard drops (also when a test panics), its output read line by line with
//! deadlines and kept whole (for the "secrets never logged" checks), and small HTTP helpers.

use serde_json::Value;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const PBX: &str = env!("CARGO_BIN_EXE_pbx");

/// Generous: two cores are shared with builds and other tests.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a change may take to reach an edge node.
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a signalled process may take to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line a process wrote, ANSI colours removed.
#[derive(Clone, Debug)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
}

/// A `pbx` command with no `PBX_*` variable inherited from the test's environment (they
/// override configuration keys and CLI flags).
pub fn pbx_command() -> Command {
    let mut cmd = Command::new(PBX);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PBX_") {
            cmd.env_remove(&key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Removes ANSI escape sequences (the log is coloured even when not on a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running child process; SIGKILLed and reaped on drop unless it was stopped already.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    readers: Vec<JoinHandle<()>>,
    /// Index into `lines` of the next line `wait_stdout` looks at.
    cursor: usize,
    exit: Option<ExitStatus>,
}

fn spawn_reader(
    stream: Stream,
    source: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<Line>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let raw = String::from_utf8_lossy(&buf);
                    let text = strip_ansi(raw.trim_end_matches(['\n', '\r']));
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Line { stream, text });
                }
            }
        }
    })
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(Stream::Stdout, out, lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(Stream::Stderr, err, lines.clone()));
        }
        Self {
            name: name.to_owned(),
            child,
            lines,
            readers,
            cursor: 0,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written so far, both streams interleaved in arrival order.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.text)
            .collect()
    }

    /// The last lines of output, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| {
                let tag = match l.stream {
                    Stream::Stdout => "out",
                    Stream::Stderr => "err",
                };
                format!("  [{tag}] {}", l.text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The exit status, if the process has exited.
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.exited()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits for the next stdout line (after the ones returned before) matching `pred`.
    pub async fn wait_stdout(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.exited();
            {
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = (self.cursor..lines.len())
                    .find(|&i| lines[i].stream == Stream::Stdout && pred(&lines[i].text))
                {
                    self.cursor = i + 1;
                    return lines[i].text.clone();
                }
            }
            if let Some(status) = exited {
                // Let the readers drain what the process wrote before it exited.
                self.join_readers();
                let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = (self.cursor..lines.len())
                    .find(|&i| lines[i].stream == Stream::Stdout && pred(&lines[i].text))
                {
                    self.cursor = i + 1;
                    return lines[i].text.clone();
                }
                drop(lines);
                panic!(
                    "{}: exited ({status}) before printing {what}; output:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: did not print {what} within {timeout:?}; output:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Sends `signal` (e.g. "TERM", "INT", "KILL") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("running kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit on its own; returns its status once the output is read.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                self.join_readers();
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: still running {timeout:?} after being asked to stop; output:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` and waits for the exit.
    pub async fn stop(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(STOP_TIMEOUT).await
    }

    /// SIGKILL, at once.
    pub async fn kill_now(&mut self) {
        let _ = self.child.kill();
        self.wait_exit(STOP_TIMEOUT).await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_readers();
    }
}

/// What a finished CLI command printed.
#[derive(Debug)]
pub struct CliOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    /// The JSON on stdout of a command that must have succeeded.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "command failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The problem JSON on stderr of a command that must have failed with exit code 1.
    pub fn problem(&self) -> Value {
        assert_eq!(self.code, Some(1), "command should have failed: {self:?}");
        serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not problem JSON ({e}): {self:?}"))
    }
}

/// Runs `pbx ARGS` to completion (a CLI command), with extra environment variables.
pub async fn pbx_cli(args: &[&str], envs: &[(&str, &str)]) -> CliOut {
    let mut cmd = tokio::process::Command::from(pbx_command());
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pbx {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("pbx {args:?}: {e}"));
    CliOut {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An HTTP client (the workspace builds reqwest without a default crypto provider).
pub fn http_client() -> reqwest::Client {
    pbx_control_plane::crypto::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// An HTTP answer: status, body text, and the body as JSON (Null when it is not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

pub async fn try_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Resp, String> {
    let mut req = client.request(method.clone(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("{method} {url}: body: {e}"))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Resp {
        status,
        content_type,
        text,
        json,
    })
}

pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Resp {
    try_call(client, method, url, token, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Calls and asserts the status.
pub async fn expect(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    status: u16,
) -> Value {
    let r = call(client, method.clone(), url, token, body).await;
    assert_eq!(r.status, status, "{method} {url}: {}", r.text);
    r.json
}

/// Retries `probe` until it gives Ok or `timeout` passes; the Err text is what was seen last.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() > deadline {
                    panic!("{what}: not within {timeout:?}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What an edge node holds (its `/tenants`).
pub async fn edge_tenants(client: &reqwest::Client, edge: &str) -> Result<Vec<Value>, String> {
    let r = try_call(
        client,
        reqwest::Method::GET,
        &format!("{edge}/tenants"),
        None,
        None,
    )
    .await?;
    match (r.status, r.json) {
        (200, Value::Array(a)) => Ok(a),
        (s, _) => Err(format!("GET {edge}/tenants: {s} {}", r.text)),
    }
}

/// Waits until the edge holds a tenant `fqdn` for which `check` passes; returns it.
pub async fn wait_edge_tenant(
    client: &reqwest::Client,
    edge: &str,
    fqdn: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, PROPAGATION_TIMEOUT, || async {
        let tenants = edge_tenants(client, edge).await?;
        let t = tenants.iter().find(|t| t["fqdn"] == fqdn);
        match t {
            Some(t) if check(t) => Ok(t.clone()),
            _ => Err(serde_json::to_string(&tenants).unwrap_or_default()),
        }
    })
    .await
}

/// Waits until the edge holds no tenant `fqdn`.
pub async fn wait_edge_without_tenant(client: &reqwest::Client, edge: &str, fqdn: &str, what: &str) {
    eventually(what, PROPAGATION_TIMEOUT, || async {
        let tenants = edge_tenants(client, edge).await?;
        if tenants.iter().any(|t| t["fqdn"] == fqdn) {
            Err(serde_json::to_string(&tenants).unwrap_or_default())
        } else {
            Ok(())
        }
    })
    .await
}

/// The extension numbers an edge's tenant entry lists, sorted.
pub fn edge_numbers(tenant: &Value) -> Vec<String> {
    let mut v: Vec<String> = tenant["extensions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["number"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The display name an edge's tenant entry lists for extension `number`.
pub fn edge_display_name(tenant: &Value, number: &str) -> Option<String> {
    tenant["extensions"]
        .as_array()?
        .iter()
        .find(|e| e["number"] == number)
        .and_then(|e| e["display_name"].as_str().map(str::to_owned))
}

/// Fails when `needle` occurs in any line of `lines` (naming the line, with the secret masked).
pub fn assert_not_in_lines(lines: &[Line], needle: &str, what: &str) {
    assert!(needle.len() >= 6, "{what}: too short to search for meaningfully");
    if let Some(l) = lines.iter().find(|l| l.text.contains(needle)) {
        panic!(
            "{what} appears in the process output ({:?}): {}",
            l.stream,
            l.text.replace(needle, "<THE SECRET>")
        );
    }
}

/// Whether `needle` occurs anywhere in `haystack` (bytes).
pub fn bytes_contain(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The mode bits of a file (permissions only).
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Text after `label` on a line, up to the next whitespace.
pub fn field_after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split_whitespace().next()
}

/// A fresh SIP secret that passes the rules (letters and digits) and cannot contain any of
/// the extension numbers the tests use (no 0, 1, 2 or 3 in it).
pub fn sip_secret() -> String {
    let random: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '2' => 'k',
            '3' => 'm',
            c => c,
        })
        .collect();
    format!("Sip{random}x9")
}

/// Deletes a test's Redis keys (those under `prefix`) on drop (best effort: needs redis-cli).
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(out) = Command::new("redis-cli")
            .args(["-u", &self.url, "--scan", "--pattern"])
            .arg(format!("{}*", self.prefix))
            .stdin(Stdio::null())
            .output()
        else {
            return;
        };
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|k| k.starts_with(&self.prefix))
            .map(str::to_owned)
            .collect();
        if !keys.is_empty() {
            let _ = Command::new("redis-cli")
                .args(["-u", &self.url, "DEL"])
                .args(&keys)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}
