package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// SessionLogsOptions are the inputs of `session logs`.
type SessionLogsOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	ID         string
	Follow     bool
	Timestamps bool
}

// NewCmdSessionLogs returns `session logs`.
func NewCmdSessionLogs(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionLogsOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "logs SESSION [-f]",
		Short: "Print the conversation of a session",
		Long: `Print the conversation between you and the agent in a session. With -f, keep
following: the agent's answer appears as OpenCode writes it, until Ctrl-C.

This is the conversation, not the pod's logs; for those use kubectl logs on the
session pod (kubectl agents session get SESSION -o jsonpath='{.podName}').`,
		Example: `  kubectl agents session logs SESSION
  kubectl agents session logs SESSION -f
  kubectl agents session logs SESSION --timestamps`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "Keep printing new output until interrupted")
	cmd.Flags().BoolVar(&o.Timestamps, "timestamps", false, "Show when each message was written")
	return cmd
}

// Complete takes the session from the arguments.
func (o *SessionLogsOptions) Complete(_ *cobra.Command, args []string) error {
	o.ID = args[0]
	return nil
}

// Validate checks the arguments.
func (o *SessionLogsOptions) Validate() error {
	if o.ID == "" {
		return errors.New("name the session: kubectl agents session logs SESSION")
	}
	return checkSessionIDs(o.ID)
}

// Run prints the conversation and, with -f, the live stream.
func (o *SessionLogsOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	msgs, err := c.Messages(ctx, o.ID)
	if err != nil {
		if isNotRunning(err) {
			return fmt.Errorf("read the conversation of %s: %w; the conversation lives in the session's OpenCode, so start it first with `kubectl agents session start %s`", sessionRef(o.ID), err, o.ID)
		}
		return sessionError(err, "read the conversation of", o.ID)
	}
	for i, m := range msgs.Items {
		if i > 0 {
			fmt.Fprintln(o.Out)
		}
		o.printMessage(m)
	}
	if !o.Follow {
		return nil
	}
	return o.follow(ctx, c)
}

func (o *SessionLogsOptions) printMessage(m apiv1.Message) {
	header := m.Role + ":"
	if o.Timestamps && !m.CreatedAt.IsZero() {
		header = m.CreatedAt.UTC().Format(time.RFC3339) + " " + header
	}
	fmt.Fprintln(o.Out, header)
	text := strings.TrimRight(m.Text, "\n")
	if text != "" {
		fmt.Fprintln(o.Out, text)
	}
}

// openCodeEvent is the envelope of OpenCode's bus events: {"type": ..., "properties": {...}}.
type openCodeEvent struct {
	Type       string `json:"type"`
	Properties struct {
		Delta  string `json:"delta"`
		Status *struct {
			Type string `json:"type"`
		} `json:"status"`
	} `json:"properties"`
}

// follow prints text deltas as OpenCode streams them and ends each turn with a blank
// line; other event types are not part of the conversation.
func (o *SessionLogsOptions) follow(ctx context.Context, c *client.Client) error {
	stream, err := c.Events(ctx, o.ID)
	if err != nil {
		return fmt.Errorf("follow %s: %w", sessionRef(o.ID), err)
	}
	defer stream.Close()
	midLine := false
	for {
		ev, err := stream.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("follow %s: the agent ended the stream (the session stopped?)", sessionRef(o.ID))
			}
			return fmt.Errorf("follow %s: %w", sessionRef(o.ID), err)
		}
		var e openCodeEvent
		if json.Unmarshal(ev.Data, &e) != nil {
			continue
		}
		typ := e.Type
		if typ == "" {
			typ = ev.Type
		}
		switch {
		case strings.HasPrefix(typ, "message.part.") && e.Properties.Delta != "":
			fmt.Fprint(o.Out, e.Properties.Delta)
			midLine = !strings.HasSuffix(e.Properties.Delta, "\n")
		case typ == "session.idle":
			if midLine {
				fmt.Fprintln(o.Out)
				midLine = false
			}
		}
	}
}
