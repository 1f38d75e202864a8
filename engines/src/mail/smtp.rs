//! Production mailer: SMTP submission through lettre's async transport.

use super::message::{build_message, parse_mailbox};
use super::{Email, MailError, Mailer};
use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain text: only for a relay on the same host or a trusted network.
    None,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    #[serde(alias = "starttls")]
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

fn default_security() -> SmtpSecurity {
    SmtpSecurity::StartTls
}

fn default_timeout_secs() -> u64 {
    30
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    #[serde(default = "default_security")]
    pub security: SmtpSecurity,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, `Name <addr@host>` or `addr@host`.
    pub from: String,
    /// For connecting and for each SMTP command.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

impl fmt::Debug for SmtpConfig {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// [`Mailer`] that submits each message to an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn transport_err(e: impl fmt::Display) -> MailError {
    MailError::Transport(e.to_string())
}

impl SmtpMailer {
    /// Checks the configuration and prepares the transport; connects only when sending.
    pub fn new(config: &SmtpConfig) -> Result<Self, MailError> {
        let from = parse_mailbox(&config.from)?;
        let builder = match config.security {
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
            }
            SmtpSecurity::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(transport_err)?
            }
            SmtpSecurity::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(transport_err)?
            }
        }
        .port(config.port)
        .timeout(Some(Duration::from_secs(config.timeout_secs)));
        let builder = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder.credentials(Credentials::new(user.clone(), password.clone()))
            }
            (None, None) => builder,
            _ => {
                return Err(MailError::Transport(
                    "smtp username and password must be set together".to_owned(),
                ))
            }
        };
        Ok(Self {
            transport: builder.build(),
            from,
            host: config.host.clone(),
            port: config.port,
        })
    }

    /// Connects and says hello without sending anything, for start-up checks.
    pub async fn test_connection(&self) -> Result<(), MailError> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MailError::Transport(format!(
                "smtp server {}:{} did not answer NOOP",
                self.host, self.port
            ))),
            Err(e) => Err(transport_err(e)),
        }
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let message = build_message(&self.from, email)?;
        self.transport.send(message).await.map_err(transport_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::conformance::FROM;
    use crate::testkit::AioSmtpd;
    use std::ops::Deref;

    pub(crate) struct Fixture {
        mailer: SmtpMailer,
        server: AioSmtpd,
    }

    fn config(port: u16) -> SmtpConfig {
        SmtpConfig {
            host: "127.0.0.1".to_owned(),
            port,
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: FROM.to_owned(),
            timeout_secs: 10,
        }
    }

    impl Fixture {
        pub(crate) async fn new() -> Self {
            let server = AioSmtpd::start();
            let mailer = SmtpMailer::new(&config(server.port)).expect("mailer");
            Self { mailer, server }
        }
    }

    impl Deref for Fixture {
        type Target = SmtpMailer;
        fn deref(&self) -> &SmtpMailer {
            &self.mailer
        }
    }

    async fn received(fixture: &Fixture) -> Vec<Vec<u8>> {
        fixture.server.messages()
    }

    crate::mail::conformance::mail_conformance_tests!(Fixture::new(), received);

    #[tokio::test]
    async fn test_connection_reaches_the_server() {
        let fixture = Fixture::new().await;
        fixture.test_connection().await.expect("NOOP");
    }

    #[tokio::test]
    async fn a_dead_server_is_a_transport_error() {
        let port = crate::testkit::free_port();
        let mailer = SmtpMailer::new(&config(port)).expect("mailer");
        let err = mailer
            .send(&Email {
                to: vec!["a@x.test".to_owned()],
                subject: "s".to_owned(),
                text_body: "t".to_owned(),
                html_body: None,
            })
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, MailError::Transport(_)), "{err:?}");
    }

    #[test]
    fn config_parses_and_debug_redacts_the_password() {
        let mut config = config(587);
        config.username = Some("mailer".to_owned());
        config.password = Some("hunter2-secret".to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));

        #[derive(Deserialize)]
        struct Wrapper {
            security: SmtpSecurity,
        }
        let parse = |s: &str| {
            serde_json::from_str::<Wrapper>(&format!(r#"{{"security":"{s}"}}"#))
                .map(|w| w.security)
                .ok()
        };
        assert_eq!(parse("none"), Some(SmtpSecurity::None));
        assert_eq!(parse("start_tls"), Some(SmtpSecurity::StartTls));
        assert_eq!(parse("starttls"), Some(SmtpSecurity::StartTls));
        assert_eq!(parse("tls"), Some(SmtpSecurity::Tls));
        assert_eq!(parse("TLS"), None);
    }

    #[test]
    fn half_set_credentials_are_refused() {
        let mut c = config(587);
        c.username = Some("u".to_owned());
        assert!(matches!(SmtpMailer::new(&c), Err(MailError::Transport(_))));
        c.security = SmtpSecurity::Tls;
        c.password = Some("p".to_owned());
        SmtpMailer::new(&c).expect("tls with credentials");
    }
}
