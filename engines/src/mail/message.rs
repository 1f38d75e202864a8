//! Builds the RFC 5322 message both mailers send or file, so they agree byte for byte on
//! what a given [`Email`] becomes.

use super::{Email, MailError};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

/// Parses `Name <addr@host>` or `addr@host`.
pub(crate) fn parse_mailbox(address: &str) -> Result<Mailbox, MailError> {
    address
        .parse::<Mailbox>()
        .map_err(|_| MailError::InvalidAddress(address.to_owned()))
}

/// The message for `email` from `from`: text alone, or text and HTML as
/// multipart/alternative. Every recipient is checked before anything is built.
pub(crate) fn build_message(from: &Mailbox, email: &Email) -> Result<Message, MailError> {
    if email.to.is_empty() {
        return Err(MailError::Message("no recipients".to_owned()));
    }
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(email.subject.clone())
        // The sender's domain rather than this machine's hostname, which says nothing
        // useful and may not even be a domain name.
        .message_id(Some(format!(
            "<{}@{}>",
            uuid::Uuid::new_v4().simple(),
            from.email.domain()
        )))
        .date_now();
    for to in &email.to {
        builder = builder.to(parse_mailbox(to)?);
    }
    let built = match &email.html_body {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            email.text_body.clone(),
            html.clone(),
        )),
        None => builder.singlepart(SinglePart::plain(email.text_body.clone())),
    };
    built.map_err(|e| MailError::Message(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &[&str]) -> Email {
        Email {
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            subject: "Hi".to_owned(),
            text_body: "text".to_owned(),
            html_body: None,
        }
    }

    #[test]
    fn addresses_are_validated() {
        let from = parse_mailbox("PBX <noreply@pbx.test>").expect("from");
        assert!(build_message(&from, &email(&["a@x.test", "B <b@x.test>"])).is_ok());
        for bad in [
            "",
            "no-at-sign",
            "a@",
            "@x.test",
            "a@x.test, b@x.test",
            "a b@x.test",
        ] {
            assert!(
                matches!(
                    build_message(&from, &email(&["ok@x.test", bad])),
                    Err(MailError::InvalidAddress(a)) if a == bad
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            build_message(&from, &email(&[])),
            Err(MailError::Message(_))
        ));
    }

    #[test]
    fn headers_cannot_be_injected_through_the_subject() {
        let from = parse_mailbox("noreply@pbx.test").expect("from");
        let mut e = email(&["a@x.test"]);
        e.subject = "Hello\r\nBcc: victim@x.test".to_owned();
        let raw = build_message(&from, &e).expect("build").formatted();
        let raw = String::from_utf8_lossy(&raw);
        assert!(
            !raw.lines().any(|l| l.starts_with("Bcc:")),
            "no Bcc header: {raw}"
        );
    }
}
