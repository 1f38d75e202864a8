//! Operator commands: thin HTTP clients of the API, printing the JSON it returns. With no
//! `--api`/`--token` they use the token file and URL that `pbx up` left in its data dir.

use crate::up::{API_URL_FILE, TOKEN_FILE};
use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;

pub struct ApiTarget {
    pub base: String,
    pub token: String,
}

impl ApiTarget {
    pub fn resolve(api: Option<String>, token: Option<String>, data_dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<String> {
            let p = data_dir.join(name);
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no {} in {} (is `pbx up` running here? or pass --api and --token)",
                        name,
                        data_dir.display()
                    )
                })
        };
        let base = match api {
            Some(a) => a,
            None => read(API_URL_FILE)?,
        };
        let token = match token {
            Some(t) => t,
            None => read(TOKEN_FILE)?,
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends the request; prints the JSON response; a problem+json answer becomes an error.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut req = client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = if text.is_empty() {
            json!({"status": status.as_u16()})
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            bail!("{}", serde_json::to_string_pretty(&value)?);
        }
        Ok(value)
    }
}

fn seg(s: &str) -> String {
    // Slugs and numbers are plain; anything else is refused by the server anyway, but must
    // not be able to change the path.
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

pub enum Command {
    TenantCreate {
        slug: String,
        plan: Option<String>,
        admin_email: Option<String>,
        name: Option<String>,
    },
    TenantList,
    TenantDelete {
        slug: String,
    },
    ExtensionCreate {
        tenant: String,
        number: String,
        secret: String,
        name: Option<String>,
        email: Option<String>,
        recording: Option<String>,
        ring_timeout_secs: Option<u32>,
    },
    ExtensionList {
        tenant: String,
    },
    ExtensionDelete {
        tenant: String,
        number: String,
    },
}

pub async fn run(target: &ApiTarget, cmd: Command) -> Result<Value> {
    match cmd {
        Command::TenantCreate {
            slug,
            plan,
            admin_email,
            name,
        } => {
            target
                .call(
                    Method::POST,
                    "/api/v1/tenants",
                    Some(json!({"slug": slug, "plan": plan, "admin_email": admin_email, "name": name})),
                )
                .await
        }
        Command::TenantList => target.call(Method::GET, "/api/v1/tenants", None).await,
        Command::TenantDelete { slug } => {
            target
                .call(Method::DELETE, &format!("/api/v1/tenants/{}", seg(&slug)), None)
                .await
        }
        Command::ExtensionCreate {
            tenant,
            number,
            secret,
            name,
            email,
            recording,
            ring_timeout_secs,
        } => {
            target
                .call(
                    Method::POST,
                    &format!("/api/v1/tenants/{}/extensions", seg(&tenant)),
                    Some(json!({
                        "number": number, "sip_secret": secret, "display_name": name, "email": email,
                        "recording": recording, "ring_timeout_secs": ring_timeout_secs,
                    })),
                )
                .await
        }
        Command::ExtensionList { tenant } => {
            target
                .call(
                    Method::GET,
                    &format!("/api/v1/tenants/{}/extensions", seg(&tenant)),
                    None,
                )
                .await
        }
        Command::ExtensionDelete { tenant, number } => {
            target
                .call(
                    Method::DELETE,
                    &format!("/api/v1/tenants/{}/extensions/{}", seg(&tenant), seg(&number)),
                    None,
                )
                .await
        }
    }
}
