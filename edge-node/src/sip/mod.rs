//! The SIP stack of the edge node: protocol logic apart from the I/O that drives it.

pub mod auth;
pub mod keepalive;
pub mod message;
pub mod registrar;
pub mod server;
pub mod service;
pub mod tls;
pub mod transaction;
