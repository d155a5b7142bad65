package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// SessionCreateOptions are the inputs of `session create`.
type SessionCreateOptions struct {
	genericiooptions.IOStreams
	Factory    *Factory
	PrintFlags *PrintFlags

	Title       string
	Repo        string
	Branch      string
	Prompt      string
	Private     bool
	Model       string
	Persistent  bool
	IdleTimeout time.Duration
	TTL         time.Duration
	Wait        bool
	Timeout     time.Duration
	// ForkOf is the session `session fork` starts from.
	ForkOf string

	// PollInterval is how often --wait asks the agent for the state (the API has no
	// watch for sessions).
	PollInterval time.Duration
	// privateSet records whether --private was given, so the agent's default applies
	// otherwise; idleSet and ttlSet the same for --idle-timeout and --ttl, whose 0 given
	// means never.
	privateSet, idleSet, ttlSet bool
}

// NewSessionCreateOptions returns options with defaults.
func NewSessionCreateOptions(f *Factory, streams genericiooptions.IOStreams) *SessionCreateOptions {
	return &SessionCreateOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags(), Private: true,
		Timeout: 5 * time.Minute, PollInterval: time.Second}
}

// NewCmdSessionCreate returns `session create`.
func NewCmdSessionCreate(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewSessionCreateOptions(f, streams)
	cmd := &cobra.Command{
		Use:   "create [--repo URL] [--prompt TEXT] [flags]",
		Short: "Start a new session",
		Long: `Create a session: the agent starts a pod that clones --repo (at --branch) into
/workspace and runs OpenCode there, giving it --prompt as the first message.

With --wait the command follows the session through Pending, Starting and Running
on stderr and fails if it ends Failed or --timeout passes first.`,
		Example: `  # Work on a repository with a first prompt, and wait until the agent runs
  kubectl agents session create --repo https://github.com/org/repo --prompt "fix the flaky test" --wait

  # A session shared with everyone, kept for a day, on a branch
  kubectl agents session create --title "release notes" --repo https://github.com/org/repo --branch release-1.2 --private=false --ttl 24h

  # One that is never stopped for idleness (if the agent's maximum allows)
  kubectl agents session create --repo https://github.com/org/repo --idle-timeout 0

  # Print only the new session's name
  kubectl agents session create --repo https://github.com/org/repo -o name`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Title, "title", "", "Title shown in lists (default: OpenCode names the session)")
	fl.StringVar(&o.Repo, "repo", "", "Git repository to clone into the workspace (https://, ssh:// or git@host:org/repo)")
	fl.StringVar(&o.Branch, "branch", "", "Branch to check out (default: the repository's default branch)")
	fl.StringVar(&o.Prompt, "prompt", "", "First message for the agent")
	fl.BoolVar(&o.Private, "private", true, "Only you (and admins) can see and attach; --private=false shares the session with all users")
	fl.StringVar(&o.Model, "model", "", "Model as provider/model, one of \"kubectl agents models\" (default: the agent's default model)")
	_ = cmd.RegisterFlagCompletionFunc("model", completeModels(f))
	fl.BoolVar(&o.Persistent, "persistent", false, "Keep the workspace on a volume across stop and start")
	o.addLifetimeFlags(cmd)
	return cmd
}

// addLifetimeFlags adds the flags create and fork share: the timeouts, --wait and -o.
func (o *SessionCreateOptions) addLifetimeFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.DurationVar(&o.IdleTimeout, "idle-timeout", 0, "Stop the session after this long without activity; 0: never, if the agent's maximum allows (default: the agent's configuration)")
	fl.DurationVar(&o.TTL, "ttl", 0, "Delete the session this long after creation; 0: never, if the agent's maximum allows (default: the agent's configuration)")
	fl.BoolVar(&o.Wait, "wait", false, "Wait until the session is Running, showing progress on stderr")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "How long --wait waits")
	o.PrintFlags.AddFlags(cmd)
}

// Complete notes whether --private was given, so the agent's default applies otherwise.
func (o *SessionCreateOptions) Complete(cmd *cobra.Command, _ []string) error {
	o.privateSet = cmd.Flags().Changed("private")
	o.idleSet, o.ttlSet = cmd.Flags().Changed("idle-timeout"), cmd.Flags().Changed("ttl")
	return nil
}

// Validate checks the flags before anything is created.
func (o *SessionCreateOptions) Validate() error {
	if len(o.Prompt) > apiv1.MaxPromptBytes {
		return fmt.Errorf("--prompt is %d bytes, more than the agent accepts (%d): send the rest with `kubectl agents session send`", len(o.Prompt), apiv1.MaxPromptBytes)
	}
	if len([]rune(o.Title)) > apiv1.MaxTitleLen {
		return fmt.Errorf("--title is longer than %d characters", apiv1.MaxTitleLen)
	}
	if o.Repo != "" {
		// The agent's own rule: what passes here is what the API stores and the
		// session's init container clones.
		if err := apiv1.ValidateRepoURL(o.Repo); err != nil {
			return fmt.Errorf("--repo: %w", err)
		}
	}
	if o.Branch != "" && o.Repo == "" {
		return errors.New("--branch needs --repo")
	}
	if o.IdleTimeout < 0 || o.TTL < 0 {
		return errors.New("--idle-timeout and --ttl must not be negative")
	}
	if o.Wait && o.Timeout <= 0 {
		return errors.New("--timeout must be positive with --wait")
	}
	return o.PrintFlags.Validate()
}

// Run creates the session and, with --wait, follows it to Running.
func (o *SessionCreateOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		return err
	}
	req := apiv1.CreateSessionRequest{
		Title: o.Title, Repo: o.Repo, Branch: o.Branch, Prompt: o.Prompt, Model: o.Model, Persistent: o.Persistent, ForkOf: o.ForkOf,
	}
	if o.privateSet {
		p := o.Private
		req.Private = &p
	}
	if o.idleSet || o.IdleTimeout > 0 {
		req.IdleTimeout = &apiv1.Duration{Duration: o.IdleTimeout}
	}
	if o.ttlSet || o.TTL > 0 {
		req.TTL = &apiv1.Duration{Duration: o.TTL}
	}
	s, err := c.CreateSession(ctx, req)
	if err != nil {
		if o.ForkOf != "" {
			return sessionError(err, "fork", o.ForkOf)
		}
		return fmt.Errorf("create session: %w", err)
	}
	if o.PrintFlags.IsDefault() {
		if o.ForkOf != "" {
			fmt.Fprintf(o.Out, "%s created (a fork of %s)\n", sessionRef(s.ID), sessionRef(o.ForkOf))
		} else {
			fmt.Fprintf(o.Out, "%s created\n", sessionRef(s.ID))
		}
	}
	if o.Wait {
		s, err = waitRunning(ctx, c, o.ErrOut, s, o.Timeout, o.PollInterval)
		if err != nil {
			return err
		}
	}
	if o.PrintFlags.IsDefault() {
		return nil
	}
	return o.PrintFlags.Print(o.Out, []apiv1.Session{*s}, false)
}

// NewCmdSessionFork returns `session fork`: a create that starts from another session.
func NewCmdSessionFork(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewSessionCreateOptions(f, streams)
	cmd := &cobra.Command{
		Use:   "fork SESSION [--prompt TEXT] [flags]",
		Short: "Start a new session from another one's repository and conversation",
		Long: `Create a session from SESSION (yours, or one shared with you): the same repository,
branch, model and persistence, and its conversation so far, which the new session's
OpenCode starts with as a digest of the recorded transcript. Try another approach
without disturbing the original.

The fork clones the repository afresh: work the original has not pushed is not in it.`,
		Example: `  kubectl agents session fork SESSION --prompt "try it with a mutex instead" --wait
  kubectl agents session fork SESSION --title "second opinion" -o name`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeSessions(f, false),
		RunE:              runOptions(&sessionForkOptions{o}),
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Title, "title", "", `Title shown in lists (default: "fork of" and the original's)`)
	fl.StringVar(&o.Prompt, "prompt", "", "First message for the agent, after the original's conversation")
	fl.BoolVar(&o.Private, "private", true, "Only you (and admins) can see and attach; --private=false shares the session with all users")
	fl.StringVar(&o.Model, "model", "", "Model as provider/model (default: the original's)")
	_ = cmd.RegisterFlagCompletionFunc("model", completeModels(f))
	o.addLifetimeFlags(cmd)
	return cmd
}

// sessionForkOptions is a create whose source comes from the arguments.
type sessionForkOptions struct{ *SessionCreateOptions }

// Complete takes the session to fork.
func (o *sessionForkOptions) Complete(cmd *cobra.Command, args []string) error {
	o.ForkOf = args[0]
	return o.SessionCreateOptions.Complete(cmd, args)
}

// Validate checks the session id and the create's flags.
func (o *sessionForkOptions) Validate() error {
	if err := checkSessionIDs(o.ForkOf); err != nil {
		return err
	}
	return o.SessionCreateOptions.Validate()
}
