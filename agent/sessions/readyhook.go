package sessions

import (
	"github.com/cakeai/cake-agents/agent/store"
)

type hookMark struct{ fired, inflight bool }

// maybeFireHook calls the ready hook for a Running session: always on a transition,
// otherwise (first sight after a restart or a new leadership term) only while the
// initial prompt is undelivered.
func (c *Controller) maybeFireHook(s *store.Session, transition bool) {
	c.mu.Lock()
	hook := c.readyHook
	h := c.hookState[s.ID]
	fire := hook != nil && !h.inflight && (transition || (!h.fired && s.Prompt != "" && !s.PromptSent))
	if !fire {
		if !transition && !h.fired {
			h.fired = true // nothing to deliver: do not look again this Running period
			c.hookState[s.ID] = h
		}
		c.mu.Unlock()
		return
	}
	c.hookState[s.ID] = hookMark{fired: true, inflight: true}
	ctx := c.baseCtx
	c.mu.Unlock()
	cp := *s
	go func() {
		defer func() {
			c.mu.Lock()
			if m, ok := c.hookState[cp.ID]; ok {
				m.inflight = false
				c.hookState[cp.ID] = m
			}
			c.mu.Unlock()
		}()
		hook(ctx, &cp)
	}()
}

// leftRunning re-arms the ready hook for the next Running period.
func (c *Controller) leftRunning(id string) {
	c.mu.Lock()
	if m, ok := c.hookState[id]; ok {
		if m.inflight {
			m.fired = false
			c.hookState[id] = m
		} else {
			delete(c.hookState, id)
		}
	}
	c.mu.Unlock()
}
