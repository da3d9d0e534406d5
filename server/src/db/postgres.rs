//! `PostgreSQL` through sqlx's pool.

use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use super::common::{ACQUIRE_TIMEOUT, Error, MIGRATOR, UserRecord};

#[derive(Clone, Debug)]
pub(super) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    pub(super) async fn connect(url: &str) -> Result<Self, Error> {
        // A PostgreSQL connection can be closed under the pool (a server
        // restart, an idle timeout in a proxy), so it is checked before it is
        // lent out.
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .test_before_acquire(true)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    pub(super) async fn insert_user(&self, user: &UserRecord) -> Result<(), Error> {
        sqlx::query("INSERT INTO users (id, name, email, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user.id)
            .bind(&user.name)
            .bind(&user.email)
            .bind(&user.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn get_user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        let row = sqlx::query("SELECT id, name, email, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| from_row(&row)).transpose()?)
    }

    pub(super) async fn list_users(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<UserRecord>, i64), Error> {
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
        let users = rows.iter().map(from_row).collect::<Result<_, _>>()?;
        Ok((users, total))
    }

    pub(super) async fn update_user(
        &self,
        id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Option<UserRecord>, Error> {
        let mut tx = self.pool.begin().await?;
        // The row stays locked until the commit, so that two concurrent
        // updates of one user (one of the name, one of the email) cannot
        // each write back the field the other just changed.
        let row =
            sqlx::query("SELECT id, name, email, created_at FROM users WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(mut user) = row.map(|row| from_row(&row)).transpose()? else {
            return Ok(None);
        };
        if let Some(name) = name {
            name.clone_into(&mut user.name);
        }
        if let Some(email) = email {
            email.clone_into(&mut user.email);
        }
        sqlx::query("UPDATE users SET name = $1, email = $2 WHERE id = $3")
            .bind(&user.name)
            .bind(&user.email)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    pub(super) async fn delete_user(&self, id: &str) -> Result<bool, Error> {
        let result = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }
}

fn from_row(row: &PgRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
    })
}
