-- Transcripts: every message of a session's conversation as the agent recorded it from
-- the session's OpenCode, so the conversation can be read while the session is stopped
-- and after it was deleted. Not tied to sessions by a foreign key, on purpose: a
-- transcript outlives its session (deleted_at is set by the trigger below, in the
-- delete's own transaction) until the retention pruner removes it. owner_id and private
-- decide who may read it once the session row is gone. body is JSON the agent owns.
CREATE TABLE transcripts (
    session_id  TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL,
    private     INTEGER NOT NULL DEFAULT 0,
    title       TEXT NOT NULL DEFAULT '',
    repo        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT
);
CREATE INDEX transcripts_deleted_at ON transcripts (deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE transcript_messages (
    session_id  TEXT NOT NULL REFERENCES transcripts (session_id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    role        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (session_id, message_id)
);
CREATE INDEX transcript_messages_order ON transcript_messages (session_id, created_at, message_id);

-- Times in the store's fixed-width layout (2006-01-02T15:04:05.000000Z): %f is SS.SSS.
CREATE TRIGGER sessions_end_transcript AFTER DELETE ON sessions
BEGIN
    UPDATE transcripts SET deleted_at = strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')
    WHERE session_id = OLD.id AND deleted_at IS NULL;
END;
