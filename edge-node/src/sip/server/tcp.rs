//! Stream transports: TCP and TLS (RFC 3261 §18.3 framing by Content-Length) and WebSocket
//! over TCP or TLS (RFC 7118: one SIP message per WebSocket message). Per connection a
//! reader task and a writer task fed by an mpsc channel; the connection is registered by
//! peer address so that requests reach a phone over the connection it registered on.

use super::{bump, Inbound, Reply, Shared, TransportKind};
use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Responses queued per connection before further ones are dropped.
const WRITE_QUEUE: usize = 256;
/// How long a connection whose stream cannot be framed stays open for answers in flight.
const FATAL_CLOSE_GRACE: Duration = Duration::from_millis(500);
/// How long a TLS or WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What runs on top of an accepted TCP connection.
#[derive(Clone)]
pub(super) enum Wrap {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
    Wss(TlsAcceptor),
}

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, wrap: Wrap) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, source)) => {
                tokio::spawn(serve(Arc::clone(&shared), stream, source, wrap.clone()));
            }
            Err(e) => {
                debug!(error = %e, "TCP accept failed");
                // e.g. EMFILE: back off instead of spinning
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(shared: Arc<Shared>, stream: TcpStream, source: SocketAddr, wrap: Wrap) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            debug!(%source, error = %e, "TCP connection without local address");
            return;
        }
    };
    let tls = |acceptor: TlsAcceptor, stream: TcpStream| async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                debug!(%source, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(%source, "TLS handshake timed out");
                None
            }
        }
    };
    match wrap {
        Wrap::Tcp => framed(shared, stream, source, local, TransportKind::Tcp).await,
        Wrap::Tls(acceptor) => {
            if let Some(s) = tls(acceptor, stream).await {
                framed(shared, s, source, local, TransportKind::Tls).await;
            }
        }
        Wrap::Ws => websocket(shared, stream, source, local, TransportKind::Ws).await,
        Wrap::Wss(acceptor) => {
            if let Some(s) = tls(acceptor, stream).await {
                websocket(shared, s, source, local, TransportKind::Wss).await;
            }
        }
    }
}

/// What the framer found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// Need more bytes.
    Incomplete,
    /// A double-CRLF keep-alive ping of this many bytes: answer a CRLF.
    Ping(usize),
    /// Bytes to skip (stray CR/LF before a start line).
    Skip(usize),
    /// A whole message of this many bytes.
    Message(usize),
    /// The stream cannot be framed: close the connection.
    Fatal(&'static str),
}

/// Stream framing: headers up to the blank line, then Content-Length octets of body.
pub(super) fn frame(buf: &[u8], max: usize) -> Frame {
    const PING: &[u8] = b"\r\n\r\n";
    if buf.is_empty() {
        return Frame::Incomplete;
    }
    if buf.starts_with(PING) {
        return Frame::Ping(PING.len());
    }
    if buf.len() < PING.len() && PING.starts_with(buf) {
        return Frame::Incomplete;
    }
    if buf[0] == b'\r' || buf[0] == b'\n' {
        return Frame::Skip(1);
    }
    let Some(end) = buf.windows(4).position(|w| w == PING) else {
        return if buf.len() > max {
            Frame::Fatal("header section too large")
        } else {
            Frame::Incomplete
        };
    };
    let head_len = end + 4;
    if head_len > max {
        return Frame::Fatal("header section too large");
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Frame::Fatal("header section is not UTF-8");
    };
    let mut length = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            match value.trim().parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => return Frame::Fatal("malformed Content-Length"),
            }
        }
    }
    let Some(length) = length else {
        // RFC 3261 §18.3: mandatory on stream transports
        return Frame::Fatal("no Content-Length");
    };
    let total = head_len.saturating_add(length);
    if total > max {
        return Frame::Fatal("message too large");
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

/// A byte-stream connection (TCP or TLS) framed by Content-Length.
async fn framed<S>(shared: Arc<Shared>, stream: S, source: SocketAddr, local: SocketAddr, kind: TransportKind)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut read, write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let close = shared.closing.child_token();
    tokio::spawn(writer(write, rx, close.clone()));
    shared.add_connection(source, tx.clone(), kind);
    let reply = Reply::Stream(source, tx, kind);
    let inbound = Inbound {
        source,
        transport: kind,
        local,
        target: super::Target(reply.clone()),
    };
    let mut buf = BytesMut::with_capacity(4096);
    let reason = 'conn: loop {
        // take every complete frame out of the buffer
        loop {
            match frame(&buf, shared.max_message_bytes) {
                Frame::Incomplete => break,
                Frame::Skip(n) => buf.advance(n),
                Frame::Ping(n) => {
                    buf.advance(n);
                    bump(&shared.counters.received);
                    bump(&shared.counters.keepalives);
                    if let Reply::Stream(_, tx, _) = &reply {
                        let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                    }
                }
                Frame::Message(n) => {
                    let msg = buf.split_to(n).freeze();
                    bump(&shared.counters.received);
                    shared.on_message(&msg, inbound.clone(), reply.clone()).await;
                }
                Frame::Fatal(why) => {
                    bump(&shared.counters.parse_errors);
                    // Stop reading at once, but let the answers to requests already framed on
                    // this connection go out before it closes (RFC 4475 dblreq: a REGISTER
                    // followed by octets that cannot be framed still gets its answer).
                    let close = close.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(FATAL_CLOSE_GRACE).await;
                        close.cancel();
                    });
                    break 'conn why;
                }
            }
        }
        let read_more = tokio::time::timeout(shared.tcp_idle_timeout, read.read_buf(&mut buf));
        let r = tokio::select! {
            _ = shared.stop.cancelled() => break 'conn "server stopping",
            r = read_more => r,
        };
        match r {
            Ok(Ok(0)) => break 'conn "closed by peer",
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                close.cancel();
                break 'conn "read error";
            }
            Err(_) => {
                close.cancel();
                break 'conn "idle";
            }
        }
    };
    shared.remove_connection(source);
    debug!(%source, reason, transport = kind.as_str(), "connection reader done");
}

/// Writes queued messages; ends when every sender is gone or the connection is closed.
async fn writer<S>(mut write: WriteHalf<S>, mut rx: mpsc::Receiver<Bytes>, close: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = close.cancelled() => break,
        }
    }
    let _ = write.shutdown().await;
}

/// RFC 7118 §4: the client offers the `sip` subprotocol and the server selects it.
#[allow(clippy::result_large_err)] // the handshake callback's signature is tungstenite's
fn select_sip_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        let mut refusal = ErrorResponse::new(Some("the \"sip\" WebSocket subprotocol is required".into()));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

/// A WebSocket connection: every text or binary message is one SIP message.
async fn websocket<S>(
    shared: Arc<Shared>,
    stream: S,
    source: SocketAddr,
    local: SocketAddr,
    kind: TransportKind,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let handshake = tokio_tungstenite::accept_hdr_async(stream, select_sip_subprotocol);
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%source, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            debug!(%source, "WebSocket handshake timed out");
            return;
        }
    };
    let (mut sink, mut messages) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let close = shared.closing.child_token();
    let writer_close = close.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(bytes) => {
                        // SIP is text; anything that is not UTF-8 goes as a binary message
                        let frame = match String::from_utf8(bytes.to_vec()) {
                            Ok(text) => Message::text(text),
                            Err(e) => Message::binary(e.into_bytes()),
                        };
                        if sink.send(frame).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = writer_close.cancelled() => break,
            }
        }
        let _ = sink.close().await;
    });
    shared.add_connection(source, tx.clone(), kind);
    let reply = Reply::Stream(source, tx, kind);
    let inbound = Inbound {
        source,
        transport: kind,
        local,
        target: super::Target(reply.clone()),
    };
    let reason = loop {
        let next = tokio::time::timeout(shared.tcp_idle_timeout, messages.next());
        let msg = tokio::select! {
            _ = shared.stop.cancelled() => break "server stopping",
            m = next => m,
        };
        let data: Vec<u8> = match msg {
            Err(_) => {
                close.cancel();
                break "idle";
            }
            Ok(None) => break "closed by peer",
            Ok(Some(Err(_))) => {
                close.cancel();
                break "read error";
            }
            Ok(Some(Ok(Message::Text(t)))) => t.as_bytes().to_vec(),
            Ok(Some(Ok(Message::Binary(b)))) => b.to_vec(),
            Ok(Some(Ok(Message::Close(_)))) => break "closed by peer",
            // pings are answered by tungstenite; pongs and raw frames carry nothing for us
            Ok(Some(Ok(_))) => continue,
        };
        bump(&shared.counters.received);
        if data.len() > shared.max_message_bytes {
            bump(&shared.counters.parse_errors);
            continue;
        }
        // a CRLF keep-alive (RFC 5626 over WebSocket) needs no answer
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            bump(&shared.counters.keepalives);
            continue;
        }
        shared.on_message(&data, inbound.clone(), reply.clone()).await;
    };
    shared.remove_connection(source);
    debug!(%source, reason, transport = kind.as_str(), "connection reader done");
}
