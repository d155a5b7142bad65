package cmd

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// WhoAmIOptions are the inputs of `whoami`.
type WhoAmIOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Output  string
}

// NewCmdWhoAmI returns `whoami`.
func NewCmdWhoAmI(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &WhoAmIOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the agent thinks you are and what you may do",
		Long: `Show the identity the agent recognised (from your kubeconfig, a personal token or
an authenticating proxy) and, for each verb on sessions.agents.cake.ai, whether you
may use it.`,
		Example: `  kubectl agents whoami
  kubectl agents whoami -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml (default: readable text)")
	return cmd
}

// Validate checks -o.
func (o *WhoAmIOptions) Validate() error {
	return validateStructuredOutput(o.Output)
}

// Run asks the agent and prints the answer.
func (o *WhoAmIOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	w, err := c.WhoAmI(ctx)
	if err != nil {
		return fmt.Errorf("ask the agent who you are: %w", err)
	}
	return printStructured(o.Out, o.Output, w, func() error { return printWhoAmI(o.Out, w) })
}

func printWhoAmI(out interface{ Write([]byte) (int, error) }, w *apiv1.WhoAmI) error {
	tw := printers.GetNewTabWriter(out)
	fmt.Fprintf(tw, "User:\t%s\n", displayUser(w.User.Email, w.User.DisplayName, w.User.Subject))
	fmt.Fprintf(tw, "User ID:\t%s\n", dash(w.User.ID))
	fmt.Fprintf(tw, "Authenticated by:\t%s\n", dash(w.Authenticator))
	fmt.Fprintf(tw, "Username:\t%s\n", dash(w.Username))
	fmt.Fprintf(tw, "Groups:\t%s\n", dash(strings.Join(w.Groups, ", ")))
	fmt.Fprintf(tw, "Admin:\t%t\n", w.User.Admin)
	fmt.Fprintf(tw, "Permissions on %s.%s:\n", apiv1.Resource, apiv1.Group)
	verbs := make([]string, 0, len(w.Permissions))
	for v := range w.Permissions {
		verbs = append(verbs, v)
	}
	sort.Strings(verbs)
	for _, v := range verbs {
		ok := "no"
		if w.Permissions[v] {
			ok = "yes"
		}
		fmt.Fprintf(tw, "  %s\t%s\n", v, ok)
	}
	return tw.Flush()
}
