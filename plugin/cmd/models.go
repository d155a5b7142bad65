package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/cakeai/cake-agents/pkg/client"
)

// ModelsOptions are the inputs of `models`.
type ModelsOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Output  string
}

// NewCmdModels returns `models`.
func NewCmdModels(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ModelsOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "models",
		Short: "List the models sessions may use",
		Long: `List the models of the model providers an admin configured, as the provider/model
ids "session create --model" takes. A gateway provider (LiteLLM) passes any model
name to the gateway; its line shows the default.`,
		Example: `  kubectl agents models
  kubectl agents session create --model acme/big --repo https://github.com/org/repo`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml (default: a table)")
	return cmd
}

// Validate checks -o.
func (o *ModelsOptions) Validate() error {
	return validateStructuredOutput(o.Output)
}

// Run lists the models.
func (o *ModelsOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	l, err := c.Models(ctx)
	if err != nil {
		return fmt.Errorf("list models: %w", err)
	}
	return printStructured(o.Out, o.Output, l, func() error {
		if len(l.Items) == 0 {
			fmt.Fprintln(o.ErrOut, "No models: no model provider is configured. An admin adds one with `kubectl agents providers set -f FILE`.")
			return nil
		}
		tw := printers.GetNewTabWriter(o.Out)
		fmt.Fprintln(tw, "MODEL\tNAME\tPROVIDER\tDEFAULT")
		for _, m := range l.Items {
			def := ""
			if m.Default {
				def = "*"
			}
			id := m.ID
			if m.AnyModel {
				id = m.Provider + "/<any>"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id, m.Name, dash(m.ProviderName), def)
		}
		return tw.Flush()
	})
}

// completeModels completes --model with the agent's models.
func completeModels(f *Factory) cobra.CompletionFunc {
	return completeFromAgent(f, func(ctx context.Context, c *client.Client) ([]candidate, error) {
		l, err := c.Models(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]candidate, 0, len(l.Items))
		for _, m := range l.Items {
			out = append(out, candidate{m.ID, m.Name})
		}
		return out, nil
	})
}
