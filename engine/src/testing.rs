//! Test support: every test gets its own database so suites run in parallel. PostgreSQL must be
//! reachable — a test that cannot reach it fails loudly instead of passing without a database.

use uuid::Uuid;

use crate::db::{Backend, Db};

/// Server-level URL used to create and drop per-test databases.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists for one test and is dropped with this value.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    name: String,
    _dir: Option<TempDir>,
}

/// A directory removed on drop (std has none; this is all a test needs).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let name = format!("paystream_test_{}", Uuid::new_v4().simple());
        match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let db = Db::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for this test and did not answer at {admin}: {e}. \
                         Start it (see README) or set TEST_POSTGRES_URL."
                    )
                });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&db.pool)
                    .await
                    .expect("create test database");
                db.pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                TestDb {
                    url: format!("{base}/{name}"),
                    backend,
                    name,
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                TestDb {
                    url: format!("sqlite://{}", dir.join("paystream.db").display()),
                    backend,
                    name,
                    _dir: Some(TempDir(dir)),
                }
            }
        }
    }

    /// Connected and migrated.
    pub async fn db(&self) -> Db {
        let db = Db::connect(&self.url).await.expect("connect test database");
        db.migrate().await.expect("migrate test database");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee; a short-lived thread with its own runtime
        // removes the database even while the test's runtime is shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(db) = Db::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&db.pool)
                        .await;
                    db.pool.close().await;
                }
            });
        })
        .join();
    }
}
