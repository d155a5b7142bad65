-- Slack and Linear: which deliveries were handled (so a retry is acknowledged and
-- dropped; pruned after a while) and which outside conversation started which session
-- (so a follow-up reaches it, and two concurrent deliveries cannot start two sessions:
-- the second insert of a key fails). data is JSON the integration owns.
CREATE TABLE integration_events (
    source       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX integration_events_received_at ON integration_events (received_at);

CREATE TABLE integration_links (
    source       TEXT NOT NULL,
    external_id  TEXT NOT NULL,
    session_id   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    data         TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (source, external_id)
);
CREATE INDEX integration_links_session ON integration_links (session_id);
