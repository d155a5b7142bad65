package conversation

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Recorder keeps the store's transcript of every Running session current: it follows
// each session's OpenCode event stream and, whenever a message changes, reads the
// conversation and records the messages that changed (by id, so nothing is recorded
// twice and a message recorded half-written is completed later). Before a session's
// pod goes, Final records it one last time. The transcript is what `session logs`
// reads once the session is stopped or deleted.
type Recorder struct {
	relay *Relay
	st    store.Store
	log   hclog.Logger

	// debounce gathers a burst of events into one recording.
	debounce time.Duration
	// scanEvery is how often Run looks for sessions that turned Running.
	scanEvery time.Duration

	mu        sync.Mutex
	following map[string]bool
}

// NewRecorder returns a Recorder reaching sessions through relay.
func NewRecorder(relay *Relay, st store.Store, log hclog.Logger) *Recorder {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Recorder{relay: relay, st: st, log: log, debounce: time.Second, scanEvery: 15 * time.Second, following: map[string]bool{}}
}

// recorded is what a follower last recorded of each message (a hash of its body), so
// an unchanged message is not written again.
type recorded map[string][sha256.Size]byte

// Record reads the conversation of s from its OpenCode and records the messages that
// changed since seen (nil: all of them), updating seen.
func (r *Recorder) Record(ctx context.Context, s *store.Session, seen recorded) error {
	if s.OpenCodeSessionID == "" {
		return nil // no conversation yet
	}
	msgs, err := r.relay.Messages(ctx, s)
	if err != nil {
		return err
	}
	var changed []*store.TranscriptMessage
	sums := map[string][sha256.Size]byte{}
	for _, m := range msgs {
		body, err := json.Marshal(m)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		if seen != nil && seen[m.ID] == sum {
			continue
		}
		sums[m.ID] = sum
		changed = append(changed, &store.TranscriptMessage{ID: m.ID, Role: m.Role, Body: body, CreatedAt: m.CreatedAt})
	}
	if len(changed) == 0 && seen != nil {
		return nil
	}
	head := &store.Transcript{SessionID: s.ID, OwnerID: s.OwnerID, Private: s.Private, Title: s.Title, Repo: s.Repo}
	if err := r.st.PutTranscript(ctx, head, changed); err != nil {
		return err
	}
	for id, sum := range sums {
		if seen != nil {
			seen[id] = sum
		}
	}
	return nil
}

// finalTimeout bounds Final: a stop must not wait long for an OpenCode that hangs.
const finalTimeout = 5 * time.Second

// Final records session id's conversation once more, right before its pod is deleted
// (the sessions controller's before-stop hook), so the last words of a session stopped
// mid-turn are kept. Failures are logged: the stop goes on.
func (r *Recorder) Final(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
	defer cancel()
	s, err := r.st.GetSession(ctx, id)
	if err != nil || s.OpenCodeSessionID == "" {
		return
	}
	if err := r.Record(ctx, s, nil); err != nil {
		r.log.Warn("record the transcript before the pod goes failed; what was recorded before stays", "session", id, "error", err)
	}
}

// Run follows every Running session until ctx ends (the sessions controller runs it
// for the length of a leadership term, so one replica records).
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.scanEvery)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		r.scan(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scan starts a follower for every Running session with a conversation not followed
// yet.
func (r *Recorder) scan(ctx context.Context, wg *sync.WaitGroup) {
	f := store.SessionFilter{States: []apiv1.SessionState{apiv1.StateRunning}, Limit: 1000}
	for ctx.Err() == nil {
		page, err := r.st.ListSessions(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("list running sessions to record failed", "error", err)
			}
			return
		}
		for _, s := range page.Items {
			if s.OpenCodeSessionID == "" {
				continue // no conversation yet: nothing to record (a later scan looks again)
			}
			r.mu.Lock()
			start := !r.following[s.ID]
			r.following[s.ID] = true
			r.mu.Unlock()
			if start {
				wg.Add(1)
				go func(id string) {
					defer wg.Done()
					defer func() {
						r.mu.Lock()
						delete(r.following, id)
						r.mu.Unlock()
					}()
					r.follow(ctx, id)
				}(s.ID)
			}
		}
		if page.Continue == "" {
			return
		}
		f.Continue = page.Continue
	}
}

// follow records session id while it is Running: once when its event stream opens
// (what happened while nobody listened), then after every burst of message events;
// a dropped stream is opened again.
func (r *Recorder) follow(ctx context.Context, id string) {
	log := r.log.With("session", id)
	seen := recorded{}
	backoff := time.Second
	for ctx.Err() == nil {
		s, err := r.st.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && s.State != apiv1.StateRunning) {
			return
		}
		if err == nil {
			err = r.followOnce(ctx, s, seen)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Debug("transcript recording interrupted; retrying", "error", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// followOnce opens the session's event stream and records until it ends.
func (r *Recorder) followOnce(ctx context.Context, s *store.Session, seen recorded) error {
	oc, err := r.relay.client(ctx, s)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := oc.Events(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = stream.Close() }()
	kick := make(chan struct{}, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			ev, err := stream.Next()
			if err != nil {
				ended <- err
				return
			}
			if changesTranscript(ev.Type) {
				select {
				case kick <- struct{}{}:
				default:
				}
			}
		}
	}()
	record := func() error {
		// The conversation id is set on first use, possibly after the stream opened.
		cur, err := r.st.GetSession(ctx, s.ID)
		if err != nil {
			return err
		}
		if cur.State != apiv1.StateRunning {
			return fmt.Errorf("session %s is %s", s.ID, cur.State)
		}
		return r.Record(ctx, cur, seen)
	}
	if err := record(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ended:
			_ = record() // whatever came last before the stream dropped
			return err
		case <-kick:
		}
		select { // gather the burst
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.debounce):
		}
		if err := record(); err != nil {
			return err
		}
	}
}

// changesTranscript reports whether an OpenCode event may change what Record reads:
// message and part updates (not the text deltas between them, which end in a part
// update) and a conversation going idle.
func changesTranscript(typ string) bool {
	switch {
	case typ == "message.part.delta":
		return false
	case strings.HasPrefix(typ, "message."), typ == "session.idle", typ == "session.status", typ == "session.error":
		return true
	}
	return false
}

// Transcript returns session id's recorded conversation and when it was deleted
// (nil: the session exists), decoding each message the Recorder stored.
func Transcript(ctx context.Context, st store.Store, id string) (*store.Transcript, []apiv1.Message, error) {
	head, rows, err := st.GetTranscript(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	msgs := make([]apiv1.Message, 0, len(rows))
	for _, row := range rows {
		var m apiv1.Message
		if err := json.Unmarshal(row.Body, &m); err != nil {
			return nil, nil, fmt.Errorf("decode message %s of the transcript of session %s: %w", row.ID, id, err)
		}
		msgs = append(msgs, m)
	}
	return head, msgs, nil
}

// Merge returns the recorded messages with live ones replacing those of the same id
// and added after them, ordered by creation time (then id, as OpenCode's ids sort).
func Merge(recorded, live []apiv1.Message) []apiv1.Message {
	byID := make(map[string]int, len(recorded)+len(live))
	out := make([]apiv1.Message, 0, len(recorded)+len(live))
	for _, list := range [][]apiv1.Message{recorded, live} {
		for _, m := range list {
			if i, ok := byID[m.ID]; ok {
				out[i] = m
				continue
			}
			byID[m.ID] = len(out)
			out = append(out, m)
		}
	}
	sortMessages(out)
	return out
}

func sortMessages(ms []apiv1.Message) {
	slices.SortStableFunc(ms, func(a, b apiv1.Message) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
