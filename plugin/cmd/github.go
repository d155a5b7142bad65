package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// NewCmdGitHub groups the GitHub account commands.
func NewCmdGitHub(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "github",
		Short: "Link your GitHub account, so sessions clone and push as you",
		Long: `Link your GitHub account once; your private sessions on https://github.com/...
repositories (or those of the agent's GitHub Enterprise host) then clone, push and open
pull requests (gh) as you. The agent stores the token encrypted as your credential for
that host (see "kubectl agents credential list"; remove it with "kubectl agents
credential remove github.com").`,
		Example: `  kubectl agents github link`,
		Args:    cobra.ArbitraryArgs,
		RunE:    runGroup,
	}
	cmd.AddCommand(NewCmdGitHubLink(f, streams))
	return cmd
}

// GitHubLinkOptions are the inputs of `github link`.
type GitHubLinkOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	// sleep waits between polls (tests shorten it).
	sleep func(ctx context.Context, d time.Duration) error
}

// NewCmdGitHubLink returns `github link`.
func NewCmdGitHubLink(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &GitHubLinkOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "link",
		Short: "Link your GitHub account with GitHub's device flow",
		Long: `Link your GitHub account: the agent asks GitHub for a one-time code, which you enter
at the address shown (https://github.com/login/device) in any browser, signed in to
GitHub; this command waits until you have authorized the agent's OAuth app, then the
agent stores the token as your github.com credential. Linking again replaces it.

The agent's admin enables this with the chart value github.oauth.clientId; without it,
add a token yourself with "kubectl agents credential add github.com".`,
		Example: `  kubectl agents github link`,
		Args:    cobra.NoArgs,
		RunE:    runOptions(o),
	}
	return cmd
}

// Run starts the flow, shows the code and waits for the outcome.
func (o *GitHubLinkOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	l, err := c.StartGitHubLink(ctx)
	if err != nil {
		return fmt.Errorf("link GitHub: %w", err)
	}
	fmt.Fprintf(o.ErrOut, "Open %s and enter the code %s (it expires at %s). Waiting...\n", l.VerificationURI, l.UserCode, l.ExpiresAt.Local().Format(time.Kitchen))
	sleep := o.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	every := time.Duration(max(l.Interval, 1)) * time.Second
	for {
		if err := sleep(ctx, every); err != nil {
			return fmt.Errorf("link GitHub: stopped waiting: %w", err)
		}
		st, err := c.PollGitHubLink(ctx, l.ID)
		if err != nil {
			return fmt.Errorf("link GitHub: %w", err)
		}
		switch st.Status {
		case apiv1.GitHubLinkPending:
			if st.Interval > 0 {
				every = time.Duration(st.Interval) * time.Second
			}
		case apiv1.GitHubLinkLinked:
			// The agent names its GitHub host (github.com, or a GitHub Enterprise host).
			msg := st.Message
			if msg == "" {
				msg = "linked"
			}
			fmt.Fprintln(o.Out, "GitHub account "+msg)
			return nil
		default:
			return fmt.Errorf("link GitHub: %s: %s", st.Status, st.Message)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
