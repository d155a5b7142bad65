package opencode

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Event is one event of OpenCode's /event stream: "session.status",
// "message.part.delta", "message.updated", "session.idle", "server.heartbeat", ...
// Properties is kept raw so relays pass it on unchanged.
type Event struct {
	ID         string          `json:"id,omitempty"`
	Type       string          `json:"type"`
	Properties json.RawMessage `json:"properties,omitempty"`
}

// SessionID returns properties.sessionID, the conversation the event belongs to ("" for
// server-wide events).
func (e *Event) SessionID() string {
	var p struct {
		SessionID string `json:"sessionID"`
	}
	_ = json.Unmarshal(e.Properties, &p)
	return p.SessionID
}

// maxEventBytes bounds one SSE event; message.updated events carry whole messages.
const maxEventBytes = 8 << 20

// EventStream reads OpenCode's Server-Sent Events. Close it to end the request.
type EventStream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events opens GET /event. The stream lasts until ctx ends, Close is called or the
// server goes away (Next then returns an error; io.EOF for a clean end).
func (c *Client) Events(ctx context.Context) (*EventStream, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/event", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("opencode: GET /event: %w", err)
	}
	if err := checkStatus(resp, http.MethodGet, "/event"); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("opencode: GET /event answered %q, not an event stream", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxEventBytes)
	return &EventStream{body: resp.Body, sc: sc}, nil
}

// Next blocks until the next event. Comments and events without data are skipped; the
// SSE "event:" and "id:" fields fill Type and ID when the JSON lacks them.
func (s *EventStream) Next() (*Event, error) {
	var data strings.Builder
	var typ, id string
	for s.sc.Scan() {
		line := s.sc.Text()
		if line == "" {
			if data.Len() == 0 {
				typ, id = "", ""
				continue
			}
			var ev Event
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return nil, fmt.Errorf("opencode: decode event %q: %w", truncate(data.String(), 200), err)
			}
			if ev.Type == "" {
				ev.Type = typ
			}
			if ev.ID == "" {
				ev.ID = id
			}
			return &ev, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(value)
		case "event":
			typ = value
		case "id":
			id = value
		}
	}
	if err := s.sc.Err(); err != nil {
		return nil, fmt.Errorf("opencode: read events: %w", err)
	}
	return nil, io.EOF
}

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
