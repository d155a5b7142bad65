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
	// Output is "" (text), "json" or "markdown".
	Output string

	// printed is the text of each message printed so far, in Message.Text's form (text
	// parts joined by newlines), so a follow that reconnects prints only what is new.
	printed map[string]string
	// part is the text part of each message the last delta belonged to.
	part map[string]string
	// nonText are the parts whose deltas are not conversation text (reasoning).
	nonText map[string]bool
	// frozen are the messages printed from a snapshot of the conversation: their deltas
	// may repeat what the snapshot had (a stream carries no offsets), so the rest of
	// them is printed from later snapshots, never from deltas.
	frozen map[string]bool
	// last is the message printed last; midLine says its last line is unfinished.
	last    string
	midLine bool
	// any says something was printed.
	any bool
}

// NewCmdSessionLogs returns `session logs`.
func NewCmdSessionLogs(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &SessionLogsOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "logs SESSION [-f] [-o json|markdown]",
		Short: "Print the conversation of a session",
		Long: `Print the conversation between you and the agent in a session: every message and
the tools the agent ran. With -f, keep following: the agent's answer appears as
OpenCode writes it, until Ctrl-C; a dropped connection (an agent restart, a broken
port-forward) is resumed where it stopped, without repeating or missing text.

The agent records every session's conversation, so this works for a stopped session
too, and for a deleted one until the retention period of the install ends (chart
value sessions.transcriptRetention, 30 days by default).

-o json prints the whole transcript (messages, tool calls with their input and output)
as JSON; -o markdown as a Markdown document to keep or share.

This is the conversation, not the pod's logs; for those use kubectl logs on the
session pod (kubectl agents session get SESSION -o jsonpath='{.podName}').`,
		Example: `  kubectl agents session logs SESSION
  kubectl agents session logs SESSION -f
  kubectl agents session logs SESSION --timestamps
  kubectl agents session logs SESSION -o markdown > transcript.md`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(o),
	}
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "Keep printing new output until interrupted")
	cmd.Flags().BoolVar(&o.Timestamps, "timestamps", false, "Show when each message was written")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: json or markdown (default: text)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "markdown"}, cobra.ShellCompDirectiveNoFileComp))
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
	switch o.Output {
	case "", "json", "markdown":
	case "md":
		o.Output = "markdown"
	default:
		return fmt.Errorf("--output %q: use json or markdown (or leave it out for text)", o.Output)
	}
	if o.Output != "" && o.Follow {
		return fmt.Errorf("-o %s prints the transcript once: drop -f, or drop -o to follow the text", o.Output)
	}
	return checkSessionIDs(o.ID)
}

// Run prints the conversation and, with -f, the live stream.
func (o *SessionLogsOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	o.printed, o.part, o.nonText, o.frozen = map[string]string{}, map[string]string{}, map[string]bool{}, map[string]bool{}
	o.last, o.midLine, o.any = "", false, false
	if o.Follow {
		return o.follow(ctx, c)
	}
	msgs, err := c.Messages(ctx, o.ID)
	if err != nil {
		return sessionError(err, "read the conversation of", o.ID)
	}
	switch o.Output {
	case "json":
		enc := json.NewEncoder(o.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(msgs)
	case "markdown":
		writeMarkdown(o.Out, o.ID, msgs)
		return nil
	}
	if msgs.Deleted != nil {
		fmt.Fprintf(o.ErrOut, "# %s was deleted at %s; this is its recorded transcript\n", sessionRef(o.ID), msgs.Deleted.UTC().Format(time.RFC3339))
	}
	o.catchUp(msgs.Items)
	o.endLine()
	return nil
}

// header prints the line that starts message m, a blank line before it unless it is
// the first.
func (o *SessionLogsOptions) header(m apiv1.Message) {
	o.endLine()
	if o.any {
		fmt.Fprintln(o.Out)
	}
	h := m.Role + ":"
	if o.Timestamps && !m.CreatedAt.IsZero() {
		h = m.CreatedAt.UTC().Format(time.RFC3339) + " " + h
	}
	fmt.Fprintln(o.Out, h)
	o.any, o.last, o.printed[m.ID] = true, m.ID, ""
}

// write prints text as more of message id.
func (o *SessionLogsOptions) write(id, text string) {
	if text == "" {
		return
	}
	fmt.Fprint(o.Out, text)
	o.printed[id] += text
	o.last, o.midLine = id, !strings.HasSuffix(text, "\n")
}

func (o *SessionLogsOptions) endLine() {
	if o.midLine {
		fmt.Fprintln(o.Out)
		o.midLine = false
	}
}

// catchUp prints what the snapshot msgs holds that was not printed yet: new messages
// whole, and the rest of a message printed in part (a follow that reconnected
// mid-answer); every message in it is frozen from then on. Tool calls are printed with
// a message first seen in a snapshot.
func (o *SessionLogsOptions) catchUp(msgs []apiv1.Message) {
	for _, m := range msgs {
		o.frozen[m.ID] = true
		text := strings.TrimRight(m.Text, "\n")
		done, seen := o.printed[m.ID]
		switch {
		case !seen:
			// The line stays open: a message still being written goes on from here.
			o.header(m)
			o.write(m.ID, text)
			if len(m.Tools) > 0 {
				o.endLine()
			}
			for _, t := range m.Tools {
				fmt.Fprintln(o.Out, toolLine(t))
			}
		case len(text) > len(done) && strings.HasPrefix(text, done):
			if o.last != m.ID {
				// The rest of an earlier message: say whose it is.
				o.endLine()
				fmt.Fprintf(o.Out, "%s (continued):\n", m.Role)
			}
			o.write(m.ID, text[len(done):])
		}
	}
}

// toolLine is how a tool call is shown under its message.
func toolLine(t apiv1.ToolCall) string {
	s := "  [" + t.Tool
	if t.Title != "" {
		s += ": " + t.Title
	}
	return s + " (" + t.Status + ")]"
}

// openCodeEvent is the envelope of OpenCode's bus events: {"type": ..., "properties": {...}}.
type openCodeEvent struct {
	Type       string `json:"type"`
	Properties struct {
		SessionID string `json:"sessionID"`
		MessageID string `json:"messageID"`
		PartID    string `json:"partID"`
		Field     string `json:"field"`
		Delta     string `json:"delta"`
		Part      *struct {
			ID        string `json:"id"`
			MessageID string `json:"messageID"`
			Type      string `json:"type"`
		} `json:"part"`
		Info *struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"info"`
	} `json:"properties"`
}

// followRetry bounds the wait between two attempts to resume a dropped follow.
const followRetry = 5 * time.Second

// followIdle is how long a followed stream may be silent (keep-alives included).
var followIdle = 3 * apiv1.EventKeepAlive

// follow prints the conversation and then text deltas as OpenCode streams them. Each
// stream is opened before the conversation is read, so nothing falls between the two;
// when the stream drops it is opened again and the conversation read again (so
// nothing is missed), and messages read that way are completed from later reads (so
// nothing is repeated), until the session stops running or ctx ends.
func (o *SessionLogsOptions) follow(ctx context.Context, c *client.Client) error {
	wait := 500 * time.Millisecond
	resumed := false
	for {
		if resumed {
			// A dead connection may still look open (an agent gone behind a
			// port-forward): a new one, through the agent pod found afresh.
			o.Factory.Close()
			var err error
			if c, err = o.Factory.Agent(ctx); err != nil {
				if ctx.Err() != nil {
					return nil //nolint:nilerr // interrupted (Ctrl-C): a follow ends quietly
				}
				fmt.Fprintf(o.ErrOut, "# cannot reach the agent yet (%v); retrying...\n", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(followRetry):
				}
				continue
			}
		}
		stream, stop, err := o.openEvents(ctx, c)
		if err == nil {
			// Silence past a few keep-alives is a dead connection (an agent killed
			// behind a port-forward that never says so): resume.
			stream.SetIdleTimeout(followIdle)
			var msgs *apiv1.MessageList
			mctx, mcancel := context.WithTimeout(ctx, followConnect)
			msgs, err = c.Messages(mctx, o.ID)
			mcancel()
			if err == nil {
				o.catchUp(msgs.Items)
				if resumed {
					fmt.Fprintf(o.ErrOut, "# resumed following %s\n", sessionRef(o.ID))
				}
				wait = 500 * time.Millisecond
				err = o.stream(ctx, c, stream)
			}
			_ = stream.Close()
			stop()
		}
		if ctx.Err() != nil {
			o.endLine()
			return nil //nolint:nilerr // interrupted (Ctrl-C): a follow ends quietly
		}
		if isNotRunning(err) || client.IsNotFound(err) {
			// Print how it ended (or, never followed, what it said), from the record.
			if msgs, merr := c.Messages(ctx, o.ID); merr == nil {
				o.catchUp(msgs.Items)
			}
			o.endLine()
			if !resumed {
				return sessionError(err, "follow", o.ID)
			}
			return fmt.Errorf("follow %s: the session is no longer running", sessionRef(o.ID))
		}
		if !resumed || wait >= followRetry {
			fmt.Fprintf(o.ErrOut, "# lost the stream of %s (%v); resuming...\n", sessionRef(o.ID), err)
		}
		resumed = true
		select {
		case <-ctx.Done():
			o.endLine()
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, followRetry)
	}
}

// openEvents opens the session's event stream, giving up after followConnect when the
// agent does not answer (a request on a connection that died silently hangs).
// The returned stop ends the stream's request; call it once the stream is closed.
func (o *SessionLogsOptions) openEvents(ctx context.Context, c *client.Client) (stream *client.EventStream, stop func(), err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(followConnect, func() { cancel(errors.New("the agent did not answer within " + followConnect.String())) })
	stream, err = c.Events(ctx, o.ID)
	if !t.Stop() && err != nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		cancel(nil)
		return nil, nil, err
	}
	return stream, func() { cancel(nil) }, nil
}

// followConnect bounds opening a followed stream.
const followConnect = 30 * time.Second

// errStreamEnded is a stream the agent closed (the session stopped, or the agent went).
var errStreamEnded = errors.New("the agent ended the stream")

// stream prints one event stream until it ends.
func (o *SessionLogsOptions) stream(ctx context.Context, c *client.Client, stream *client.EventStream) error {
	for {
		ev, err := stream.Next()
		if errors.Is(err, io.EOF) {
			return errStreamEnded
		}
		if err != nil {
			return err
		}
		var e openCodeEvent
		if json.Unmarshal(ev.Data, &e) != nil {
			continue
		}
		typ := e.Type
		if typ == "" {
			typ = ev.Type
		}
		p := e.Properties
		switch {
		case typ == "message.part.updated" && p.Part != nil:
			if p.Part.Type != "text" {
				o.nonText[p.Part.ID] = true
			}
			if o.frozen[p.Part.MessageID] {
				o.snapshot(ctx, c) // a part of a frozen message ended: print it
			}
		case typ == "message.part.delta" && p.Delta != "" && (p.Field == "" || p.Field == "text"):
			if o.nonText[p.PartID] || p.MessageID == "" || o.frozen[p.MessageID] {
				continue
			}
			done, seen := o.printed[p.MessageID]
			if !seen {
				o.header(apiv1.Message{ID: p.MessageID, Role: "assistant", CreatedAt: time.Now()})
			} else if o.last != p.MessageID {
				o.endLine()
				fmt.Fprintln(o.Out, "assistant (continued):")
			}
			if prev := o.part[p.MessageID]; prev != "" && prev != p.PartID && done != "" {
				o.write(p.MessageID, "\n") // a new text part: Message.Text joins them so
			}
			o.part[p.MessageID] = p.PartID
			o.write(p.MessageID, p.Delta)
		case typ == "message.updated" && p.Info != nil && (p.Info.Role == "user" || o.frozen[p.Info.ID]):
			// A prompt (from anyone), or a frozen message changed: print it from the
			// conversation.
			o.snapshot(ctx, c)
		case typ == "session.idle":
			// The turn ended: every delta of it came before this, so the printed text
			// can be made exactly the conversation's.
			o.snapshot(ctx, c)
			o.endLine()
		}
	}
}

// snapshot reads the conversation and catches up with it (a failed read is left to
// the next one).
func (o *SessionLogsOptions) snapshot(ctx context.Context, c *client.Client) {
	ctx, cancel := context.WithTimeout(ctx, followConnect)
	defer cancel()
	if msgs, err := c.Messages(ctx, o.ID); err == nil {
		o.catchUp(msgs.Items)
	}
}

// writeMarkdown renders a transcript as Markdown.
func writeMarkdown(w io.Writer, id string, l *apiv1.MessageList) {
	fmt.Fprintf(w, "# Session %s\n", id)
	if l.Deleted != nil {
		fmt.Fprintf(w, "\n_Deleted at %s; recorded transcript._\n", l.Deleted.UTC().Format(time.RFC3339))
	}
	for _, m := range l.Items {
		fmt.Fprintf(w, "\n## %s", m.Role)
		if !m.CreatedAt.IsZero() {
			fmt.Fprintf(w, " · %s", m.CreatedAt.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		if text := strings.TrimSpace(m.Text); text != "" {
			fmt.Fprintf(w, "\n%s\n", text)
		}
		for _, t := range m.Tools {
			fmt.Fprintf(w, "\n**%s**", t.Tool)
			if t.Title != "" {
				fmt.Fprintf(w, ": %s", t.Title)
			}
			fmt.Fprintf(w, " (%s)\n", t.Status)
			if len(t.Input) > 0 {
				fmt.Fprintf(w, "\n%s\n", fence("json", string(t.Input)))
			}
			if out := strings.TrimRight(t.Output, "\n"); out != "" {
				fmt.Fprintf(w, "\n%s\n", fence("", out))
			}
		}
	}
}

// fence wraps s in a code fence longer than any run of backticks inside it.
func fence(lang, s string) string {
	n, run := 3, 0
	for _, r := range s {
		if r == '`' {
			run++
			n = max(n, run+1)
		} else {
			run = 0
		}
	}
	f := strings.Repeat("`", n)
	return f + lang + "\n" + s + "\n" + f
}
