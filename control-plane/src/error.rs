//! The control plane's one error type, mapped once to HTTP problem+json (RFC 9457).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing does not exist, or the caller may not know that it exists (another tenant's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Input broke a rule; `field` names the offending JSON field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Input clashes with existing data (a duplicate number, a taken slug).
    #[error("{field}: {message}")]
    Conflict { field: String, message: String },
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("authentication required")]
    Unauthenticated,
    #[error("invalid credentials")]
    BadCredentials,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The tenant's plan lacks a feature (SPEC P4); `plan` is the cheapest plan that has it.
    #[error("feature {feature} requires plan {plan}")]
    PlanRequired {
        feature: pbx_contract::Feature,
        plan: pbx_contract::Plan,
    },
    /// A rate limit was hit; the client may try again after this many seconds.
    #[error("too many requests; try again in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Bus(#[from] pbx_engines::bus::BusError),
    #[error(transparent)]
    Objects(#[from] pbx_engines::objects::ObjectError),
    #[error(transparent)]
    Mail(#[from] pbx_engines::mail::MailError),
    /// A feature whose backing service is not configured here (e.g. billing without a
    /// `[stripe]` section); the message is shown to the client.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A feature this deployment does not offer (billing without `[stripe]`): 404 with the
    /// message, not a 5xx, since retrying cannot help and nothing failed.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// A third-party API (Stripe) failed or answered unexpectedly; logged, not shown.
    #[error("upstream service failed: {0}")]
    Upstream(String),
    /// A webhook whose signature does not verify.
    #[error("webhook signature: {0}")]
    BadSignature(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Conflict {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound(_) | Error::NotConfigured(_) => StatusCode::NOT_FOUND,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::MalformedBody(_) | Error::BadSignature(_) => StatusCode::BAD_REQUEST,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthenticated | Error::BadCredentials => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::PlanRequired { .. } => StatusCode::FORBIDDEN,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Bus(_) | Error::Objects(_) | Error::Mail(_) | Error::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Upstream(_) => StatusCode::BAD_GATEWAY,
            Error::Db(_) | Error::Migrate(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } | Error::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The problem+json body. `field` is our extension member naming the offending input field.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

pub fn problem_response(status: StatusCode, detail: String, field: Option<String>) -> Response {
    let body = Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        field,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    (status, [(http::header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], json).into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // Server-side failures are logged in full but described vaguely to the client.
        let detail = if let Error::Unavailable(what) = self {
            what.to_owned()
        } else if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "a backing service is unavailable; try again".to_owned(),
                StatusCode::BAD_GATEWAY => "an upstream service failed; try again".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            self.to_string()
        };
        let mut resp = problem_response(status, detail, self.field().map(str::to_owned));
        if let Error::TooManyRequests { retry_after_secs } = self {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_secs),
            );
        }
        resp
    }
}

/// Whether a database error is a unique-constraint violation (both backends).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.code().as_deref() == Some("23505")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}
