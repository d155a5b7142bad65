package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testPrivateRepo: a private repository on the local HTTPS git server (it wants the
// token) fails to clone without a credential, with a `session why` that names the
// command to add one; once alice adds her token with the plugin, a session clones it,
// and a push from the session's workspace, with the session's own git environment (the
// credential helper reading the Secret volume), lands on the server. The token is a
// canary: the leak scan looks for it in everything the run leaves behind.
func (p *product) testPrivateRepo(t *testing.T) {
	token := p.secrets.canary("a git access token")
	repo, err := p.env.Git.AddPrivateRepo("private", map[string]string{"README.md": "# private\n"}, apiv1.DefaultCredentialUsername, token)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(repo)
	host := u.Host

	// Without a credential: Failed, and why says what to do.
	denied := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", denied)
	p.waitState(t, p.alice, denied, apiv1.StateFailed)
	why := p.agents(t, p.alice, "session", "why", denied)
	if want := "kubectl agents credential add " + host; !strings.Contains(why, want) {
		t.Fatalf("session why does not name %q:\n%s", want, why)
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.agents(t, p.alice, "credential", "add", host, "--token-file", tokenFile)
	defer p.agents(t, p.alice, "credential", "remove", host)
	if list := p.agents(t, p.alice, "credential", "list"); !strings.Contains(list, host) || strings.Contains(list, token) {
		t.Fatalf("credential list:\n%s", list)
	}
	// Bob has none: his list is empty.
	if out, _ := p.agentsErr(t, p.bob, "credential", "list"); strings.Contains(out, host) {
		t.Fatalf("bob sees alice's credential:\n%s", out)
	}

	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	s, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), podOf(id))
	if err != nil || len(s.Items) != 1 {
		t.Fatalf("session pod of %s: %v (%d)", id, err, len(s.Items))
	}
	pod := s.Items[0]
	// The clone happens in the runner before OpenCode starts; wait for the checkout.
	var out []byte
	eventually(t, time.Minute, "the private checkout", func() error {
		out, err = p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "git", "log", "-1", "--format=%s")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	run := func(args ...string) {
		t.Helper()
		out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, args...)
		if err != nil {
			t.Fatalf("%s in the session: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("git", "-c", "user.name=session", "-c", "user.email=session@example.com", "commit", "-q", "--allow-empty", "-m", "from the session")
	run("git", "push", "-q", "origin", "HEAD:refs/heads/from-session")
	got, err := exec.Command("git", "--git-dir", p.env.Git.Dir("private"), "log", "-1", "--format=%s", "from-session").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "from the session" {
		t.Fatalf("the push did not land on the git server: %q %v", got, err)
	}
	// Neither the checkout's config nor the remote URL holds the token.
	if cfg, _ := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "cat", ".git/config"); strings.Contains(string(cfg), token) {
		t.Fatalf("the token is in the checkout's .git/config:\n%s", cfg)
	}
}

// podOf selects the pod of session id.
func podOf(id string) metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: apiv1.LabelSessionID + "=" + id}
}

// testGitHubLink: `kubectl agents github link` shows the code the agent got from (the
// local stand-in for) GitHub, waits while the user has not entered it, and once they
// authorize, the token is alice's github.com credential, which her session on a private
// repository clones and pushes with; it is a canary for the leak scan.
func (p *product) testGitHubLink(t *testing.T) {
	token := p.secrets.canary("a linked GitHub token")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.x.kubectl, "agents", "github", "link", "--agent-namespace", p.ns)
	cmd.Env = append(os.Environ(), "PATH="+p.x.path(), "KUBECONFIG="+p.alice, "HOME="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// "Open URL and enter the code CODE (it expires at ...). Waiting..."
	var transcript strings.Builder
	code := ""
	sc := bufio.NewScanner(stderr)
	for code == "" && sc.Scan() {
		line := sc.Text()
		transcript.WriteString(line + "\n")
		if _, rest, ok := strings.Cut(line, "enter the code "); ok {
			code, _, _ = strings.Cut(rest, " ")
		}
	}
	if code == "" {
		_ = cmd.Wait()
		t.Fatalf("github link showed no code:\n%s", transcript.String())
	}
	if !p.github.Approve(code, token) {
		t.Fatalf("the plugin shows %q, which GitHub never issued", code)
	}
	_, _ = io.Copy(&transcript, stderr) // to EOF: the process exits once linked
	if err := cmd.Wait(); err != nil {
		t.Fatalf("github link: %v\n%s%s", err, transcript.String(), stdout.String())
	}
	p.secrets.transcript(transcript.String() + stdout.String())
	if !strings.Contains(stdout.String(), "GitHub account linked") {
		t.Errorf("github link stdout = %q", stdout.String())
	}
	// The token is stored for the host of the agent's --github-url: here the stand-in's.
	list := p.agents(t, p.alice, "credential", "list")
	if !strings.Contains(list, p.githubHost) || strings.Contains(list, token) {
		t.Fatalf("credential list after linking (want %s):\n%s", p.githubHost, list)
	}

	// A private repository only the linked account may read: a session clones it and a
	// push from the session lands, with the linked token (not an App token: the
	// owner's own credential comes first).
	repo, bare := p.gitHub.addUserRepo(t, "alice", "linked", token)
	appTokens := len(p.github.Issued())
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	pods, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), podOf(id))
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("session pod of %s: %v", id, err)
	}
	pod := pods.Items[0]
	eventually(t, time.Minute, "the checkout cloned with the linked token", func() error {
		out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "git", "log", "-1", "--format=%s")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	for _, args := range [][]string{
		{"git", "-c", "user.name=session", "-c", "user.email=session@example.com", "commit", "-q", "--allow-empty", "-m", "from the linked session"},
		{"git", "push", "-q", "origin", "HEAD:refs/heads/cake/linked-work"},
	} {
		if out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, args...); err != nil {
			t.Fatalf("%s in the session: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if got, err := exec.Command("git", "--git-dir", bare, "log", "-1", "--format=%s", "cake/linked-work").CombinedOutput(); err != nil || strings.TrimSpace(string(got)) != "from the linked session" {
		t.Fatalf("the push did not land: %q %v", got, err)
	}
	if n := len(p.github.Issued()) - appTokens; n != 0 {
		t.Errorf("the App issued %d tokens for a session whose owner linked an account", n)
	}
	p.agents(t, p.alice, "credential", "remove", p.githubHost)
}
