//! Fresh databases for tests, one per test, on both backends.
//! PostgreSQL comes from `PBX_TEST_DATABASE_URL` (default: the local server, trust auth); each
//! test creates its own database `pbx_t_*` and drops it at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::Db;

pub struct TestDb {
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

pub fn pg_admin_url() -> String {
    std::env::var("PBX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_url_for(name: &str) -> String {
    let admin = pg_admin_url();
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("//") && i > admin.find("//").unwrap_or(0) + 1 => {
            format!("{}/{name}", &admin[..i])
        }
        _ => format!("{admin}/{name}"),
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pbx.db").display());
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    TestDb {
        db,
        _dir: Some(dir),
        pg_name: None,
    }
}

pub async fn postgres() -> TestDb {
    let name = format!("pbx_t_{}", uuid::Uuid::new_v4().simple());
    let admin = Db::connect(&pg_admin_url())
        .await
        .expect("PostgreSQL for tests (PBX_TEST_DATABASE_URL)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .unwrap();
    admin.close().await;
    let db = Db::connect(&pg_url_for(&name)).await.unwrap();
    db.migrate().await.unwrap();
    TestDb {
        db,
        _dir: None,
        pg_name: Some(name),
    }
}

impl TestDb {
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some(name) = self.pg_name {
            if let Ok(admin) = Db::connect(&pg_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(admin.pool())
                    .await;
                admin.close().await;
            }
        }
    }
}

/// Runs one async test body against a fresh SQLite and a fresh PostgreSQL database.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let t = $crate::db::testing::sqlite().await;
                ($body)(t.db.clone()).await;
                t.cleanup().await;
            }

            #[tokio::test]
            async fn postgres() {
                let t = $crate::db::testing::postgres().await;
                ($body)(t.db.clone()).await;
                t.cleanup().await;
            }
        }
    };
}
