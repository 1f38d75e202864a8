//! Outbound email (SPEC P9): verification, notifications, voicemail, reports.

use async_trait::async_trait;

#[cfg(test)]
pub(crate) mod conformance;
mod message;
pub mod outbox;
pub mod smtp;

pub use self::outbox::OutboxMailer;
pub use self::smtp::{SmtpConfig, SmtpMailer, SmtpSecurity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: String,
    pub text_body: String,
    pub html_body: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address {0:?}")]
    InvalidAddress(String),
    #[error("could not build the message: {0}")]
    Message(String),
    #[error("mail transport failed: {0}")]
    Transport(String),
}

/// Whether both mailers can send to `address` (`addr@host` or `Name <addr@host>`): for
/// input checks before anything is written.
pub fn check_address(address: &str) -> Result<(), MailError> {
    message::parse_mailbox(address).map(|_| ())
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends (or, embedded, files) one message. Returns once the message is accepted by the
    /// SMTP server or written durably to the outbox.
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}
