//! TLS (certificate by SNI) and WebSocket (RFC 7118) transports, with real clients on
//! 127.0.0.1; and a request sent by the server to a phone over its WebSocket connection.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::sip::tls::{certified_key, self_signed, SniResolver};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

struct Ok200;

#[async_trait::async_trait]
impl RequestHandler for Ok200 {
    async fn handle(&self, request: SipRequest, inbound: Inbound, _tx: ServerTx) -> Option<SipResponse> {
        let resp = SipResponse::for_request(&request, 200, "OK", inbound.source).with_to_tag("t1");
        // say which transport the request came over
        Some(resp.with_header("X-Transport", inbound.transport.as_str()))
    }
}

fn options(transport: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:acme.pbx.test SIP/2.0\r\nVia: SIP/2.0/{transport} client.invalid;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:100@acme.pbx.test>;tag=c1\r\nTo: <sip:acme.pbx.test>\r\n\
         Call-ID: {branch}@client\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

struct Certs {
    resolver: Arc<SniResolver>,
    acme_pem: String,
    bravo_pem: String,
}

fn certs() -> Certs {
    let resolver = Arc::new(SniResolver::new());
    let (acme_pem, acme_key) = self_signed(&["acme.pbx.test".into()]).unwrap();
    let (bravo_pem, bravo_key) = self_signed(&["*.bravo.test".into()]).unwrap();
    resolver.insert(
        "acme.pbx.test",
        certified_key(acme_pem.as_bytes(), acme_key.as_bytes()).unwrap(),
    );
    resolver.insert(
        "*.bravo.test",
        certified_key(bravo_pem.as_bytes(), bravo_key.as_bytes()).unwrap(),
    );
    Certs {
        resolver,
        acme_pem,
        bravo_pem,
    }
}

async fn start(certs: &Certs) -> SipServerHandle {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = SipServerConfig {
        udp: None,
        tcp: None,
        tls: Some(any),
        ws: Some(any),
        wss: Some(any),
        tls_config: Some(certs.resolver.server_config().unwrap()),
        ..SipServerConfig::default()
    };
    SipServer::start(config, Arc::new(Ok200)).await.unwrap()
}

/// A TLS client that trusts exactly `trusted_pem`, asking for `sni`.
async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    trusted_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> SipResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match parse(&buf).unwrap() {
                SipMessage::Response(r) => return r,
                SipMessage::Request(_) => panic!("expected a response"),
            }
        }
    }
}

#[tokio::test]
async fn tls_serves_the_certificate_of_the_sni_and_answers_over_it() {
    let certs = certs();
    let server = start(&certs).await;
    let addr = server.local_tls().unwrap();

    // acme's exact certificate for acme's name
    let mut acme = tls_connect(addr, "acme.pbx.test", &certs.acme_pem).await.unwrap();
    acme.write_all(options("TLS", "z9hG4bKtls1").as_bytes())
        .await
        .unwrap();
    let resp = read_response(&mut acme).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Transport"), Some("tls"));

    // a name under the wildcard gets the wildcard certificate
    let mut bravo = tls_connect(addr, "pbx.bravo.test", &certs.bravo_pem)
        .await
        .unwrap();
    bravo
        .write_all(options("TLS", "z9hG4bKtls2").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut bravo).await.status, 200);

    // a client that only trusts acme's certificate refuses what bravo's name gets
    assert!(tls_connect(addr, "pbx.bravo.test", &certs.acme_pem)
        .await
        .is_err());
    // and a name nobody has a certificate for gets no handshake at all (no default set)
    assert!(tls_connect(addr, "nobody.test", &certs.acme_pem).await.is_err());
    server.shutdown().await;
}

fn ws_request(
    url: &str,
    subprotocol: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    req
}

async fn next_text<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn websocket_needs_the_sip_subprotocol_and_carries_one_message_per_frame() {
    let certs = certs();
    let server = start(&certs).await;
    let addr = server.local_ws().unwrap();
    let url = format!("ws://{addr}/");

    // RFC 7118 §4: without the "sip" subprotocol the handshake is refused
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(tokio_tungstenite::client_async(ws_request(&url, None), tcp)
        .await
        .is_err());

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(ws_request(&url, Some("sip")), tcp)
        .await
        .unwrap();
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("sip")
    );
    ws.send(Message::text(options("WS", "z9hG4bKws1"))).await.unwrap();
    let text = next_text(&mut ws).await;
    let resp = match parse(text.as_bytes()).unwrap() {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => panic!("expected a response"),
    };
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("X-Transport"), Some("ws"));

    // The server reaches the phone over the same connection: an OPTIONS from the edge,
    // answered by the phone, ends its client transaction with the 200.
    let client = server.client();
    let peer = {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let conns: Vec<SocketAddr> = server
                .shared
                .connections
                .lock()
                .unwrap()
                .keys()
                .copied()
                .collect();
            if let Some(p) = conns.first() {
                break *p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "connection never registered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let target = client.target_for(peer, "ws").unwrap();
    assert_eq!(target.transport(), TransportKind::Ws);
    let local = client.local_addr_for(&target).unwrap();
    assert_eq!(local, addr);
    let req = match parse(
        format!(
            "OPTIONS sip:100@client.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/WS {local};branch=z9hG4bKout1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:acme.pbx.test>;tag=e1\r\nTo: <sip:100@acme.pbx.test>\r\n\
             Call-ID: out1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
    {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => unreachable!(),
    };
    let mut events = client.request(req, &target).await;
    let got = next_text(&mut ws).await;
    let incoming = match parse(got.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("expected the edge's request"),
    };
    let answer = SipResponse::for_request(&incoming, 200, "OK", peer).with_to_tag("p1");
    ws.send(Message::text(String::from_utf8(answer.to_bytes()).unwrap()))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
    {
        Some(ClientEvent::Final(r)) => assert_eq!(r.status, 200),
        other => panic!("expected the final response, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn secure_websocket_uses_the_sni_certificate() {
    let certs = certs();
    let server = start(&certs).await;
    let addr = server.local_wss().unwrap();
    let tls = tls_connect(addr, "acme.pbx.test", &certs.acme_pem).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_request("wss://acme.pbx.test/", Some("sip")), tls)
        .await
        .unwrap();
    ws.send(Message::text(options("WSS", "z9hG4bKwss1")))
        .await
        .unwrap();
    let text = next_text(&mut ws).await;
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    assert!(text.contains("X-Transport: wss"), "{text}");
    server.shutdown().await;
}
