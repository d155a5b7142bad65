// Package reliability breaks the product on purpose and measures that nothing is lost:
// the agent binary killed with SIGKILL at every step of create, stop, start and delete
// (through failpoints it honours only when built with -tags failpoints), its Postgres
// stopped for 20 s under traffic, the Kubernetes API server stopped for 20 s under
// traffic, and bad input thrown at its API. Each scenario records one line with
// internal/figures ("reliability: <scenario>: <figure>") and fails on any loss.
//
// The agent runs as in test/e2e: the chart installed by helm on the local test cluster,
// the real binary with the environment the chart's Deployment gives it (test/e2eenv);
// session pods are kwok's, their OpenCode a health stand-in. The API server outage uses
// a cluster of its own; the other scenarios share the test binary's.
package reliability

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/test/e2eenv"
)

func TestMain(m *testing.M) {
	// The scenarios spend most of their time waiting (an outage, a restart, the
	// reconciler); run them side by side unless -parallel says otherwise, not just
	// GOMAXPROCS of them.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "4")
	}
	code := m.Run()
	_ = testcluster.Shutdown()
	_ = testpg.Shutdown()
	if bins.dir != "" {
		_ = os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// bins are the binaries every scenario runs, built once per test binary from this tree.
var bins struct {
	once sync.Once
	err  error
	dir  string
	root string
	// agent is the release build; crashAgent the same code with -tags failpoints.
	agent, crashAgent string
	helm              string
}

func build(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("the reliability suite needs the local cluster and PostgreSQL (run without -short)")
	}
	bins.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		bins.root = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if bins.dir, bins.err = os.MkdirTemp("", "cake-reliability-bin-"); bins.err != nil {
			return
		}
		bins.agent, bins.crashAgent = filepath.Join(bins.dir, "agent"), filepath.Join(bins.dir, "agent-failpoints")
		for _, b := range []struct{ out, tags string }{{bins.agent, ""}, {bins.crashAgent, "failpoints"}} {
			cmd := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, "./cmd/agent")
			cmd.Dir, cmd.Env = bins.root, append(os.Environ(), "CGO_ENABLED=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("go build -tags %q ./cmd/agent: %v\n%s", b.tags, err, out)
				return
			}
		}
		helm, err := exec.Command(filepath.Join(bins.root, "hack", "tools.sh"), "helm").Output()
		if err != nil {
			bins.err = fmt.Errorf("hack/tools.sh helm: %w", err)
			return
		}
		bins.helm = strings.TrimSpace(string(helm))
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// product is one installation of the chart with its local agent.
type product struct {
	env  *e2eenv.Env
	ns   string
	work string
	api  *client.Client
}

// installOptions vary an installation.
type installOptions struct {
	// crash runs the failpoints build of the agent.
	crash bool
	// databaseURL replaces the local SQLite file.
	databaseURL string
	values      []string
}

// install puts the chart into a namespace of its own on c and starts the agent; the
// test's end removes both.
func install(t *testing.T, c *testcluster.Cluster, name string, o installOptions) *product {
	t.Helper()
	build(t)
	ctx := context.Background()
	kube := c.AdminClient()
	ns := "cake-reliability-" + name
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	agent := bins.agent
	if o.crash {
		agent = bins.crashAgent
	}
	work := t.TempDir()
	began := time.Now()
	env, err := e2eenv.Start(ctx, e2eenv.Options{
		Kubeconfig: c.Kubeconfig(), Namespace: ns, Release: "cake-agents",
		Helm: bins.helm, Agent: agent, OpenCode: "opencode", Chart: filepath.Join(bins.root, "charts", "cake-agents"),
		// Another release of the chart may run beside this one (test/e2e): the cluster-wide
		// user roles are its, and nobody here needs them (the tests call as the cluster
		// admin), so nothing is bound to them either.
		Values:      append([]string{"rbac.createUserRoles=false", "rbac.userGroups=null", "sessions.maxActivePerUser=0"}, o.values...),
		DatabaseURL: o.databaseURL,
		WorkDir:     work,
		// Sessions are not the subject here: their pods get a stand-in for OpenCode.
		NoSessionRunner: true,
		Log:             hclog.New(&hclog.LoggerOptions{Name: "reliability", Level: hclog.Warn, Output: testWriter{t}}),
	})
	p := &product{env: env, ns: ns, work: work}
	if err != nil {
		t.Logf("agent log:\n%s", p.logTail(60))
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", p.logTail(80))
		}
		began := time.Now()
		env.Stop()
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		t.Logf("uninstalled from %s in %s", ns, time.Since(began).Round(100*time.Millisecond))
	})
	if p.api, err = env.AdminClient(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("chart installed in %s and the agent ready in %s", ns, time.Since(began).Round(100*time.Millisecond))
	return p
}

// log is the agent's log so far (every run of the process appends to it).
func (p *product) log() string {
	b, _ := os.ReadFile(filepath.Join(p.work, "agent.log"))
	return string(b)
}

func (p *product) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// panics counts the Go panics in the agent's log: a recovered handler panic is logged
// as "handler panic", an unrecovered one ends the process with "panic: ".
func (p *product) panics() int {
	log := p.log()
	return strings.Count(log, "handler panic") + strings.Count(log, "\npanic: ") + strings.Count(log, "fatal error: ")
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// sessionSelector selects the objects the agent makes for sessions of this release.
const sessionSelector = apiv1.LabelName + "=" + apiv1.SessionAppName + "," + apiv1.LabelInstance + "=cake-agents"

// world is what a convergence check sees: the session rows (through the API) and the
// session objects in the cluster.
type world struct {
	rows    map[string]apiv1.Session
	pods    map[string][]corev1.Pod // by session id
	secrets map[string]bool
	pvcs    map[string]bool
}

func (p *product) observe(ctx context.Context) (*world, error) {
	items, err := p.api.ListAllSessions(ctx, client.ListOptions{AllUsers: true})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	w := &world{rows: map[string]apiv1.Session{}, pods: map[string][]corev1.Pod{}, secrets: map[string]bool{}, pvcs: map[string]bool{}}
	for _, s := range items {
		w.rows[s.ID] = s
	}
	kube := p.env.Kube.CoreV1()
	opts := metav1.ListOptions{LabelSelector: sessionSelector}
	pods, err := kube.Pods(p.ns).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	for _, pod := range pods.Items {
		id := pod.Labels[apiv1.LabelSessionID]
		w.pods[id] = append(w.pods[id], pod)
	}
	secrets, err := kube.Secrets(p.ns).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	for _, s := range secrets.Items {
		w.secrets[s.Labels[apiv1.LabelSessionID]] = true
	}
	pvcs, err := kube.PersistentVolumeClaims(p.ns).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	for _, c := range pvcs.Items {
		if c.DeletionTimestamp == nil {
			w.pvcs[c.Labels[apiv1.LabelSessionID]] = true
		}
	}
	return w, nil
}

// problems lists every way w differs from a converged installation: a session that is
// neither Running with one live pod nor Stopped without one (stuck), objects of no
// session (orphans), a session with more than one pod (duplicates), a session without
// its Secret or with a PVC it should not have (or without one it should).
type problems struct {
	stuck, orphans, duplicates, broken []string
}

func (pr problems) none() bool {
	return len(pr.stuck)+len(pr.orphans)+len(pr.duplicates)+len(pr.broken) == 0
}

func (pr problems) String() string {
	var parts []string
	for _, x := range []struct {
		what string
		l    []string
	}{{"stuck", pr.stuck}, {"orphans", pr.orphans}, {"duplicate pods", pr.duplicates}, {"broken", pr.broken}} {
		if len(x.l) > 0 {
			parts = append(parts, fmt.Sprintf("%s: %s", x.what, strings.Join(x.l, "; ")))
		}
	}
	return strings.Join(parts, " | ")
}

func (w *world) problems() problems {
	var pr problems
	for id, s := range w.rows {
		live := 0
		for _, pod := range w.pods[id] {
			if pod.DeletionTimestamp == nil {
				live++
			}
		}
		if len(w.pods[id]) > 1 {
			pr.duplicates = append(pr.duplicates, fmt.Sprintf("session %s has %d pods", id, len(w.pods[id])))
		}
		switch {
		case s.State == apiv1.StateRunning && live == 1 && len(w.pods[id]) == 1:
		case s.State == apiv1.StateStopped && len(w.pods[id]) == 0:
		default:
			pr.stuck = append(pr.stuck, fmt.Sprintf("session %s is %s (%s: %s) with %d pods", id, s.State, s.Reason, s.Message, len(w.pods[id])))
			continue
		}
		if !w.secrets[id] {
			pr.broken = append(pr.broken, fmt.Sprintf("%s session %s has no Secret", s.State, id))
		}
		if w.pvcs[id] != s.Persistent {
			pr.broken = append(pr.broken, fmt.Sprintf("%s session %s (persistent %v) has PVC %v", s.State, id, s.Persistent, w.pvcs[id]))
		}
	}
	for kind, objs := range map[string]map[string]bool{"secret": w.secrets, "pvc": w.pvcs} {
		for id := range objs {
			if _, ok := w.rows[id]; !ok {
				pr.orphans = append(pr.orphans, kind+" of session "+id)
			}
		}
	}
	for id := range w.pods {
		if _, ok := w.rows[id]; !ok {
			pr.orphans = append(pr.orphans, "pod of session "+id)
		}
	}
	return pr
}

// converge waits until the installation has no problems and done(w) holds, and returns
// the last world and its problems (empty once converged). Waiting is bounded: a session
// that has not converged by then is stuck, whatever the speed of the machine.
func (p *product) converge(ctx context.Context, timeout time.Duration, done func(*world) error) (*world, problems, error) {
	deadline := time.Now().Add(timeout)
	for {
		w, err := p.observe(ctx)
		var pr problems
		if err == nil {
			pr = w.problems()
			if pr.none() && done != nil {
				if derr := done(w); derr != nil {
					pr.stuck = append(pr.stuck, derr.Error())
				}
			}
			if pr.none() {
				return w, pr, nil
			}
		}
		if time.Now().After(deadline) {
			return w, pr, err
		}
		select {
		case <-ctx.Done():
			return w, pr, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bindVolumes stands in for a storage provisioner (kwok's node has none): every session
// PVC in ns gets a PersistentVolume bound to it, so persistent sessions can run. The
// volumes go when the test ends.
func bindVolumes(t *testing.T, p *product) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	kube := p.env.Kube.CoreV1()
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := map[string]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			l, err := kube.PersistentVolumeClaims(p.ns).List(ctx, metav1.ListOptions{LabelSelector: sessionSelector})
			if err == nil {
				for _, c := range l.Items {
					name := p.ns + "-" + c.Name
					mu.Lock()
					done := made[name]
					mu.Unlock()
					if done || c.Spec.VolumeName != "" || c.DeletionTimestamp != nil {
						continue
					}
					pv := &corev1.PersistentVolume{
						ObjectMeta: metav1.ObjectMeta{Name: name},
						Spec: corev1.PersistentVolumeSpec{
							Capacity:                      c.Spec.Resources.Requests,
							AccessModes:                   c.Spec.AccessModes,
							PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
							PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/nonexistent/" + name}},
							ClaimRef:                      &corev1.ObjectReference{Namespace: p.ns, Name: c.Name, UID: c.UID},
							StorageClassName:              ptrOr(c.Spec.StorageClassName),
						},
					}
					if _, err := kube.PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err == nil || apierrors.IsAlreadyExists(err) {
						mu.Lock()
						made[name] = true
						mu.Unlock()
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for name := range made {
			_ = kube.PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
}

func ptrOr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// httpStatus returns the status of a failed API call, 0 when no answer came (the agent
// died, the connection was refused or reset).
func httpStatus(err error) int {
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

// noAnswer reports whether err means the agent gave no HTTP answer at all.
func noAnswer(err error) bool {
	if err == nil || httpStatus(err) != 0 {
		return false
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "EOF")
}

// rawRequest sends one request to the agent's HTTPS API with the admin's client, for
// bodies and queries the typed client would never send.
func (p *product) rawRequest(ctx context.Context, method, path, rawQuery string, body []byte, header http.Header) (*http.Response, []byte, error) {
	u := p.api.URL(path, nil)
	u.RawQuery = rawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	p.api.Authorize(req)
	resp, err := p.api.HTTPClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp, buf.Bytes(), err
}
