//! The database: `SQLite` by default, `PostgreSQL` when `DATABASE_URL` says so.
//!
//! Both go through sqlx's `Any` driver with one set of portable migrations
//! (`server/migrations/`) and one set of queries, so the two backends behave
//! the same. Ids are `UUIDv7` strings made by the server (time-ordered, so the
//! list is stable under pagination) and timestamps are RFC 3339 text, which
//! keeps the schema free of dialect-specific types.
//!
//! Start-up connects with [`retry_with_backoff`]: 1, 2, 4, 8, 16 s between
//! attempts, a WARN line for each, and a clear error after the last.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

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
pub struct Db {
    pool: AnyPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Connects once and applies the migrations. For `SQLite` the file and
    /// its directory are created when missing.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let mut url = url.to_owned();
        let mut max_connections = 10;
        // A PostgreSQL connection can be closed under the pool (a server
        // restart, an idle timeout in a proxy), so it is checked before it is
        // lent out. An SQLite connection is a file handle inside this process:
        // checking it is only a round trip to its worker thread, a third of
        // the thread hops of a read.
        let test_before_acquire = !url.starts_with("sqlite:");
        if let Some(rest) = url.strip_prefix("sqlite:") {
            if rest.contains(":memory:") {
                // Each in-memory connection is its own database; keep one.
                max_connections = 1;
            } else {
                let path = rest.trim_start_matches("//");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
                }
                if !url.contains("mode=") {
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str("mode=rwc");
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(test_before_acquire)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn insert_user(&self, user: &UserRecord) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO users (id, name, email, created_at) VALUES ($1, $2, $3, $4)")
            .bind(user.id.clone())
            .bind(user.name.clone())
            .bind(user.email.clone())
            .bind(user.created_at.clone())
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, sqlx::Error> {
        sqlx::query("SELECT id, name, email, created_at FROM users WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| UserRecord::from_row(&row))
            .transpose()
    }

    /// One page in id order (which is creation order), and the total count.
    pub async fn list_users(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRecord>, i64), sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, name, email, created_at FROM users ORDER BY id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let users = rows
            .iter()
            .map(UserRecord::from_row)
            .collect::<Result<_, _>>()?;
        Ok((users, total))
    }

    /// Sets the given fields; returns the updated record, or `None` if absent.
    pub async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Option<UserRecord>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(mut user) =
            sqlx::query("SELECT id, name, email, created_at FROM users WHERE id = $1")
                .bind(id.to_owned())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| UserRecord::from_row(&row))
                .transpose()?
        else {
            return Ok(None);
        };
        if let Some(name) = name {
            name.clone_into(&mut user.name);
        }
        if let Some(email) = email {
            email.clone_into(&mut user.email);
        }
        sqlx::query("UPDATE users SET name = $1, email = $2 WHERE id = $3")
            .bind(user.name.clone())
            .bind(user.email.clone())
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Whether a user was deleted.
    pub async fn delete_user(&self, id: &str) -> Result<bool, sqlx::Error> {
        let result = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

/// A row of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub email: String,
    pub created_at: String,
}

impl UserRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            email: row.try_get("email")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Whether `err` is a unique-constraint violation (a duplicate email).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
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

    #[tokio::test]
    async fn users_round_trip_in_sqlite() {
        let db = Db::connect("sqlite::memory:").await.unwrap();
        let user = UserRecord {
            id: uuid::Uuid::now_v7().to_string(),
            name: "Ada".to_owned(),
            email: "ada@example.com".to_owned(),
            created_at: "2025-01-01T00:00:00Z".to_owned(),
        };
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
        assert!(db.delete_user(&user.id).await.unwrap());
        assert!(!db.delete_user(&user.id).await.unwrap());
    }
}
