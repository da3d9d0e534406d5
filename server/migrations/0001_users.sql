-- Portable across SQLite and PostgreSQL: ids are UUIDv7 text made by the
-- server, timestamps RFC 3339 text, emails stored lower-cased.
CREATE TABLE users (
    id         VARCHAR(36)  PRIMARY KEY,
    name       VARCHAR(100) NOT NULL,
    email      VARCHAR(254) NOT NULL UNIQUE,
    created_at VARCHAR(40)  NOT NULL
);
