-- What a session's workspace was last seen on: the branch checked out and the pull
-- request opened from it, if any. A table of its own rather than sessions columns: the
-- agent writes it while looking, which must not change a session's resource version
-- (PATCH with resourceVersion would fail for nothing) or race its state updates.
CREATE TABLE session_vcs (
    session_id        TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    branch            TEXT NOT NULL DEFAULT '',
    pull_request_url  TEXT NOT NULL DEFAULT '',
    checked_at        TIMESTAMPTZ NOT NULL
);
