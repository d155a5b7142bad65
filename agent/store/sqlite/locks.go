package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
)

// A SQLite database serves one agent process: the chart forces a single replica with
// SQLite, whose file lives on a ReadWriteOnce volume. So the session locks of a
// database live in this process, shared by every store opened on the same file (as a
// Postgres advisory lock is shared by every store on the same database); they end
// with the process, as Postgres' end with the connection.
var fileLocks = struct {
	mu sync.Mutex
	m  map[string]*keyedLocks // by the database file's resolved path
}{m: map[string]*keyedLocks{}}

// locksFor returns the session locks of the database file at path (a private set for
// an in-memory database, which no other store can open).
func locksFor(path string) *keyedLocks {
	if path == Memory {
		return newKeyedLocks()
	}
	// The directory exists before the file does; resolve it so that every spelling of
	// the path finds the same locks.
	key := path
	if abs, err := filepath.Abs(path); err == nil {
		key = abs
		if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			key = filepath.Join(dir, filepath.Base(abs))
		}
	}
	fileLocks.mu.Lock()
	defer fileLocks.mu.Unlock()
	l, ok := fileLocks.m[key]
	if !ok {
		l = newKeyedLocks()
		fileLocks.m[key] = l
	}
	return l
}

// keyedLocks is a set of mutexes by key whose waits end with a context. Entries live
// only while someone holds or waits for them.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	held chan struct{} // a token in the channel means held
	refs int           // holders and waiters
}

func newKeyedLocks() *keyedLocks { return &keyedLocks{m: map[string]*keyedLock{}} }

func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err // select below would pick at random between a free lock and a done ctx
	}
	k.mu.Lock()
	l, ok := k.m[key]
	if !ok {
		l = &keyedLock{held: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	select {
	case l.held <- struct{}{}:
	case <-ctx.Done():
		k.drop(key, l)
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-l.held
			k.drop(key, l)
		})
	}, nil
}

func (k *keyedLocks) drop(key string, l *keyedLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.m, key)
	}
}

// LockSession implements store.Store; see fileLocks for why the lock lives in the
// process.
func (s *Store) LockSession(ctx context.Context, id string) (func(), error) {
	unlock, err := s.locks.lock(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: lock session %q: %w", id, err)
	}
	return unlock, nil
}
