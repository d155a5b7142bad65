package cmd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// NewCmdIntegrations returns `integrations` and its subcommands.
func NewCmdIntegrations(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "integrations",
		Short: "Show the Slack and Linear integrations and set their repositories (admins)",
		Long: `Slack and Linear start sessions on a repository an admin chose: a Slack channel's
default repository (used when a mention names none) and a Linear team's repository
(every session of the team's issues). "list" shows whether each integration is on
and reaches its service; "slack-channel" and "linear-team" show or set a repository.`,
		Example: `  kubectl agents integrations list
  kubectl agents integrations slack-channel C0123ABCD --repo https://github.com/org/repo
  kubectl agents integrations linear-team ENG --repo https://github.com/org/repo`,
		Args: cobra.ArbitraryArgs,
		RunE: runGroup,
	}
	cmd.AddCommand(newCmdIntegrationsList(f, streams),
		newCmdIntegrationRepo(f, streams, slackChannelRepo),
		newCmdIntegrationRepo(f, streams, linearTeamRepo))
	return cmd
}

// IntegrationsListOptions are the inputs of `integrations list`.
type IntegrationsListOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Output  string
}

func newCmdIntegrationsList(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &IntegrationsListOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "Show whether Slack and Linear are on and reach their services",
		Long: `Show each integration: enabled (the agent serves it), configured (its credentials
are set) and reachable (its service answered the agent just now), with who the agent
is there or what to set. Any user may list; "kubectl agents doctor" checks the same.`,
		Example: `  kubectl agents integrations list
  kubectl agents integrations list -o json`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml (default: a table)")
	return cmd
}

// Validate checks -o.
func (o *IntegrationsListOptions) Validate() error { return validateStructuredOutput(o.Output) }

// Run lists the integrations.
func (o *IntegrationsListOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	l, err := c.Integrations(ctx)
	if client.IsNotFound(err) {
		return errors.New("this agent has no integrations (it is older than them): upgrade the chart")
	}
	if err != nil {
		return fmt.Errorf("list integrations: %w", err)
	}
	return printStructured(o.Out, o.Output, l, func() error {
		tw := printers.GetNewTabWriter(o.Out)
		fmt.Fprintln(tw, "NAME\tENABLED\tCONFIGURED\tREACHABLE\tDETAIL")
		for _, in := range l.Items {
			detail := in.Detail
			if in.Warning != "" {
				detail = strings.TrimSuffix(detail, ".") + ". " + in.Warning
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", in.Name, strconv.FormatBool(in.Enabled), strconv.FormatBool(in.Configured),
				strconv.FormatBool(in.Reachable), dash(strings.Join(strings.Fields(detail), " ")))
		}
		return tw.Flush()
	})
}

// integrationRepo is what differs between a Slack channel's and a Linear team's
// repository: the command, its argument, and the agent's calls.
type integrationRepo struct {
	use, arg, what, short, long, example string
	// valid checks the argument before anything is sent (the agent's own rule).
	valid func(string) error
	// get answers the repository ("" when none), set stores one ("" removes it); both
	// return the id the agent uses (a Linear key in capitals).
	get func(ctx context.Context, c *client.Client, id string) (string, string, error)
	set func(ctx context.Context, c *client.Client, id, repo string) (string, string, error)
}

var slackChannelRepo = integrationRepo{
	use: "slack-channel", arg: "CHANNEL_ID", what: "Slack channel",
	short: "Show or set a Slack channel's default repository (admins)",
	long: `Show or set the repository a session started by a mention in a Slack channel uses
when the message names none. CHANNEL_ID is Slack's id of the channel (C0123ABCD: in
Slack, the channel's details show it at the bottom), not its name.`,
	example: `  kubectl agents integrations slack-channel C0123ABCD
  kubectl agents integrations slack-channel C0123ABCD --repo https://github.com/org/repo
  kubectl agents integrations slack-channel C0123ABCD --clear`,
	valid: apiv1.ValidateSlackChannelID,
	get: func(ctx context.Context, c *client.Client, id string) (string, string, error) {
		ch, err := c.SlackChannel(ctx, id)
		if err != nil {
			return "", "", err
		}
		return ch.Channel, ch.Repo, nil
	},
	set: func(ctx context.Context, c *client.Client, id, repo string) (string, string, error) {
		ch, err := c.SetSlackChannel(ctx, id, repo)
		if err != nil {
			return "", "", err
		}
		return ch.Channel, ch.Repo, nil
	},
}

var linearTeamRepo = integrationRepo{
	use: "linear-team", arg: "TEAM_KEY", what: "Linear team",
	short: "Show or set the repository of a Linear team's sessions (admins)",
	long: `Show or set the repository every session started from a Linear team's issues works
on. TEAM_KEY is the prefix of the team's issue identifiers (ENG for ENG-123).`,
	example: `  kubectl agents integrations linear-team ENG
  kubectl agents integrations linear-team ENG --repo https://github.com/org/repo
  kubectl agents integrations linear-team ENG --clear`,
	valid: apiv1.ValidateLinearTeamKey,
	get: func(ctx context.Context, c *client.Client, id string) (string, string, error) {
		t, err := c.LinearTeam(ctx, id)
		if client.IsNotFound(err) {
			return strings.ToUpper(id), "", nil
		}
		if err != nil {
			return "", "", err
		}
		return t.Key, t.Repo, nil
	},
	set: func(ctx context.Context, c *client.Client, id, repo string) (string, string, error) {
		t, err := c.SetLinearTeam(ctx, id, repo)
		if err != nil {
			return "", "", err
		}
		return t.Key, t.Repo, nil
	},
}

// IntegrationRepoOptions are the inputs of `integrations slack-channel` and
// `integrations linear-team`.
type IntegrationRepoOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Repo    string
	Clear   bool
	Output  string

	kind integrationRepo
	id   string
}

func newCmdIntegrationRepo(f *Factory, streams genericiooptions.IOStreams, kind integrationRepo) *cobra.Command {
	o := &IntegrationRepoOptions{IOStreams: streams, Factory: f, kind: kind}
	cmd := &cobra.Command{
		Use:     kind.use + " " + kind.arg,
		Short:   kind.short,
		Long:    kind.long + "\n\nWithout --repo or --clear it shows the repository. Admins only.",
		Example: kind.example,
		Args:    cobra.ExactArgs(1),
		RunE:    runOptions(o),
	}
	cmd.Flags().StringVar(&o.Repo, "repo", "", "Repository URL to set (https:// or SSH, as session create --repo takes)")
	cmd.Flags().BoolVar(&o.Clear, "clear", false, "Remove the repository")
	addStructuredOutputFlag(cmd, &o.Output, "Output format: json or yaml")
	cmd.MarkFlagsMutuallyExclusive("repo", "clear")
	return cmd
}

// Complete takes the channel or team from the arguments.
func (o *IntegrationRepoOptions) Complete(_ *cobra.Command, args []string) error {
	o.id = strings.TrimSpace(args[0])
	return nil
}

// Validate checks the argument, --repo and -o before anything is sent.
func (o *IntegrationRepoOptions) Validate() error {
	if err := o.kind.valid(o.id); err != nil {
		return err
	}
	if o.Repo != "" {
		if err := apiv1.ValidateRepoURL(o.Repo); err != nil {
			return fmt.Errorf("--repo: %w", err)
		}
	}
	return validateStructuredOutput(o.Output)
}

// Run shows or sets the repository.
func (o *IntegrationRepoOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	var id, repo, verb string
	switch {
	case o.Repo != "" || o.Clear:
		id, repo, err = o.kind.set(ctx, c, o.id, o.Repo)
		verb = "set"
	default:
		id, repo, err = o.kind.get(ctx, c, o.id)
		verb = "read"
	}
	if client.IsNotFound(err) {
		return fmt.Errorf("%s %s %s's repository: this agent does not serve it (it is older than these settings): upgrade the chart", verb, o.kind.what, o.id)
	}
	if err != nil {
		return fmt.Errorf("%s %s %s's repository: %w", verb, o.kind.what, o.id, err)
	}
	v := struct {
		Kind string `json:"kind"`
		ID   string `json:"id"`
		Repo string `json:"repo"`
	}{o.kind.use, id, repo}
	return printStructured(o.Out, o.Output, v, func() error {
		switch {
		case repo != "":
			_, err = fmt.Fprintf(o.Out, "%s %s: %s\n", o.kind.what, id, repo)
		case o.Clear:
			_, err = fmt.Fprintf(o.Out, "%s %s: repository removed\n", o.kind.what, id)
		default:
			_, err = fmt.Fprintf(o.Out, "%s %s: no repository (set one with --repo URL)\n", o.kind.what, id)
		}
		return err
	})
}
