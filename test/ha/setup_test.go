// Package ha runs the chart's high-availability shape for real: two agent processes
// (the binary built from cmd/agent), each with its own listeners and the environment
// the chart's Deployment gives its pod (replicas: 2, leader election on a Lease), on
// one PostgreSQL database, with API requests sent to both. It kills the leader in the
// middle of a burst of creates, sends conflicting operations on the same sessions to
// both replicas at once, and races 1,000 creates of one user against the per-user
// quota. Each scenario prints one `reliability: ...` figure and fails on any loss,
// duplicate pod or inconsistency; BenchmarkFailover measures how long a takeover
// takes (for `make bench`; no test asserts a duration).
//
// Session pods run on kwok: no containers, their OpenCode port reaches a stand-in that
// answers the health check the agent waits for (e2eenv.Options.NoSessionRunner).
//
//	go test -race -run TestTwoReplicas ./test/ha
package ha

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/e2eenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testcluster.Shutdown()
	_ = testpg.Shutdown()
	os.Exit(code)
}

// Test users: the cluster admin (no session quota) and alice, a plain user in the group
// the chart binds to cake-agents-user.
const (
	aliceName  = "alice@example.com"
	usersGroup = "cake-agents:users"
	// quota is the chart's sessions.maxActivePerUser in these installs.
	quota = 5
)

// Election timing of the test installs, through the chart's values: short, so a
// takeover does not dominate the run, but with room for a busy 2-core machine.
var testElection = election{lease: 8 * time.Second, renew: 6 * time.Second, retry: 2 * time.Second}

// election is the chart's controlPlane.leaderElection; the zero value keeps the
// chart's defaults.
type election struct{ lease, renew, retry time.Duration }

func (e election) values() []string {
	if e == (election{}) {
		return nil
	}
	return []string{
		"controlPlane.leaderElection.leaseDuration=" + e.lease.String(),
		"controlPlane.leaderElection.renewDeadline=" + e.renew.String(),
		"controlPlane.leaderElection.retryPeriod=" + e.retry.String(),
	}
}

// install is the chart installed with two agent replicas on one Postgres database.
type install struct {
	env   *e2eenv.Env
	ns    string
	lease string // the reconciler's Lease
	dsn   string
	c     *testcluster.Cluster
	// admin and alice hold one API client per replica, in the order of env.Agents.
	admin, alice []*client.Client
}

var (
	buildOnce sync.Once
	agentBin  string
	helmBin   string
	buildErr  error
)

// tools builds the agent from this tree (so a stale bin/ can't mislead) and finds helm
// through the project's pinned install, once per test binary.
func tools(tb testing.TB) (agent, helm string) {
	tb.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		dir, err := os.MkdirTemp("", "cake-ha-bin-")
		if err != nil {
			buildErr = err
			return
		}
		agentBin = filepath.Join(dir, "agent")
		cmd := exec.Command("go", "build", "-o", agentBin, "./cmd/agent")
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/agent: %v\n%s", err, out)
			return
		}
		cmd = exec.Command(filepath.Join(root, "hack", "tools.sh"), "helm")
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			buildErr = fmt.Errorf("hack/tools.sh helm: %v\n%s", err, stderr.String())
			return
		}
		helmBin = strings.TrimSpace(string(out))
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return agentBin, helmBin
}

// setup installs the chart in namespace ns with controlPlane.replicas=2 and its
// DATABASE_URL from an existing Secret naming a fresh Postgres database (the production
// wiring), starts both agents, and waits until one of them holds the Lease.
func setup(tb testing.TB, ns string, el election) *install {
	tb.Helper()
	if testing.Short() {
		tb.Skip("two agents need the local cluster and PostgreSQL (run without -short)")
	}
	agent, helm := tools(tb)
	c := testcluster.Get(tb)
	dsn := testpg.Start(tb)
	ctx := context.Background()
	kube := c.AdminClient()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "agents-db"},
		StringData: map[string]string{"DATABASE_URL": dsn},
	}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	work := tb.TempDir()
	values := append([]string{
		"controlPlane.replicas=2",
		// The cluster-wide user ClusterRoles belong to one release per cluster (in the shared
		// test cluster the e2e release, installed at the same time): alice's group gets the
		// same rules from a grant named for this namespace (below).
		"rbac.createUserRoles=false", "rbac.userGroups=null",
		"externalDatabase.existingSecret=agents-db", "externalDatabase.existingSecretKey=DATABASE_URL",
		"betterAuth.secret.create=true", "betterAuth.secret.value=ha-test-auth-secret-0123456789abcdef",
		fmt.Sprintf("sessions.maxActivePerUser=%d", quota),
	}, el.values()...)
	env, err := e2eenv.Start(ctx, e2eenv.Options{
		Kubeconfig: c.Kubeconfig(), Namespace: ns, Release: "cake-agents",
		Helm: helm, Agent: agent, OpenCode: "opencode", Chart: filepath.Join(root, "charts", "cake-agents"),
		Values: values, WorkDir: work, Replicas: 2, NoSessionRunner: true,
		// The Secret's URL, which the agents read through the chart's secretKeyRef anyway.
		DatabaseURL: dsn,
		Log:         hclog.NewNullLogger(),
	})
	if err != nil {
		dumpLogs(tb, work)
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			dumpLogs(tb, work)
		}
		env.Stop()
	})
	in := &install{env: env, ns: ns, lease: "cake-agents-reconciler", dsn: dsn, c: c}
	c.Grant(tb, "", "cake-agents-user-"+ns, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: usersGroup},
		rbacv1.PolicyRule{APIGroups: []string{apiv1.Group}, Resources: []string{apiv1.Resource}, Verbs: []string{"get", "list", "create", "update", "delete"}})
	alice := c.UserConfig(tb, aliceName, usersGroup)
	for _, a := range env.Agents {
		in.admin = append(in.admin, in.client(tb, a, c.RESTConfig()))
		in.alice = append(in.alice, in.client(tb, a, alice))
	}
	if _, err := in.leader(ctx, "", 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	return in
}

// client is an API client of agent a acting as the user of cfg. It speaks HTTP/2, as a
// browser or an ingress would: a thousand concurrent calls share one connection.
func (in *install) client(tb testing.TB, a *e2eenv.Agent, cfg *rest.Config) *client.Client {
	tb.Helper()
	tc, err := in.env.ClientTLS(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	cl, err := client.New(a.HTTPSURL, &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}})
	if err != nil {
		tb.Fatal(err)
	}
	return cl
}

// leader waits until the Lease names a replica other than not ("" for any) and
// returns its index in env.Agents.
func (in *install) leader(ctx context.Context, not string, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		l, err := in.env.Kube.CoordinationV1().Leases(in.ns).Get(ctx, in.lease, metav1.GetOptions{})
		if err == nil {
			if i := in.holder(l); i >= 0 && in.env.Agents[i].Pod != not {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no replica other than %q holds Lease %s/%s after %s (last error %v)", not, in.ns, in.lease, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// holder is the index of the replica the Lease names, -1 for none.
func (in *install) holder(l *coordinationv1.Lease) int {
	if l.Spec.HolderIdentity == nil {
		return -1
	}
	for i, a := range in.env.Agents {
		if a.Pod == *l.Spec.HolderIdentity {
			return i
		}
	}
	return -1
}

// db opens a connection to the agents' database, to check rows without the API.
func (in *install) db(tb testing.TB) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), in.dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func dumpLogs(tb testing.TB, work string) {
	logs, _ := filepath.Glob(filepath.Join(work, "agent*.log"))
	for _, p := range logs {
		if b, err := os.ReadFile(p); err == nil {
			tb.Logf("%s:\n%s", filepath.Base(p), tail(string(b), 60))
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// figure records a reliability figure for the run's summary and logs it.
func figure(tb testing.TB, scenario, format string, args ...any) {
	line, err := figures.Record("reliability", scenario, format, args...)
	if err != nil {
		tb.Logf("record figure: %v", err)
	}
	tb.Log(line)
	fmt.Fprintln(os.Stderr, line)
}

// waitFor polls f until it returns nil; past the deadline it fails tb with f's last
// error. It bounds waits for convergence; no test asserts how fast anything is.
func waitFor(tb testing.TB, within time.Duration, what string, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: still not after %s: %v", what, within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
