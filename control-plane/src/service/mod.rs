//! Domain operations: validate input, then change rows, audit and outbox in one transaction.
//! Handlers and the CLI call these; nothing here knows about HTTP.

pub mod auth;
pub mod billing;
pub mod call_logs;
pub mod config_publish;
pub mod contacts;
pub mod deletions;
pub mod domains;
pub mod extensions;
pub mod lifecycle;
pub mod pause_reasons;
pub mod pbx_objects;
pub mod plan_gate;
pub mod prompt_audio;
pub mod prompts;
pub mod queue_calls;
pub mod queue_options;
pub mod queues;
pub mod resellers;
pub mod signup;
pub mod tenants;
pub mod users;
pub mod validate;
