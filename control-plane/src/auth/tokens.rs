//! Short-lived JWT access tokens (HS256 with a key derived from the master key) and the
//! formats of refresh tokens and API keys.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pbx_contract::{Role, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    pub fn new(master: &MasterKey) -> Self {
        let key = master.derive("pbx jwt hs256 v1");
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
        }
    }

    pub fn issue(&self, user: UserId, role: Role, ttl_secs: i64) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.to_string(),
            role,
            iat: now,
            exp: now + ttl_secs,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("cannot sign token: {e}")))
    }

    pub fn verify(&self, token: &str) -> Result<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|_| Error::Unauthenticated)
    }
}

pub const API_KEY_PREFIX: &str = "pbx_";
pub const REFRESH_PREFIX: &str = "pbxr_";

/// Splits `pbx_{id}_{secret}` into the key id; None when the token is not an API key.
pub fn api_key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip_and_rejects_tampering_and_other_keys() {
        let keys = JwtKeys::new(&MasterKey::generate());
        let user = UserId::new();
        let t = keys.issue(user, Role::TenantAdmin, 60).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!(c.sub, user.to_string());
        assert_eq!(c.role, Role::TenantAdmin);
        let mut tampered = t.clone();
        tampered.push('x');
        assert!(keys.verify(&tampered).is_err());
        assert!(JwtKeys::new(&MasterKey::generate()).verify(&t).is_err());
        let expired = keys.issue(user, Role::Agent, -120).unwrap();
        assert!(keys.verify(&expired).is_err());
    }

    #[test]
    fn api_key_format() {
        assert_eq!(api_key_id("pbx_abc_def"), Some("abc"));
        assert_eq!(api_key_id("pbx_abc_"), None);
        assert_eq!(api_key_id("eyJhbGciOi"), None);
    }
}
