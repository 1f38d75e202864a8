//! TCP: accept loop, per-connection stream framing (RFC 3261 §18.3) and writer.

use super::{bump, Inbound, Reply, Shared, TransportKind};
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Responses queued per connection before further ones are dropped.
const WRITE_QUEUE: usize = 256;
/// How long a connection whose stream cannot be framed stays open for answers in flight.
const FATAL_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, source)) => {
                tokio::spawn(connection(Arc::clone(&shared), stream, source));
            }
            Err(e) => {
                debug!(error = %e, "TCP accept failed");
                // e.g. EMFILE: back off instead of spinning
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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

async fn connection(shared: Arc<Shared>, stream: TcpStream, source: SocketAddr) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            debug!(%source, error = %e, "TCP connection without local address");
            return;
        }
    };
    let (mut read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let close = shared.closing.child_token();
    tokio::spawn(writer(write, rx, close.clone()));
    shared.add_connection(source, tx.clone());
    let reply = Reply::Tcp(source, tx);
    let inbound = Inbound {
        source,
        transport: TransportKind::Tcp,
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
                    if let Reply::Tcp(_, tx) = &reply {
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
    debug!(%source, reason, "TCP connection reader done");
}

/// Writes queued responses; ends when every sender is gone or the connection is closed.
async fn writer(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>, close: CancellationToken) {
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
