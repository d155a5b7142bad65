package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// AuditOptions are the inputs of `audit`.
type AuditOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags
	Actor      string
	Target     string
	Limit      int
}

// NewCmdAudit returns `audit`.
func NewCmdAudit(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &AuditOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), Limit: 50}
	cmd := &cobra.Command{
		Use:   "audit [--actor USER] [--target ID] [--limit N]",
		Short: "Print the agent's audit log, newest first (admins)",
		Long: `Print what was done through the agent, newest first: every state-changing call
and every denial, with who did it (ACTOR), to what (TARGET: a session, token or
credential), how it ended (OUTCOME: success, denied or error) and why. Admins only.`,
		Example: `  # The last 50 events
  kubectl agents audit

  # Everything done to one session, with request ids
  kubectl agents audit --target SESSION -o wide --limit 0

  # What one user did, as JSON
  kubectl agents audit --actor jane@example.com -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Actor, "actor", "", "Only events of this actor, as the ACTOR column shows it (an email or a Kubernetes user name)")
	fl.StringVar(&o.Target, "target", "", "Only events on this target (a session id, token id or credential host)")
	fl.IntVar(&o.Limit, "limit", o.Limit, "How many events at most (0: all)")
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Validate checks the flags.
func (o *AuditOptions) Validate() error {
	if o.Limit < 0 {
		return errors.New("--limit must be 0 (all) or more")
	}
	return o.PrintFlags.Validate()
}

// auditPage is how many events one request asks for (the agent's maximum).
const auditPage = 1000

// Run reads the events page by page up to --limit and prints them.
func (o *AuditOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	var events []apiv1.AuditEvent
	q := client.AuditQuery{Actor: strings.TrimSpace(o.Actor), Target: strings.TrimSpace(o.Target)}
	for {
		q.Limit = auditPage
		if o.Limit > 0 {
			q.Limit = min(auditPage, o.Limit-len(events))
		}
		page, err := c.Audit(ctx, q)
		if err != nil {
			return fmt.Errorf("read the audit log: %w", err)
		}
		events = append(events, page.Items...)
		if page.Continue == "" || (o.Limit > 0 && len(events) >= o.Limit) {
			break
		}
		q.Continue = page.Continue
	}
	if len(events) == 0 && (o.PrintFlags.IsDefault() || o.PrintFlags.format() == "wide") {
		fmt.Fprintln(o.ErrOut, "No audit events found.")
		return nil
	}
	return o.PrintFlags.PrintAudit(o.Out, events)
}

// Audit events print as objects of the virtual kind AuditEvent named by their id.
const (
	auditKind     = "AuditEvent"
	auditListKind = "AuditEventList"
)

func auditObject(e apiv1.AuditEvent) (*unstructured.Unstructured, error) {
	return wireObject(e, auditKind, strconv.FormatInt(e.ID, 10), e.Time)
}

// PrintAudit writes audit events to out in the chosen format.
func (f *PrintFlags) PrintAudit(out io.Writer, events []apiv1.AuditEvent) error {
	objs, err := wireObjects(events, auditObject)
	if err != nil {
		return err
	}
	return f.printObjects(out, objs, auditListKind, true, func(w io.Writer, wide bool) error {
		tw := printers.GetNewTabWriter(w)
		if !f.NoHeaders {
			header := "AGE\tACTOR\tACTION\tTARGET\tOUTCOME\tDETAIL"
			if wide {
				header = "TIME\tACTOR\tACTION\tTARGET\tOUTCOME\tREQUEST ID\tDETAIL"
			}
			fmt.Fprintln(tw, header)
		}
		for _, e := range events {
			detail := strings.Join(strings.Fields(e.Detail), " ") // one line per event
			cells := []string{f.age(e.Time), e.Actor, e.Action, dash(e.Target), e.Outcome, dash(truncateCell(detail, 60))}
			if wide {
				cells = []string{e.Time.UTC().Format("2006-01-02T15:04:05Z"), e.Actor, e.Action, dash(e.Target), e.Outcome, dash(e.RequestID), dash(detail)}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		return tw.Flush()
	})
}
