package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/version"
)

// VersionOptions are the inputs of `version`.
type VersionOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	ClientOnly bool
	Output     string
}

// versionOutput is what -o json|yaml prints.
type versionOutput struct {
	Client version.Info       `json:"client"`
	Agent  *apiv1.VersionInfo `json:"agent,omitempty"`
}

// NewCmdVersion returns `version`.
func NewCmdVersion(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &VersionOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin, agent and chart versions",
		Long: `Print the version of this plugin, of the agent it reaches and of the chart the agent
was installed with. When plugin and agent are outside the agent's supported window (the
same major version, at most one minor version apart), every command prints one line
saying which to upgrade. --client prints only the plugin's and needs no cluster.`,
		Example: `  kubectl agents version
  kubectl agents version --client
  kubectl agents version -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "Print only the plugin's version (no agent needed)")
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml")
	return cmd
}

// Validate checks -o.
func (o *VersionOptions) Validate() error {
	return validateStructuredOutput(o.Output)
}

// Run prints the versions.
func (o *VersionOptions) Run(ctx context.Context) error {
	out := versionOutput{Client: version.Get()}
	if !o.ClientOnly {
		c, err := o.Factory.Agent(ctx)
		if err != nil {
			return fmt.Errorf("%w (use --client for the plugin's version alone)", err)
		}
		if out.Agent, err = c.Version(ctx); err != nil {
			return fmt.Errorf("ask the agent for its version: %w", err)
		}
	}
	err := printStructured(o.Out, o.Output, out, func() error {
		fmt.Fprintf(o.Out, "Client Version: %s\n", out.Client)
		if out.Agent != nil {
			fmt.Fprintf(o.Out, "Agent Version: %s (commit %s, built %s, %s, %s)\n", out.Agent.Version, out.Agent.Commit, out.Agent.Date, out.Agent.GoVersion, out.Agent.Platform)
			if out.Agent.ChartVersion != "" {
				fmt.Fprintf(o.Out, "Chart Version: %s\n", out.Agent.ChartVersion)
			}
		}
		return nil
	})
	// A plugin outside the agent's supported window has had the agent's one-line warning
	// printed already (see clientOptions).
	return err
}
