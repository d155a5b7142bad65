package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewCmdProviders returns `providers` and its subcommands.
func NewCmdProviders(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "providers",
		Short: "Show or replace the model providers sessions use (admins)",
		Long: `Model providers are OpenCode's provider JSON, managed by admins in the agent:
{"<id>": {"npm": ..., "name": ..., "options": {"baseURL", "apiKey", "headers"},
"models": {...}}}. Secret values (options.apiKey, header values and any field
named like a credential, such as token or clientSecret, a model's included) are
stored encrypted and never shown: "get" prints %%SECRET%% in their place, and a
file that keeps %%SECRET%% keeps the stored value when "set".`,
		Example: `  kubectl agents providers get > providers.json
  # edit providers.json, then
  kubectl agents providers set -f providers.json`,
	}
	cmd.AddCommand(newCmdProvidersGet(f, streams), newCmdProvidersSet(f, streams))
	return cmd
}

// ProvidersGetOptions are the inputs of `providers get`.
type ProvidersGetOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
}

func newCmdProvidersGet(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ProvidersGetOptions{IOStreams: streams, Factory: f}
	return &cobra.Command{
		Use:     "get",
		Short:   "Print the model providers (secrets as %%SECRET%%)",
		Long:    `Print the model providers as JSON, every secret value replaced by %%SECRET%%.`,
		Example: `  kubectl agents providers get > providers.json`,
		Args:    cobra.NoArgs,
		RunE:    runOptions(o),
	}
}

// Run prints the providers.
func (o *ProvidersGetOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	raw, err := c.Providers(ctx)
	if err != nil {
		return fmt.Errorf("get the model providers: %w", err)
	}
	return printJSON(o.Out, raw)
}

// ProvidersSetOptions are the inputs of `providers set`.
type ProvidersSetOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	File    string
	body    []byte
}

func newCmdProvidersSet(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &ProvidersSetOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "set -f FILE",
		Short: "Replace the model providers with a JSON file",
		Long: `Replace every model provider with the JSON object in FILE ("-" reads stdin).
Providers the file leaves out are removed; %%SECRET%% keeps a stored secret. The
agent checks the file and names each wrong field.`,
		Example: `  kubectl agents providers set -f providers.json
  kubectl agents providers get | jq '.acme.models.new = {"name": "New"}' | kubectl agents providers set -f -`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().StringVarP(&o.File, "filename", "f", "", "JSON file of providers (\"-\" for stdin)")
	_ = cmd.MarkFlagFilename("filename", "json")
	return cmd
}

// Complete reads the file.
func (o *ProvidersSetOptions) Complete(_ *cobra.Command, _ []string) error {
	if o.File == "" {
		return errors.New("--filename (-f) is required: the JSON file of providers (\"-\" for stdin)")
	}
	var err error
	if o.File == "-" {
		o.body, err = io.ReadAll(o.In)
	} else {
		o.body, err = os.ReadFile(o.File)
	}
	if err != nil {
		return fmt.Errorf("read --filename: %w", err)
	}
	return nil
}

// Validate checks the file is a JSON object (the agent checks the rest).
func (o *ProvidersSetOptions) Validate() error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(o.body, &m); err != nil {
		return fmt.Errorf("%s is not a JSON object of providers by id: %w", o.File, err)
	}
	return nil
}

// Run replaces the providers and reports what is stored.
func (o *ProvidersSetOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	if _, err := c.PutProviders(ctx, json.RawMessage(o.body)); err != nil {
		return fmt.Errorf("set the model providers: %w", err)
	}
	l, err := c.Models(ctx)
	if err != nil {
		return fmt.Errorf("list models: %w", err)
	}
	fmt.Fprintf(o.ErrOut, "model providers updated; %d models available (kubectl agents models)\n", len(l.Items))
	return nil
}

func printJSON(out io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := out.Write(buf.Bytes())
	return err
}
