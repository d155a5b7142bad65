// Command demo runs the local demonstration behind `make demo`: the chart installed on a
// local cluster, the agent, the fake model, OpenCode sessions, and one demo session with an
// initial prompt. It prints what to type next and stays up until Ctrl-C.
//
// With --real-node (hack/demo.sh picks it when the machine allows: root, unshare, iptables)
// the cluster has a real kubelet with containerd and runc, inside network and mount
// namespaces of its own: the agent runs in its image, sessions in theirs, and the host
// reaches the cluster through a proxy on loopback. Otherwise kwok stands in for the kubelet,
// and the agent and OpenCode run as local processes behind the pods' ports.
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

	"github.com/cakeai/cake-agents/internal/testcluster"
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

// demoRepo is the demo session's repository, served in the cluster (the machine may be
// offline).
var demoRepo = map[string]string{
	"README.md": "# demo\n\nA tiny project for the Cake Agents demo.\n",
	"main.go":   "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from the demo\") }\n",
	"go.mod":    "module demo\n\ngo 1.26\n",
}

type options struct {
	e2eenv.Options
	bin, prompt string
	realNode    bool
	canRun      bool
	images      string
}

func run(ctx context.Context) error {
	var o options
	flag.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the local cluster (kwok mode)")
	flag.StringVar(&o.Helm, "helm", "helm", "helm binary")
	flag.StringVar(&o.OpenCode, "opencode", "opencode", "opencode binary")
	flag.StringVar(&o.Chart, "chart", "charts/cake-agents", "chart directory")
	flag.StringVar(&o.WorkDir, "workdir", ".cache/demo/run", "working directory")
	flag.StringVar(&o.bin, "bin", "bin", "directory with agent and kubectl-agents")
	flag.StringVar(&o.prompt, "prompt", "Hello! Look around this repository and tell me what it is.", "the demo session's prompt")
	flag.BoolVar(&o.realNode, "real-node", false, "start a cluster with a real node (root) instead of using --kubeconfig's kwok cluster")
	flag.BoolVar(&o.canRun, "can-run-real-node", false, "exit 0 if this machine can run a real node, else print why and exit 1")
	flag.StringVar(&o.images, "images", "", "index of the built images (--real-node; default $CACHE_DIR/images/index.tsv)")
	flag.Parse()
	if o.canRun {
		if err := testcluster.CanRunRealNode(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		return nil
	}
	var err error
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}
	if o.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
		return err
	}
	if o.Chart, err = filepath.Abs(o.Chart); err != nil {
		return err
	}
	o.Agent = filepath.Join(o.bin, "agent")
	o.Log = hclog.New(&hclog.LoggerOptions{Name: "demo", Level: hclog.Warn, Output: os.Stderr})
	if o.realNode {
		return runRealNode(ctx, o)
	}
	return runKwok(ctx, o)
}

func runKwok(ctx context.Context, o options) error {
	fmt.Fprintln(os.Stderr, "demo: installing the chart and starting the agent ...")
	env, err := e2eenv.Start(ctx, o.Options)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "\ndemo: cleaning up ...")
		env.Stop()
	}()
	repo, err := env.Git.AddRepo("demo", demoRepo)
	if err != nil {
		return err
	}
	id, err := createSession(ctx, o, o.Kubeconfig, repo)
	if err != nil {
		return err
	}
	// The web UI sits behind an authenticating proxy in a real install; here, sign in
	// with a personal access token made for the demo.
	uiLogin := "sign in with a personal access token"
	if c, err := env.AdminClient(ctx); err == nil {
		if tok, err := c.CreateToken(ctx, demoToken()); err == nil {
			uiLogin = "sign in with the token " + tok.Token
		}
	}
	printNext("a local cluster (kwok: the agent and OpenCode run as local processes)", id, o.Kubeconfig, userPath(o), env.HTTPURL, uiLogin)
	<-ctx.Done()
	return nil
}

// userPath is what a user's PATH needs for the printed commands: kubectl-agents, the pinned
// OpenCode (attach runs it locally) and kubectl.
func userPath(o options) string {
	dirs := []string{o.bin, filepath.Dir(o.OpenCode)}
	if k, err := exec.LookPath("kubectl"); err == nil {
		if abs, err := filepath.Abs(k); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	return strings.Join(dirs, string(os.PathListSeparator))
}

func demoToken() apiv1.CreateTokenRequest {
	day := apiv1.Duration{Duration: 24 * time.Hour}
	return apiv1.CreateTokenRequest{Name: "demo web UI", ExpiresIn: &day}
}

// createSession runs `kubectl agents session create --wait` for the demo session and returns
// its id.
func createSession(ctx context.Context, o options, kubeconfig, repo string, extra ...string) (string, error) {
	fmt.Fprintln(os.Stderr, "demo: creating a session (OpenCode starts in a few seconds) ...")
	args := append([]string{"agents", "session", "create", "--title", "demo",
		"--repo", repo, "--prompt", o.prompt, "--wait", "--timeout", "3m", "-o", "name"}, extra...)
	create := exec.CommandContext(ctx, "kubectl", args...)
	create.Env = append(os.Environ(), "PATH="+userPath(o)+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kubeconfig)
	create.Stderr = os.Stderr
	out, err := create.Output()
	if err != nil {
		return "", fmt.Errorf("kubectl agents session create: %w", err)
	}
	id := strings.TrimSpace(string(out))
	return id[strings.LastIndex(id, "/")+1:], nil
}

func printNext(where, id, kubeconfig, path, uiURL, uiLogin string) {
	fmt.Printf(`
Cake Agents is running on %[6]s, with session %[1]s answering through a fake model.
In another terminal:

  export KUBECONFIG=%[2]s
  export PATH=%[3]s:$PATH

  kubectl agents session list
  kubectl agents attach %[1]s
  kubectl agents session logs %[1]s -f
  kubectl agents session create --prompt "write a haiku" --wait

The web UI: %[4]s — %[5]s.
Press Ctrl-C here to stop and clean up.
`, id, kubeconfig, path, uiURL, uiLogin, where)
}
