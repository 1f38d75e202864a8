//! Uploaded prompts (SPEC T7, P8): raw WAV bodies, converted to 8 kHz mono 16-bit PCM.

use crate::app::AppState;
use crate::auth::Ctx;
use crate::error::{Error, Problem, Result};
use crate::service::prompts::{self as svc, PromptView, UploadQuery, MAX_UPLOAD_BYTES};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;

/// A WAV file as the request body (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct WavFile(Vec<u8>);

/// Reads the whole upload, up to [`MAX_UPLOAD_BYTES`] (413 beyond).
async fn upload(body: Body) -> Result<Bytes> {
    axum::body::to_bytes(body, MAX_UPLOAD_BYTES)
        .await
        .map_err(|_| Error::PayloadTooLarge {
            limit: MAX_UPLOAD_BYTES,
        })
}

/// The tenant's uploaded prompts, by name (any member of the tenant).
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/prompts", tag = "prompts", params(("slug" = String, Path)),
    responses((status = 200, body = Vec<PromptView>), (status = 404, body = Problem)))]
pub async fn list_prompts(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<Vec<PromptView>>> {
    svc::list(&state, &ctx, &slug).await.map(Json)
}

/// Upload a prompt (tenant admin, reseller, operator). The body is a WAV file (any
/// Content-Type; `audio/wav` preferred): PCM 8-bit, 16-, 24- or 32-bit, 32-bit float, G.711
/// A-law or mu-law; 1-8 channels; 4,000-192,000 Hz; at most 10 minutes and 10 MiB. It is stored
/// as 8 kHz mono 16-bit PCM (channels averaged, band-limited resampling, level unchanged).
/// A name that is also a shipped prompt's (e.g. `moh`) overrides the shipped prompt for this
/// tenant. A file that cannot be read is 422 (`field: body`) and stores nothing.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/prompts", tag = "prompts",
    params(("slug" = String, Path), UploadQuery),
    request_body(content = WavFile, content_type = "application/octet-stream", description = "a WAV file (sent with any Content-Type, e.g. audio/wav)"),
    responses((status = 201, body = PromptView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "a prompt of that name exists"), (status = 413, body = Problem),
        (status = 422, body = Problem, description = "bad name, or a file that is not a supported WAV")))]
pub async fn upload_prompt(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: std::result::Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<PromptView>)> {
    let Query(q) = query.map_err(|_| Error::invalid("name", "the query parameter name is required"))?;
    let bytes = upload(body).await?;
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, &q.name, bytes).await?),
    ))
}

/// One prompt, with a presigned download link of its stored WAV valid for an hour.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/prompts/{name}", tag = "prompts",
    params(("slug" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = PromptView), (status = 404, body = Problem)))]
pub async fn get_prompt(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
) -> Result<Json<PromptView>> {
    svc::get(&state, &ctx, &slug, &name).await.map(Json)
}

/// Replace a prompt's audio (tenant admin; same body as the upload). 404 when the tenant has
/// no prompt of that name. The old object is deleted once the prompt points at the new one.
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/prompts/{name}", tag = "prompts",
    params(("slug" = String, Path), ("name" = String, Path)),
    request_body(content = WavFile, content_type = "application/octet-stream", description = "a WAV file (sent with any Content-Type, e.g. audio/wav)"),
    responses((status = 200, body = PromptView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn replace_prompt(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
    body: Body,
) -> Result<Json<PromptView>> {
    let bytes = upload(body).await?;
    svc::replace(&state, &ctx, &slug, &name, bytes).await.map(Json)
}

/// Delete a prompt (tenant admin). 409 naming the referrer while a queue, IVR, schedule, ring
/// group or inbound route uses it (unless the name is also a shipped prompt's, which takes over).
#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/prompts/{name}", tag = "prompts",
    params(("slug" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "in use")))]
pub async fn delete_prompt(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, name)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete(&state, &ctx, &slug, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
