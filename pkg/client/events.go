package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Event is one Server-Sent Event as the agent relays it from OpenCode.
type Event struct {
	// Type is the "event:" field; "message" when the server sent none, as in browsers.
	Type string
	// Data is the "data:" field, multi-line data joined with "\n". OpenCode sends JSON.
	Data []byte
	// ID is the "id:" field, for resuming with Last-Event-ID.
	ID string
	// Retry is the reconnection delay the server asked for, zero when it sent none.
	Retry time.Duration
}

// EventStream reads events from an SSE response. It is not safe for concurrent use.
type EventStream struct {
	body io.ReadCloser
	r    *bufio.Reader
	// skipLF is set after a CR so that the LF of a CRLF pair is dropped without
	// waiting (a Peek would block until the server sends its next event).
	skipLF bool
	// watch, when set, is the idle watchdog (see SetIdleTimeout).
	watch *idleWatch
}

// ErrStreamIdle is returned by Next once the stream was silent longer than the idle
// timeout: the connection is presumed dead.
var ErrStreamIdle = errors.New("the event stream went silent (no keep-alive): the connection is presumed dead")

// SetIdleTimeout makes the stream fail with ErrStreamIdle once nothing at all (no
// event, no keep-alive comment) arrived for d; a few apiv1.EventKeepAlive is right. Call
// it once, before the first Next.
func (s *EventStream) SetIdleTimeout(d time.Duration) {
	w := &idleWatch{body: s.body, timeout: d, last: time.Now(), done: make(chan struct{})}
	s.watch = w
	s.r = bufio.NewReaderSize(w, 64<<10)
	go w.run()
}

// idleWatch passes reads through, noting when bytes last arrived, and closes the body
// when none came for timeout (which makes the blocked read fail).
type idleWatch struct {
	body    io.ReadCloser
	timeout time.Duration
	mu      sync.Mutex
	last    time.Time
	fired   bool
	done    chan struct{}
	once    sync.Once
}

func (w *idleWatch) Read(p []byte) (int, error) {
	n, err := w.body.Read(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > 0 {
		w.last = time.Now()
	}
	if err != nil && w.fired {
		return n, ErrStreamIdle
	}
	return n, err
}

func (w *idleWatch) run() {
	t := time.NewTicker(w.timeout / 4)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			w.mu.Lock()
			idle := time.Since(w.last) > w.timeout
			if idle {
				w.fired = true
			}
			w.mu.Unlock()
			if idle {
				_ = w.body.Close()
				return
			}
		}
	}
}

func (w *idleWatch) stop() { w.once.Do(func() { close(w.done) }) }

// maxEventLine bounds one SSE line so a misbehaving stream cannot exhaust memory;
// OpenCode's largest events (whole message parts) stay far below it.
const maxEventLine = 8 << 20

// NewEventStream reads SSE from r (closed by Close when it is an io.Closer).
func NewEventStream(r io.Reader) *EventStream {
	rc, ok := r.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(r)
	}
	return &EventStream{body: rc, r: bufio.NewReaderSize(rc, 64<<10)}
}

// Events calls GET /api/v1/sessions/{id}/events. The caller must Close the stream;
// cancelling ctx ends it as well.
func (c *Client) Events(ctx context.Context, id string) (*EventStream, error) {
	req, err := c.NewRequest(ctx, http.MethodGet, sessionPath(id, "events"), nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: expected an event stream, got Content-Type %q", req.URL.Path, ct)
	}
	return NewEventStream(resp.Body), nil
}

// Next returns the next event. Comments (heartbeats) are skipped. At the end of the
// stream it returns io.EOF.
func (s *EventStream) Next() (Event, error) {
	var (
		ev      Event
		data    bytes.Buffer
		hasData bool
		started bool
	)
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				// An event not terminated by a blank line is discarded, per the spec.
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if line == "" {
			if !started {
				continue
			}
			if !hasData {
				// Events without data are not dispatched; keep reading.
				ev, data, started = Event{ID: ev.ID}, bytes.Buffer{}, false
				continue
			}
			if ev.Type == "" {
				ev.Type = "message"
			}
			ev.Data = data.Bytes()
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		started = true
		switch field {
		case "event":
			ev.Type = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.ID = value
			}
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				ev.Retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// readLine returns one line without its terminator (LF, CRLF or CR).
func (s *EventStream) readLine() (string, error) {
	var buf []byte
	for {
		b, err := s.r.ReadByte()
		if err == nil && s.skipLF {
			s.skipLF = false
			if b == '\n' {
				continue
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				// A final unterminated line does not complete an event either.
				return "", io.EOF
			}
			return "", err
		}
		switch b {
		case '\n':
			return string(buf), nil
		case '\r':
			s.skipLF = true
			return string(buf), nil
		}
		if len(buf) >= maxEventLine {
			return "", fmt.Errorf("event stream line longer than %d bytes", maxEventLine)
		}
		buf = append(buf, b)
	}
}

// Close ends the stream.
func (s *EventStream) Close() error {
	if s.watch != nil {
		s.watch.stop()
	}
	return s.body.Close()
}
