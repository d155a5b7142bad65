package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Session locks are session-level advisory locks, each held by its own connection from
// a pool of their own: a lock holder runs its queries on the main pool, so holders can
// never take every connection the queries under the lock need. The two-key form puts
// them in a key space of their own ("cake-agents/session", hash of the id), apart from
// the quota and migration locks; two ids whose hashes collide merely share a lock.
const (
	lockSQL   = `SELECT pg_try_advisory_lock(hashtext('cake-agents/session'), hashtext($1))`
	unlockSQL = `SELECT pg_advisory_unlock(hashtext('cake-agents/session'), hashtext($1))`
)

// defaultLockConns is how many sessions one store can hold locked at once by default.
const defaultLockConns = 16

// lockPoolConfig derives the lock pool's configuration from the main one.
func lockPoolConfig(main *pgxpool.Config, maxConns int32) *pgxpool.Config {
	cfg := main.Copy()
	if maxConns <= 0 {
		maxConns = defaultLockConns
	}
	cfg.MaxConns, cfg.MinConns = maxConns, 0
	cfg.ConnConfig.RuntimeParams["application_name"] = main.ConnConfig.RuntimeParams["application_name"] + "/locks"
	// A holder whose host vanishes (no FIN, no RST) would keep its locks until the
	// server's TCP keepalive gives up, two hours by default; probe within a minute.
	// (A killed process is noticed at once: its kernel closes the socket.) Set with SET,
	// not as startup parameters, which poolers such as PgBouncer refuse; where the
	// setting does not apply (a Unix socket, a pooler) it is best effort.
	after := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		if after != nil {
			if err := after(ctx, conn); err != nil {
				return err
			}
		}
		_, _ = conn.Exec(ctx, `SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3`)
		return nil
	}
	return cfg
}

// LockSession implements store.Store with a session-level advisory lock on a
// connection of the lock pool; the lock dies with that connection, so a replica that
// crashes or loses the database never leaves a session locked. A waiter does not hold a
// connection while it waits (try, give the connection back, retry with backoff): many
// callers waiting on one busy session must not starve the locks of every other session.
func (s *Store) LockSession(ctx context.Context, id string) (func(), error) {
	backoff := 10 * time.Millisecond
	for {
		conn, err := s.locks.Acquire(ctx)
		if err != nil {
			return nil, mapErr(err, "lock session %q", id)
		}
		var got bool
		if err := conn.QueryRow(ctx, lockSQL, id).Scan(&got); err != nil {
			// The lock may have been granted just before the error (a cancelled query):
			// closing the connection releases it whatever happened.
			discard(conn)
			return nil, mapErr(err, "lock session %q", id)
		}
		if got {
			return s.unlocker(conn, id), nil
		}
		conn.Release()
		select {
		case <-ctx.Done():
			return nil, mapErr(ctx.Err(), "lock session %q", id)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// unlocker releases the lock conn holds on session id, once.
func (s *Store) unlocker(conn *pgxpool.Conn, id string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var released bool
			if err := conn.QueryRow(ctx, unlockSQL, id).Scan(&released); err != nil || !released {
				// Never hand a connection that may still hold the lock back to the pool.
				s.log.Warn("release session lock failed; closing its connection instead", "session", id, "error", err)
				discard(conn)
				return
			}
			conn.Release()
		})
	}
}

// discard closes a lock connection instead of returning it to the pool.
func discard(c *pgxpool.Conn) {
	raw := c.Hijack()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = raw.Close(ctx)
}
