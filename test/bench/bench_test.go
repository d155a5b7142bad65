// Package bench measures the product against peers in the same run, on the same
// machine: the plugin against kubectl, the agent's session create against a raw pod
// create, the API's list latency at 10k sessions, and the agent's memory and restart
// time at that size. hack/bench.sh runs these with the store and controller
// benchmarks and prints the ratios.
package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/agent/tunnel"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/e2eenv"
	"github.com/cakeai/cake-agents/test/sessionrunner"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if env != nil {
		env.Stop()
	}
	_ = testcluster.Shutdown()
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

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+cluster, "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+work)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// BenchmarkStartup: `kubectl agents version --client` against `kubectl version --client`.
func BenchmarkStartup(b *testing.B) {
	setup(b)
	b.Run("plugin", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			run(b, kubectl, "agents", "version", "--client")
		}
	})
	b.Run("kubectl", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			run(b, kubectl, "version", "--client")
		}
	})
}

// BenchmarkList: `kubectl agents session list` (discovery, port-forward, TLS, API) against
// `kubectl get pods` on the same cluster.
func BenchmarkList(b *testing.B) {
	setup(b)
	b.Run("plugin", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			run(b, kubectl, "agents", "session", "list", "--agent-namespace", "cake-bench")
		}
	})
	b.Run("kubectl", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			run(b, kubectl, "get", "pods", "-n", "cake-bench")
		}
	})
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
// client-go pod create observed the same way (a watch).
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
	b.Run("agent", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			waitFor(s.PodName)
			b.StopTimer()
			_, _ = c.DeleteSession(ctx, s.ID)
			b.StartTimer()
		}
	})
	b.Run("raw-client-go", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			name := fmt.Sprintf("raw-%d-%d", time.Now().UnixNano(), i)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
			}
			if _, err := e.Kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			waitFor(name)
			b.StopTimer()
			_ = e.Kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			b.StartTimer()
		}
	})
}

// BenchmarkAt10k loads 10,000 stopped sessions into the agent's database and measures
// list-page latency (p50/p99), the agent's RSS before and after, and how long a
// restarted agent takes to be ready again.
func BenchmarkAt10k(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	rssIdle := agentRSS(b, e)
	seed10k(b, e)
	b.Run("list-page", func(b *testing.B) {
		var lat []time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if _, err := c.ListSessions(ctx, client.ListOptions{AllUsers: true, Limit: 100}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	b.Run("rss", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_, _ = c.ListSessions(ctx, client.ListOptions{AllUsers: true, Limit: 1000})
		}
		b.ReportMetric(float64(rssIdle)/(1<<20), "idle-MiB")
		b.ReportMetric(float64(agentRSS(b, e))/(1<<20), "at10k-MiB")
	})
	b.Run("restart", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			e.StopAgent(false)
			start := time.Now()
			if err := e.StartAgent(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(time.Since(start).Seconds(), "s-to-ready")
		}
	})
}

func report(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}

// seed10k writes the sessions straight into the agent's SQLite file (WAL lets the
// running agent keep reading). They are Stopped, so no pods are made.
func seed10k(b *testing.B, e *e2eenv.Env) {
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
	u := &store.User{Source: "kubernetes", Subject: "bench-owner"}
	if err := st.UpsertUser(ctx, u); err != nil {
		b.Fatal(err)
	}
	page, err := st.ListSessions(ctx, store.SessionFilter{OwnerID: u.ID, Limit: 1})
	if err != nil {
		b.Fatal(err)
	}
	if len(page.Items) > 0 {
		return // already seeded by an earlier -count
	}
	now := time.Now().UTC()
	for i := 0; i < 10000; i++ {
		s := &store.Session{ID: fmt.Sprintf("b%07d", i), OwnerID: u.ID, Title: "bench", State: apiv1.StateStopped,
			CreatedAt: now.Add(time.Duration(i) * time.Millisecond), Private: i%2 == 0}
		if err := st.CreateSession(ctx, s, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// agentRSS reads the agent process's resident memory from /proc.
func agentRSS(b *testing.B, e *e2eenv.Env) int64 {
	b.Helper()
	pid := e.AgentPID()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkConcurrentCreates: 100 sessions created at once through the API; reports how
// many reach Running per second.
func BenchmarkConcurrentCreates(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	for i := 0; i < b.N; i++ {
		const n = 100
		start := time.Now()
		ids := make([]string, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for j := 0; j < n; j++ {
			wg.Add(1)
			go func(j int) {
				defer wg.Done()
				s, err := c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "burst"})
				if err != nil {
					errs <- err
					return
				}
				ids[j] = s.ID
			}(j)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		for _, id := range ids {
			for {
				s, err := c.GetSession(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				if s.State == apiv1.StateRunning {
					break
				}
				if time.Since(start) > 5*time.Minute {
					b.Fatalf("session %s still %s", id, s.State)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "running/s")
		b.StopTimer()
		for _, id := range ids {
			_, _ = c.DeleteSession(ctx, id)
		}
		b.StartTimer()
	}
}

// BenchmarkProxy: 8 MiB through the agent's session proxy (TLS, authn, authz, tunnel)
// against the same bytes through a plain client-go port-forward to the pod, which is
// what `kubectl port-forward` does.
func BenchmarkProxy(b *testing.B) {
	e := setup(b)
	ctx := context.Background()
	c := adminClient(b, e)
	blob := make([]byte, 8<<20)
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
	for {
		got, err := c.GetSession(ctx, s.ID)
		if err != nil {
			b.Fatal(err)
		}
		if got.State == apiv1.StateRunning {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	pool, err := tunnel.NewPool(e.Config, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	direct := &http.Client{Transport: pool.Transport("cake-bench", s.PodName, apiv1.OpenCodePort)}
	via := c.HTTPClient()
	get := func(b *testing.B, hc *http.Client, url string, want int) {
		resp, err := hc.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || int(n) != want {
			b.Fatalf("GET %s: %d, %d bytes", url, resp.StatusCode, n)
		}
	}
	proxyURL := e.HTTPSURL + "/api/v1/sessions/" + s.ID + "/proxy"
	b.Run("throughput/agent-proxy", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for i := 0; i < b.N; i++ {
			get(b, via, proxyURL+"/blob", len(blob))
		}
	})
	b.Run("throughput/port-forward", func(b *testing.B) {
		b.SetBytes(int64(len(blob)))
		for i := 0; i < b.N; i++ {
			get(b, direct, "http://pod/blob", len(blob))
		}
	})
	b.Run("latency/agent-proxy", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, via, proxyURL+"/ping", 2)
		}
	})
	b.Run("latency/port-forward", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, direct, "http://pod/ping", 2)
		}
	})
}
