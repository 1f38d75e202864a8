//! The repository layer: every SQL statement of the control plane lives below this module.
//!
//! One set of queries serves both backends through sqlx's `Any` driver (`$N` placeholders
//! work on PostgreSQL and SQLite; ids are TEXT, times i64 milliseconds). Functions for
//! tenant-owned data take the `TenantId` as an argument and filter by it in SQL, so a caller
//! cannot reach another tenant's rows by passing a foreign entity id. Writes take a
//! connection, so the caller composes them (row + audit + outbox) into one transaction.

pub mod api_keys;
pub mod audit;
pub mod billing;
pub mod call_logs;
pub mod certificates;
pub mod contacts;
pub mod domains;
pub mod edge_log;
pub mod extensions;
pub mod outbox;
pub mod pause_reasons;
pub mod pbx_objects;
pub mod prompts;
pub mod queue_calls;
pub mod queue_options;
pub mod queues;
pub mod refresh_tokens;
pub mod resellers;
pub mod signups;
pub mod tenant_deletions;
pub mod tenants;
pub mod usage;
pub mod users;

use crate::error::Result;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub type Conn = AnyConnection;
pub type Tx = Transaction<'static, sqlx::Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR_PG: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static MIGRATOR_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Db {
    /// Connects to `postgres://…` or `sqlite://…` (a SQLite file is created if missing).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(crate::error::Error::invalid(
                "database.url",
                "must start with postgres:// or sqlite://",
            ));
        };
        let url = match backend {
            // SQLite: create the file on first start; WAL lets readers run beside the writer.
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let max = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Postgres => &MIGRATOR_PG,
            Backend::Sqlite => &MIGRATOR_SQLITE,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A transaction that may write. On SQLite it takes the write lock up front (BEGIN
    /// IMMEDIATE): a deferred transaction that reads first cannot upgrade to a writer once
    /// another connection has committed, and fails at once whatever the busy timeout.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A read-only transaction: one consistent view (REPEATABLE READ on PostgreSQL; a WAL
    /// read snapshot on SQLite) without taking SQLite's write lock.
    pub async fn begin_read(&self) -> Result<Tx> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.pool.acquire().await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses an id column; a malformed id in our own table is data corruption.
pub(crate) fn parse_id<T: FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| crate::error::Error::Internal(format!("malformed id in database: {s:?}")))
}

pub(crate) fn parse_enum<T: FromStr>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|_| crate::error::Error::Internal(format!("malformed value in database: {s:?}")))
}

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests;
