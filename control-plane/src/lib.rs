//! The control plane: HTTP API, tenants and identity, repositories, configuration
//! publication to edge nodes, and ingestion of their events.

pub mod acme;
pub mod api;
pub mod app;
pub mod auth;
pub mod crypto;
pub mod db;
pub mod dns;
pub mod error;
pub mod service;
pub mod stripe;
pub mod workers;

pub use app::{AppState, Engines, Settings};
pub use error::{Error, Result};

#[cfg(test)]
pub mod testkit;

#[cfg(test)]
mod contract_tests;

#[cfg(test)]
mod acme_tests;
