//! Online sign-up (SPEC P1): no authentication; limited per client address.
//!
//! The verification email links to `GET /api/v1/signup/verify?token=…`, which only shows a
//! page with a confirm button: mail scanners that fetch every link must not use up the
//! single-use token. The button POSTs the token (a form); API clients POST it as JSON.

use super::client_ip::ClientIp;
use super::json::{parse, ApiJson};
use crate::app::AppState;
use crate::db;
use crate::error::{Error, Problem, Result};
use crate::service::signup::{self as svc, SignupAccepted, SignupRequest, SignupVerified, VerifyRequest};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use http::HeaderMap;
use std::collections::HashMap;

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Ask for a tenant: validated whole, then a single-use link (valid 24 h) goes to `email`.
/// Nothing exists until the link is used. At most 5 accepted sign-ups per client address
/// per hour (429 with Retry-After).
#[utoipa::path(post, path = "/api/v1/signup", tag = "signup", security(()), request_body = SignupRequest,
    responses((status = 202, body = SignupAccepted), (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)))]
pub async fn signup(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<SignupAccepted>)> {
    let accepted = svc::signup(&state, &client.key(), request_id(&headers), req).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// The page the verification link opens: a confirm button, no side effect.
#[utoipa::path(get, path = "/api/v1/signup/verify", tag = "signup", security(()),
    params(("token" = String, Query, description = "the token of the emailed link")),
    responses((status = 200, description = "HTML page with a confirm button", content_type = "text/html"),
        (status = 422, description = "HTML page: invalid, used or expired link", content_type = "text/html")))]
pub async fn verify_page(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    let token = query.get("token").map(String::as_str).unwrap_or_default();
    if !svc::token_is_well_formed(token) {
        return Ok(page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This sign-up link is not valid.",
            None,
        ));
    }
    let mut conn = state.db.acquire().await?;
    let pending = db::signups::find_by_token_hash(&mut conn, &crate::crypto::token_hash(token)).await?;
    Ok(match pending {
        None => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This sign-up link is not valid, or it was used already.",
            None,
        ),
        Some(p) if p.expires_at_ms <= db::now_ms() => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This sign-up link has expired. Please sign up again.",
            None,
        ),
        Some(p) => page(
            StatusCode::OK,
            &format!(
                "Confirm to create the phone system {} for {}.",
                state.settings.fqdn(&p.slug),
                p.email
            ),
            Some(token),
        ),
    })
}

/// Use the link: creates the tenant (trial, 30 days, every feature) and its admin, who logs
/// in with the sign-up's email and password. Body: JSON `{"token": …}`, answered with JSON;
/// or the page's form (`application/x-www-form-urlencoded`, `token=…`), answered with a page.
#[utoipa::path(post, path = "/api/v1/signup/verify", tag = "signup", security(()), request_body = VerifyRequest,
    responses((status = 201, body = SignupVerified), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn verify(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let rid = request_id(&headers);
    if content_type.starts_with("application/x-www-form-urlencoded") {
        // Our own form sends exactly `token=<base64url>`, which needs no percent-decoding.
        let text = std::str::from_utf8(&body).unwrap_or_default().trim();
        let token = text.strip_prefix("token=").unwrap_or_default();
        return Ok(match svc::verify(&state, token, rid).await {
            Ok(done) => page(
                StatusCode::CREATED,
                &format!(
                    "Your phone system {} is ready. Sign in as {} with the password you chose (tenant {}).",
                    done.tenant.fqdn, done.admin.email, done.tenant.slug
                ),
                None,
            ),
            Err(e) if e.status().is_client_error() => page(e.status(), &e.to_string(), None),
            Err(e) => e.into_response(),
        });
    }
    if !(content_type.starts_with("application/json") || content_type.contains("+json")) {
        return Err(Error::MalformedBody(
            "expected Content-Type: application/json".into(),
        ));
    }
    let req: VerifyRequest = parse(&body)?;
    let done = svc::verify(&state, req.token.expose(), rid).await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal page; `token` (already checked to be base64url) adds the confirm form.
fn page(status: StatusCode, message: &str, token: Option<&str>) -> Response {
    let form = token.map_or_else(String::new, |t| {
        format!(
            "<form method=\"post\" action=\"/api/v1/signup/verify\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\"><button type=\"submit\">Confirm</button></form>",
            escape(t)
        )
    });
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-up</title></head>\
         <body><p>{}</p>{form}</body></html>",
        escape(message)
    );
    let mut resp = (status, Html(html)).into_response();
    // The page holds a live token: keep it out of caches and other sites' frames.
    let h = resp.headers_mut();
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn pages_escape_what_people_typed() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
