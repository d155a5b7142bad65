// Package integrations holds what the chat and issue-tracker integrations (agent/slack,
// agent/linear) share: the loop that does their deliveries' work on a bounded pool of
// workers and follows the sessions they started, posting what changed.
//
// Following is driven by the store, not by memory: every replica follows every active
// session linked to its source (found again at start and every few polls, so sessions
// another replica started are picked up when it goes away), and each post is claimed
// with a compare-and-swap on the link's data (store.UpdateLinkData) before it is made,
// so two replicas never post the same thing twice.
package integrations

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Sessions is the session lifecycle as the integrations need it (*sessions.Controller).
type Sessions interface {
	Create(ctx context.Context, s *store.Session, maxActive int) error
	Delete(ctx context.Context, id string) error
	// Touch records activity on a session, as a prompt from outside is.
	Touch(ctx context.Context, id, source string)
}

// Conversation reaches a running session's OpenCode (*conversation.Relay).
type Conversation interface {
	Send(ctx context.Context, s *store.Session, text string) error
	Messages(ctx context.Context, s *store.Session) ([]apiv1.Message, error)
	// Busy reports whether the session's conversation is still working on a prompt.
	Busy(ctx context.Context, s *store.Session) (bool, error)
}

// ResyncEvery is how many polls pass between two looks in the store for active
// sessions of the source that no one here follows yet: those another replica started
// (it may have gone since), or that a lost hook did not name.
const ResyncEvery = 20

// StepFunc brings the outside conversation of one session up to date (posts its new
// answer, its state, its end) and reports whether there is nothing left to follow.
type StepFunc func(ctx context.Context, sessionID string) (done bool)

// Follower keeps the set of sessions an integration follows. Its zero value is not
// usable: call NewFollower.
type Follower struct {
	source string
	st     store.Store
	log    hclog.Logger
	step   StepFunc
	// states are the session states whose linked sessions are followed again by Resume.
	states []apiv1.SessionState

	mu  sync.Mutex
	ids map[string]bool
}

// NewFollower returns a Follower of source's sessions; step does the work for one.
// Resume picks up the linked sessions in the given states.
func NewFollower(source string, st store.Store, log hclog.Logger, step StepFunc, states ...apiv1.SessionState) *Follower {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Follower{source: source, st: st, log: log, step: step, states: states, ids: map[string]bool{}}
}

// Add follows session id (again): its next look is at the next poll.
func (f *Follower) Add(id string) {
	f.mu.Lock()
	f.ids[id] = true
	f.mu.Unlock()
}

func (f *Follower) remove(id string) {
	f.mu.Lock()
	delete(f.ids, id)
	f.mu.Unlock()
}

// IDs returns the sessions followed now, in no order.
func (f *Follower) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.ids))
	for id := range f.ids {
		out = append(out, id)
	}
	return out
}

// Resume follows every session in the Follower's states that has a link of its
// source: after a restart, those the previous run followed; later, those another
// replica started.
func (f *Follower) Resume(ctx context.Context) {
	filter := store.SessionFilter{States: f.states, Limit: 1000}
	for {
		page, err := f.st.ListSessions(ctx, filter)
		if err != nil {
			f.log.Warn("list sessions to follow failed", "error", err)
			return
		}
		for _, s := range page.Items {
			links, err := f.st.ListLinks(ctx, s.ID)
			if err != nil {
				f.log.Warn("list session links failed", "session", s.ID, "error", err)
				continue
			}
			for _, l := range links {
				if l.Source == f.source {
					f.Add(s.ID)
					break
				}
			}
		}
		if page.Continue == "" {
			return
		}
		filter.Continue = page.Continue
	}
}

// Once looks at every followed session once, dropping those whose step is done.
func (f *Follower) Once(ctx context.Context) {
	for _, id := range f.IDs() {
		if ctx.Err() != nil {
			return
		}
		if f.step(ctx, id) {
			f.remove(id)
		}
	}
}

// Run does each job of jobs on workers goroutines with work, and follows the sessions
// (Resume at start and every ResyncEvery polls, Once every interval), until ctx ends;
// it returns once the workers are done.
func Run[J any](ctx context.Context, workers int, jobs <-chan J, work func(context.Context, J), f *Follower, interval time.Duration) error {
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-jobs:
					work(ctx, j)
				}
			}
		}()
	}
	defer wg.Wait()
	f.Resume(ctx)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if n%ResyncEvery == 0 {
				f.Resume(ctx)
			}
			f.Once(ctx)
		}
	}
}
