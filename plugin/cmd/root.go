// Package cmd holds the `kubectl agents` command tree: a root command that knows how to
// reach the agent (discovery + port-forward, or --server with a personal token) and one
// file per command, each an XOptions with Complete, Validate and Run (run in that order by
// runOptions, run.go) so tests can build them by hand against any agent URL and
// http.Client. What several commands share lives in a file named for it: printer*.go
// (output), session_errors.go (naming sessions and the one "not found"), wait.go,
// session_tunnel.go (attach and port-forward), completion.go, prompt.go.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/pkg/version"
	"github.com/cakeai/cake-agents/plugin/config"
	"github.com/cakeai/cake-agents/plugin/tunnel"
)

// Factory is what commands share to reach the agent and the cluster. Commands take it
// instead of building clients themselves, so a test can inject an agent URL and
// http.Client (Client) without any cluster.
type Factory struct {
	ConfigFlags *genericclioptions.ConfigFlags
	// AgentNamespace is --agent-namespace; empty means the remembered one, else
	// tunnel.DefaultAgentNamespace.
	AgentNamespace string
	// Server is --server: the agent's URL behind an ingress or proxy, skipping discovery.
	Server string
	// StatePath is the plugin's state file (login token, remembered namespace).
	StatePath string

	// Client, when set, is used as is (tests; the lead's tests of the real agent).
	Client *client.Client
	// ErrOut receives the agent's warnings (such as a plugin too old for it); nil drops them.
	ErrOut io.Writer
	warned sync.Map // warning texts printed

	mu     sync.Mutex
	agent  *client.Client
	tun    *tunnel.AgentTunnel
	kube   kubernetes.Interface
	config *rest.Config
}

// NewFactory returns a Factory with the standard kubectl flags except --server: the
// plugin's --server names the agent, and the API server comes from the kubeconfig.
func NewFactory() *Factory {
	cf := genericclioptions.NewConfigFlags(true)
	cf.APIServer = nil
	return &Factory{ConfigFlags: cf}
}

// userAgent names the plugin and its version in the agent's logs and audit trail.
func userAgent() string { return "kubectl-agents/" + version.Version }

// clientOptions are the options of every client the plugin makes: its User-Agent, and its
// version sent to the agent, whose warnings (one line saying which side to upgrade when
// the two are too far apart) f prints once each.
func (f *Factory) clientOptions(more ...client.Option) []client.Option {
	return append(more, client.WithUserAgent(userAgent()), client.WithVersion(version.Version, f.warn))
}

// warn prints an agent's warning to ErrOut, once per process however many clients and
// requests carry it.
func (f *Factory) warn(text string) {
	if _, dup := f.warned.LoadOrStore(text, struct{}{}); dup || f.ErrOut == nil {
		return
	}
	fmt.Fprintln(f.ErrOut, "WARNING: "+text)
}

// state reads the plugin's state file; problems with it never block a command.
func (f *Factory) state() config.State {
	if f.StatePath == "" {
		return config.State{}
	}
	s, _ := config.Load(f.StatePath)
	return s
}

// Namespace is the agent namespace discovery searches.
func (f *Factory) Namespace() string {
	if f.AgentNamespace != "" {
		return f.AgentNamespace
	}
	if ns := f.state().AgentNamespace; ns != "" {
		return ns
	}
	return tunnel.DefaultAgentNamespace
}

// Mode says how the agent is reached, for doctor and error messages.
func (f *Factory) Mode() string {
	switch {
	case f.Client != nil:
		return "injected client " + f.Client.BaseURL().String()
	case f.serverURL() != "":
		return "server " + f.serverURL()
	default:
		return "port-forward to the agent in namespace " + f.Namespace()
	}
}

// serverURL is --server, else the server remembered by `login` unless the user asked
// for discovery with --agent-namespace.
func (f *Factory) serverURL() string {
	if f.Server != "" {
		return f.Server
	}
	if f.AgentNamespace == "" {
		return f.state().Server
	}
	return ""
}

// Kube returns a clientset and REST config from the kubeconfig flags.
func (f *Factory) Kube() (kubernetes.Interface, *rest.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kube != nil {
		return f.kube, f.config, nil
	}
	cfg, err := f.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("load the kubeconfig (see --kubeconfig and --context): %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("build a Kubernetes client: %w", err)
	}
	f.kube, f.config = kube, cfg
	return kube, cfg, nil
}

// Agent returns a client for the agent's API, opening the tunnel on first use.
func (f *Factory) Agent(ctx context.Context) (*client.Client, error) {
	if f.Client != nil {
		return f.Client, nil
	}
	f.mu.Lock()
	if f.agent != nil {
		defer f.mu.Unlock()
		return f.agent, nil
	}
	f.mu.Unlock()

	if server := f.serverURL(); server != "" {
		token := ""
		if s := f.state(); s.Server == server {
			token = s.Token
		}
		c, err := client.New(server, &http.Client{}, f.clientOptions(client.WithToken(token))...)
		if err != nil {
			return nil, fmt.Errorf("--server: %w", err)
		}
		f.mu.Lock()
		f.agent = c
		f.mu.Unlock()
		return c, nil
	}

	kube, cfg, err := f.Kube()
	if err != nil {
		return nil, err
	}
	ns := f.Namespace()
	tun := tunnel.NewAgentTunnel(kube, cfg, ns)
	// Find the pod now, so "no agent" is reported before any CA or TLS detail.
	if _, err := tunnel.FindAgentPod(ctx, kube, ns); err != nil {
		return nil, err
	}
	pool, err := tunnel.ServingCA(ctx, kube, ns)
	if err != nil {
		return nil, err
	}
	hc, err := tunnel.HTTPClient(cfg, pool, tun.DialContext)
	if err != nil {
		return nil, err
	}
	hc.Transport = &rememberNamespace{next: hc.Transport, path: f.StatePath, namespace: ns}
	c, err := client.New(tunnel.AgentURL(ns), hc, f.clientOptions()...)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.agent, f.tun = c, tun
	f.mu.Unlock()
	return c, nil
}

func (f *Factory) tunnel() *tunnel.AgentTunnel {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tun
}

// Close releases the tunnel, if one was opened.
func (f *Factory) Close() {
	f.mu.Lock()
	tun := f.tun
	f.tun, f.agent = nil, nil
	f.mu.Unlock()
	if tun != nil {
		_ = tun.Close()
	}
}

// rememberNamespace records the agent namespace in the state file after the agent first
// answers through it, so the next command finds the agent without --agent-namespace.
type rememberNamespace struct {
	next      http.RoundTripper
	path      string
	namespace string
	once      sync.Once
}

func (r *rememberNamespace) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil && r.path != "" {
		r.once.Do(func() {
			if s, _ := config.Load(r.path); s.AgentNamespace != r.namespace {
				_ = config.Update(r.path, func(s *config.State) { s.AgentNamespace = r.namespace })
			}
		})
	}
	return resp, err
}

// NewCmdRoot returns the `kubectl agents` command.
func NewCmdRoot(streams genericiooptions.IOStreams) *cobra.Command {
	f := NewFactory()
	if p, err := config.DefaultPath(); err == nil {
		f.StatePath = p
	}
	return NewCmdRootWithFactory(f, streams)
}

// NewCmdRootWithFactory builds the command tree on f (tests inject f.Client).
func NewCmdRootWithFactory(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	if f.ErrOut == nil {
		f.ErrOut = streams.ErrOut
	}
	cmd := &cobra.Command{
		Use:   "kubectl-agents",
		Short: "Run and attach to OpenCode coding-agent sessions on Kubernetes",
		Long: `kubectl agents runs OpenCode coding-agent sessions as pods on your cluster and
attaches your terminal to them.

It finds the Cake Agents agent in --agent-namespace (remembered from the last
successful use, else "cake-agents"), port-forwards to it with your kubeconfig and
speaks HTTPS to it as you: your kube token or client certificate identifies you, and
the agent checks what you may do with SubjectAccessReview on sessions.agents.cake.ai.
Behind an ingress, use --server URL with a personal access token ("kubectl agents
token create", then "kubectl agents login").`,
		Example: `  # Start a session on a repository and wait until it runs
  kubectl agents session create --repo https://github.com/org/repo --prompt "fix the flaky test" --wait

  # List your sessions and open the OpenCode TUI on one
  kubectl agents session list
  kubectl agents attach SESSION

  # Check that everything is wired up
  kubectl agents doctor`,
		Annotations:       map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl agents"},
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
		PersistentPostRun: func(*cobra.Command, []string) { f.Close() },
	}
	flags := cmd.PersistentFlags()
	f.ConfigFlags.AddFlags(flags)
	// The agent is found by label in its own namespace: these kubectl flags would
	// only confuse (sessions have no kube namespace of their own).
	for _, name := range []string{"namespace", "cache-dir", "disable-compression"} {
		_ = flags.MarkHidden(name)
	}
	flags.StringVar(&f.AgentNamespace, "agent-namespace", "", `Namespace of the agent (default: the last one that worked, else "cake-agents")`)
	flags.StringVar(&f.Server, "server", "", `URL of the agent behind an ingress or proxy; skips discovery and port-forward (log in first with "kubectl agents login")`)
	_ = cmd.RegisterFlagCompletionFunc("agent-namespace", completeNamespaces(f))

	cmd.AddCommand(
		NewCmdSession(f, streams),
		NewCmdAttach(f, streams),
		NewCmdPortForward(f, streams),
		NewCmdToken(f, streams),
		NewCmdCredential(f, streams),
		NewCmdGitHub(f, streams),
		NewCmdLogin(f, streams),
		NewCmdLogout(f, streams),
		NewCmdWhoAmI(f, streams),
		NewCmdModels(f, streams),
		NewCmdProviders(f, streams),
		NewCmdIntegrations(f, streams),
		NewCmdAudit(f, streams),
		NewCmdDoctor(f, streams),
		NewCmdVersion(f, streams),
		NewCmdCompletion(streams),
	)
	wrapErrors(cmd, f)
	return cmd
}

// wrapErrors makes every command explain the agent's 401 and 403 answers.
func wrapErrors(cmd *cobra.Command, f *Factory) {
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error {
			return explain(f, run(c, args))
		}
	}
	for _, c := range cmd.Commands() {
		wrapErrors(c, f)
	}
}

// explain adds why the agent refused and what to do about it.
func explain(f *Factory, err error) error {
	if err == nil {
		return nil
	}
	switch client.StatusCode(err) {
	case http.StatusUnauthorized:
		if f.serverURL() != "" {
			return fmt.Errorf("the agent did not accept your token: %w; log in again with `kubectl agents login --server %s --token TOKEN`", err, f.serverURL())
		}
		return fmt.Errorf("the agent could not verify your kube identity: %w; it checks bearer tokens with TokenReview and client certificates against the cluster's client CA, "+
			"so run `kubectl auth whoami` to see who you are and ask an admin to check the agent's logs", err)
	case http.StatusForbidden:
		return fmt.Errorf("the agent refused: %w; see what you may do with `kubectl agents whoami` or `kubectl auth can-i --list | grep sessions.agents.cake.ai` "+
			"(the chart's cake-agents-user ClusterRole grants the usual verbs)", err)
	}
	if errors.Is(err, tunnel.ErrNoAgent) && f.AgentNamespace == "" && f.Namespace() != tunnel.DefaultAgentNamespace {
		return fmt.Errorf("%w (namespace remembered from an earlier run)", err)
	}
	return err
}
