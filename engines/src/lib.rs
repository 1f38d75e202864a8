//! Engines shared by the control plane and the edge node.
//!
//! Each concern is one trait with two implementations: an embedded one for `pbx up` (one
//! machine, nothing to install) and a production one (Redis Streams, S3, SMTP). Both pass
//! the same conformance suite (`conformance` modules, run by each implementation's tests).
//! This crate sits beside `contract` rather than inside either plane because both planes
//! use it (the edge appends events and stores recordings; the control plane publishes
//! configuration and sends mail) and neither plane may depend on the other.

pub mod bus;
pub mod live;
pub mod mail;
pub mod objects;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
