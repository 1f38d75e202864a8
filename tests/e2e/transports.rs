//! SIP over TLS, WebSocket and secure WebSocket on `pbx up` (issue 3 point 1): the TLS
//! listener presents, for a tenant's SNI, a certificate for that name from the local CA kept
//! in the data directory, and an extension registers (digest challenge, then 200) over TLS and over
//! WebSocket; WSS answers too.

use crate::support::*;
use futures::{SinkExt, StreamExt};
use pbx_edge_node::sip::auth::digest::{compute_response, DigestAlgorithm, ResponseInput};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "Transport-secret-5";

fn register(transport: &str, branch: &str, cseq: u32, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:acme.localhost SIP/2.0\r\nVia: SIP/2.0/{transport} client.invalid;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:100@acme.localhost>;tag=r1\r\nTo: <sip:100@acme.localhost>\r\n\
         Call-ID: reg-{transport}@client\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:100@client.invalid;transport={}>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
        transport.to_ascii_lowercase()
    )
}

/// The digest Authorization answering a 401's challenge (MD5, qop=auth).
fn authorization(challenge_response: &str) -> String {
    let header = challenge_response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:") && l.contains("MD5"))
        .unwrap_or_else(|| panic!("no MD5 challenge in {challenge_response}"));
    let param = |name: &str| -> String {
        let at = header
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {header}"));
        let rest = &header[at + name.len() + 2..];
        rest[..rest.find('"').unwrap_or(rest.len())].to_owned()
    };
    let (realm, nonce, opaque) = (param("realm"), param("nonce"), param("opaque"));
    assert_eq!(realm, "acme.localhost");
    let response = compute_response(&ResponseInput {
        algorithm: DigestAlgorithm::Md5,
        username: "100",
        realm: &realm,
        password: SECRET,
        method: "REGISTER",
        uri: "sip:acme.localhost",
        nonce: &nonce,
        qop_auth: Some(("00000001", "c0ffee")),
    });
    format!(
        "Digest username=\"100\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:acme.localhost\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\", opaque=\"{opaque}\""
    )
}

async fn read_stream<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer; got so far: {}", String::from_utf8_lossy(&buf)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("\r\n\r\n") {
            return text;
        }
    }
}

async fn ws_text<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket message"))
            .unwrap_or_else(|| panic!("WebSocket closed"))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

fn tls_connector(cert_pem: &Path) -> tokio_rustls::TlsConnector {
    pbx_control_plane::crypto::install_crypto_provider();
    let pem = std::fs::read(cert_pem).unwrap_or_else(|e| panic!("{}: {e}", cert_pem.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn addr_after(lines: &[String], label: &str) -> SocketAddr {
    let v = lines
        .iter()
        .find_map(|l| field_after(l, label).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {label:?} line in {lines:#?}"));
    let first = v.split_whitespace().next().unwrap_or_default();
    let bare = first.trim_start_matches("wss://").trim_start_matches("ws://");
    bare.parse().unwrap_or_else(|e| panic!("{label} {bare:?}: {e}"))
}

#[tokio::test]
async fn register_over_tls_and_websocket() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path();
    let mut cmd = pbx_command();
    cmd.arg("up").arg("--data-dir").arg(dir.join("data")).args([
        "--http",
        "127.0.0.1:0",
        "--sip",
        "127.0.0.1:0",
        "--sip-digest",
        "md5",
    ]);
    let mut proc = Proc::spawn("pbx-up-transports", cmd);
    proc.wait_stdout("the Data directory line", Duration::from_secs(60), |l| {
        l.contains("Data directory:")
    })
    .await;
    let lines = proc.stdout_lines();
    let tls_addr = addr_after(&lines, "SIP over TLS:");
    let ws_addr = addr_after(&lines, "SIP over WebSocket:");
    let wss_addr = addr_after(&lines, "SIP over secure WebSocket:");
    let data = dir.join("data");
    let data_s = data.to_string_lossy().into_owned();
    let out = pbx_cli(
        &["tenant", "create", "--slug", "acme", "--data-dir", &data_s],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let args = [
        "extension",
        "create",
        "--tenant",
        "acme",
        "--number",
        "100",
        "--secret",
        SECRET,
        "--data-dir",
        &data_s,
    ];
    assert_eq!(pbx_cli(&args, &[]).await.code, Some(0));

    // TLS: the certificate verifies for the tenant's name against the local CA.
    let connector = tls_connector(&data.join("tls/ca-cert.pem"));
    let name = ServerName::try_from("acme.localhost").unwrap_or_else(|e| panic!("{e}"));
    let tcp = TcpStream::connect(tls_addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for acme.localhost: {e}"));
    // the edge may take a moment to load the new extension: retry the first round briefly
    let mut challenge = String::new();
    for attempt in 0..50 {
        tls.write_all(register("TLS", &format!("z9hG4bKtls{attempt}"), 1, None).as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        challenge = read_stream(&mut tls).await;
        if challenge.starts_with("SIP/2.0 401") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let auth = authorization(&challenge);
    tls.write_all(register("TLS", "z9hG4bKtls-auth", 2, Some(&auth)).as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = read_stream(&mut tls).await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("transport=tls"), "{ok}");

    // WebSocket: the same exchange, one SIP message per WebSocket message.
    let mut req = format!("ws://{ws_addr}/")
        .into_client_request()
        .unwrap_or_else(|e| panic!("{e}"));
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "sip".parse().unwrap_or_else(|e| panic!("{e:?}")),
    );
    let tcp = TcpStream::connect(ws_addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake: {e}"));
    ws.send(Message::text(register("WS", "z9hG4bKws1", 1, None)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let challenge = ws_text(&mut ws).await;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    ws.send(Message::text(register(
        "WS",
        "z9hG4bKws2",
        2,
        Some(&authorization(&challenge)),
    )))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let ok = ws_text(&mut ws).await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // both bindings are listed: the TLS one and this one
    assert!(
        ok.contains("transport=tls") && ok.contains("transport=ws"),
        "{ok}"
    );

    // Secure WebSocket answers an OPTIONS over TLS with the same certificate.
    let name = ServerName::try_from("acme.localhost").unwrap_or_else(|e| panic!("{e}"));
    let tcp = TcpStream::connect(wss_addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = "wss://acme.localhost/"
        .into_client_request()
        .unwrap_or_else(|e| panic!("{e}"));
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "sip".parse().unwrap_or_else(|e| panic!("{e:?}")),
    );
    let (mut wss, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options =
        "OPTIONS sip:acme.localhost SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bKwss1\r\n\
                   Max-Forwards: 70\r\nFrom: <sip:100@acme.localhost>;tag=o1\r\nTo: <sip:acme.localhost>\r\n\
                   Call-ID: wss1@client\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    wss.send(Message::text(options))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ok = ws_text(&mut wss).await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    let status = proc.stop("TERM").await;
    assert!(status.success(), "{}", proc.tail(40));
}
