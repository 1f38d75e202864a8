//! `ClientIp`: the address a request came from, for per-client limits.
//!
//! The connection's peer (axum `ConnectInfo`), unless the API is configured to sit behind a
//! trusted reverse proxy (`http.trust_forwarded_for`): then the last `X-Forwarded-For`
//! entry, the one that proxy appended. Entries before it are whatever the client sent and
//! prove nothing, so they are never used.

use crate::app::AppState;
use crate::error::Error;
use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The key limits are counted under; requests of unknown origin share one.
    pub fn key(&self) -> String {
        self.0.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }
}

/// The last address of the last `X-Forwarded-For` header, if it parses.
fn last_forwarded_for(parts: &Parts) -> Option<IpAddr> {
    let value = parts.headers.get_all("x-forwarded-for").iter().next_back()?;
    let last = value.to_str().ok()?.rsplit(',').next()?.trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if state.settings.trust_forwarded_for {
            if let Some(ip) = last_forwarded_for(parts) {
                return Ok(ClientIp(Some(ip)));
            }
        }
        Ok(ClientIp(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[&str]) -> Parts {
        let mut b = http::Request::builder();
        for h in headers {
            b = b.header("x-forwarded-for", *h);
        }
        b.body(())
            .map(|r| r.into_parts().0)
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn the_last_forwarded_entry_counts() {
        assert_eq!(
            last_forwarded_for(&parts(&["6.6.6.6, 203.0.113.7"])),
            "203.0.113.7".parse().ok()
        );
        assert_eq!(
            last_forwarded_for(&parts(&["6.6.6.6", "198.51.100.2"])),
            "198.51.100.2".parse().ok()
        );
        assert_eq!(
            last_forwarded_for(&parts(&["2001:db8::1"])),
            "2001:db8::1".parse().ok()
        );
        assert_eq!(last_forwarded_for(&parts(&["1.2.3.4, junk"])), None);
        assert_eq!(last_forwarded_for(&parts(&[])), None);
    }
}
