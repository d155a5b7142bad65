// Package syncbuf is a bytes.Buffer safe for concurrent use: what tests hand to a logger or a
// child process's output while they read it from another goroutine.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes from any goroutine; its zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
