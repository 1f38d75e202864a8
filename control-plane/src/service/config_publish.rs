//! Configuration publication (the `cfg` contract): inside the transaction that changes a
//! tenant's configuration, raise its version and put `{tenant, kind, id, version}` in the
//! outbox. The relay appends it to the bus after commit.

use crate::db::{self, Conn};
use crate::error::{Error, Result};
use pbx_contract::bus::{ConfigChange, ConfigSubject, CFG_STREAM};
use pbx_contract::TenantId;

pub async fn publish(conn: &mut Conn, tenant: TenantId, subject: ConfigSubject) -> Result<u64> {
    let version = db::tenants::bump_config_version(conn, tenant).await?;
    enqueue(
        conn,
        ConfigChange {
            tenant,
            subject,
            version,
        },
    )
    .await?;
    Ok(version)
}

/// For a tenant whose row is gone (deleted): announce it with the version after the last.
pub async fn publish_deleted(conn: &mut Conn, tenant: TenantId, last_version: u64) -> Result<()> {
    enqueue(
        conn,
        ConfigChange {
            tenant,
            subject: ConfigSubject::Tenant,
            version: last_version + 1,
        },
    )
    .await
}

async fn enqueue(conn: &mut Conn, change: ConfigChange) -> Result<()> {
    let payload = serde_json::to_string(&change).map_err(|e| Error::Internal(e.to_string()))?;
    db::outbox::enqueue(conn, CFG_STREAM, &payload).await
}
