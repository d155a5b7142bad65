package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/e2eenv"
	"github.com/cakeai/cake-agents/test/fakegithub"
	"github.com/cakeai/cake-agents/test/fakelinear"
	"github.com/cakeai/cake-agents/test/fakemodel"
	"github.com/cakeai/cake-agents/test/fakeslack"
)

// product is one installation under test, with two users: alice and bob (both in the
// group the chart binds to cake-agents-user), and the cluster admin.
type product struct {
	x          *tools
	env        *e2eenv.Env
	kube       kubernetes.Interface
	ns         string
	dsn        string // the Postgres database the agent must use ("" with SQLite)
	backend    string
	secrets    *secrets // every secret value of the install, for the leak scan
	alice, bob string   // kubeconfigs
	admin      string
	repo       string
	// github is the local stand-in for GitHub's device flow the agent links accounts with.
	github     *fakegithub.Server
	githubHost string
	gitHub     *githubHost // the stand-in's host: GitHub's endpoints and OWNER/NAME.git
	masterKey  string      // LiteLLM's, in the chart's litellm.secret
	// slack is the local stand-in for Slack's Web API; slackSecret signs the events
	// the test sends as Slack would.
	slack       *fakeslack.Server
	slackSecret string
	// linear is the local Linear whose issues start sessions; linearSecret signs its
	// webhook deliveries.
	linear       *fakelinear.Server
	linearSecret string
}

func install(t *testing.T, backend string) *product {
	t.Helper()
	x := setup(t)
	c := testcluster.Get(t)
	// A namespace of its own per run: runs sharing one cluster (several worktrees) must
	// not take each other's session pods.
	ns := fmt.Sprintf("cake-e2e-%s-%d", backend, os.Getpid())
	p := &product{x: x, kube: c.AdminClient(), ns: ns, admin: c.Kubeconfig(), backend: backend, secrets: newSecrets()}
	ctx := context.Background()
	if _, err := p.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns,
		// Session pods must pass the restricted Pod Security profile.
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// Registered first so it runs last, and also when the install fails.
	t.Cleanup(func() { _ = p.kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// Secrets the install holds, each a canary the leak scan looks for afterwards.
	// The model gateway is a fake LiteLLM: the agent makes each session a key with this.
	p.masterKey = p.secrets.canary("the LiteLLM master key")
	values := []string{"litellm.secret.create=true", "litellm.secret.apiKey=" + p.masterKey,
		"litellm.budget.perSession=5", "litellm.budget.perUser=50",
		"betterAuth.secret.create=true", "betterAuth.secret.value=" + p.secrets.canary("the auth secret")}
	// Linear: the agent's API key on a local Linear, and the webhook's signing secret.
	linearKey := p.secrets.canary("the Linear API key")
	p.linearSecret = p.secrets.canary("the Linear webhook signing secret")
	p.linear = fakelinear.New(linearKey, linearAgent)
	t.Cleanup(p.linear.Close)
	values = append(values, "linear.enabled=true", "linear.secret.create=true", "linear.secret.apiKey="+linearKey,
		"linear.secret.webhookSecret="+p.linearSecret, "linear.apiURL="+p.linear.GraphQLURL())
	// GitHub linking and a GitHub App against a local server speaking GitHub's
	// device-flow and App endpoints, whose host also serves repositories.
	p.github = fakegithub.New("Iv1.e2e")
	p.gitHub = startGitHubHost(t, p.github)
	p.githubHost = p.gitHub.Host
	appKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p.github.AddApp(e2eAppID, &appKey.PublicKey)
	p.github.Install(e2eAppID, "acme")
	values = append(values, "github.oauth.clientId=Iv1.e2e", "github.url="+p.gitHub.URL,
		fmt.Sprintf("github.app.id=%d", e2eAppID), "github.app.privateKey.existingSecret=e2e-github-app")
	// Slack against a local server speaking the Web API methods the agent calls.
	p.slackSecret = p.secrets.canary("the Slack signing secret")
	p.slack = fakeslack.New("xoxb-" + p.secrets.canary("the Slack bot token"))
	slackAPI := p.slack.Start()
	t.Cleanup(slackAPI.Close)
	values = append(values, "slack.enabled=true", "slack.apiURL="+slackAPI.URL+"/api", "slack.secret.create=true",
		"slack.secret.botToken="+p.slack.Token, "slack.secret.signingSecret="+p.slackSecret)
	appPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)})
	p.secrets.add(string(appPEM), "the GitHub App's private key")
	if _, err := p.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-github-app"},
		Data:       map[string][]byte{"private-key.pem": appPEM},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if backend != "sqlite" {
		// The production shape: the database from an existing Secret, either as one URL
		// (existingSecret/existingSecretKey) or as PG* variables (existingSecretEnv).
		dsn, err := url.Parse(testpg.Start(t))
		if err != nil {
			t.Fatal(err)
		}
		// The test server trusts local connections; the password is there to be kept secret.
		dbPassword := p.secrets.canary("the database password")
		dsn.User = url.UserPassword(dsn.User.Username(), dbPassword)
		p.dsn = dsn.String()
		data := map[string]string{"DATABASE_URL": p.dsn}
		values = append(values, "externalDatabase.existingSecret=agents-db")
		if backend == "postgres-pgenv" {
			u, err := url.Parse(p.dsn)
			if err != nil {
				t.Fatal(err)
			}
			// A Secret holding no URL at all: only what PG* variables need.
			data = map[string]string{"host": u.Hostname(), "port": u.Port(), "user": u.User.Username(),
				"password": dbPassword, "database": strings.TrimPrefix(u.Path, "/"), "sslmode": "disable"}
			for env, key := range map[string]string{"PGHOST": "host", "PGPORT": "port", "PGUSER": "user",
				"PGPASSWORD": "password", "PGDATABASE": "database", "PGSSLMODE": "sslmode"} {
				values = append(values, "externalDatabase.existingSecretEnv."+env+"="+key)
			}
		} else {
			values = append(values, "externalDatabase.existingSecretKey=DATABASE_URL")
		}
		if _, err := p.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "agents-db"},
			StringData: data,
		}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	work := t.TempDir()
	env, err := e2eenv.Start(ctx, e2eenv.Options{
		Kubeconfig: c.Kubeconfig(), Namespace: ns, Release: "cake-agents",
		Helm: x.helm, Agent: x.agent, OpenCode: x.oc, Chart: filepath.Join(x.root, "charts", "cake-agents"),
		Values: values, WorkDir: work, LiteLLMMasterKey: p.masterKey,
		Log: hclog.New(&hclog.LoggerOptions{Name: "e2e", Level: hclog.Warn, Output: testWriter{t}}),
	})
	if err != nil {
		if b, rerr := os.ReadFile(filepath.Join(work, "agent.log")); rerr == nil {
			t.Logf("agent log:\n%s", b)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(work, "agent.log")); err == nil {
				t.Logf("agent log:\n%s", tail(string(b), 80))
			}
		}
		env.Stop()
	})
	p.env = env
	p.secrets.watchSessionSecrets(t, p)
	// A personal access token, used once, is a secret too.
	if c, err := env.AdminClient(ctx); err != nil {
		t.Fatal(err)
	} else if tok, err := c.CreateToken(ctx, apiv1.CreateTokenRequest{Name: "leak canary"}); err != nil {
		t.Fatal(err)
	} else {
		p.secrets.add(tok.Token, "a personal access token")
	}
	p.alice = c.KubeconfigFor(t, c.UserConfig(t, "alice@example.com", "cake-agents:users"))
	p.bob = c.KubeconfigFor(t, c.UserConfig(t, "bob@example.com", "cake-agents:users"))
	p.repo, err = env.Git.AddRepo("project", map[string]string{"README.md": "# project\n", "main.go": "package main\n"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agents runs the plugin as user against this installation.
func (p *product) agents(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	out, err := p.agentsErr(t, kubeconfig, args...)
	if err != nil {
		t.Fatalf("kubectl agents %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (p *product) agentsErr(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	out, err := p.x.kubectlAgents(t, kubeconfig, append(args, "--agent-namespace", p.ns)...)
	p.secrets.transcript(out)
	return out, err
}

func (p *product) state(t *testing.T, kubeconfig, id string) string {
	t.Helper()
	return strings.TrimSpace(p.agents(t, kubeconfig, "session", "get", id, "-o", "jsonpath={.state}"))
}

func (p *product) waitState(t *testing.T, kubeconfig, id string, want apiv1.SessionState) {
	t.Helper()
	eventually(t, 2*time.Minute, "session "+id+" "+string(want), func() error {
		if got := p.state(t, kubeconfig, id); got != string(want) {
			return fmt.Errorf("state %s", got)
		}
		return nil
	})
}

// send sends a prompt, retrying while the session's OpenCode is still starting (kwok
// reports pods Ready at once, before the real process listens).
func (p *product) send(t *testing.T, kubeconfig, id, text string) {
	t.Helper()
	eventually(t, 2*time.Minute, "send "+text, func() error {
		out, err := p.agentsErr(t, kubeconfig, "session", "send", id, text)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// waitReply waits until the session's conversation holds the fake model's answer to prompt.
func (p *product) waitReply(t *testing.T, kubeconfig, id, prompt string) {
	t.Helper()
	want := fakemodel.Reply(prompt)
	eventually(t, 2*time.Minute, "reply to "+prompt, func() error {
		out, err := p.agentsErr(t, kubeconfig, "session", "logs", id)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("logs so far:\n%s", out)
		}
		return nil
	})
}

func TestEndToEnd(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres", "postgres-pgenv"} {
		t.Run(backend, func(t *testing.T) {
			p := install(t, backend)
			t.Run("CreateWaitLogsSend", p.testCreateWaitLogsSend)
			if backend == "postgres-pgenv" {
				// The same agent on the same Postgres as the variant before, wired through
				// PG* variables: what differs is the wiring, which these prove.
				t.Run("AgentRestart", p.testAgentRestart)
				t.Run("DatabaseIsTheChartsOne", p.testDatabase)
				t.Run("NoSecretLeaks", p.scanForLeaks)
				return
			}
			t.Run("LiteLLMKeyPerSession", p.testLiteLLMKeys)
			t.Run("WarmPool", p.testWarmPool)
			t.Run("BusyIsNotIdle", p.testBusyIsNotIdle)
			t.Run("Attach", p.testAttach)
			t.Run("StopStartDelete", p.testStopStartDelete)
			t.Run("FreshConversationSeeded", p.testFreshConversationSeeded)
			t.Run("Fork", p.testFork)
			t.Run("FollowAcrossAgentRestart", p.testFollowAcrossAgentRestart)
			t.Run("SecondUser", p.testSecondUser)
			t.Run("DoctorAndHeaderSpoofing", p.testDoctor)
			t.Run("Tokens", p.testTokens)
			t.Run("PrivateRepo", p.testPrivateRepo)
			t.Run("PrivateRepoSSH", p.testPrivateRepoSSH)
			t.Run("GitHubLink", p.testGitHubLink)
			t.Run("GitHubApp", p.testGitHubApp)
			t.Run("SlackMention", p.testSlackMention)
			t.Run("SessionBranch", p.testSessionBranch)
			t.Run("LinearAssignment", p.testLinearAssignment)
			t.Run("AgentRestart", p.testAgentRestart)
			t.Run("DatabaseIsTheChartsOne", p.testDatabase)
			t.Run("Providers", p.testProviders)
			t.Run("NoSecretLeaks", p.scanForLeaks)
		})
	}
}

// testDatabase proves the agent keeps its rows where the chart said: with Postgres, a new
// session's row is read from Postgres itself and no SQLite file exists; with SQLite, the row
// is in the file.
func (p *product) testDatabase(t *testing.T) {
	ctx := context.Background()
	id := lastField(p.agents(t, p.alice, "session", "create", "--title", "where am I stored", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	sqlitePath := p.env.SQLitePath()
	if p.dsn == "" {
		if _, err := os.Stat(sqlitePath); err != nil {
			t.Fatalf("the SQLite install keeps no database file: %v", err)
		}
		return
	}
	if _, err := os.Stat(sqlitePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a Postgres install wrote a SQLite file at %s (%v)", sqlitePath, err)
	}
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var title, owner string
	if err := conn.QueryRow(ctx, "select s.title, u.subject from sessions s join users u on u.id = s.owner_id where s.id = $1", id).Scan(&title, &owner); err != nil {
		t.Fatalf("session %s in Postgres: %v", id, err)
	}
	if title != "where am I stored" || owner != "alice@example.com" {
		t.Fatalf("session %s in Postgres: title %q owner %q", id, title, owner)
	}
}

func (p *product) testCreateWaitLogsSend(t *testing.T) {
	prompt := "fix the flaky test"
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--prompt", prompt, "--wait", "-o", "name"))
	if got := p.state(t, p.alice, id); got != "Running" {
		t.Fatalf("after --wait the session is %s", got)
	}
	p.waitReply(t, p.alice, id, prompt)
	if !p.env.Model.Received(prompt) {
		t.Fatal("the fake model never received the prompt")
	}
	p.send(t, p.alice, id, "now add a test")
	p.waitReply(t, p.alice, id, "now add a test")
	list := p.agents(t, p.alice, "session", "list")
	if !strings.Contains(list, id) || !strings.Contains(list, "Running") {
		t.Fatalf("session list:\n%s", list)
	}
	p.agents(t, p.alice, "session", "delete", id)
}

// testAttach drives `kubectl agents attach` in tmux: the OpenCode TUI appears and a
// typed prompt gets the fake model's reply on screen.
func (p *product) testAttach(t *testing.T) {
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	p.attachAndPrompt(t, id, "hello from tmux")
}

// attachAndPrompt runs `kubectl agents attach` as alice in a tmux terminal, waits for
// OpenCode's TUI, types prompt and waits for the fake model's reply on screen.
func (p *product) attachAndPrompt(t *testing.T, id, prompt string) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is missing: apt-get install tmux")
	}
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tm := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	// Not exec: when attach ends, the shell prints its exit code and keeps the pane (and
	// tmux) alive, so a failure shows what attach printed and how it ended instead of
	// "no server running".
	const exited = "kubectl agents attach exited with code"
	script := fmt.Sprintf("export PATH=%q KUBECONFIG=%q HOME=%q; kubectl agents attach %s --agent-namespace %s; rc=$?; echo; echo %q $rc; sleep 3600",
		p.x.path(), p.alice, t.TempDir(), id, p.ns, exited)
	if out, err := tm("new-session", "-d", "-s", "attach", "-x", "150", "-y", "40", "bash", "-c", script); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	defer func() { _, _ = tm("kill-server") }()
	screen := func() string {
		out, err := tm("capture-pane", "-p", "-S", "-100", "-t", "attach")
		if err != nil {
			return fmt.Sprintf("(capture-pane: %v %s)", err, out)
		}
		return out
	}
	// waitScreen waits for want on screen, failing at once (with the whole screen:
	// attach's own messages and its exit code) if attach has ended.
	waitScreen := func(what string, want ...string) {
		t.Helper()
		eventually(t, 90*time.Second, what, func() error {
			s := screen()
			if strings.Contains(s, exited) {
				t.Fatalf("waiting for %s, attach ended:\n%s", what, s)
			}
			for _, w := range want {
				if strings.Contains(s, w) {
					return nil
				}
			}
			return fmt.Errorf("screen:\n%s", s)
		})
	}
	waitScreen("the OpenCode TUI", "Ask anything", "ctrl+p")
	if out, err := tm("send-keys", "-t", "attach", prompt, "Enter"); err != nil {
		t.Fatalf("send-keys: %v %s", err, out)
	}
	waitScreen("the reply on screen", fakemodel.Reply(prompt))
}

// testStopStartDelete: a persistent session keeps its workspace and its OpenCode
// conversation across stop and start, leaves nothing behind when deleted but its
// transcript, and the audit log tells its story.
func (p *product) testStopStartDelete(t *testing.T) {
	ctx := context.Background()
	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--persistent", "--wait", "-o", "name"))
	pod, pvc := "cake-session-"+id, "cake-session-"+id+"-workspace"
	// Leave a file in the workspace, as work in progress would.
	ws := filepath.Join(p.envWorkDir(), "sessions", "pvc-"+pvc)
	eventually(t, time.Minute, "workspace checked out", func() error {
		_, err := os.Stat(filepath.Join(ws, "README.md"))
		return err
	})
	if err := os.WriteFile(filepath.Join(ws, "progress.txt"), []byte("halfway there\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	word := "kumquat-" + id
	p.send(t, p.alice, id, "remember the word "+word)
	p.waitReply(t, p.alice, id, "remember the word "+word)

	p.agents(t, p.alice, "session", "stop", id)
	p.waitState(t, p.alice, id, apiv1.StateStopped)
	if _, err := p.kube.CoreV1().Pods(p.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod still there after stop: %v", err)
	}
	if _, err := p.kube.CoreV1().PersistentVolumeClaims(p.ns).Get(ctx, pvc, metav1.GetOptions{}); err != nil {
		t.Fatalf("PVC gone after stop: %v", err)
	}

	p.agents(t, p.alice, "session", "start", id)
	p.waitState(t, p.alice, id, apiv1.StateRunning)
	// The same workspace: OpenCode itself reads the file (the fake model runs the tool).
	p.send(t, p.alice, id, "#tool:bash cat progress.txt")
	eventually(t, 2*time.Minute, "OpenCode reads the kept file", func() error {
		out, err := p.agentsErr(t, p.alice, "session", "logs", id)
		if err != nil || !strings.Contains(out, "halfway there") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// ... and the same conversation: OpenCode's state lives on the volume too.
	p.checkSameConversation(t, "cat progress.txt", "remember the word "+word)

	p.agents(t, p.alice, "session", "delete", id)
	eventually(t, time.Minute, "nothing left after delete", func() error {
		if _, err := p.kube.CoreV1().Pods(p.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pod: %v", err)
		}
		if _, err := p.kube.CoreV1().Secrets(p.ns).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("secret: %v", err)
		}
		if _, err := p.kube.CoreV1().PersistentVolumeClaims(p.ns).Get(ctx, pvc, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("pvc: %v", err)
		}
		if out, err := p.agentsErr(t, p.alice, "session", "get", id); err == nil {
			return fmt.Errorf("session still listed: %s", out)
		}
		return nil
	})

	p.testDeletedTranscript(t, id, word)

	// The audit log tells the session's story to an admin, newest first; alice may not read it.
	var actions []string
	for _, line := range strings.Split(strings.TrimSpace(p.agents(t, p.admin, "audit", "--target", id, "--no-headers", "--limit", "0")), "\n") {
		if f := strings.Fields(line); len(f) >= 5 && f[4] == "success" {
			actions = append(actions, f[2])
		}
	}
	if got, want := strings.Join(actions, " "), "session.delete session.message session.start session.stop session.message session.create"; got != want {
		t.Errorf("kubectl agents audit --target %s: actions %q, want %q", id, got, want)
	}
	if out, err := p.agentsErr(t, p.alice, "audit"); err == nil || !strings.Contains(out, "the audit log is for admins") {
		t.Errorf("alice reads the audit log: %v %s", err, out)
	}
}

func (p *product) envWorkDir() string {
	return filepath.Dir(filepath.Dir(p.env.Git.CAFile))
}

// testSecondUser: bob cannot see alice's private session, can see a public one but drive
// it only once RBAC grants him attach on it, and cannot delete it.
func (p *product) testSecondUser(t *testing.T) {
	priv := lastField(p.agents(t, p.alice, "session", "create", "--title", "secret plans", "-o", "name"))
	pub := lastField(p.agents(t, p.alice, "session", "create", "--title", "pairing", "--private=false", "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", priv, pub)

	if out, err := p.agentsErr(t, p.bob, "session", "get", priv); err == nil || !strings.Contains(out, "not found") {
		t.Fatalf("bob reads alice's private session: %v %s", err, out)
	}
	list := p.agents(t, p.bob, "session", "list")
	if strings.Contains(list, priv) || !strings.Contains(list, pub) {
		t.Fatalf("bob's list:\n%s", list)
	}
	// Reading a public session is for everyone; driving it is not: bob needs attach on it.
	if out, err := p.agentsErr(t, p.bob, "session", "send", pub, "bob says hi"); err == nil || !strings.Contains(out, "--resource-name="+pub) {
		t.Fatalf("bob drove alice's public session without attach: %v %s", err, out)
	}
	// The refusal is also a Kubernetes Event in the agent's namespace, naming bob.
	eventually(t, time.Minute, "an AccessDenied event for bob", func() error {
		events, err := p.kube.CoreV1().Events(p.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == "AccessDenied" && strings.Contains(e.Message, "bob@example.com") && strings.Contains(e.Message, pub) {
				return nil
			}
		}
		return fmt.Errorf("%d events, none AccessDenied for bob on %s", len(events.Items), pub)
	})
	testcluster.Get(t).Grant(t, p.ns, "bob-pairs-on-"+pub, rbacv1.Subject{Kind: rbacv1.UserKind, Name: "bob@example.com"},
		rbacv1.PolicyRule{APIGroups: []string{apiv1.Group}, Resources: []string{apiv1.Resource}, Verbs: []string{apiv1.VerbAttach}, ResourceNames: []string{pub}})
	p.send(t, p.bob, pub, "bob says hi")
	p.waitReply(t, p.bob, pub, "bob says hi")
	if out, err := p.agentsErr(t, p.bob, "session", "delete", pub); err == nil || !strings.Contains(out, "only the owner") {
		t.Fatalf("bob deleted alice's session: %v %s", err, out)
	}
	if out, err := p.agentsErr(t, p.bob, "session", "stop", pub); err == nil {
		t.Fatalf("bob stopped alice's session: %s", out)
	}
}

func (p *product) testDoctor(t *testing.T) {
	out := p.agents(t, p.alice, "doctor")
	if strings.Contains(out, "[FAIL]") || !strings.Contains(out, "forged identity headers") {
		t.Fatalf("doctor:\n%s", out)
	}
}

// testTokens: a personal access token made with the CLI works on the agent's plain-HTTP
// port (where --server clients arrive), is listed, and stops working once an admin revokes
// every token of its owner; a lifetime above the agent's maximum is refused, and only an
// admin may revoke another user's tokens.
func (p *product) testTokens(t *testing.T) {
	ctx := context.Background()
	if out, err := p.agentsErr(t, p.alice, "token", "create", "too-long", "--expires-in", "8760h"); err == nil ||
		!strings.Contains(out, "longer than this agent's maximum token lifetime of 2160h0m0s") {
		t.Fatalf("a token for a year: %v %s", err, out)
	}
	idAndSecret := strings.Fields(p.agents(t, p.alice, "token", "create", "e2e", "--expires-in", "1h", "-o", "jsonpath={.metadata.name} {.token}"))
	if len(idAndSecret) != 2 || !strings.HasPrefix(idAndSecret[1], "cka_") {
		t.Fatalf("token create printed %q", idAndSecret)
	}
	id, secret := idAndSecret[0], idAndSecret[1]
	c, err := client.New(p.env.HTTPURL, &http.Client{Timeout: 30 * time.Second}, client.WithToken(secret))
	if err != nil {
		t.Fatal(err)
	}
	who, err := c.WhoAmI(ctx)
	if err != nil || who.Authenticator != "token" || who.User.Subject != "alice@example.com" {
		t.Fatalf("whoami with the token: %+v %v", who, err)
	}
	if list := p.agents(t, p.alice, "token", "list", "-o", "name"); !strings.Contains(list, "token.agents.cake.ai/"+id+"\n") {
		t.Fatalf("token list -o name:\n%s", list)
	}
	if out, err := p.agentsErr(t, p.bob, "token", "revoke", "--all-of", "alice@example.com"); err == nil || !strings.Contains(out, "are for admins") {
		t.Fatalf("bob revoked alice's tokens: %v %s", err, out)
	}
	if out := p.agents(t, p.admin, "token", "revoke", "--all-of", "alice@example.com"); !strings.Contains(out, "1 token(s) revoked of kubernetes user alice@example.com") {
		t.Fatalf("admin revoke --all-of:\n%s", out)
	}
	if _, err := c.WhoAmI(ctx); client.StatusCode(err) != http.StatusUnauthorized {
		t.Fatalf("whoami with the revoked token: %v, want 401", err)
	}
}

// testAgentRestart kills the agent mid-flight (a create just accepted, a stop just
// issued) and checks the restarted agent converges: nothing lost, nothing orphaned.
func (p *product) testAgentRestart(t *testing.T) {
	ctx := context.Background()
	keep := lastField(p.agents(t, p.alice, "session", "create", "--title", "keeps running", "--wait", "-o", "name"))
	stopping := lastField(p.agents(t, p.alice, "session", "create", "--title", "to stop", "--wait", "-o", "name"))
	p.agents(t, p.alice, "session", "stop", stopping)
	fresh := lastField(p.agents(t, p.alice, "session", "create", "--title", "just created", "-o", "name"))
	p.env.StopAgent(true) // SIGKILL: no graceful shutdown

	if err := p.env.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitState(t, p.alice, keep, apiv1.StateRunning)
	p.waitState(t, p.alice, stopping, apiv1.StateStopped)
	p.waitState(t, p.alice, fresh, apiv1.StateRunning)
	if _, err := p.kube.CoreV1().Pods(p.ns).Get(ctx, "cake-session-"+stopping, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the stopped session's pod survived the restart: %v", err)
	}
	p.agents(t, p.alice, "session", "delete", keep, stopping, fresh)
}
