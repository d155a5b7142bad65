package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// NewCmdToken groups the personal access token commands.
func NewCmdToken(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Create, list and revoke personal access tokens",
		Long: `Personal access tokens (cka_...) let scripts, CI and "kubectl agents login --server"
reach the agent as you without your kubeconfig. The agent keeps only their hash.

Every token expires: after 30 days unless you ask for less or more (up to the agent's
maximum, 90 days unless configured). A token created while signed in with a token
never outlives it. A token acts with the groups of your latest sign-in, and stops
working as soon as RBAC no longer lets you get sessions.agents.cake.ai. Admins can
revoke every token of a user at once.`,
		Example: `  kubectl agents token create laptop
  kubectl agents token list
  kubectl agents token revoke TOKEN_ID`,
		Args: cobra.ArbitraryArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(NewCmdTokenCreate(f, streams), NewCmdTokenList(f, streams), NewCmdTokenRevoke(f, streams))
	return cmd
}

// TokenCreateOptions are the inputs of `token create`.
type TokenCreateOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags

	Name      string
	ExpiresIn time.Duration
}

// NewCmdTokenCreate returns `token create`.
func NewCmdTokenCreate(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TokenCreateOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	cmd := &cobra.Command{
		Use:   "create NAME [--expires-in DURATION]",
		Short: "Create a personal access token and print it once",
		Long: `Create a personal access token named NAME (say where it is used: "laptop", "ci")
and print its secret on standard output, once: the agent keeps only its hash. Without
--expires-in it expires after the agent's default (30 days unless configured); more
than the agent's maximum is refused with the limit.`,
		Example: `  # A token for this laptop, with the default lifetime
  kubectl agents token create laptop

  # A week-long token for CI, saved to a file
  kubectl agents token create ci --expires-in 168h > ci-token.txt

  # Use it behind the ingress
  kubectl agents login --server https://agents.example.com < ci-token.txt`,
		Args: cobra.ExactArgs(1),
		RunE: runOptions(o),
	}
	cmd.Flags().DurationVar(&o.ExpiresIn, "expires-in", 0, "Lifetime of the token, e.g. 24h or 168h (default: the agent's, 30 days unless configured)")
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Complete takes the name from the arguments.
func (o *TokenCreateOptions) Complete(_ *cobra.Command, args []string) error {
	o.Name = args[0]
	return nil
}

// Validate checks the name and lifetime before anything is sent.
func (o *TokenCreateOptions) Validate() error {
	switch {
	case strings.TrimSpace(o.Name) == "":
		return errors.New("the token needs a name that says where it is used, e.g. laptop")
	case o.ExpiresIn < 0:
		return fmt.Errorf("--expires-in %s is negative: every token expires; give a lifetime such as 24h", o.ExpiresIn)
	case o.ExpiresIn > 0 && o.ExpiresIn < time.Minute:
		return fmt.Errorf("--expires-in %s is shorter than the minimum of 1m", o.ExpiresIn)
	}
	return o.PrintFlags.Validate()
}

// Run creates the token and prints the secret (or the whole token with -o).
func (o *TokenCreateOptions) Run(ctx context.Context) error {
	req := apiv1.CreateTokenRequest{Name: strings.TrimSpace(o.Name)}
	if o.ExpiresIn > 0 {
		req.ExpiresIn = &apiv1.Duration{Duration: o.ExpiresIn}
	}
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	t, err := c.CreateToken(ctx, req)
	if err != nil {
		return fmt.Errorf("create token %q: %w", req.Name, err)
	}
	if !o.PrintFlags.IsDefault() && o.PrintFlags.format() != "wide" {
		return o.PrintFlags.PrintTokens(o.Out, []apiv1.Token{*t}, false)
	}
	expires := "<none>"
	if t.ExpiresAt != nil {
		expires = t.ExpiresAt.UTC().Format(time.RFC3339) + " (in " + duration.HumanDuration(t.ExpiresAt.Sub(o.PrintFlags.now())) + ")"
	}
	fmt.Fprintf(o.ErrOut, "Created %s %q, expiring %s. This is the only time it is shown:\n", tokenRef(t.ID), t.Name, expires)
	fmt.Fprintln(o.Out, t.Token)
	return nil
}

// TokenListOptions are the inputs of `token list`.
type TokenListOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags
	// Owner, for admins, lists another user's tokens (id, Kubernetes user name or email).
	// Not --user: that is kubectl's kubeconfig user flag.
	Owner string
}

// NewCmdTokenList returns `token list`.
func NewCmdTokenList(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TokenListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List personal access tokens (never their secrets)",
		Long: `List your personal access tokens: id, name, when they expire and were last used.
Admins list another user's with --owner (their id, Kubernetes user name or email; a
person may be both a proxy user and a Kubernetes user, and both are listed).`,
		Example: `  kubectl agents token list
  kubectl agents token list -o wide
  kubectl agents token list --owner jane@example.com
  kubectl agents token list -o jsonpath='{.items[*].metadata.name}'`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Owner, "owner", "", `List this user's tokens instead of yours ("me" for yours; others: admins only)`)
	_ = cmd.RegisterFlagCompletionFunc("owner", cobra.FixedCompletions([]string{"me"}, cobra.ShellCompDirectiveNoFileComp))
	o.PrintFlags.AddFlags(cmd)
	return cmd
}

// Validate checks -o.
func (o *TokenListOptions) Validate() error { return o.PrintFlags.Validate() }

// Run lists and prints.
func (o *TokenListOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	l, err := c.ListTokens(ctx, strings.TrimSpace(o.Owner))
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	if len(l.Items) == 0 && (o.PrintFlags.IsDefault() || o.PrintFlags.format() == "wide") {
		fmt.Fprintln(o.ErrOut, "No tokens found.")
		return nil
	}
	return o.PrintFlags.PrintTokens(o.Out, l.Items, true)
}

// TokenRevokeOptions are the inputs of `token revoke`.
type TokenRevokeOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	IDs     []string
	// AllOf revokes every token of a user (admins; anyone for "me").
	AllOf string
}

// NewCmdTokenRevoke returns `token revoke`.
func NewCmdTokenRevoke(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &TokenRevokeOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "revoke (TOKEN_ID... | --all-of USER)",
		Short: "Revoke personal access tokens",
		Long: `Revoke your tokens by id (see "kubectl agents token list"); they stop working at
once. --all-of USER revokes every token of a user, by id, Kubernetes user name or
email: for admins, say when someone leaves or loses a group the tokens would still
carry; anyone may pass --all-of me.`,
		Example: `  kubectl agents token revoke TOKEN_ID
  kubectl agents token revoke --all-of me

  # Admins: every token of a user
  kubectl agents token revoke --all-of jane@example.com`,
		ValidArgsFunction: completeTokens(f),
		RunE:              runOptions(o),
	}
	cmd.Flags().StringVar(&o.AllOf, "all-of", "", `Revoke every token of this user ("me" for yourself; others: admins only)`)
	_ = cmd.RegisterFlagCompletionFunc("all-of", cobra.FixedCompletions([]string{"me"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete takes the token ids from the arguments and trims --all-of.
func (o *TokenRevokeOptions) Complete(_ *cobra.Command, args []string) error {
	o.IDs = args
	o.AllOf = strings.TrimSpace(o.AllOf)
	return nil
}

// Validate checks that exactly one of ids and --all-of was given.
func (o *TokenRevokeOptions) Validate() error {
	switch {
	case o.AllOf != "" && len(o.IDs) > 0:
		return errors.New("name token ids or pass --all-of USER, not both")
	case o.AllOf == "" && len(o.IDs) == 0:
		return errors.New(`name the tokens to revoke (ids from "kubectl agents token list"), or pass --all-of USER`)
	}
	return nil
}

// Run revokes, going on past failures and reporting them all at the end.
func (o *TokenRevokeOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	if o.AllOf != "" {
		r, err := c.RevokeUserTokens(ctx, o.AllOf)
		if err != nil {
			return fmt.Errorf("revoke the tokens of %s: %w", o.AllOf, err)
		}
		var who []string
		for _, u := range r.Users {
			who = append(who, u.Source+" user "+u.Subject)
		}
		fmt.Fprintf(o.Out, "%d token(s) revoked of %s\n", r.Revoked, strings.Join(who, " and "))
		return nil
	}
	var errs []error
	for _, id := range o.IDs {
		if err := c.DeleteToken(ctx, id); err != nil {
			if client.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("token %q not found among yours", id))
			} else {
				errs = append(errs, fmt.Errorf("revoke %s: %w", tokenRef(id), err))
			}
			continue
		}
		fmt.Fprintf(o.Out, "%s revoked\n", tokenRef(id))
	}
	return errors.Join(errs...)
}
