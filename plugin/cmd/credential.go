package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// maxTokenFile bounds what --token-file reads: a token, not a file someone mistook for one.
const maxTokenFile = 64 << 10

// NewCmdCredential groups the git credential commands.
func NewCmdCredential(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "credential",
		Aliases: []string{"credentials", "cred"},
		Short:   "Add, list and remove your git credentials for private repositories",
		Long: `Your sessions clone and push private repositories over HTTPS with an access token you
add here, one per repository host (github.com, git.example.com:8443). The agent stores it
encrypted, never shows it again, and gives it only to your own sessions: git in the
session asks a credential helper that reads it from the session's Secret, so it is not in
the repository URL, the pod spec or any process's arguments. For github.com the GitHub
CLI (gh) in the session is signed in with it too.

A session picks up the credential of its repository's host when it starts; one added
or removed later applies from the session's next start.`,
		Example: `  # A fine-grained GitHub token, typed or pasted on standard input
  kubectl agents credential add github.com

  # From a file, with the user name a server wants
  kubectl agents credential add git.example.com --username jane --token-file ~/.git-token

  kubectl agents credential list
  kubectl agents credential remove git.example.com`,
		Args: cobra.ArbitraryArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(NewCmdCredentialAdd(f, streams), NewCmdCredentialList(f, streams), NewCmdCredentialRemove(f, streams))
	return cmd
}

// credentialHost takes a host, or the host of a repository URL, as the credential's key.
func credentialHost(arg string) (string, error) {
	host := strings.ToLower(strings.TrimSpace(arg))
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil || u.Scheme != "https" {
			return "", fmt.Errorf("%q: credentials serve https:// repositories; give the host, as in github.com", arg)
		}
		host = u.Host
	}
	return host, apiv1.ValidateCredentialHost(host)
}

// CredentialAddOptions are the inputs of `credential add`.
type CredentialAddOptions struct {
	genericiooptions.IOStreams
	Factory *Factory

	Host      string
	Username  string
	TokenFile string
	// token is read in Complete, from TokenFile or standard input: never from a flag,
	// which every process on the machine can read in ps.
	token string
}

// NewCmdCredentialAdd returns `credential add`.
func NewCmdCredentialAdd(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialAddOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "add HOST [--username NAME] [--token-file FILE]",
		Short: "Store (or replace) your access token for a repository host",
		Long: `Store your HTTPS access token for HOST (as in the repository URL: github.com,
git.example.com:8443; a URL's host is taken too), replacing the one stored before. The
token is read from --token-file, else from standard input (one line); there is no flag
for the token itself, because arguments are visible to everyone in ps.

The token is sent as the password of HTTP basic authentication with --username (default
x-access-token, which GitHub and most servers accept with any token). Give it
repository contents read and write access if sessions should push.`,
		Example: `  kubectl agents credential add github.com
  kubectl agents credential add git.example.com:8443 --username jane --token-file token.txt
  pass show git/example | kubectl agents credential add git.example.com`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Username, "username", "", "User name sent with the token (default: "+apiv1.DefaultCredentialUsername+")")
	cmd.Flags().StringVar(&o.TokenFile, "token-file", "", `File holding the token ("-" for standard input, the default)`)
	return cmd
}

// Complete takes the host and reads the token.
func (o *CredentialAddOptions) Complete(_ *cobra.Command, args []string) error {
	o.Host = args[0]
	switch o.TokenFile {
	case "", "-":
		if o.In == nil {
			return errors.New("no token: pass --token-file or give it on standard input")
		}
		tok, ok := ask(o.IOStreams, "Token for "+strings.TrimSpace(o.Host)+": ")
		if !ok {
			return errors.New("no token on standard input: type or pipe it, or pass --token-file")
		}
		o.token = tok
	default:
		fh, err := os.Open(o.TokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		defer func() { _ = fh.Close() }()
		b, err := io.ReadAll(io.LimitReader(fh, maxTokenFile+1))
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if len(b) > maxTokenFile {
			return fmt.Errorf("--token-file %s is larger than %d bytes: it should hold only the token", o.TokenFile, maxTokenFile)
		}
		o.token = strings.TrimSpace(string(b))
	}
	return nil
}

// Validate checks the host and that a token was read.
func (o *CredentialAddOptions) Validate() error {
	host, err := credentialHost(o.Host)
	if err != nil {
		return err
	}
	o.Host = host
	if o.token == "" {
		return errors.New("the token is empty: give it on standard input or in --token-file")
	}
	return nil
}

// Run stores the token.
func (o *CredentialAddOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	cred, err := c.PutCredential(ctx, o.Host, apiv1.PutCredentialRequest{Token: o.token, Username: o.Username})
	if err != nil {
		return fmt.Errorf("add credential for %s: %w", o.Host, err)
	}
	fmt.Fprintf(o.ErrOut, "Stored a %s for %s (user %s). Sessions on https://%s/... use it from their next start.\n", cred.Kind, cred.Host, cred.Username, cred.Host)
	return nil
}

// CredentialListOptions are the inputs of `credential list`.
type CredentialListOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags
}

// NewCmdCredentialList returns `credential list`.
func NewCmdCredentialList(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List your git credentials (never their secrets)",
		Example: `  kubectl agents credential list
  kubectl agents credential list -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Validate checks -o.
func (o *CredentialListOptions) Validate() error { return o.PrintFlags.Validate() }

// Run lists and prints.
func (o *CredentialListOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	l, err := c.ListCredentials(ctx)
	if err != nil {
		return fmt.Errorf("list credentials: %w", err)
	}
	if len(l.Items) == 0 && (o.PrintFlags.IsDefault() || o.PrintFlags.format() == "wide") {
		fmt.Fprintln(o.ErrOut, `No credentials found: add one with "kubectl agents credential add HOST".`)
		return nil
	}
	return o.PrintFlags.PrintCredentials(o.Out, l.Items)
}

// CredentialRemoveOptions are the inputs of `credential remove`.
type CredentialRemoveOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Hosts   []string
}

// NewCmdCredentialRemove returns `credential remove`.
func NewCmdCredentialRemove(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialRemoveOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:     "remove HOST...",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove your git credentials for hosts",
		Long: `Remove your stored credentials for the hosts. Running sessions keep the one they
started with until they stop; revoke the token at its host to cut it off at once.`,
		Example: `  kubectl agents credential remove github.com`,
		Args:    cobra.MinimumNArgs(1),
		RunE:    runOptions(o),
	}
	return cmd
}

// Complete takes the hosts.
func (o *CredentialRemoveOptions) Complete(_ *cobra.Command, args []string) error {
	o.Hosts = args
	return nil
}

// Validate checks every host before any is removed.
func (o *CredentialRemoveOptions) Validate() error {
	for i, h := range o.Hosts {
		host, err := credentialHost(h)
		if err != nil {
			return err
		}
		o.Hosts[i] = host
	}
	return nil
}

// Run removes them, going on past a failure and reporting every one.
func (o *CredentialRemoveOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range o.Hosts {
		if err := c.DeleteCredential(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("remove credential for %s: %w", h, err))
			continue
		}
		fmt.Fprintf(o.Out, "credential for %s removed\n", h)
	}
	return errors.Join(errs...)
}
