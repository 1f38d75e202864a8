//! The edge node's settings, as read from the `pbx` configuration file or environment.

use crate::EdgeError;
use pbx_contract::Secret;
use serde::Deserialize;

/// Deserialize only: serialising would write the edge token in clear.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Unique among edge nodes; names this node in events and leases.
    pub node_id: String,
    pub region: String,
    /// The control plane's root URL, e.g. `https://cp.example.com`.
    pub control_plane_url: String,
    /// Bearer token of the control plane's edge API.
    pub edge_token: Secret,
}

impl EdgeConfig {
    /// Checks what can be checked without the network (the URL is checked when the HTTP
    /// client is built).
    pub fn validate(&self) -> Result<(), EdgeError> {
        let ident_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        // These end up in stream entries and Redis key names: keep them plain.
        if !ident_ok(&self.node_id) {
            return Err(EdgeError::Config(
                "node_id must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if !ident_ok(&self.region) {
            return Err(EdgeError::Config(
                "region must be 1-64 characters of letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if self.edge_token.expose().trim().is_empty() {
            return Err(EdgeError::Config("edge_token is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<EdgeConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn parses_validates_and_hides_the_token() {
        let c = parse(
            r#"{"node_id":"edge-eu-1","region":"eu-west","control_plane_url":"https://cp.example","edge_token":"s3cr3t-token"}"#,
        )
        .unwrap();
        assert_eq!(c.node_id, "edge-eu-1");
        assert_eq!(c.edge_token.expose(), "s3cr3t-token");
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("s3cr3t-token"));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(parse(
            r#"{"node_id":"e","region":"r","control_plane_url":"http://x","edge_token":"t","extra":1}"#
        )
        .is_err());
        assert!(parse(r#"{"node_id":"e","region":"r","control_plane_url":"http://x"}"#).is_err());

        let good = EdgeConfig {
            node_id: "edge-1".into(),
            region: "eu".into(),
            control_plane_url: "http://cp".into(),
            edge_token: Secret::new("t"),
        };
        for bad in [
            EdgeConfig {
                node_id: String::new(),
                ..good.clone()
            },
            EdgeConfig {
                node_id: "edge 1".into(),
                ..good.clone()
            },
            EdgeConfig {
                node_id: "x".repeat(65),
                ..good.clone()
            },
            EdgeConfig {
                region: "eu/west".into(),
                ..good.clone()
            },
            EdgeConfig {
                edge_token: Secret::new(" "),
                ..good.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(EdgeError::Config(_))), "{bad:?}");
        }
    }
}
