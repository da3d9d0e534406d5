//! `/api/v1/users`: create, list (paginated), get, update, delete.
//!
//! Input is validated here, before it reaches the database: names are 1 to
//! 100 characters (once surrounding whitespace is trimmed) without control
//! characters, emails a plausible address of at most 254 characters (stored
//! with ASCII letters lower-cased, unique), ids UUIDs. Every query binds its
//! values, so SQL metacharacters are only data.
//!
//! The `OpenAPI` schemas state exactly these rules ([`NAME_PATTERN`],
//! [`EMAIL_PATTERN`]): a client generated from the document, or a fuzzer,
//! then sends only what the server accepts, and the server accepts
//! everything the document allows.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::{Object, ObjectBuilder, Type};
use uuid::Uuid;

use super::extract::{Json, Path, Query};
use crate::db::{UserRecord, is_unique_violation};
use crate::error::{ApiError, Code, Result, now_rfc3339};
use crate::state::AppState;

/// [`valid_name`] as an ECMA-262 pattern: optional white space (Unicode
/// `White_Space`, which `str::trim` removes), then 1 to 100 characters that
/// are not control characters (`Cc`) and neither begin nor end with white
/// space, then optional white space. Written with explicit ranges, since
/// not every regex engine that reads `OpenAPI` knows `\p{..}`.
pub const NAME_PATTERN: &str = concat!(
    r"^[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"(?:[^\x00-\x1f\x7f-\x9f]{0,98}",
    r"[^\x00-\x1f\x7f-\x9f \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?",
    r"[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
);

/// [`valid_email`] as an ECMA-262 pattern (with `maxLength` 254): a local
/// part of 1 to 64 characters, `@`, and at least two dot-separated labels
/// that are not empty and neither begin nor end with `-`; no `@` after the
/// first, no white space, no control characters.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}@",
    r"(?:[^@.\-\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"(?:[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^@.\-\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?\.)+",
    r"[^@.\-\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
    r"(?:[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^@.\-\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$",
);

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    /// 1 to 100 characters, trimmed.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Unique, ASCII letters lower-cased.
    #[schema(min_length = 3, max_length = 254)]
    pub email: String,
    /// When the user was created (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The body of `POST /api/v1/users`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(schema_with = name_schema)]
    pub name: String,
    #[schema(schema_with = email_schema)]
    pub email: String,
}

/// The body of `PATCH /api/v1/users/{id}`: the fields to change, at least
/// one. A field that is present must be a string: `null` is refused rather
/// than read as "unchanged".
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UserUpdate {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = name_schema)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = email_schema)]
    pub email: Option<String>,
}

/// The schema of a name in a request (the pattern is not a literal, which
/// `#[schema(pattern = ..)]` would need).
fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "1 to 100 characters without control characters; surrounding white space is trimmed.",
        ))
        .pattern(Some(NAME_PATTERN))
        .build()
}

/// The schema of an email address in a request.
fn email_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "An address such as ada@example.com, at most 254 characters; ASCII letters are stored lower-cased.",
        ))
        .max_length(Some(254))
        .pattern(Some(EMAIL_PATTERN))
        .build()
}

/// A field that, when present, must hold a string (`Option` alone would
/// take `null` for absent).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// One page of users, in creation order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    pub limit: u32,
    pub offset: u64,
    /// How many users exist in all.
    pub total: u64,
}

/// Pagination of `GET /api/v1/users`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// Users to skip (default 0), at most `i64::MAX`: the database counts in
    /// signed 64 bits.
    pub offset: Option<u64>,
}

pub const MAX_PAGE: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(list).post(create))
        .route(
            "/api/v1/users/{id}",
            get(fetch).patch(update).delete(remove),
        )
}

impl TryFrom<UserRecord> for User {
    type Error = ApiError;

    fn try_from(r: UserRecord) -> Result<Self> {
        let id = Uuid::parse_str(&r.id)
            .map_err(|_| ApiError::new(Code::Internal, "stored id is not a UUID"))?;
        Ok(Self {
            id,
            name: r.name,
            email: r.email,
            created_at: r.created_at,
        })
    }
}

fn valid_name(name: &str) -> Result<String> {
    let name = name.trim();
    let len = name.chars().count();
    if len == 0 || len > 100 {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// Lengths count characters, and only ASCII letters are lower-cased: other
/// case mappings can change a string's length, so the stored address could
/// outgrow the column (and the documented limit) that the input fitted.
fn valid_email(email: &str) -> Result<String> {
    let invalid = || ApiError::invalid("email must be an address like name@example.com");
    if email.chars().count() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.contains('@')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if local.is_empty() || local.chars().count() > 64 || !domain_ok {
        return Err(invalid());
    }
    Ok(email.to_ascii_lowercase())
}

/// A user id taken from the path. Its own `Deserialize` gives the message a
/// client can act on; the extractor turns it into a 4001 problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserId(pub Uuid);

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as a string first and parsed here, so that the message is
        // this one alone rather than wrapped in the path deserializer's.
        let raw = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| serde::de::Error::custom("id must be a UUID"))
    }
}

impl UserId {
    /// The id as the database stores it (hyphenated, lower case), written
    /// into `buffer` rather than a new `String`.
    fn as_key(self, buffer: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
        self.0.hyphenated().encode_lower(buffer)
    }
}

fn conflict_or(err: crate::db::Error) -> ApiError {
    if is_unique_violation(&err) {
        ApiError::new(Code::EmailTaken, "a user with this email already exists")
    } else {
        ApiError::from(err)
    }
}

/// Create a user.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "users",
    request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User,
         headers(("location" = String, description = "The new user's URL"))),
        (status = 400, description = "Invalid input or malformed JSON", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email taken", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> Result<impl IntoResponse> {
    let record = UserRecord {
        id: Uuid::now_v7().to_string(),
        name: valid_name(&new.name)?,
        email: valid_email(&new.email)?,
        created_at: now_rfc3339(),
    };
    state
        .db()?
        .insert_user(&record)
        .await
        .map_err(conflict_or)?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/users/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        axum::Json(User::try_from(record)?),
    ))
}

/// List users, oldest first.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "users",
    params(
        ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 100,
         description = "Page size, 1 to 100 (default 20)"),
        // The database counts in signed 64 bits.
        ("offset" = Option<u64>, Query, nullable = false, minimum = 0, maximum = 9_223_372_036_854_775_807_u64,
         description = "Users to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "One page", body = UserPage),
        (status = 400, description = "Invalid pagination", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<UserPage>> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1 to 100"));
    }
    let offset = params.offset.unwrap_or(0);
    let offset_sql = i64::try_from(offset).map_err(|_| ApiError::invalid("offset is too large"))?;
    let (records, total) = state.db()?.list_users(i64::from(limit), offset_sql).await?;
    let items = records
        .into_iter()
        .map(User::try_from)
        .collect::<Result<_>>()?;
    Ok(axum::Json(UserPage {
        items,
        limit,
        offset,
        total: u64::try_from(total).unwrap_or_default(),
    }))
}

/// Get one user.
#[utoipa::path(
    get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "The id is not a UUID", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn fetch(
    State(state): State<AppState>,
    Path(id): Path<UserId>,
) -> Result<axum::Json<User>> {
    let mut key = [0; uuid::fmt::Hyphenated::LENGTH];
    let record = state
        .db()?
        .get_user(id.as_key(&mut key))
        .await?
        .ok_or_else(|| ApiError::new(Code::UserNotFound, "no user with this id"))?;
    Ok(axum::Json(User::try_from(record)?))
}

/// Change a user's name or email.
#[utoipa::path(
    patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UserUpdate,
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 400, description = "Invalid input", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email taken", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<UserId>,
    Json(change): Json<UserUpdate>,
) -> Result<axum::Json<User>> {
    if change.name.is_none() && change.email.is_none() {
        return Err(ApiError::invalid("give at least one of name, email"));
    }
    let name = change.name.as_deref().map(valid_name).transpose()?;
    let email = change.email.as_deref().map(valid_email).transpose()?;
    let mut key = [0; uuid::fmt::Hyphenated::LENGTH];
    let record = state
        .db()?
        .update_user(id.as_key(&mut key), name.as_deref(), email.as_deref())
        .await
        .map_err(conflict_or)?
        .ok_or_else(|| ApiError::new(Code::UserNotFound, "no user with this id"))?;
    Ok(axum::Json(User::try_from(record)?))
}

/// Delete a user.
#[utoipa::path(
    delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = crate::error::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(State(state): State<AppState>, Path(id): Path<UserId>) -> Result<StatusCode> {
    let mut key = [0; uuid::fmt::Hyphenated::LENGTH];
    if state.db()?.delete_user(id.as_key(&mut key)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(Code::UserNotFound, "no user with this id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(valid_name("  Ada ").unwrap(), "Ada");
        assert!(valid_name("").is_err());
        assert!(valid_name(&"x".repeat(101)).is_err());
        assert!(valid_name(&"é".repeat(100)).is_ok());
        assert!(valid_name("a\u{0}b").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(valid_email("Ada@Example.COM").unwrap(), "ada@example.com");
        // Only ASCII letters change; the length never does.
        assert_eq!(valid_email("İ@Example.com").unwrap(), "İ@example.com");
        let longest = format!("{}@{}.com", "a".repeat(64), "b".repeat(185));
        assert_eq!(longest.chars().count(), 254);
        assert!(valid_email(&longest).is_ok());
        assert!(valid_email(&format!("b{longest}")).is_err());
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@-x.com",
            " ada@example.com",
        ] {
            assert!(valid_email(bad).is_err(), "{bad} accepted");
        }
    }
}
