package cmd

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/config"
)

// LoginOptions are the inputs of `login`.
type LoginOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	Server  string
	Token   string
	// HTTPClient reaches the server (nil: a default client); tests inject one.
	HTTPClient *http.Client
}

// NewCmdLogin returns `login`.
func NewCmdLogin(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &LoginOptions{IOStreams: streams, Factory: f}
	cmd := &cobra.Command{
		Use:   "login --server URL [--token TOKEN]",
		Short: "Use the agent behind an ingress with a personal access token",
		Long: `Remember an agent URL (behind an ingress or an authenticating proxy) and a personal
access token, so later commands reach the agent there instead of port-forwarding.
The token (cka_...) comes from "kubectl agents token create" (run it while the
plugin reaches the agent by port-forward) or from the agent's web UI; it is checked
before it is saved, in a file readable only by you. Without --token, the token is read from standard
input so it stays out of your shell history.

"kubectl agents logout" forgets both; --agent-namespace on any command uses
discovery for that command only.`,
		Example: `  kubectl agents login --server https://agents.example.com --token cka_0123456789
  kubectl agents login --server https://agents.example.com < token.txt`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
	cmd.Flags().StringVar(&o.Token, "token", "", "Personal access token (default: read from standard input)")
	return cmd
}

// Complete takes the server from the root's --server and reads the token from standard
// input when it was not given. Without --server it reads nothing: Validate reports the
// missing flag before the user types a token.
func (o *LoginOptions) Complete(_ *cobra.Command, _ []string) error {
	o.Server = o.Factory.Server
	if o.Token == "" && o.Server != "" && o.In != nil {
		token, ok := askSecret(o.IOStreams, "Token: ")
		if !ok {
			return errors.New("no token: pass --token or type it on standard input")
		}
		o.Token = token
	}
	return nil
}

// Validate checks the flags.
func (o *LoginOptions) Validate() error {
	if o.Server == "" {
		return errors.New("--server is required: the agent's URL, e.g. --server https://agents.example.com")
	}
	if o.Token == "" {
		return errors.New("--token is empty")
	}
	if o.Factory.StatePath == "" {
		return fmt.Errorf("nowhere to save the token: set $%s to a file path", config.EnvPath)
	}
	return nil
}

// Run checks the token against the agent and saves it.
func (o *LoginOptions) Run(ctx context.Context) error {
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	c, err := client.New(o.Server, hc, o.Factory.clientOptions(client.WithToken(o.Token))...)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	who, err := c.WhoAmI(ctx)
	if err != nil {
		if client.StatusCode(err) == http.StatusUnauthorized {
			return fmt.Errorf("the agent at %s does not accept this token (expired, revoked, or its owner lost access?): create a new one with `kubectl agents token create` or in the web UI: %w", o.Server, err)
		}
		return fmt.Errorf("check the token with %s: %w", o.Server, err)
	}
	if err := config.Update(o.Factory.StatePath, func(s *config.State) { s.Server, s.Token = o.Server, o.Token }); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "Logged in to %s as %s.\n", o.Server, displayUser(who.User.Email, who.User.DisplayName, who.Username))
	return nil
}

// LogoutOptions are the inputs of `logout`.
type LogoutOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
}

// NewCmdLogout returns `logout`.
func NewCmdLogout(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &LogoutOptions{IOStreams: streams, Factory: f}
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the server and token saved by login",
		Long: `Forget the agent URL and personal access token saved by "kubectl agents login";
later commands find the agent by port-forward again. The token itself stays valid
until it expires or you revoke it ("kubectl agents token revoke", or the web UI).`,
		Example: `  kubectl agents logout`,
		Args:    cobra.NoArgs,
		RunE:    runOptions(o),
	}
}

// Run clears the login state.
func (o *LogoutOptions) Run(context.Context) error {
	if o.Factory.StatePath == "" {
		return fmt.Errorf("no plugin state file: set $%s to a file path", config.EnvPath)
	}
	s, _ := config.Load(o.Factory.StatePath)
	if s.Server == "" && s.Token == "" {
		fmt.Fprintln(o.Out, "Not logged in.")
		return nil
	}
	if err := config.Update(o.Factory.StatePath, func(s *config.State) { s.Server, s.Token = "", "" }); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "Logged out of %s.\n", s.Server)
	return nil
}
