//! SIP authentication, sans-IO: digest challenges and verification ([`digest`], RFC 7616 /
//! RFC 8760 / RFC 2617 / RFC 2069) and brute-force lockout ([`lockout`]).
//!
//! Nothing here knows about sockets, tokio or the SIP library: inputs are header values as
//! `&str`, addresses as [`std::net::IpAddr`] and the current time as a [`std::time::SystemTime`]
//! passed in by the caller, so the registrar drives it and tests run it with a fake clock.
//!
//! How a registrar uses it for one REGISTER (or INVITE):
//! 1. [`Lockout::check`] the source address and the account; locked → 403, nothing else is done.
//! 2. No `Authorization` header → 401 with one `WWW-Authenticate` per
//!    [`DigestAuthenticator::challenges`] (SHA-256 first, then MD5).
//! 3. [`Credentials::parse`] the header (error → 400), look up the extension's secret and
//!    [`DigestAuthenticator::verify`]:
//!    - [`Verdict::Ok`] → [`Lockout::record_success`], accept;
//!    - [`Verdict::Stale`] / [`Verdict::Replay`] → 401 with `stale=true` (not a failure: the client
//!      proved it knows the password, or it is a retransmission);
//!    - any other verdict, or an unknown extension → [`Lockout::record_failure`] (write each
//!      returned [`LockEvent`] to the audit log and bump the metrics), then 401/403.

pub mod digest;
pub mod lockout;

pub use digest::{
    compute_response, Challenge, Credentials, DigestAlgorithm, DigestAuthenticator, DigestConfig,
    DigestParseError, NonceCheck, ResponseInput, Verdict,
};
pub use lockout::{Access, AccountKey, LockEvent, Lockout, LockoutPolicy, LockoutStats};
