//! What both backends share: the error, the record of a user, the
//! migrations and how long a request waits for a connection.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong talking to either database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("migration {version} was changed after it was applied")]
    MigrationChanged { version: i64 },
    #[error("migration {version} was left partly applied")]
    MigrationDirty { version: i64 },
    #[error("cannot create the database directory {}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no database connection came free within {0:?}")]
    PoolTimedOut(Duration),
    #[error("the database is closed")]
    Closed,
    #[error("a database task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The migrations of both backends, embedded at build time.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a request waits for a pooled connection before it fails.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A row of `users`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub email: String,
    pub created_at: String,
}
