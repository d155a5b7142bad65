-- Initial schema (PostgreSQL). Keep version numbers in lock-step with the sqlite backend.
-- Times are timestamptz (microseconds), durations BIGINT nanoseconds, groups JSON text.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    email         TEXT NOT NULL DEFAULT '',
    display_name  TEXT NOT NULL DEFAULT '',
    groups_json   TEXT NOT NULL DEFAULT '[]',
    admin         BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (source, subject)
);

CREATE TABLE sessions (
    id                    TEXT PRIMARY KEY,
    title                 TEXT NOT NULL DEFAULT '',
    owner_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    private               BOOLEAN NOT NULL DEFAULT true,
    repo                  TEXT NOT NULL DEFAULT '',
    branch                TEXT NOT NULL DEFAULT '',
    prompt                TEXT NOT NULL DEFAULT '',
    model                 TEXT NOT NULL DEFAULT '',
    persistent            BOOLEAN NOT NULL DEFAULT false,
    idle_timeout_ns       BIGINT NOT NULL DEFAULT 0,
    ttl_ns                BIGINT NOT NULL DEFAULT 0,
    state                 TEXT NOT NULL,
    reason                TEXT NOT NULL DEFAULT '',
    message               TEXT NOT NULL DEFAULT '',
    pod_name              TEXT NOT NULL DEFAULT '',
    pod_namespace         TEXT NOT NULL DEFAULT '',
    image                 TEXT NOT NULL DEFAULT '',
    init_image            TEXT NOT NULL DEFAULT '',
    opencode_session_id   TEXT NOT NULL DEFAULT '',
    prompt_sent           BOOLEAN NOT NULL DEFAULT false,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL,
    started_at            TIMESTAMPTZ,
    stopped_at            TIMESTAMPTZ,
    last_activity_at      TIMESTAMPTZ NOT NULL,
    last_activity_source  TEXT NOT NULL DEFAULT '',
    resource_version      BIGINT NOT NULL DEFAULT 1
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
    hash          BYTEA NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ,
    UNIQUE (owner_id, name)
);

CREATE TABLE credentials (
    owner_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider    TEXT NOT NULL,
    ciphertext  BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner_id, provider)
);

CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        TIMESTAMPTZ NOT NULL,
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
    updated_at  TIMESTAMPTZ NOT NULL
);
