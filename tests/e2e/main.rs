//! End-to-end tests of the real `pbx` binary (`env!("CARGO_BIN_EXE_pbx")`): every test runs
//! it as a child process, talks to it over HTTP and through its CLI, and kills whatever it
//! started when it ends (also when it fails).
//!
//! - `up`: `pbx up` on embedded engines, the CLI, restarts, secrets kept out of logs.
//! - `production`: `pbx migrate`, `pbx control-plane` and `pbx edge-node` on PostgreSQL,
//!   Redis, s3s-fs and aiosmtpd (see `pbx_engines::testkit` for how to provide them).
//! - `bad_config`: configuration mistakes.
//! - `schemathesis`: property-based API tests of `pbx up` (no 5xx for any input).

mod bad_config;
mod baresip;
mod calls;
mod production;
mod queues;
mod rfc4475;
mod ring_groups;
mod schemathesis;
mod sip;
mod support;
mod transfer;
mod transports;
mod up;
