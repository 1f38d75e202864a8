//! The crate's one error type.

use pbx_engines::bus::BusError;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The edge configuration is unusable (bad URL, empty node id...).
    #[error("invalid edge configuration: {0}")]
    Config(String),

    /// The control plane could not be reached or did not answer in time.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),

    /// The control plane answered with an unexpected status (401 for a wrong edge token).
    #[error("control plane answered {status} to GET {path}")]
    Status { status: u16, path: String },

    /// The control plane's answer did not parse.
    #[error("invalid answer from control plane to GET {path}: {message}")]
    Decode { path: String, message: String },

    #[error(transparent)]
    Bus(#[from] BusError),

    /// An event was refused because the in-memory queue of events not yet on the bus is full.
    #[error("event queue full ({capacity} events waiting for the bus)")]
    EventQueueFull { capacity: usize },

    /// An event was refused because the sink is shutting down.
    #[error("event sink closed")]
    EventSinkClosed,

    #[error("could not encode {what}: {message}")]
    Encode { what: &'static str, message: String },

    /// A background task ended abnormally (panicked).
    #[error("{task} task failed: {message}")]
    Task { task: &'static str, message: String },
}
