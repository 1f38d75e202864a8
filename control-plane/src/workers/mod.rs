//! Background loops of the control plane.

pub mod billing;
pub mod deletions;
pub mod domains;
pub mod events_consumer;
pub mod lifecycle;
pub mod outbox_relay;
pub mod queue_mail;
