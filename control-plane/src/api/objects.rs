//! Serves presigned GET URLs of the directory object store (`pbx up`); S3 serves its own.

use crate::app::AppState;
use crate::error::{Error, Result};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Signed {
    expires: u64,
    sig: String,
}

pub async fn presigned_get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Signed>,
) -> Result<Response> {
    let store = state.dir_objects.as_ref().ok_or(Error::NotFound("object"))?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    if !store.verify_presigned(&key, q.expires, &q.sig, now) {
        return Err(Error::Forbidden("invalid or expired signature".into()));
    }
    let bytes = state.objects.get(&key).await.map_err(|e| match e {
        pbx_engines::objects::ObjectError::NotFound(_) => Error::NotFound("object"),
        other => other.into(),
    })?;
    Ok(([(http::header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
