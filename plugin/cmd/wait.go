package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/term"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// startWait is how long attach and port-forward wait for a session that is still
// starting before giving up.
const startWait = 3 * time.Minute

// waitRunning polls the session until it is Running, showing each state on errOut: one
// line rewritten in place on a terminal, one line per change otherwise (logs, CI).
func waitRunning(ctx context.Context, c *client.Client, errOut interface{ Write([]byte) (int, error) }, s *apiv1.Session, timeout, every time.Duration) (*apiv1.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tty := isTerminal(errOut)
	start := time.Now()
	last := ""
	show := func(s *apiv1.Session, final bool) {
		line := fmt.Sprintf("%s: %s", sessionRef(s.ID), s.State)
		if s.Reason != "" {
			line += " (" + s.Reason + ")"
		}
		if tty {
			fmt.Fprintf(errOut, "\r\033[K%s %s", line, time.Since(start).Round(time.Second))
			if final {
				fmt.Fprintln(errOut)
			}
			return
		}
		if line != last {
			fmt.Fprintln(errOut, line)
		}
		last = line
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		switch s.State {
		case apiv1.StateRunning:
			show(s, true)
			return s, nil
		case apiv1.StateFailed, apiv1.StateStopped, apiv1.StateStopping, apiv1.StateDeleting:
			show(s, true)
			msg := s.Message
			if msg == "" {
				msg = s.Reason
			}
			if msg != "" {
				msg = ": " + msg
			}
			return s, fmt.Errorf("%s is %s instead of Running%s; see `kubectl agents session why %s`", sessionRef(s.ID), s.State, msg, s.ID)
		}
		show(s, false)
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(errOut)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return s, fmt.Errorf("%s is still %s after %s: raise --timeout, or see `kubectl agents session why %s`", sessionRef(s.ID), s.State, timeout, s.ID)
			}
			return s, ctx.Err()
		case <-tick.C:
		}
		next, err := c.GetSession(ctx, s.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return s, sessionError(err, "wait for", s.ID)
		}
		s = next
	}
}

// isTerminal reports whether w is a terminal, where progress may rewrite its line.
func isTerminal(w any) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
