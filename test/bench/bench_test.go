// Package bench measures the product against peers in the same run, on the same
// machine: the plugin against kubectl, the agent's session create against a raw pod
// create, the API's list latency at 10k sessions, and the agent's memory and restart
// time at that size. hack/bench.sh runs these with the store and controller
// benchmarks and prints the ratios.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/internal/benchsample"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/tunnel"
	"github.com/cakeai/cake-agents/test/e2eenv"
	"github.com/cakeai/cake-agents/test/sessionrunner"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		env.Stop()
	}
	_ = testcluster.Shutdown()
	_ = testpg.Shutdown()
	os.Exit(code)
}

var (
	once             sync.Once
	env              *e2eenv.Env
	setupErr         error
	binDir, work     string
	kubectl, cluster string
)

// setup installs the product once for every benchmark (see test/e2eenv).
func setup(b *testing.B) *e2eenv.Env {
	b.Helper()
	if testing.Short() {
		b.Skip("benchmarks need the local cluster")
	}
	c := testcluster.Get(b)
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if binDir, setupErr = os.MkdirTemp("", "cake-bench-"); setupErr != nil {
			return
		}
		work = filepath.Join(binDir, "work")
		for _, bld := range [][3]string{{"agent", "./cmd/agent", "1"}, {"kubectl-agents", "./cmd/kubectl-agents", "0"}} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, bld[0]), bld[1])
			cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED="+bld[2])
			if out, err := cmd.CombinedOutput(); err != nil {
				setupErr = fmt.Errorf("build %s: %v: %s", bld[1], err, out)
				return
			}
		}
		helm, err := exec.Command(filepath.Join(root, "hack", "tools.sh"), "helm").Output()
		if err != nil {
			setupErr = fmt.Errorf("hack/tools.sh helm: %w", err)
			return
		}
		kubectl = filepath.Join(testcluster.DefaultBinDir(), "kubectl")
		cluster = c.Kubeconfig()
		env, setupErr = e2eenv.Start(context.Background(), e2eenv.Options{
			Kubeconfig: cluster, Namespace: "cake-bench", Release: "cake-agents",
			Helm: strings.TrimSpace(string(helm)), Agent: filepath.Join(binDir, "agent"), OpenCode: "opencode",
			Chart: filepath.Join(root, "charts", "cake-agents"), WorkDir: work,
			// Benchmarks create many sessions quickly; their pods get stand-ins, not OpenCode.
			Values:          []string{"sessions.maxActivePerUser=0"},
			NoSessionRunner: true,
			Log:             hclog.NewNullLogger(),
		})
	})
	if setupErr != nil {
		b.Fatal(setupErr)
	}
	return env
}

// run runs a command in the benchmark's environment and returns its standard output.
func run(b *testing.B, name string, args ...string) string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+work)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %v: %v\n%s%s", name, args, err, out, stderr.Bytes())
	}
	return string(out)
}

// BenchmarkStartup: `kubectl agents version --client` against `kubectl version --client`.
func BenchmarkStartup(b *testing.B) {
	setup(b)
	for _, side := range []struct{ name, want string }{{"plugin", "Client Version"}, {"kubectl", "Client Version"}} {
		args := []string{"version", "--client"}
		if side.name == "plugin" {
			args = append([]string{"agents"}, args...)
		}
		b.Run(side.name, func(b *testing.B) {
			var lat benchsample.Samples
			for range benchsample.N(b, 10) {
				var out string
				lat.Time(func() { out = run(b, kubectl, args...) })
				if !strings.Contains(out, side.want) {
					b.Fatalf("kubectl %v printed %q, not %q", args, out, side.want)
				}
			}
			lat.Report(b, "ms")
		})
	}
}

// listSessions is how many sessions BenchmarkList lists: each has a pod, so both sides
// print as many rows.
const listSessions = 20

// BenchmarkList: `kubectl agents session list` (discovery, port-forward, TLS, API) against
// `kubectl get pods` on the same cluster, with listSessions sessions (and their pods) in
// it. Each run's rows are counted against the API's answer.
func BenchmarkList(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	for range listSessions {
		s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "list bench"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _, _ = c.DeleteSession(ctx, s.ID) })
		// Running: its pod exists and stays, so both sides' row counts hold still.
		waitRunning(b, c, s.ID)
	}
	mine, err := c.ListAllSessions(ctx, client.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	pods, err := e.Kube.CoreV1().Pods("cake-bench").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, side := range []struct {
		name string
		args []string
		rows int
	}{
		{"plugin", []string{"agents", "session", "list", "--agent-namespace", "cake-bench"}, len(mine)},
		{"kubectl", []string{"get", "pods", "-n", "cake-bench"}, len(pods.Items)},
	} {
		b.Run(side.name, func(b *testing.B) {
			var lat benchsample.Samples
			for range benchsample.N(b, 10) {
				var out string
				lat.Time(func() { out = run(b, kubectl, side.args...) })
				// A header, then one row per item.
				if got := len(strings.Split(strings.TrimSpace(out), "\n")) - 1; got != side.rows {
					b.Fatalf("kubectl %v printed %d rows, want %d:\n%s", side.args, got, side.rows, out)
				}
			}
			lat.Report(b, "ms")
		})
	}
}

// adminClient talks to the local agent's HTTPS port with the cluster admin's client
// certificate, as the plugin would after its port-forward.
func adminClient(b *testing.B, e *e2eenv.Env) *client.Client {
	b.Helper()
	c, err := e.AdminClient(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkCreateToPod: from the API call to the session's pod existing, against a raw
// client-go pod create (with the agent's client-side rate limit) observed the same way:
// the pod's ADDED event on a watch of the API server, which is the check that it exists;
// and against the same two objects a session is made of (a Secret, then its Pod).
func BenchmarkCreateToPod(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	ns := "cake-bench"
	w, err := e.Kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	seen := make(chan string, 1024)
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				seen <- p.Name
			}
		}
	}()
	waitFor := func(name string) {
		for {
			select {
			case n := <-seen:
				if n == name {
					return
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("pod %s never appeared", name)
			}
		}
	}
	c := adminClient(b, e)
	// The peer gets the agent's client-side rate limit: client-go's default (5/s, bursts of
	// 10) would throttle it where the agent is not.
	rawCfg := rest.CopyConfig(e.Config)
	rawCfg.QPS, rawCfg.Burst = sessions.KubeQPS, sessions.KubeBurst
	raw, err := kubernetes.NewForConfig(rawCfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("agent", func(b *testing.B) {
		var lat benchsample.Samples
		for range benchsample.N(b, 20) {
			t0 := time.Now()
			s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			waitFor(s.PodName)
			lat.Add(time.Since(t0))
			_, _ = c.DeleteSession(ctx, s.ID)
		}
		lat.Report(b, "ms")
	})
	b.Run("raw-client-go", func(b *testing.B) {
		var lat benchsample.Samples
		for i := range benchsample.N(b, 20) {
			name := fmt.Sprintf("raw-%d-%d", time.Now().UnixNano(), i)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			t0 := time.Now()
			if _, err := raw.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			waitFor(name)
			lat.Add(time.Since(t0))
			_ = raw.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
		lat.Report(b, "ms")
	})
	// What a session is made of, by hand: its Secret, then a Pod that reads it (in that
	// order, as the agent makes them: a kubelet that meets the pod before its Secret
	// retries the volume after 500 ms and a missing env Secret after 10 s). The agent's
	// ratio to this peer is its own cost: the row, the audit record, its HTTP API.
	b.Run("raw-secret-pod", func(b *testing.B) {
		var lat benchsample.Samples
		for i := range benchsample.N(b, 20) {
			name := fmt.Sprintf("raw-sp-%d-%d", time.Now().UnixNano(), i)
			secret, pod := secretAndPod(name, nil)
			t0 := time.Now()
			if _, err := raw.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			if _, err := raw.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			waitFor(name)
			lat.Add(time.Since(t0))
			_ = raw.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			_ = raw.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
		}
		lat.Report(b, "ms")
	})
}

// BenchmarkAt10k loads 10,000 stopped sessions ($CAKE_BENCH_SESSIONS; CI loads fewer)
// into the agent's database and measures list-page latency (p50/p99) and throughput on
// loopback, the agent's RSS before and after, and how long a restarted agent takes to be
// ready and to have reconciled every session once.
func BenchmarkAt10k(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	n := benchsample.Sessions()
	var idle, idleAnon, idleFile []float64
	for range benchsample.N(b, 5) {
		m := agentRSS(b, e)
		idle, idleAnon, idleFile = append(idle, mib(m.rss)), append(idleAnon, mib(m.anon)), append(idleFile, mib(m.file))
		time.Sleep(100 * time.Millisecond)
	}
	owner := seed(b, n)
	// The rows are all there: count them through the API.
	all, err := c.ListAllSessions(ctx, client.ListOptions{AllUsers: true, Owner: owner, Limit: 1000})
	if err != nil {
		b.Fatal(err)
	}
	if len(all) != n {
		b.Fatalf("the API lists %d of the %d seeded sessions", len(all), n)
	}
	listPage := func() error {
		page, err := c.ListSessions(ctx, client.ListOptions{AllUsers: true, Owner: owner, Limit: 100})
		if err != nil {
			return err
		}
		if len(page.Items) != min(n, 100) {
			return fmt.Errorf("a page of %d sessions, want %d", len(page.Items), min(n, 100))
		}
		return nil
	}
	b.Run("list-page", func(b *testing.B) {
		var lat benchsample.Samples
		for range benchsample.N(b, 200) {
			var err error
			lat.Time(func() { err = listPage() })
			if err != nil {
				b.Fatal(err)
			}
		}
		lat.Report(b, "ms")
	})
	b.Run("list-throughput", func(b *testing.B) {
		// Pages of 100 by 8 concurrent clients on loopback, each sample 1,000 requests.
		const workers, perSample = 8, 1000
		var rates benchsample.Rates
		for range benchsample.N(b, 5) {
			rates.Add(perSample, burst(b, perSample, workers, func(int) error { return listPage() }))
		}
		rates.Report(b, "req/s")
	})
	b.Run("rss", func(b *testing.B) {
		// Every page once, so what the agent keeps per session is resident.
		if _, err := c.ListAllSessions(ctx, client.ListOptions{AllUsers: true, Limit: 1000}); err != nil {
			b.Fatal(err)
		}
		var at []float64
		for range benchsample.N(b, 5) {
			at = append(at, mib(agentRSS(b, e).rss))
			time.Sleep(100 * time.Millisecond)
		}
		reportFigures(b, "idle-MiB", idle)
		reportFigures(b, "idle-anon-MiB", idleAnon)
		reportFigures(b, "idle-file-MiB", idleFile)
		reportFigures(b, "at10k-MiB", at)
		b.ReportMetric(float64(n), "sessions")
	})
	b.Run("restart", func(b *testing.B) {
		var lat benchsample.Samples
		for range benchsample.N(b, 5) {
			e.StopAgent(false)
			start := time.Now()
			if err := e.StartAgent(ctx); err != nil {
				b.Fatal(err)
			}
			waitSwept(b, e)
			lat.Add(time.Since(start))
			if all, err := c.ListAllSessions(ctx, client.ListOptions{AllUsers: true, Owner: owner, Limit: 1000}); err != nil || len(all) != n {
				b.Fatalf("after the restart the API lists %d of %d sessions: %v", len(all), n, err)
			}
		}
		lat.Report(b, "s")
	})
}

// waitSwept waits until the agent has finished its first full reconcile of every session
// (the reconcile_duration_seconds{scope="full"} histogram has a sample).
func waitSwept(b *testing.B, e *e2eenv.Env) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get(e.HTTPURL + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				if rest, ok := strings.CutPrefix(line, `cake_agents_reconcile_duration_seconds_count{scope="full"} `); ok && rest != "0" {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatal("the restarted agent did not finish a full reconcile within a minute")
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// reportFigures reports the median of values as unit, their minimum and maximum as
// min-unit and max-unit.
func reportFigures(b *testing.B, unit string, values []float64) {
	v := slices.Clone(values)
	slices.Sort(v)
	b.ReportMetric(v[len(v)/2], unit)
	b.ReportMetric(v[0], "min-"+unit)
	b.ReportMetric(v[len(v)-1], "max-"+unit)
}

// benchOwner is the subject of the user the seeded sessions belong to.
const benchOwner = "bench-owner"

// seed writes n sessions straight into the agent's SQLite file (WAL lets the running agent
// keep reading). They are Stopped, so no pods are made. It returns their owner's user id.
func seed(b *testing.B, n int) string {
	b.Helper()
	ctx := context.Background()
	kr, err := keyring.New([]byte("bench"))
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(work, "agents.db"), Keyring: kr})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	u := &store.User{Source: "kubernetes", Subject: benchOwner}
	if err := st.UpsertUser(ctx, u); err != nil {
		b.Fatal(err)
	}
	page, err := st.ListSessions(ctx, store.SessionFilter{OwnerID: u.ID, Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	if len(page.Items) > 0 {
		return u.ID // already seeded by an earlier -count
	}
	now := time.Now().UTC()
	for i := range n {
		s := &store.Session{ID: fmt.Sprintf("b%07d", i), OwnerID: u.ID, Title: "bench", State: apiv1.StateStopped,
			CreatedAt: now.Add(time.Duration(i) * time.Millisecond), Private: i%2 == 0}
		if err := st.CreateSession(ctx, s, 0); err != nil {
			b.Fatal(err)
		}
	}
	return u.ID
}

// agentMem is the agent process's resident memory from /proc: in all (VmRSS), its own
// (RssAnon: heap, stacks) and its mapped files' (RssFile: mostly its binary, whose pages
// some kernels keep resident in full once read).
type agentMem struct{ rss, anon, file int64 }

func agentRSS(b *testing.B, e *e2eenv.Env) agentMem {
	b.Helper()
	pid := e.AgentPID()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var m agentMem
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "RssFile:":
			m.file = kb << 10
		}
	}
	if m.rss == 0 {
		b.Fatal("no VmRSS")
	}
	return m
}

// BenchmarkSustainedCreates: bursts of sessions ($CAKE_BENCH_BURST, default 100) created
// through the API by 16 concurrent clients, on SQLite and then on Postgres (the same agent
// restarted with a DATABASE_URL). Per burst it reports how fast creates were accepted (201)
// and reached Running, and checks the pods: every session has exactly one (lost-pods,
// dup-pods; bad-pods is their sum, which must be 0).
func BenchmarkSustainedCreates(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	// The peer: the same bursts of the objects a session is made of (a Secret, then a Pod
	// reading it) by 16 workers sharing one raw client-go client with the agent's
	// client-side rate limit, Running when kwok says so. It shows what this cluster and
	// machine allow, which the agent's figures can be read against.
	b.Run("raw-client-go", func(b *testing.B) { sustainedRawCreates(b, e) })
	b.Run("sqlite", func(b *testing.B) { sustainedCreates(b, e) })
	b.Run("postgres", func(b *testing.B) {
		dsn := testpg.Start(b)
		e.StopAgent(false)
		if err := e.StartAgentEnv(ctx, "DATABASE_URL="+dsn); err != nil {
			b.Fatal(err)
		}
		defer func() {
			e.StopAgent(false)
			if err := e.StartAgent(ctx); err != nil {
				b.Fatal(err)
			}
		}()
		sustainedCreates(b, e)
	})
}

func sustainedCreates(b *testing.B, e *e2eenv.Env) {
	ctx := context.Background()
	c := adminClient(b, e)
	n := benchsample.Size(benchsample.EnvBurst, 100)
	const workers = 16
	var accepted, running benchsample.Rates
	var lost, dup int
	for range benchsample.N(b, 5) {
		ids := make([]string, n)
		start := time.Now()
		accepted.Add(n, burst(b, n, workers, func(j int) error {
			s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "burst"})
			if err == nil {
				ids[j] = s.ID
			}
			return err
		}))
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		running.Add(n, waitAllRunning(b, start, n, "sessions", func() (int, error) {
			list, err := c.ListAllSessions(ctx, client.ListOptions{State: apiv1.StateRunning, Limit: 1000})
			up := 0
			for _, s := range list {
				if want[s.ID] {
					up++
				}
			}
			return up, err
		}))
		l, d := countPods(b, e, ids)
		lost, dup = lost+l, dup+d
		for _, id := range ids {
			if _, err := c.DeleteSession(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		waitNoSessionPods(b, e)
	}
	accepted.Report(b, "accepted/s")
	running.Report(b, "running/s")
	b.ReportMetric(float64(lost), "lost-pods")
	b.ReportMetric(float64(dup), "dup-pods")
	b.ReportMetric(float64(lost+dup), "bad-pods")
	b.ReportMetric(float64(n), "sessions")
}

// sessionPods selects the session pods of the benchmark's release.
const sessionPods = apiv1.LabelName + "=" + apiv1.SessionAppName

// countPods counts the session pods of ids through the API: sessions without a pod and
// sessions with more than one.
func countPods(b *testing.B, e *e2eenv.Env, ids []string) (lost, dup int) {
	b.Helper()
	pods, err := e.Kube.CoreV1().Pods("cake-bench").List(context.Background(), metav1.ListOptions{LabelSelector: sessionPods})
	if err != nil {
		b.Fatal(err)
	}
	per := map[string]int{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			per[p.Labels[apiv1.LabelSessionID]]++
		}
	}
	for _, id := range ids {
		switch {
		case per[id] == 0:
			lost++
		case per[id] > 1:
			dup += per[id] - 1
		}
	}
	return lost, dup
}

// waitNoSessionPods waits until the deleted sessions' pods are gone.
// sustainedRawCreates is sustainedCreates' peer (see BenchmarkSustainedCreates).
func sustainedRawCreates(b *testing.B, e *e2eenv.Env) {
	ctx := context.Background()
	const ns, workers, label = "cake-bench", 16, "cake-bench-raw"
	cfg := rest.CopyConfig(e.Config)
	cfg.QPS, cfg.Burst = sessions.KubeQPS, sessions.KubeBurst
	raw, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	n := benchsample.Size(benchsample.EnvBurst, 100)
	sel := metav1.ListOptions{LabelSelector: label}
	var accepted, running benchsample.Rates
	for i := range benchsample.N(b, 5) {
		start := time.Now()
		accepted.Add(n, burst(b, n, workers, func(j int) error {
			secret, pod := secretAndPod(fmt.Sprintf("raw-burst-%d-%d", i, j), map[string]string{label: "true"})
			if _, err := raw.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
				return err
			}
			_, err := raw.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
			return err
		}))
		running.Add(n, waitAllRunning(b, start, n, "pods", func() (int, error) {
			pods, err := raw.CoreV1().Pods(ns).List(ctx, sel)
			if err != nil {
				return 0, err
			}
			up := 0
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning {
					up++
				}
			}
			return up, nil
		}))
		if err := raw.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, sel); err != nil {
			b.Fatal(err)
		}
		if err := raw.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			pods, err := raw.CoreV1().Pods(ns).List(ctx, sel)
			if err != nil {
				b.Fatal(err)
			}
			if len(pods.Items) == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%d raw pods left 3 minutes after their delete", len(pods.Items))
			}
		}
	}
	accepted.Report(b, "accepted/s")
	running.Report(b, "running/s")
	b.ReportMetric(float64(n), "sessions")
}

// waitAllRunning polls running (how many of the burst's n are Running) until all are, and
// returns the time since start; after 5 minutes the benchmark fails naming what.
func waitAllRunning(b *testing.B, start time.Time, n int, what string, running func() (int, error)) time.Duration {
	b.Helper()
	for {
		up, err := running()
		if err != nil {
			b.Fatal(err)
		}
		if up == n {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d %s Running after 5 minutes", up, n, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// burst runs do(j) for j in [0, n) on workers goroutines and returns how long all took;
// the benchmark fails at the first error.
func burst(b *testing.B, n, workers int, do func(j int) error) time.Duration {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int(next.Add(1)) - 1; j < n && !b.Failed(); j = int(next.Add(1)) - 1 {
				if err := do(j); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return time.Since(start)
}

// secretAndPod are the two objects a session is made of, by hand: a Secret and a Pod
// reading it, the raw peers' work.
func secretAndPod(name string, labels map[string]string) (*corev1.Secret, *corev1.Pod) {
	meta := metav1.ObjectMeta{Name: name, Labels: labels}
	secret := &corev1.Secret{ObjectMeta: meta, StringData: map[string]string{"password": "p"}}
	pod := &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Env: []corev1.EnvVar{{
		Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "password"}},
	}}}}}}
	return secret, pod
}

func waitNoSessionPods(b *testing.B, e *e2eenv.Env) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		pods, err := e.Kube.CoreV1().Pods("cake-bench").List(context.Background(), metav1.ListOptions{LabelSelector: sessionPods})
		if err != nil {
			b.Fatal(err)
		}
		if len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d session pods left 3 minutes after their sessions were deleted", len(pods.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkProxy: 8 MiB and a 2-byte reply fetched from a session pod's OpenCode port
// the way a user reaches it, against `kubectl port-forward` (the binary) to the same pod,
// the tool a user would pick instead. Both run as child processes of this benchmark on
// the same cluster; each side keeps its HTTP connection alive between requests. The hops:
//
//	agent-proxy:  client → `kubectl agents port-forward SESSION` (local listener, password
//	              check) → port-forward to the agent pod (API server → kubelet → agent,
//	              TLS with the user's client certificate) → the agent's session proxy
//	              (authn, authz) → its tunnel: port-forward to the session pod (API server
//	              → kubelet) → port 4096
//	port-forward: client → `kubectl port-forward pod/NAME` (local listener) → API server
//	              → kubelet → port 4096
//
// So the agent side has one port-forward more than its peer: that is the price users pay
// for not needing RBAC on session pods.
func BenchmarkProxy(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	blob := make([]byte, 8<<20)
	if _, err := rand.Read(blob); err != nil {
		b.Fatal(err)
	}
	blobSum := sha256.Sum256(blob)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/blob":
			_, _ = w.Write(blob)
			return
		case "/global/health": // what the agent asks before the session is Running
			_, _ = w.Write([]byte(`{"healthy":true}`))
			return
		}
		_, _ = w.Write([]byte("ok"))
	}), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()

	s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "proxy bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _, _ = c.DeleteSession(ctx, s.ID) }()
	if err := sessionrunner.Forward(ctx, e.Dynamic, "cake-bench", s.PodName, map[int]int{apiv1.OpenCodePort: ln.Addr().(*net.TCPAddr).Port}); err != nil {
		b.Fatal(err)
	}
	waitRunning(b, c, s.ID)

	// The user's path: the plugin's port-forward prints its URL and password.
	plugin := startForwarder(b, []*regexp.Regexp{
		regexp.MustCompile(`Forwarding (http://\S+) to`), regexp.MustCompile(`password: (\S+)`),
	}, kubectl, "agents", "port-forward", s.ID, "--agent-namespace", "cake-bench")
	viaURL, password := plugin[0], plugin[1]
	// The peer: kubectl port-forward to the same pod on a free local port.
	peer := startForwarder(b, []*regexp.Regexp{regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) ->`)},
		kubectl, "port-forward", "-n", "cake-bench", "pod/"+s.PodName, fmt.Sprintf(":%d", apiv1.OpenCodePort))
	directURL := "http://" + peer[0]

	newClient := func() *http.Client {
		return &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1}}
	}
	via, direct := newClient(), newClient()
	get := func(b *testing.B, hc *http.Client, url string, auth bool, want []byte, wantSum [32]byte) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		if auth {
			req.SetBasicAuth(tunnel.LocalUser, password)
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
		if int(n) != len(want) || [32]byte(h.Sum(nil)) != wantSum {
			b.Fatalf("GET %s: %d bytes that are not the %d bytes sent", url, n, len(want))
		}
	}
	ok := []byte("ok")
	okSum := sha256.Sum256(ok)
	throughput := func(hc *http.Client, url string, auth bool) func(b *testing.B) {
		return func(b *testing.B) {
			var lat benchsample.Samples
			var mbps []float64
			for range benchsample.N(b, 5) {
				t0 := time.Now()
				get(b, hc, url+"/blob", auth, blob, blobSum)
				d := time.Since(t0)
				lat.Add(d)
				mbps = append(mbps, float64(len(blob))/1e6/d.Seconds())
			}
			lat.Report(b, "ms")
			reportFigures(b, "MB/s", mbps)
		}
	}
	latency := func(hc *http.Client, url string, auth bool) func(b *testing.B) {
		return func(b *testing.B) {
			var lat benchsample.Samples
			for range benchsample.N(b, 50) {
				lat.Time(func() { get(b, hc, url+"/ping", auth, ok, okSum) })
			}
			lat.Report(b, "ms")
		}
	}
	b.Run("throughput/agent-proxy", throughput(via, viaURL, true))
	b.Run("throughput/port-forward", throughput(direct, directURL, false))
	b.Run("latency/agent-proxy", latency(via, viaURL, true))
	b.Run("latency/port-forward", latency(direct, directURL, false))
}

// waitRunning waits until session id is Running.
func waitRunning(b *testing.B, c *client.Client, id string) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := c.GetSession(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		if got.State == apiv1.StateRunning {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("session %s still %s %s", id, got.State, got.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startForwarder starts a long-running port-forward command (kubectl's or the plugin's)
// in the benchmark's environment, waits until its output matched every pattern and
// returns each pattern's first group. The process is stopped when b ends.
func startForwarder(b *testing.B, patterns []*regexp.Regexp, name string, args ...string) []string {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+work)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	found := make([]string, len(patterns))
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	timeout := time.After(time.Minute)
	for left := len(patterns); left > 0; {
		select {
		case line, ok := <-lines:
			if !ok {
				b.Fatalf("%s %v exited before it was ready: %s", name, args, stderr.String())
			}
			for i, re := range patterns {
				if m := re.FindStringSubmatch(line); m != nil && found[i] == "" {
					found[i] = m[1]
					left--
				}
			}
		case <-timeout:
			b.Fatalf("%s %v not ready within a minute: %s", name, args, stderr.String())
		}
	}
	// Keep reading: kubectl prints a line per connection and must never block on it.
	go func() {
		for range lines {
		}
	}()
	return found
}

// BenchmarkWarmClaim: with a warm pool of 3, from the API's create call to the first
// request answered by the session's OpenCode through the agent's proxy (GET
// /global/health, answered by the environment's stand-in for OpenCode). Between samples
// the pool is refilled, outside the timing: the figure is a claim's, not a cold start's.
// The agent runs with the pool for this benchmark only.
func BenchmarkWarmClaim(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	const ns, size = "cake-bench", 3
	restart := func(pool int) {
		e.StopAgent(false)
		if err := e.StartAgentEnv(ctx, fmt.Sprintf("AGENT_WARM_POOL_SIZE=%d", pool)); err != nil {
			b.Fatal(err)
		}
	}
	restart(size)
	defer restart(0) // the pool's pods go; the other benchmarks run without one
	c := adminClient(b, e)
	waitFull := func() {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			pods, err := e.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sessions.LabelPoolState + "=" + sessions.PoolStateWarm})
			if err != nil {
				b.Fatal(err)
			}
			ready := 0
			for _, p := range pods.Items {
				for _, cond := range p.Status.Conditions {
					if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
						ready++
					}
				}
			}
			if ready >= size {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("the warm pool holds %d ready pods of %d after 2 minutes", ready, size)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	attachable := func(id string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, err := c.NewRequest(ctx, http.MethodGet, client.ProxyPath(id, "/global/health"), nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			err = c.Do(req, nil)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("session %s not attachable after 30s: %v", id, err)
			}
		}
	}
	var lat benchsample.Samples
	for range benchsample.N(b, 30) {
		waitFull()
		t0 := time.Now()
		s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "warm bench"})
		if err != nil {
			b.Fatal(err)
		}
		attachable(s.ID)
		d := time.Since(t0)
		if s.StartKind != apiv1.StartKindWarm {
			b.Fatalf("session %s started %q with a full pool", s.ID, s.StartKind)
		}
		lat.Add(d)
		if _, err := c.DeleteSession(ctx, s.ID); err != nil {
			b.Fatal(err)
		}
	}
	lat.Report(b, "ms")
}
