//! The database: `SQLite` by default, `PostgreSQL` when `DATABASE_URL` says so.
//!
//! Both backends apply one set of migrations (`server/migrations/`, embedded
//! by sqlx and recorded in sqlx's `_sqlx_migrations` table) and run the same
//! statements, so they behave the same. Ids are `UUIDv7` strings made by the
//! server (time-ordered, so the list is stable under pagination) and
//! timestamps are RFC 3339 text, which keeps the schema free of
//! dialect-specific types.
//!
//! `PostgreSQL` goes through sqlx's pool ([`postgres`]); `SQLite` through
//! rusqlite and a small pool of our own ([`sqlite`]), which calls `SQLite`
//! on the thread that serves the request instead of on a connection thread
//! of its own: see that module for why and for which calls.
//!
//! Start-up connects with [`retry_with_backoff`]: 1, 2, 4, 8, 16 s between
//! attempts, a WARN line for each, and a clear error after the last.

mod common;
mod postgres;
mod sqlite;

use std::future::Future;
use std::time::Duration;

pub use common::{Error, UserRecord};

/// Delay before retry number `retry` (0-based): 1, 2, 4, 8, 16 s, then 30 s.
pub fn backoff_delay(retry: u32) -> Duration {
    Duration::from_secs(1u64.checked_shl(retry).unwrap_or(u64::MAX).min(30))
}

/// Runs `attempt` until it succeeds, retrying up to `retries` times with
/// [`backoff_delay`] between attempts; returns the last error when all fail.
pub async fn retry_with_backoff<T, E, F, Fut>(
    what: &str,
    retries: u32,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut retry = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(err) if retry < retries => {
                let delay = backoff_delay(retry);
                tracing::warn!(
                    attempt = retry + 1,
                    of = retries + 1,
                    retry_in_s = delay.as_secs(),
                    error = %err,
                    "{what} failed; retrying"
                );
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A connected, migrated database.
#[derive(Clone, Debug)]
pub struct Db(Backend);

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

impl Db {
    /// Connects and applies the migrations. For `SQLite` the file and its
    /// directory are created when missing.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        match url.strip_prefix("sqlite:") {
            Some(rest) => Ok(Self(Backend::Sqlite(sqlite::Sqlite::open(rest).await?))),
            None => Ok(Self(Backend::Postgres(
                postgres::Postgres::connect(url).await?,
            ))),
        }
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.ping().await,
            Backend::Postgres(db) => db.ping().await,
        }
    }

    pub async fn close(&self) {
        match &self.0 {
            Backend::Sqlite(db) => db.close(),
            Backend::Postgres(db) => db.close().await,
        }
    }

    pub async fn insert_user(&self, user: &UserRecord) -> Result<(), Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.insert_user(user).await,
            Backend::Postgres(db) => db.insert_user(user).await,
        }
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.get_user(id).await,
            Backend::Postgres(db) => db.get_user(id).await,
        }
    }

    /// One page in id order (which is creation order), and the total count.
    pub async fn list_users(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRecord>, i64), Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.list_users(limit, offset).await,
            Backend::Postgres(db) => db.list_users(limit, offset).await,
        }
    }

    /// Sets the given fields; returns the updated record, or `None` if absent.
    pub async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Option<UserRecord>, Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.update_user(id, name, email).await,
            Backend::Postgres(db) => db.update_user(id, name, email).await,
        }
    }

    /// Whether a user was deleted.
    pub async fn delete_user(&self, id: &str) -> Result<bool, Error> {
        match &self.0 {
            Backend::Sqlite(db) => db.delete_user(id).await,
            Backend::Postgres(db) => db.delete_user(id).await,
        }
    }
}

/// Whether `err` is a unique-constraint violation (a duplicate email).
pub fn is_unique_violation(err: &Error) -> bool {
    match err {
        Error::Postgres(sqlx::Error::Database(e)) => e.is_unique_violation(),
        Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
            e.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::common::MIGRATOR;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_schedule() {
        let delays: Vec<u64> = (0..7).map(|r| backoff_delay(r).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_follow_the_schedule_then_give_up() {
        let attempts = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<(), String> = retry_with_backoff("connect", 5, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err("refused".to_owned()) }
        })
        .await;
        assert_eq!(result.unwrap_err(), "refused");
        assert_eq!(attempts.load(Ordering::SeqCst), 6);
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2 + 4 + 8 + 16));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_success_stops_retrying() {
        let attempts = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result: Result<u32, String> = retry_with_backoff("connect", 5, || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err("refused".to_owned())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2));
    }

    fn ada() -> UserRecord {
        UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: "Ada".to_owned(),
            email: "ada@example.com".to_owned(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
        }
    }

    #[tokio::test]
    async fn users_round_trip_in_sqlite() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        let user = ada();
        db.insert_user(&user).await.unwrap();
        assert_eq!(db.get_user(&user.id).await.unwrap(), Some(user.clone()));
        let dup = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            ..user.clone()
        };
        assert!(is_unique_violation(
            &db.insert_user(&dup).await.unwrap_err()
        ));
        let (page, total) = db.list_users(10, 0).await.unwrap();
        assert_eq!((page.len(), total), (1, 1));
        let renamed = db
            .update_user(&user.id, Some("Ada L."), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, "Ada L.");
        assert_eq!(db.get_user(&user.id).await.unwrap(), Some(renamed));
        assert!(db.delete_user(&user.id).await.unwrap());
        assert!(!db.delete_user(&user.id).await.unwrap());
        assert_eq!(db.update_user(&user.id, None, None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_file_database_is_created_migrated_once_and_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/dir/gantry.db", dir.path().display());
        let user = ada();
        {
            let db = Db::connect(&url).await.unwrap();
            db.insert_user(&user).await.unwrap();
            db.close().await;
        }
        // Reopened: the migration is recorded, not applied again, and the data is there.
        let db = Db::connect(&url).await.unwrap();
        assert_eq!(db.get_user(&user.id).await.unwrap(), Some(user));
        let Backend::Sqlite(sqlite) = &db.0 else {
            panic!("not SQLite")
        };
        assert_eq!(sqlite.journal_mode().await.unwrap(), "wal");
        assert_eq!(
            sqlite.applied_migrations().await.unwrap(),
            i64::try_from(MIGRATOR.iter().count()).unwrap()
        );
    }
}
