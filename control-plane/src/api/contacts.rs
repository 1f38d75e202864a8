//! Company contacts and contact groups (SPEC P8).

use super::json::ApiJson;
use crate::app::AppState;
use crate::auth::Ctx;
use crate::db::contacts::{ContactFields, ContactGroup};
use crate::error::{Error, Problem, Result};
use crate::service::contacts::{
    self as svc, ContactGroupInput, ContactGroupList, ContactPage, ContactQuery, ContactView,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use http::StatusCode;

/// The tenant's contacts by name (case-insensitive), with search and cursor pagination.
/// Readable by every member of the tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/contacts", tag = "contacts",
    params(("slug" = String, Path), ContactQuery),
    responses((status = 200, body = ContactPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list_contacts(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<ContactPage>> {
    let Query(pairs) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    let req = svc::parse_query(&pairs)?;
    svc::list(&state, &ctx, &slug, &req).await.map(Json)
}

/// Add a contact (tenant admin): a name, 1 to 10 typed numbers, and optionally a company,
/// an email address and notes.
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/contacts", tag = "contacts", params(("slug" = String, Path)),
    request_body = ContactFields,
    responses((status = 201, body = ContactView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<ContactFields>,
) -> Result<(StatusCode, Json<ContactView>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create(&state, &ctx, &slug, body).await?),
    ))
}

/// One contact.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/contacts/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ContactView), (status = 404, body = Problem)))]
pub async fn get_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<ContactView>> {
    svc::get(&state, &ctx, &slug, &id).await.map(Json)
}

/// Replace a contact's fields (tenant admin).
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/contacts/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)), request_body = ContactFields,
    responses((status = 200, body = ContactView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn update_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ContactFields>,
) -> Result<Json<ContactView>> {
    svc::update(&state, &ctx, &slug, &id, body).await.map(Json)
}

/// Delete a contact (tenant admin); it leaves the groups it was in.
#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/contacts/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_contact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete(&state, &ctx, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's contact groups with their members' ids, by name.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/contact-groups", tag = "contacts", params(("slug" = String, Path)),
    responses((status = 200, body = ContactGroupList), (status = 404, body = Problem)))]
pub async fn list_contact_groups(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
) -> Result<Json<ContactGroupList>> {
    svc::list_groups(&state, &ctx, &slug).await.map(Json)
}

/// Add a contact group (tenant admin): a name unique in the tenant (409) and member contacts
/// of the tenant (422 naming the first that is not).
#[utoipa::path(post, path = "/api/v1/tenants/{slug}/contact-groups", tag = "contacts", params(("slug" = String, Path)),
    request_body = ContactGroupInput,
    responses((status = 201, body = ContactGroup), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_contact_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<ContactGroupInput>,
) -> Result<(StatusCode, Json<ContactGroup>)> {
    Ok((
        StatusCode::CREATED,
        Json(svc::create_group(&state, &ctx, &slug, body).await?),
    ))
}

/// One contact group.
#[utoipa::path(get, path = "/api/v1/tenants/{slug}/contact-groups/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ContactGroup), (status = 404, body = Problem)))]
pub async fn get_contact_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Json<ContactGroup>> {
    svc::get_group(&state, &ctx, &slug, &id).await.map(Json)
}

/// Rename a contact group and replace its members (tenant admin).
#[utoipa::path(put, path = "/api/v1/tenants/{slug}/contact-groups/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)), request_body = ContactGroupInput,
    responses((status = 200, body = ContactGroup), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_contact_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ContactGroupInput>,
) -> Result<Json<ContactGroup>> {
    svc::update_group(&state, &ctx, &slug, &id, body).await.map(Json)
}

/// Delete a contact group (tenant admin); its contacts stay.
#[utoipa::path(delete, path = "/api/v1/tenants/{slug}/contact-groups/{id}", tag = "contacts",
    params(("slug" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_contact_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((slug, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    svc::delete_group(&state, &ctx, &slug, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
