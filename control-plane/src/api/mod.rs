//! The HTTP API (axum): routes, middleware, and the OpenAPI document built from the handlers.

mod auth;
mod billing;
mod call_logs;
mod certificates;
pub mod client_ip;
mod contacts;
mod domains;
mod edge;
mod extensions;
mod health;
pub mod json;
mod middleware;
mod objects;
mod pause_reasons;
mod pbx_objects;
mod prompts;
mod queue_calls;
mod queue_options;
mod queues;
mod resellers;
mod signup;
mod tenants;
mod users;

use crate::app::AppState;
use crate::error::Problem;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Cloud PBX API", description = "Control plane API: tenants, identity, PBX configuration. Errors are application/problem+json."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .build(),
            ),
        );
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(signup::signup))
        .routes(routes!(signup::verify_page, signup::verify))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::me))
        .routes(routes!(auth::list_api_keys, auth::create_api_key))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(auth::list_resellers, auth::create_reseller))
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(tenants::tenant_audit_log))
        .routes(routes!(tenants::get_tenant_deletion))
        .routes(routes!(tenants::platform_audit_log))
        .routes(routes!(extensions::list_extensions, extensions::create_extension))
        .routes(routes!(
            extensions::get_extension,
            extensions::update_extension,
            extensions::delete_extension
        ))
        .routes(routes!(call_logs::list_call_logs))
        .routes(routes!(call_logs::get_call_log))
        .routes(routes!(call_logs::call_recording))
        .routes(routes!(
            pause_reasons::get_pause_reasons,
            pause_reasons::put_pause_reasons
        ))
        .routes(routes!(
            queue_options::get_queue_options,
            queue_options::put_queue_options
        ))
        .routes(routes!(prompts::list_prompts, prompts::upload_prompt))
        .routes(routes!(
            prompts::get_prompt,
            prompts::replace_prompt,
            prompts::delete_prompt
        ))
        .routes(routes!(queues::list_queues, queues::create_queue))
        .routes(routes!(
            queues::get_queue,
            queues::update_queue,
            queues::delete_queue
        ))
        .routes(routes!(queues::queue_live_state))
        .routes(routes!(
            queue_calls::get_queue_notifications,
            queue_calls::put_queue_notifications
        ))
        .routes(routes!(queue_calls::list_queue_calls))
        .routes(routes!(
            queue_calls::get_queue_call,
            queue_calls::update_queue_call
        ))
        .routes(routes!(queue_calls::list_agent_sessions))
        // PBX objects (SPEC P8, T5, T7): business-hours schedules, ring groups, IVRs, trunks, routes, message queues.
        .routes(routes!(pbx_objects::list_schedules, pbx_objects::create_schedule))
        .routes(routes!(
            pbx_objects::get_schedule,
            pbx_objects::update_schedule,
            pbx_objects::delete_schedule
        ))
        .routes(routes!(
            pbx_objects::list_ring_groups,
            pbx_objects::create_ring_group
        ))
        .routes(routes!(
            pbx_objects::get_ring_group,
            pbx_objects::update_ring_group,
            pbx_objects::delete_ring_group
        ))
        .routes(routes!(pbx_objects::list_ivrs, pbx_objects::create_ivr))
        .routes(routes!(
            pbx_objects::get_ivr,
            pbx_objects::update_ivr,
            pbx_objects::delete_ivr
        ))
        .routes(routes!(pbx_objects::list_trunks, pbx_objects::create_trunk))
        .routes(routes!(
            pbx_objects::get_trunk,
            pbx_objects::update_trunk,
            pbx_objects::delete_trunk
        ))
        .routes(routes!(
            pbx_objects::list_inbound_routes,
            pbx_objects::create_inbound_route
        ))
        .routes(routes!(
            pbx_objects::get_inbound_route,
            pbx_objects::update_inbound_route,
            pbx_objects::delete_inbound_route
        ))
        .routes(routes!(
            pbx_objects::list_outbound_routes,
            pbx_objects::create_outbound_route
        ))
        .routes(routes!(
            pbx_objects::get_outbound_route,
            pbx_objects::update_outbound_route,
            pbx_objects::delete_outbound_route
        ))
        .routes(routes!(
            pbx_objects::list_message_queues,
            pbx_objects::create_message_queue
        ))
        .routes(routes!(
            pbx_objects::get_message_queue,
            pbx_objects::update_message_queue,
            pbx_objects::delete_message_queue
        ))
        .routes(routes!(resellers::issue_reseller_api_key))
        .routes(routes!(resellers::suspend_tenant))
        .routes(routes!(resellers::resume_tenant))
        .routes(routes!(resellers::tenant_usage))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::update_user, users::delete_user))
        .routes(routes!(billing::checkout))
        .routes(routes!(billing::portal))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(certificates::get_certificate))
        .routes(routes!(certificates::acme_challenge))
        .routes(routes!(domains::list_domains, domains::create_domain))
        .routes(routes!(domains::get_domain, domains::delete_domain))
        .routes(routes!(contacts::list_contacts, contacts::create_contact))
        .routes(routes!(
            contacts::get_contact,
            contacts::update_contact,
            contacts::delete_contact
        ))
        .routes(routes!(
            contacts::list_contact_groups,
            contacts::create_contact_group
        ))
        .routes(routes!(
            contacts::get_contact_group,
            contacts::update_contact_group,
            contacts::delete_contact_group
        ))
        .routes(routes!(edge::edge_nodes))
        .routes(routes!(edge::edge_tenants))
        .routes(routes!(edge::edge_snapshot))
        .routes(routes!(edge::edge_extension))
}

/// The OpenAPI document of every route above.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

pub fn router(state: AppState) -> Router {
    // Install the recorder before the first request records anything.
    let _ = health::metrics_handle();
    let (api, doc) = api_routes().split_for_parts();
    let doc_json = doc.to_pretty_json().unwrap_or_default();
    let max_body = state.settings.max_body_bytes;
    let timeout = std::time::Duration::from_secs(state.settings.request_timeout_secs);
    let router = api
        .route(
            "/api/openapi.json",
            axum::routing::get(move || async move {
                ([(http::header::CONTENT_TYPE, "application/json")], doc_json)
            }),
        )
        .route("/metrics", axum::routing::get(health::metrics))
        .route("/objects/{*key}", axum::routing::get(objects::presigned_get))
        .with_state(state);
    middleware::apply(router, max_body, timeout)
}

/// The Prometheus text of this process's metrics (also served by edge nodes).
pub fn metrics_text() -> String {
    health::metrics_handle().render()
}
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_billing;
#[cfg(test)]
mod tests_contacts;
#[cfg(test)]
mod tests_deletion;
#[cfg(test)]
mod tests_pbx_objects;
#[cfg(test)]
mod tests_prompts;
#[cfg(test)]
mod tests_reseller;
#[cfg(test)]
mod tests_saas;
