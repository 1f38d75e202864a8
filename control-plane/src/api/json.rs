//! `ApiJson<T>`: the JSON body extractor. Unlike axum's `Json` it rejects with problem+json
//! that names the offending field (unknown fields included: every input type denies them).

use crate::error::Error;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let is_json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0).unwrap_or(0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge { limit }
            } else {
                Error::MalformedBody(rejection.body_text())
            }
        })?;
        if !is_json {
            return Err(Error::MalformedBody(
                "expected Content-Type: application/json".into(),
            ));
        }
        parse(&bytes).map(ApiJson)
    }
}

/// The body limit in force, put into request extensions by the middleware for messages.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let msg = inner.to_string();
                // Unknown fields are already in the path; missing ones are not.
                let field = match named_field(&msg) {
                    Some(name) if path == "." => name.to_owned(),
                    Some(name) if path.rsplit('.').next() != Some(name) => format!("{path}.{name}"),
                    _ if path == "." => "body".to_owned(),
                    _ => path,
                };
                Error::invalid(field, strip_position(&msg))
            }
            // serde_json reports a non-string where an enum is expected as a syntax error
            // ("expected value"); in well-formed JSON it is a wrong value of that field.
            serde_json::error::Category::Syntax
                if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() =>
            {
                let field = if path == "." { "body".to_owned() } else { path };
                Error::invalid(field, "has a value of the wrong type")
            }
            _ => Error::MalformedBody(inner.to_string()),
        }
    })?;
    de.end().map_err(|e| Error::MalformedBody(e.to_string()))?;
    Ok(value)
}

/// serde names the field in backticks for unknown and missing fields.
fn named_field(msg: &str) -> Option<&str> {
    if msg.starts_with("unknown field") || msg.starts_with("missing field") {
        let start = msg.find('`')? + 1;
        let end = start + msg[start..].find('`')?;
        return Some(&msg[start..end]);
    }
    None
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        number: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        level: u8,
        kind: Option<Kind>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Kind {
        Small,
        Large,
    }

    fn field_of(body: &str) -> String {
        match parse::<Input>(body.as_bytes()) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"number":"1","colour":"red"}"#), "colour");
        assert_eq!(field_of(r#"{}"#), "number");
        assert_eq!(field_of(r#"{"number":5}"#), "number");
        assert_eq!(field_of(r#"{"number":"1","inner":{"level":300}}"#), "inner.level");
        assert_eq!(field_of(r#"{"number":"1","inner":{"lvl":3}}"#), "inner.lvl");
        // Enums: an unknown name, and a value that is no name at all.
        assert_eq!(
            field_of(r#"{"number":"1","inner":{"level":3,"kind":"huge"}}"#),
            "inner.kind"
        );
        assert_eq!(
            field_of(r#"{"number":"1","inner":{"level":3,"kind":true}}"#),
            "inner.kind"
        );
        assert_eq!(
            field_of(r#"{"number":"1","inner":{"level":3,"kind":7}}"#),
            "inner.kind"
        );
        assert!(parse::<Input>(br#"{"number":"1","inner":{"level":3,"kind":"large"}}"#).is_ok());
        assert!(matches!(
            parse::<Input>(b"{not json"),
            Err(Error::MalformedBody(_))
        ));
        assert!(matches!(
            parse::<Input>(br#"{"number":"1"} trailing"#),
            Err(Error::MalformedBody(_))
        ));
        assert!(parse::<Input>(br#"{"number":"1"}"#).is_ok());
    }
}
