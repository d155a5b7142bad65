package opencode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Command is a program to run in OpenCode's container (see Run).
type Command struct {
	Path string            `json:"command"`
	Args []string          `json:"args"`
	Dir  string            `json:"cwd,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
	// Title names the terminal in OpenCode's list while it runs.
	Title string `json:"title,omitempty"`
}

// Run runs cmd in OpenCode's container, as OpenCode's own terminals do (POST /pty), and
// returns its exit code once it has exited. It is how the agent acts inside a running
// session pod without an exec permission or a process of its own there: the request
// travels the tunnel every other request to that OpenCode takes.
//
// OpenCode forgets a terminal as soon as its process exits (GET /pty/{id} answers 404
// right after), so the exit code is read from the pty.exited event; the event stream is
// opened before the terminal is created so that event cannot be missed. The command runs
// on a terminal: anything that could prompt must be told not to (GIT_TERMINAL_PROMPT=0).
func (c *Client) Run(ctx context.Context, cmd Command) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Events(ctx)
	if err != nil {
		return -1, err
	}
	defer events.Close()
	var pty struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, "/pty", cmd, &pty); err != nil {
		return -1, err
	}
	if pty.ID == "" {
		return -1, errors.New("opencode: POST /pty answered no terminal id")
	}
	// Closing the stream is what unblocks Next when ctx ends first.
	stop := context.AfterFunc(ctx, func() { _ = events.Close() })
	defer stop()
	for {
		ev, err := events.Next()
		if err != nil {
			if ctx.Err() != nil {
				// Kill what is still running: a clone left behind would race whatever
				// replaces it.
				dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), ProbeTimeout)
				_ = c.do(dctx, http.MethodDelete, "/pty/"+pty.ID, nil, nil)
				dcancel()
				return -1, fmt.Errorf("opencode: %s in terminal %s: %w", cmd.Path, pty.ID, ctx.Err())
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return -1, fmt.Errorf("opencode: wait for %s in terminal %s: %w", cmd.Path, pty.ID, err)
		}
		if ev.Type != "pty.exited" {
			continue
		}
		var p struct {
			ID       string `json:"id"`
			ExitCode int    `json:"exitCode"`
		}
		if err := json.Unmarshal(ev.Properties, &p); err != nil {
			return -1, fmt.Errorf("opencode: decode pty.exited: %w", err)
		}
		if p.ID == pty.ID {
			return p.ExitCode, nil
		}
	}
}

// Dispose ends OpenCode's instance for its directory (POST /instance/dispose); the next
// request starts a new one, which looks at the directory afresh. After a repository was
// cloned into a running OpenCode's workspace this is what makes it a git project (its
// branch in /vcs, snapshots for undo); conversations and stored keys are kept.
func (c *Client) Dispose(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/instance/dispose", nil, nil)
}
