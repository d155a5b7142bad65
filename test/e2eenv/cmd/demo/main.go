// Command demo runs the local demonstration behind `make demo`: the chart installed on
// the local cluster, the agent, the fake model, real OpenCode session pods, and one demo
// session with an initial prompt. It prints what to type next and stays up until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/e2eenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	var o e2eenv.Options
	var bin, prompt string
	flag.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the local cluster")
	flag.StringVar(&o.Helm, "helm", "helm", "helm binary")
	flag.StringVar(&o.OpenCode, "opencode", "opencode", "opencode binary")
	flag.StringVar(&o.Chart, "chart", "charts/cake-agents", "chart directory")
	flag.StringVar(&o.WorkDir, "workdir", ".cache/demo/run", "working directory")
	flag.StringVar(&bin, "bin", "bin", "directory with agent and kubectl-agents")
	flag.StringVar(&prompt, "prompt", "Hello! Look around this repository and tell me what it is.", "the demo session's prompt")
	flag.Parse()
	var err error
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if o.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
		return err
	}
	o.Agent = filepath.Join(bin, "agent")
	o.Log = hclog.New(&hclog.LoggerOptions{Name: "demo", Level: hclog.Warn, Output: os.Stderr})

	fmt.Fprintln(os.Stderr, "demo: installing the chart and starting the agent ...")
	env, err := e2eenv.Start(ctx, o)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "\ndemo: cleaning up ...")
		env.Stop()
	}()

	// The demo session works on a small repository served locally over HTTPS: the
	// machine may be offline.
	repo, err := env.Git.AddRepo("demo", map[string]string{
		"README.md": "# demo\n\nA tiny project for the Cake Agents demo.\n",
		"main.go":   "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from the demo\") }\n",
		"go.mod":    "module demo\n\ngo 1.26\n",
	})
	if err != nil {
		return err
	}
	userPath := bin + string(os.PathListSeparator) + filepath.Dir(o.OpenCode)
	path := userPath + string(os.PathListSeparator) + os.Getenv("PATH")
	fmt.Fprintln(os.Stderr, "demo: creating a session (OpenCode starts in a few seconds) ...")
	create := exec.CommandContext(ctx, "kubectl", "agents", "session", "create", "--title", "demo",
		"--repo", repo, "--prompt", prompt, "--wait", "--timeout", "3m", "-o", "name")
	create.Env = append(os.Environ(), "PATH="+path, "KUBECONFIG="+o.Kubeconfig)
	create.Stderr = os.Stderr
	out, err := create.Output()
	if err != nil {
		return fmt.Errorf("kubectl agents session create: %w", err)
	}
	id := strings.TrimSpace(string(out))
	id = id[strings.LastIndex(id, "/")+1:]

	// The web UI sits behind an authenticating proxy in a real install; here, sign in
	// with a personal access token made for the demo.
	uiLogin := "sign in with a personal access token"
	if c, err := env.AdminClient(ctx); err == nil {
		day := apiv1.Duration{Duration: 24 * time.Hour}
		if tok, err := c.CreateToken(ctx, apiv1.CreateTokenRequest{Name: "demo web UI", ExpiresIn: &day}); err == nil {
			uiLogin = "sign in with the token " + tok.Token
		}
	}

	fmt.Printf(`
Cake Agents is running on a local cluster, with session %[1]s answering through a fake model.
In another terminal:

  export KUBECONFIG=%[2]s
  export PATH=%[3]s:$PATH

  kubectl agents session list
  kubectl agents attach %[1]s
  kubectl agents session logs %[1]s -f
  kubectl agents session create --prompt "write a haiku" --wait

The web UI: %[4]s — %[5]s.
Press Ctrl-C here to stop and clean up.
`, id, o.Kubeconfig, userPath, env.HTTPURL, uiLogin)
	<-ctx.Done()
	return nil
}
