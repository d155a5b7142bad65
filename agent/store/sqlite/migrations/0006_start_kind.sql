-- How a session's pod came to be: 'warm' when the create claimed a pod of the warm
-- pool, 'cold' when a pod was created for it. Every session before the pool was cold.
ALTER TABLE sessions ADD COLUMN start_kind TEXT NOT NULL DEFAULT 'cold';
