//! Background loops of the control plane.

pub mod events_consumer;
pub mod outbox_relay;
