package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

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
		Short: "Print the plugin and agent versions",
		Long: `Print the version of this plugin and of the agent it reaches, and warn when they
are more than one minor version apart. --client prints only the plugin's and needs
no cluster.`,
		Example: `  kubectl agents version
  kubectl agents version --client
  kubectl agents version -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().BoolVar(&o.ClientOnly, "client", false, "Print only the plugin's version (no agent needed)")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "Output format: json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Validate checks -o.
func (o *VersionOptions) Validate() error {
	if o.Output != "" && o.Output != "json" && o.Output != "yaml" {
		return fmt.Errorf("--output %q is not supported: use json or yaml", o.Output)
	}
	return nil
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
		}
		return nil
	})
	if err != nil {
		return err
	}
	if out.Agent != nil {
		if w := skewWarning(out.Client.Version, out.Agent.Version); w != "" {
			fmt.Fprintln(o.ErrOut, "WARNING: "+w)
		}
	}
	return nil
}

// skewWarning returns a warning when plugin and agent versions are more than one minor
// version apart (or differ in major), the range the v1 API promises to keep working;
// unparsable versions (dev builds) are not compared.
func skewWarning(pluginVersion, agentVersion string) string {
	pMaj, pMin, ok1 := majorMinor(pluginVersion)
	aMaj, aMin, ok2 := majorMinor(agentVersion)
	if !ok1 || !ok2 {
		return ""
	}
	d := pMin - aMin
	if d < 0 {
		d = -d
	}
	if pMaj == aMaj && d <= 1 {
		return ""
	}
	fix := "upgrade the plugin (kubectl krew upgrade agents)"
	if pMaj > aMaj || pMaj == aMaj && pMin > aMin {
		fix = "ask your platform team to upgrade the agent, or install a matching plugin"
	}
	return fmt.Sprintf("the plugin (%s) and the agent (%s) are more than one minor version apart; some commands may fail: %s", pluginVersion, agentVersion, fix)
}

func majorMinor(v string) (int, int, bool) {
	v = strings.TrimPrefix(v, "v")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return major, minor, true
}
