-- The LiteLLM virtual keys made for sessions. A row is written before the key is
-- generated and outlives the session row, so a key is always found and deleted after a
-- crash or restart, and a deleted key keeps its final spend for the session's total.
-- No foreign key to sessions on purpose: cleanup needs the row after the session's.
CREATE TABLE model_keys (
    alias       TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    token       TEXT NOT NULL DEFAULT '',
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ
);

CREATE INDEX model_keys_session ON model_keys (session_id);
CREATE INDEX model_keys_live ON model_keys (deleted_at) WHERE deleted_at IS NULL;
