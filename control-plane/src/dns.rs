//! DNS for certificates and custom domains (SPEC P3).
//!
//! - CNAME lookups of custom domains through hickory-resolver, at the system's nameservers or
//!   at the one `[dns] resolver` names (tests point it at their own server).
//! - The DNS-01 responder: a small authoritative server, over UDP, for `_acme-challenge.*`
//!   TXT records that it reads from the database, so every control plane answers the same.
//!   Operators delegate `_acme-challenge.{base_domain}` to it (NS record, or a CNAME to a
//!   name it serves). hickory-server would bring its own catalog/authority stack for what is
//!   one question type from one table, so the loop is ours; messages are parsed and built
//!   with hickory-proto (re-exported by the resolver). The decision is sans-IO
//!   ([`parse_question`], [`answer`]); [`serve`] does the socket and the database.

use crate::app::AppState;
use crate::db::{self, certificates as certs};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// The `[dns]` configuration.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// The nameserver (`host:port`, UDP) CNAME checks ask; None: the system's resolvers.
    pub resolver: Option<SocketAddr>,
    /// How often a verified custom domain's CNAME is checked again.
    pub recheck_interval: Duration,
    /// How often a pending (or failed) domain is checked again.
    pub pending_interval: Duration,
}

impl DnsSettings {
    pub fn with_resolver(resolver: Option<SocketAddr>) -> Self {
        Self {
            resolver,
            recheck_interval: Duration::from_secs(6 * 3600),
            pending_interval: Duration::from_secs(60),
        }
    }
}

/// The prefix of DNS-01 challenge names (RFC 8555 §8.4).
pub const CHALLENGE_PREFIX: &str = "_acme-challenge.";

/// A DNS name as we store and compare it: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A resolver without a cache (a record that just appeared is seen at the next check).
pub fn resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    let builder = match settings.resolver {
        Some(addr) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![NameServerConfig::new(addr, Protocol::Udp)]),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?,
    };
    Ok(builder.with_options(opts).build())
}

/// The target of `name`'s CNAME record (normalised), None when it has none; Err when the
/// lookup itself failed (timeout, SERVFAIL), which says nothing about the record.
pub async fn cname_target(resolver: &TokioResolver, name: &str) -> Result<Option<String>, String> {
    let fqdn = format!("{}.", normalize(name));
    match resolver.lookup(fqdn.as_str(), RecordType::CNAME).await {
        Ok(lookup) => Ok(lookup.record_iter().find_map(|r| match r.data() {
            RData::CNAME(target) => Some(normalize(&target.0.to_ascii())),
            _ => None,
        })),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(None),
        Err(e) => Err(format!("DNS lookup of {name}: {e}")),
    }
}

/// One question of a query we may answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub request: Message,
    /// Normalised.
    pub name: String,
    pub record_type: RecordType,
}

impl Question {
    /// Whether the answer depends on challenge records: a `_acme-challenge.` name.
    pub fn is_challenge(&self) -> bool {
        self.name.starts_with(CHALLENGE_PREFIX)
    }
}

/// Parses a datagram: Some for a standard query with one question, None for anything to
/// drop (a response, garbage).
pub fn parse_question(datagram: &[u8]) -> Option<Question> {
    let request = Message::from_vec(datagram).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let (name, record_type) = match request.queries() {
        [q] => (normalize(&q.name().to_ascii()), q.query_type()),
        _ => ("".to_owned(), RecordType::NULL),
    };
    Some(Question {
        request,
        name,
        record_type,
    })
}

/// The response to `q`, given the TXT values published for its name (empty: none). We are
/// authoritative for challenge names only: any other name is refused, a challenge name
/// without values does not exist, and other types of a challenge name have no records.
pub fn answer(q: &Question, txt_values: &[String]) -> Vec<u8> {
    let mut rsp = Message::new();
    rsp.set_id(q.request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.request.op_code())
        .set_recursion_desired(q.request.recursion_desired())
        .add_queries(q.request.queries().to_vec());
    let code = if q.request.op_code() != OpCode::Query {
        ResponseCode::NotImp
    } else if q.request.queries().len() != 1 {
        ResponseCode::FormErr
    } else if !q.is_challenge() || q.request.queries()[0].query_class() != DNSClass::IN {
        ResponseCode::Refused
    } else if txt_values.is_empty() {
        rsp.set_authoritative(true);
        ResponseCode::NXDomain
    } else {
        rsp.set_authoritative(true);
        if matches!(q.record_type, RecordType::TXT | RecordType::ANY) {
            let owner = q.request.queries()[0].name().clone();
            for value in txt_values {
                // Not cached: a challenge value lives for minutes.
                rsp.add_answer(Record::from_rdata(
                    owner.clone(),
                    0,
                    RData::TXT(TXT::new(vec![value.clone()])),
                ));
            }
        }
        ResponseCode::NoError
    };
    rsp.set_response_code(code);
    rsp.to_vec().unwrap_or_default()
}

/// Answers DNS-01 queries on `socket` from the database until `shutdown` turns true.
pub async fn serve(state: AppState, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS responder: receive failed");
                    continue;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        let Some(q) = buf.get(..len).and_then(parse_question) else {
            continue;
        };
        let values = if q.is_challenge() {
            match lookup(&state, &q.name).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS responder: database lookup failed");
                    let mut rsp =
                        Message::error_msg(q.request.id(), q.request.op_code(), ResponseCode::ServFail);
                    rsp.add_queries(q.request.queries().to_vec());
                    let _ = socket.send_to(&rsp.to_vec().unwrap_or_default(), peer).await;
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let _ = socket.send_to(&answer(&q, &values), peer).await;
    }
}

async fn lookup(state: &AppState, name: &str) -> crate::error::Result<Vec<String>> {
    let mut conn = state.db.acquire().await?;
    certs::dns_records(&mut conn, name, db::now_ms()).await
}

/// Binds the responder's socket and runs it; returns at once without `[acme.dns] listen`.
pub async fn run(state: AppState, shutdown: watch::Receiver<bool>) {
    let Some(listen) = state.settings.acme.as_ref().and_then(|a| a.dns_listen) else {
        return;
    };
    match UdpSocket::bind(listen).await {
        Ok(socket) => {
            tracing::info!(%listen, "DNS-01 responder listening");
            serve(state, socket, shutdown).await;
        }
        Err(e) => tracing::error!(%listen, error = %e, "DNS-01 responder: cannot bind"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::Name;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii(name).unwrap_or_else(|e| panic!("{e}")),
                t,
            ));
        m.to_vec().unwrap_or_else(|e| panic!("{e}"))
    }

    fn respond(name: &str, t: RecordType, values: &[&str]) -> Message {
        let q = parse_question(&query(name, t)).unwrap_or_else(|| panic!("a question"));
        let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        Message::from_vec(&answer(&q, &values)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn txts(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn challenge_txt_records_are_answered_authoritatively() {
        let q = parse_question(&query("_ACME-Challenge.Example.test.", RecordType::TXT))
            .unwrap_or_else(|| panic!("parsed"));
        assert_eq!(q.name, "_acme-challenge.example.test");
        assert!(q.is_challenge());
        let m = respond("_acme-challenge.example.test.", RecordType::TXT, &["v1", "v2"]);
        assert_eq!(m.id(), 4242);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert_eq!(txts(&m), vec!["v1".to_owned(), "v2".to_owned()]);
        assert_eq!(m.queries().len(), 1);
        assert!(m.answers().iter().all(|r| r.ttl() == 0));
    }

    #[test]
    fn other_names_types_and_absent_values() {
        // Not a challenge name: refused, whatever we hold.
        let m = respond("example.test.", RecordType::A, &[]);
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(m.answers().is_empty());
        // A challenge name with nothing published: does not exist.
        let m = respond("_acme-challenge.other.test.", RecordType::TXT, &[]);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        // Another type of a name that exists: no records, no error.
        let m = respond("_acme-challenge.example.test.", RecordType::AAAA, &["v1"]);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
        // Responses and garbage are dropped.
        assert!(parse_question(b"\x00\x01garbage").is_none());
        let mut rsp = Message::from_vec(&query("x.test.", RecordType::A)).unwrap_or_else(|e| panic!("{e}"));
        rsp.set_message_type(MessageType::Response);
        assert!(parse_question(&rsp.to_vec().unwrap_or_default()).is_none());
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize("PBX.Customer.COM."), "pbx.customer.com");
    }
}
