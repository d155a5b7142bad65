-- Initial schema (SQLite). Keep version numbers in lock-step with the postgres backend.
-- Times are TEXT in a fixed-width UTC form (2006-01-02T15:04:05.000000Z) so that text
-- order is time order; durations are INTEGER nanoseconds; booleans INTEGER 0/1.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    email         TEXT NOT NULL DEFAULT '',
    display_name  TEXT NOT NULL DEFAULT '',
    groups_json   TEXT NOT NULL DEFAULT '[]',
    admin         INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    UNIQUE (source, subject)
);

CREATE TABLE sessions (
    id                    TEXT PRIMARY KEY,
    title                 TEXT NOT NULL DEFAULT '',
    owner_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    private               INTEGER NOT NULL DEFAULT 1,
    repo                  TEXT NOT NULL DEFAULT '',
    branch                TEXT NOT NULL DEFAULT '',
    prompt                TEXT NOT NULL DEFAULT '',
    model                 TEXT NOT NULL DEFAULT '',
    persistent            INTEGER NOT NULL DEFAULT 0,
    idle_timeout_ns       INTEGER NOT NULL DEFAULT 0,
    ttl_ns                INTEGER NOT NULL DEFAULT 0,
    state                 TEXT NOT NULL,
    reason                TEXT NOT NULL DEFAULT '',
    message               TEXT NOT NULL DEFAULT '',
    pod_name              TEXT NOT NULL DEFAULT '',
    pod_namespace         TEXT NOT NULL DEFAULT '',
    image                 TEXT NOT NULL DEFAULT '',
    init_image            TEXT NOT NULL DEFAULT '',
    opencode_session_id   TEXT NOT NULL DEFAULT '',
    prompt_sent           INTEGER NOT NULL DEFAULT 0,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    started_at            TEXT,
    stopped_at            TEXT,
    last_activity_at      TEXT NOT NULL,
    last_activity_source  TEXT NOT NULL DEFAULT '',
    resource_version      INTEGER NOT NULL DEFAULT 1
);
-- Listing order and keyset pagination.
CREATE INDEX sessions_created ON sessions (created_at, id);
-- Listing one owner's sessions.
CREATE INDEX sessions_owner_created ON sessions (owner_id, created_at, id);
-- The active-session quota and per-state listing/counting.
CREATE INDEX sessions_owner_state ON sessions (owner_id, state);
CREATE INDEX sessions_state_created ON sessions (state, created_at, id);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    hash          BLOB NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    UNIQUE (owner_id, name)
);

CREATE TABLE credentials (
    owner_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (owner_id, provider)
);

CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        TEXT NOT NULL,
    actor       TEXT NOT NULL DEFAULT '',
    action      TEXT NOT NULL DEFAULT '',
    target      TEXT NOT NULL DEFAULT '',
    outcome     TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '',
    request_id  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
CREATE INDEX audit_events_target ON audit_events (target, id);

CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
