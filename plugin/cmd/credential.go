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
		Long: `Your sessions clone and push private repositories with credentials you add here, one
of each kind per repository host (github.com, git.example.com:8443):

  token  an HTTPS access token, for https:// repositories. git in the session asks a
         credential helper that reads it from the session's Secret, so it is not in the
         repository URL, the pod spec or any process's arguments. For github.com the
         GitHub CLI (gh) in the session is signed in with it too.
  ssh    an SSH private key (a deploy key) with the host's public key, for ssh:// and
         git@host:org/repo repositories. The session's ssh uses only that key and trusts
         only that host key: it never accepts a host key it was not given.

The agent stores them encrypted, never shows the secret again, and gives them only to
your own sessions. A session picks up the credential of its repository's host when it
starts; one added or removed later applies from the session's next start.`,
		Example: `  # A fine-grained GitHub token, typed or pasted on standard input
  kubectl agents credential add github.com

  # From a file, with the user name a server wants
  kubectl agents credential add git.example.com --username jane --token-file ~/.git-token

  # A deploy key for git@git.example.com:org/repo.git, with the host's key
  ssh-keygen -t ed25519 -N '' -f deploy_key
  ssh-keyscan git.example.com > known_hosts   # check: ssh-keygen -lf known_hosts
  kubectl agents credential add git.example.com --ssh-key-file deploy_key --known-hosts known_hosts

  kubectl agents credential list
  kubectl agents credential remove git.example.com`,
		Args: cobra.ArbitraryArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(NewCmdCredentialAdd(f, streams), NewCmdCredentialList(f, streams), NewCmdCredentialRemove(f, streams))
	return cmd
}

// credentialHost takes a host, or the host of a repository URL (https://, ssh:// or
// git@host:path), as the credential's key.
func credentialHost(arg string) (string, error) {
	host := strings.ToLower(strings.TrimSpace(arg))
	if h := apiv1.RepoSSHHost(host); h != "" {
		return h, apiv1.ValidateCredentialHost(h)
	}
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil || u.Scheme != "https" {
			return "", fmt.Errorf("%q: credentials serve https://, ssh:// and git@host:path repositories; give the host, as in github.com", arg)
		}
		host = u.Host
	}
	return host, apiv1.ValidateCredentialHost(host)
}

// maxSSHFile bounds what --ssh-key-file and --known-hosts read: a key or a host's
// few lines, not a file someone mistook for one.
const maxSSHFile = 64 << 10

// readSmallFile reads a file of at most maxSSHFile bytes for flag.
func readSmallFile(flag, path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	defer func() { _ = fh.Close() }()
	b, err := io.ReadAll(io.LimitReader(fh, maxSSHFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if len(b) > maxSSHFile {
		return "", fmt.Errorf("%s %s is larger than %d bytes", flag, path, maxSSHFile)
	}
	return string(b), nil
}

// CredentialAddOptions are the inputs of `credential add`.
type CredentialAddOptions struct {
	genericiooptions.IOStreams
	Factory *Factory

	Host      string
	Username  string
	TokenFile string
	// SSHKeyFile and KnownHostsFile make the credential an SSH key: the private key
	// and the host's known_hosts lines.
	SSHKeyFile     string
	KnownHostsFile string
	// token is read in Complete, from TokenFile or standard input: never from a flag,
	// which every process on the machine can read in ps. privateKey and knownHosts are
	// read from their files.
	token, privateKey, knownHosts string
}

// NewCmdCredentialAdd returns `credential add`.
func NewCmdCredentialAdd(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialAddOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "add HOST [--username NAME] [--token-file FILE] | add HOST --ssh-key-file KEY --known-hosts FILE",
		Short: "Store (or replace) your access token or SSH key for a repository host",
		Long: `Store your HTTPS access token for HOST (as in the repository URL: github.com,
git.example.com:8443; a URL's host is taken too), replacing the one stored before. The
token is read from --token-file, else from standard input (one line); there is no flag
for the token itself, because arguments are visible to everyone in ps.

The token is sent as the password of HTTP basic authentication with --username (default
x-access-token, which GitHub and most servers accept with any token). Give it
repository contents read and write access if sessions should push.

With --ssh-key-file, store an SSH key instead, for ssh://HOST/... and git@HOST:...
repositories (HOST takes the port of an ssh:// URL when it is not 22, as in
git.example.com:2222). The key must have no passphrase (a session cannot type one): make
a deploy key for the purpose and add its .pub at the host, with write access if sessions
should push. --known-hosts is required: the host's public key as known_hosts lines, as
ssh-keyscan prints them. Check its fingerprint (ssh-keygen -lf FILE) against the one
the host publishes; sessions trust that key and no other (there is no "accept any host
key"). Lines for other hosts in the file are ignored.`,
		Example: `  kubectl agents credential add github.com
  kubectl agents credential add git.example.com:8443 --username jane --token-file token.txt
  pass show git/example | kubectl agents credential add git.example.com

  # An SSH deploy key
  ssh-keygen -t ed25519 -N '' -C cake-agents -f deploy_key
  ssh-keyscan -p 2222 git.example.com > known_hosts
  kubectl agents credential add git.example.com:2222 --ssh-key-file deploy_key --known-hosts known_hosts`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Username, "username", "", "User name sent with the token (default: "+apiv1.DefaultCredentialUsername+")")
	cmd.Flags().StringVar(&o.TokenFile, "token-file", "", `File holding the token ("-" for standard input, the default)`)
	cmd.Flags().StringVar(&o.SSHKeyFile, "ssh-key-file", "", "Store an SSH key instead of a token: its private key file (OpenSSH or PEM, without passphrase)")
	cmd.Flags().StringVar(&o.KnownHostsFile, "known-hosts", "", "With --ssh-key-file: a known_hosts file with the host's key (as ssh-keyscan prints it); required")
	return cmd
}

// Complete takes the host and reads the token, or the SSH key and known_hosts files.
func (o *CredentialAddOptions) Complete(_ *cobra.Command, args []string) error {
	o.Host = args[0]
	if o.SSHKeyFile != "" || o.KnownHostsFile != "" {
		switch {
		case o.SSHKeyFile == "":
			return errors.New("--known-hosts goes with --ssh-key-file: give the SSH private key too")
		case o.KnownHostsFile == "":
			return errors.New("--known-hosts is required with --ssh-key-file: give the host's key as `ssh-keyscan HOST` prints it (check its fingerprint with ssh-keygen -lf); sessions never accept a host key they were not given")
		case o.TokenFile != "" || o.Username != "":
			return errors.New("--token-file and --username are for tokens: an SSH key takes --ssh-key-file and --known-hosts only")
		}
		var err error
		if o.privateKey, err = readSmallFile("--ssh-key-file", o.SSHKeyFile); err != nil {
			return err
		}
		o.knownHosts, err = readSmallFile("--known-hosts", o.KnownHostsFile)
		return err
	}
	switch o.TokenFile {
	case "", "-":
		if o.In == nil {
			return errors.New("no token: pass --token-file or give it on standard input")
		}
		tok, ok := askSecret(o.IOStreams, "Token for "+strings.TrimSpace(o.Host)+": ")
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
	if o.SSHKeyFile != "" {
		if strings.TrimSpace(o.privateKey) == "" {
			return fmt.Errorf("--ssh-key-file %s is empty", o.SSHKeyFile)
		}
		return nil
	}
	if o.token == "" {
		return errors.New("the token is empty: give it on standard input or in --token-file")
	}
	return nil
}

// Run stores the token or the SSH key.
func (o *CredentialAddOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	req := apiv1.PutCredentialRequest{Token: o.token, Username: o.Username}
	if o.SSHKeyFile != "" {
		req = apiv1.PutCredentialRequest{Kind: apiv1.CredentialKindSSH, PrivateKey: o.privateKey, KnownHosts: o.knownHosts}
	}
	cred, err := c.PutCredential(ctx, o.Host, req)
	if err != nil {
		return fmt.Errorf("add credential for %s: %w", o.Host, err)
	}
	if cred.Kind == apiv1.CredentialKindSSH {
		// The public key on stdout, to paste at the host (or pipe into a clipboard).
		fmt.Fprintf(o.ErrOut, "Stored an SSH key for %s (%s). Sessions on ssh://%s/... and git@%s:... use it from their next start. Add its public key at the host as a deploy key of the repositories (with write access to push):\n", cred.Host, cred.Fingerprint, cred.Host, strings.Split(cred.Host, ":")[0])
		fmt.Fprintln(o.Out, cred.PublicKey)
		return nil
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
	// Kind limits the removal to one kind (token or ssh); empty removes both.
	Kind string
}

// NewCmdCredentialRemove returns `credential remove`.
func NewCmdCredentialRemove(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &CredentialRemoveOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:     "remove HOST...",
		Aliases: []string{"rm", "delete"},
		Short:   "Remove your git credentials for hosts",
		Long: `Remove your stored credentials for the hosts: both the token and the SSH key, or
only the --kind given. Running sessions keep the one they started with until they stop;
revoke the token or remove the deploy key at its host to cut it off at once.`,
		Example: `  kubectl agents credential remove github.com
  kubectl agents credential remove git.example.com --kind ssh`,
		Args: cobra.MinimumNArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Kind, "kind", "", "Remove only this kind: token or ssh (default: both)")
	_ = cmd.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions([]string{apiv1.CredentialKindToken, apiv1.CredentialKindSSH}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete takes the hosts.
func (o *CredentialRemoveOptions) Complete(_ *cobra.Command, args []string) error {
	o.Hosts = args
	return nil
}

// Validate checks the kind and every host before any is removed.
func (o *CredentialRemoveOptions) Validate() error {
	switch o.Kind {
	case "", apiv1.CredentialKindToken, apiv1.CredentialKindSSH:
	default:
		return fmt.Errorf("--kind %q: use token or ssh, or leave it out to remove both", o.Kind)
	}
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
		if err := c.DeleteCredential(ctx, h, o.Kind); err != nil {
			errs = append(errs, fmt.Errorf("remove credential for %s: %w", h, err))
			continue
		}
		what := "credential"
		switch o.Kind {
		case apiv1.CredentialKindToken:
			what = "token"
		case apiv1.CredentialKindSSH:
			what = "SSH key"
		}
		fmt.Fprintf(o.Out, "%s for %s removed\n", what, h)
	}
	return errors.Join(errs...)
}
