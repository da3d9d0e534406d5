//! `SQLite` through rusqlite, with a small pool of connections of our own.
//!
//! sqlx runs every `SQLite` connection on a thread of its own and sends it
//! each operation over a channel: a read of one user was three round trips
//! to that thread (about four context switches per request in the
//! benchmark). Here the connection is used on the thread that serves the
//! request, and where a call may block for long it goes to tokio's blocking
//! pool:
//!
//! - **Reads run on the worker thread** ([`Sqlite::read`]). They are short,
//!   indexed lookups in pages the operating system has cached, a few
//!   microseconds: less than handing them to another thread and waking the
//!   worker again would cost. `block_in_place` is not used: it moves the
//!   worker's other tasks to a new thread (a hop of its own), and it panics
//!   on the current-thread runtime tests use.
//! - **Writes run on the blocking pool** ([`Sqlite::write`]): a commit
//!   waits for the disk (`fsync`), and a write waits, up to the busy
//!   timeout, for another connection's write lock; neither may stall the
//!   worker and every request it serves.
//!
//! Waiting for a free connection is asynchronous (a semaphore), so a request
//! never blocks the worker on the pool either.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::common::{ACQUIRE_TIMEOUT, Error, MIGRATOR, UserRecord};

/// Connections of a file database: as many as gin-full's pool in the
/// benchmark, and more than a pod serves reads at once.
const POOL_SIZE: usize = 10;

/// How long a write waits for another connection's write lock (sqlx's
/// default before, and gin-full's `_busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SELECT_USER: &str = "SELECT id, name, email, created_at FROM users WHERE id = ?1";

#[derive(Clone, Debug)]
pub(super) struct Sqlite {
    pool: Arc<Pool>,
}

#[derive(Debug)]
struct Pool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection in `idle`; a lease holds one.
    permits: Arc<Semaphore>,
}

/// A connection lent out; it goes back to the pool when dropped.
struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    // Released after `drop` has put the connection back.
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Lease {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.idle().push(conn);
        }
    }
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The lock guards a push or a pop, which cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sqlite {
    /// Opens the database named by what follows `sqlite:` in the URL
    /// (`//path`, `path` or `:memory:`, with optional `?` parameters as
    /// `SQLite` URIs take them, such as `mode=ro`), creating the file and its
    /// directory when missing, and applies the migrations.
    pub(super) async fn open(rest: &str) -> Result<Self, Error> {
        let rest = rest.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&rest))
            .await
            .map_err(Error::Task)?
    }

    fn open_blocking(rest: &str) -> Result<Self, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            // Each connection is used by one thread at a time (the pool sees
            // to that), so SQLite's own per-connection mutex is not needed.
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connections = Vec::new();
        let in_memory = rest.starts_with(":memory:");
        if in_memory {
            // Each in-memory connection is its own database; keep one.
            connections.push(Connection::open_in_memory()?);
        } else {
            let path = rest.trim_start_matches("//");
            let file = path.split('?').next().unwrap_or(path);
            if let Some(dir) = Path::new(file)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                    dir: dir.to_owned(),
                    source,
                })?;
            }
            for _ in 0..POOL_SIZE {
                connections.push(Connection::open_with_flags(format!("file:{path}"), flags)?);
            }
        }
        for conn in &connections {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Write-ahead logging: a reader never waits for a writer (nor a
            // writer for readers), which is what lets reads run on the
            // worker thread without ever sleeping in the busy handler; and a
            // read takes its snapshot from shared memory instead of locking
            // and re-reading the file. The mode is stored in the file; an
            // in-memory database keeps its own ("memory").
            if !in_memory {
                let _: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            }
            // As sqlx set it: the schema has no foreign keys today, a later
            // migration may.
            conn.pragma_update(None, "foreign_keys", true)?;
        }
        if let Some(first) = connections.first_mut() {
            migrate(first)?;
        }
        let permits = Arc::new(Semaphore::new(connections.len()));
        Ok(Self {
            pool: Arc::new(Pool {
                idle: Mutex::new(connections),
                permits,
            }),
        })
    }

    async fn lease(&self) -> Result<Lease, Error> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.pool.permits.clone().acquire_owned())
                .await
                .map_err(|_| Error::PoolTimedOut(ACQUIRE_TIMEOUT))?
                .map_err(|_| Error::Closed)?;
        let conn = self.pool.idle().pop().ok_or(Error::Closed)?;
        Ok(Lease {
            conn: Some(conn),
            pool: self.pool.clone(),
            _permit: permit,
        })
    }

    /// Runs a short read on this thread (see the module documentation).
    async fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let lease = self.lease().await?;
        Ok(f(&lease)?)
    }

    /// Runs a write on the blocking pool (see the module documentation). The
    /// write finishes, and the connection returns to the pool, even when the
    /// request that asked for it has gone.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let mut lease = self.lease().await?;
        Ok(tokio::task::spawn_blocking(move || f(&mut lease))
            .await
            .map_err(Error::Task)??)
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    /// Refuses new leases; connections close as their leases end.
    pub(super) fn close(&self) {
        self.pool.permits.close();
        self.pool.idle().clear();
    }

    pub(super) async fn insert_user(&self, user: &UserRecord) -> Result<(), Error> {
        let user = user.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (id, name, email, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute((&user.id, &user.name, &user.email, &user.created_at))
            .map(drop)
        })
        .await
    }

    pub(super) async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        self.read(|conn| {
            conn.prepare_cached(SELECT_USER)?
                .query_row([id], from_row)
                .optional()
        })
        .await
    }

    pub(super) async fn list_users(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRecord>, i64), Error> {
        self.read(|conn| {
            let users = conn
                .prepare_cached(
                    "SELECT id, name, email, created_at FROM users ORDER BY id LIMIT ?1 OFFSET ?2",
                )?
                .query_map([limit, offset], from_row)?
                .collect::<Result<_, _>>()?;
            let total = conn
                .prepare_cached("SELECT COUNT(*) FROM users")?
                .query_row([], |row| row.get(0))?;
            Ok((users, total))
        })
        .await
    }

    pub(super) async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Option<UserRecord>, Error> {
        let (id, name, email) = (
            id.to_owned(),
            name.map(str::to_owned),
            email.map(str::to_owned),
        );
        self.write(move |conn| {
            // IMMEDIATE takes the write lock before the read: a deferred
            // transaction that read first could not upgrade its lock after
            // another connection's write (SQLITE_BUSY at once, not after
            // waiting), and two concurrent updates of one user would each
            // write back the field the other changed.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let Some(mut user) = tx
                .prepare_cached(SELECT_USER)?
                .query_row([&id], from_row)
                .optional()?
            else {
                return Ok(None);
            };
            if let Some(name) = name {
                user.name = name;
            }
            if let Some(email) = email {
                user.email = email;
            }
            tx.prepare_cached("UPDATE users SET name = ?1, email = ?2 WHERE id = ?3")?
                .execute((&user.name, &user.email, &id))?;
            tx.commit()?;
            Ok(Some(user))
        })
        .await
    }

    pub(super) async fn delete_user(&self, id: &str) -> Result<bool, Error> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([&id])
                .map(|deleted| deleted > 0)
        })
        .await
    }

    #[cfg(test)]
    pub(super) async fn journal_mode(&self) -> Result<String, Error> {
        self.read(|conn| conn.pragma_query_value(None, "journal_mode", |row| row.get(0)))
            .await
    }

    #[cfg(test)]
    pub(super) async fn applied_migrations(&self) -> Result<i64, Error> {
        self.read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM _sqlx_migrations WHERE success",
                [],
                |row| row.get(0),
            )
        })
        .await
    }
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
        created_at: row.get(3)?,
    })
}

/// Applies the migrations not applied yet, each in a transaction, and
/// records them in the table sqlx keeps for the same purpose (same columns,
/// same checksums), so a database file migrated by an earlier version of
/// the server, which used sqlx for `SQLite` too, is recognised as such.
fn migrate(conn: &mut Connection) -> Result<(), Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            success BOOLEAN NOT NULL,
            checksum BLOB NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )?;
    for migration in MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let applied: Option<(bool, Vec<u8>)> = tx
            .query_row(
                "SELECT success, checksum FROM _sqlx_migrations WHERE version = ?1",
                [migration.version],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        match applied {
            Some((true, checksum)) if checksum == *migration.checksum => continue,
            Some((true, _)) => {
                return Err(Error::MigrationChanged {
                    version: migration.version,
                });
            }
            Some((false, _)) => {
                return Err(Error::MigrationDirty {
                    version: migration.version,
                });
            }
            None => {}
        }
        let start = Instant::now();
        tx.execute_batch(migration.sql.as_str())?;
        let nanos = i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, ?4)",
            (
                migration.version,
                &*migration.description,
                &*migration.checksum,
                nanos,
            ),
        )?;
        tx.commit()?;
    }
    Ok(())
}
