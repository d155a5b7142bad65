-- The session a session was forked from ('' for none): its conversation seeds the
-- fork's first one. Written at create only; the source may be deleted later.
ALTER TABLE sessions ADD COLUMN forked_from TEXT NOT NULL DEFAULT '';
