//! The behaviour every [`Mailer`] must show, written once and run by each implementation's
//! tests through [`mail_conformance_tests!`], checked on the raw messages its sink received
//! (the outbox directory, or what the SMTP server filed).

use super::{Email, MailError, Mailer};
use mail_parser::{MessageParser, MimeHeaders};

/// The sender every fixture must configure.
pub(crate) const FROM: &str = "PBX Notifications <noreply@pbx.test>";

/// Generates one `#[tokio::test]` per check. `$make` evaluates to a future of a fresh
/// fixture that derefs to the mailer; `$received` is an
/// `async fn(&Fixture) -> Vec<Vec<u8>>` returning the raw messages the sink holds.
macro_rules! mail_conformance_tests {
    ($make:expr, $received:path) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::mail::conformance::mail_conformance_tests!(@each $make, $received;
                delivers_utf8_multipart_to_every_recipient,
                delivers_text_only,
                invalid_address_is_rejected_and_nothing_sent,
            );
        }
    };
    (@each $make:expr, $received:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = $make.await;
                $crate::mail::conformance::$check(
                    &*fixture,
                    async || $received(&fixture).await,
                )
                .await;
            }
        )*
    };
}
pub(crate) use mail_conformance_tests;

fn addresses(header: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    header
        .map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn delivers_utf8_multipart_to_every_recipient<F>(mailer: &dyn Mailer, received: F)
where
    F: AsyncFn() -> Vec<Vec<u8>>,
{
    let subject = "Neue Sprachnachricht von Jürgen Müller — 3 Min. ✓ 📞";
    // Long lines and non-ASCII force a transfer encoding the reader has to undo.
    let text = format!(
        "Hallo Zoë,\n\nSie haben eine neue Nachricht (Dauer 3:05).\n{}\n€ ½ ✓\n",
        "Eine sehr lange Zeile, die länger ist als achtundsiebzig Zeichen und deshalb umbrochen werden muss."
    );
    let html = "<p>Hallo <b>Zoë</b>,</p><p>Sie haben eine <i>neue</i> Nachricht. € ✓</p>";
    let email = Email {
        to: vec![
            "Alice Example <alice@example.test>".to_owned(),
            "bob@example.test".to_owned(),
        ],
        subject: subject.to_owned(),
        text_body: text.clone(),
        html_body: Some(html.to_owned()),
    };
    let before = received().await.len();
    mailer.send(&email).await.expect("send");
    let all = received().await;
    assert_eq!(all.len(), before + 1, "exactly one message arrived");
    let raw = all.last().expect("a message");

    let msg = MessageParser::default().parse(raw).expect("an RFC 5322 message");
    assert_eq!(msg.subject(), Some(subject), "UTF-8 subject round trip");
    assert_eq!(
        addresses(msg.to()),
        vec!["alice@example.test".to_owned(), "bob@example.test".to_owned()]
    );
    assert_eq!(addresses(msg.from()), vec!["noreply@pbx.test".to_owned()]);
    assert!(msg.date().is_some(), "has a Date");
    assert!(msg.message_id().is_some(), "has a Message-ID");

    let root = msg.content_type().expect("Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative")),
        "text and html as alternatives"
    );
    assert_eq!(msg.text_body_count(), 1);
    assert_eq!(msg.html_body_count(), 1);
    let text_part = msg.text_part(0).expect("text part");
    assert_eq!(text_part.content_type().and_then(|c| c.subtype()), Some("plain"));
    let html_part = msg.html_part(0).expect("html part");
    assert_eq!(html_part.content_type().and_then(|c| c.subtype()), Some("html"));
    let got_text = msg.body_text(0).expect("text body").replace("\r\n", "\n");
    assert_eq!(got_text.trim_end(), text.trim_end(), "text body round trip");
    let got_html = msg.body_html(0).expect("html body");
    assert_eq!(got_html.trim_end(), html, "html body round trip");
}

pub(crate) async fn delivers_text_only<F>(mailer: &dyn Mailer, received: F)
where
    F: AsyncFn() -> Vec<Vec<u8>>,
{
    let email = Email {
        to: vec!["carol@example.test".to_owned()],
        subject: "Daily report".to_owned(),
        text_body: "3 calls, 1 voicemail.\n".to_owned(),
        html_body: None,
    };
    let before = received().await.len();
    mailer.send(&email).await.expect("send");
    let all = received().await;
    assert_eq!(all.len(), before + 1);
    let msg = MessageParser::default()
        .parse(all.last().expect("a message"))
        .expect("an RFC 5322 message");
    let root = msg.content_type().expect("Content-Type");
    assert_eq!((root.ctype(), root.subtype()), ("text", Some("plain")));
    assert_eq!(msg.subject(), Some("Daily report"));
    assert_eq!(addresses(msg.to()), vec!["carol@example.test".to_owned()]);
    assert_eq!(
        msg.body_text(0).expect("text").replace("\r\n", "\n").trim_end(),
        "3 calls, 1 voicemail."
    );
}

pub(crate) async fn invalid_address_is_rejected_and_nothing_sent<F>(mailer: &dyn Mailer, received: F)
where
    F: AsyncFn() -> Vec<Vec<u8>>,
{
    let before = received().await.len();
    for bad in [
        "not an address",
        "bob@",
        "<bob@example.test",
        "a@b.test\r\nBcc: x@y.test",
    ] {
        let email = Email {
            // The valid first recipient must not get the message either.
            to: vec!["alice@example.test".to_owned(), bad.to_owned()],
            subject: "s".to_owned(),
            text_body: "t".to_owned(),
            html_body: None,
        };
        match mailer.send(&email).await {
            Err(MailError::InvalidAddress(a)) => assert_eq!(a, bad),
            other => panic!("{bad:?}: expected InvalidAddress, got {other:?}"),
        }
    }
    assert_eq!(received().await.len(), before, "nothing arrived");
}
