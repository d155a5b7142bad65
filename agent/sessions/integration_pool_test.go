package sessions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// poolPods lists the pods of the namespace in pool state state ("" any pool pod).
func (e *env) poolPods(ctx context.Context, state string) []corev1.Pod {
	e.t.Helper()
	sel := LabelPoolState
	if state != "" {
		sel += "=" + state
	}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		e.t.Fatal(err)
	}
	return pods.Items
}

// waitWarm waits until exactly n warm pool pods exist, none being deleted, all ready
// and of a template cond accepts, and every running controller's cache has seen them so
// (a claim picks from the cache); it returns them.
func (e *env) waitWarm(n int, what string, cond func(template string) bool) []corev1.Pod {
	e.t.Helper()
	var last []corev1.Pod
	err := wait.PollUntilContextTimeout(ctxT(e.t), 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		last = e.poolPods(ctx, PoolStateWarm)
		if len(last) != n {
			return false, nil
		}
		for i := range last {
			p := &last[i]
			if p.DeletionTimestamp != nil || !podReady(p) || (cond != nil && !cond(p.Labels[LabelPoolTemplate])) {
				return false, nil
			}
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		for c := range e.running {
			for i := range last {
				cached, err := c.podLister.Pods(e.ns).Get(last[i].Name)
				if err != nil || cached.ResourceVersion != last[i].ResourceVersion {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		names := []string{}
		for _, p := range last {
			names = append(names, fmt.Sprintf("%s(template %s, ready %v, deleting %v)", p.Name, p.Labels[LabelPoolTemplate], podReady(&p), p.DeletionTimestamp != nil))
		}
		e.t.Fatalf("waiting for %d warm pool pods (%s): %v; have %v", n, what, err, names)
	}
	return last
}

func poolConfig(e *env, size int) Config {
	cfg := e.config()
	cfg.LiteLLMBaseURL = "" // per-session keys are not the pool's; the gateway URL alone is fine
	cfg.WarmPoolSize = size
	return cfg
}

// TestWarmPoolClaimAndRefill: the leader fills the pool; a create claims a warm pod (the
// session takes its id, is warm and Running when Create returns, the pod and Secret are
// relabelled as the owner's), the pool is refilled without counting it, and deleting the
// session removes the claimed pod for good. A session the pool cannot serve starts cold.
func TestWarmPoolClaimAndRefill(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, _ := e.start(poolConfig(e, 2))
	warm := e.waitWarm(2, "filled", nil)
	ids := map[string]bool{}
	for _, p := range warm {
		ids[p.Labels[apiv1.LabelSessionID]] = true
		if _, ok := p.Labels[apiv1.LabelOwnerID]; ok {
			t.Errorf("warm pod %s has an owner label", p.Name)
		}
	}

	s := &store.Session{OwnerID: e.owner, Title: "warm"}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.StartKind != apiv1.StartKindWarm || !ids[s.ID] {
		t.Fatalf("create did not claim a warm pod: start kind %q, id %s, warm ids %v", s.StartKind, s.ID, ids)
	}
	if s.State != apiv1.StateRunning {
		t.Errorf("claimed session is %s (%s: %s) when Create returns, want Running", s.State, s.Reason, s.Message)
	}
	stored, err := e.st.GetSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.StartKind != apiv1.StartKindWarm || stored.PodName != PodName(s.ID) {
		t.Errorf("stored session: start kind %q, pod %q", stored.StartKind, stored.PodName)
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[LabelPoolState] != PoolStateClaimed || pod.Labels[apiv1.LabelOwnerID] != e.owner {
		t.Errorf("claimed pod labels %v", pod.Labels)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
		return err == nil && sec.Labels[LabelPoolState] == PoolStateClaimed && sec.Labels[apiv1.LabelOwnerID] == e.owner, nil
	}); err != nil {
		t.Errorf("the claimed pod's Secret was not adopted: %v", err)
	}

	// Refilled: two warm pods again, the claimed one not among them.
	refilled := e.waitWarm(2, "refilled after the claim", nil)
	for _, p := range refilled {
		if p.Labels[apiv1.LabelSessionID] == s.ID {
			t.Errorf("the claimed pod %s counts as warm", p.Name)
		}
	}
	// The claimed session stays Running under the reconciler (not an orphan, not demoted).
	if got := e.waitSession(s.ID, "Running", inState(apiv1.StateRunning)); got.StartKind != apiv1.StartKindWarm {
		t.Errorf("start kind changed to %q", got.StartKind)
	}

	// A session the pool cannot serve (another model) starts cold and takes no pod.
	cold := &store.Session{OwnerID: e.owner, Model: "other"}
	if err := c.Create(ctx, cold, 0); err != nil {
		t.Fatal(err)
	}
	if cold.StartKind != apiv1.StartKindCold || ids[cold.ID] {
		t.Errorf("a session with another model: start kind %q, id %s", cold.StartKind, cold.ID)
	}
	if n := len(e.poolPods(ctx, PoolStateWarm)); n != 2 {
		t.Errorf("a cold create changed the pool: %d warm pods", n)
	}

	// Deleted: the claimed pod goes and never comes back to the pool.
	if err := c.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "gone", gone)
	e.waitGone("claimed pod", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
	for _, p := range e.poolPods(ctx, "") {
		if p.Labels[apiv1.LabelSessionID] == s.ID {
			t.Errorf("the deleted session's pod is back in the pool: %v", p.Labels)
		}
	}
}

// TestWarmPoolConcurrentClaims: creates racing on two replicas over a pool smaller than
// their number all succeed, each pool pod goes to one session only, and the creates the
// pool could not serve start cold.
func TestWarmPoolConcurrentClaims(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cfg := poolConfig(e, 3)
	cfg.LeaderElection, cfg.LeaseNamespace, cfg.LeaseName = true, e.ns, "pool-test"
	cfgA, cfgB := cfg, cfg
	cfgA.Identity, cfgB.Identity = "replica-a", "replica-b"
	a, _ := e.start(cfgA)
	b, _ := e.start(cfgB)
	warm := e.waitWarm(3, "filled", nil)
	warmIDs := map[string]bool{}
	for _, p := range warm {
		warmIDs[p.Labels[apiv1.LabelSessionID]] = true
	}

	const n = 8
	sessions := make([]*store.Session, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		c := a
		if i%2 == 1 {
			c = b
		}
		sessions[i] = &store.Session{OwnerID: e.owner, Title: fmt.Sprint(i)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Create(ctx, sessions[i], 0)
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	warmCount := 0
	for i, s := range sessions {
		if errs[i] != nil {
			t.Fatalf("create %d failed: %v", i, errs[i])
		}
		seen[s.ID]++
		if s.StartKind == apiv1.StartKindWarm {
			warmCount++
			if !warmIDs[s.ID] {
				t.Errorf("session %s is warm but took no pod of the pool %v", s.ID, warmIDs)
			}
		}
	}
	if len(seen) != n {
		t.Errorf("sessions share ids: %v", seen)
	}
	if warmCount == 0 || warmCount > 3 {
		t.Errorf("%d creates claimed a pod of a pool of 3", warmCount)
	}
	for _, s := range sessions {
		got := e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
		pod, err := e.pod(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.StartKind == apiv1.StartKindWarm && (pod.Labels[LabelPoolState] != PoolStateClaimed || pod.Labels[apiv1.LabelOwnerID] != e.owner) {
			t.Errorf("session %s: pod labels %v", s.ID, pod.Labels)
		}
	}
	e.waitWarm(3, "refilled", func(string) bool { return true })
}

// TestClaimPodIsConditional: of two claims of the same pod read at the same version,
// only one wins; the pool's delete of a pod claimed since it was read does nothing.
func TestClaimPodIsConditional(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, stop := e.start(poolConfig(e, 1))
	warm := e.waitWarm(1, "filled", nil)
	stop() // nothing refills or deletes behind the test's back
	p := warm[0].DeepCopy()
	hash := p.Labels[LabelPoolTemplate]
	if _, err := c.claimPod(ctx, p.DeepCopy(), "first", hash); err != nil {
		t.Fatal(err)
	}
	_, err := c.claimPod(ctx, p.DeepCopy(), "second", hash)
	if !apierrors.IsConflict(err) {
		t.Errorf("a second claim of the same pod: %v, want a conflict", err)
	}
	if err := c.deleteWarmPod(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pool deleted a claimed pod: %v", err)
	}
	if got.DeletionTimestamp != nil || got.Labels[apiv1.LabelOwnerID] != "first" {
		t.Errorf("claimed pod: deleting %v, labels %v", got.DeletionTimestamp != nil, got.Labels)
	}
}

// TestWarmPoolShrinksToZero: with the pool off the leader deletes every warm pod and
// pool Secret, but not a claimed pod, which is a session's.
func TestWarmPoolShrinksToZero(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c, stop := e.start(poolConfig(e, 2))
	e.waitWarm(2, "filled", nil)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.StartKind != apiv1.StartKindWarm {
		t.Fatalf("start kind %q", s.StartKind)
	}
	e.waitWarm(2, "refilled", nil)
	stop()

	// A smaller size sheds the surplus; the claimed session is not counted.
	_, stop = e.start(poolConfig(e, 1))
	e.waitWarm(1, "shrunk to one", nil)
	stop()

	c, _ = e.start(poolConfig(e, 0))
	e.waitWarm(0, "shrunk to zero", nil)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := e.kube.CoreV1().Secrets(e.ns).List(ctx, metav1.ListOptions{LabelSelector: LabelPoolState + "=" + PoolStateWarm})
		return err == nil && len(l.Items) == 0, err
	}); err != nil {
		t.Errorf("pool Secrets left: %v", err)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	if _, err := e.pod(ctx, s.ID); err != nil {
		t.Errorf("the claimed session's pod went with the pool: %v", err)
	}
	// With the pool off, creates are cold.
	cold := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, cold, 0); err != nil {
		t.Fatal(err)
	}
	if cold.StartKind != apiv1.StartKindCold {
		t.Errorf("start kind %q with the pool off", cold.StartKind)
	}
}

// TestWarmPoolReplacesStaleTemplate: after a configuration change (the session CPU
// request) the warm pods of the old template are replaced by pods of the new one.
func TestWarmPoolReplacesStaleTemplate(t *testing.T) {
	e := newEnv(t)
	_, stop := e.start(poolConfig(e, 2))
	old := e.waitWarm(2, "filled", nil)[0].Labels[LabelPoolTemplate]
	stop()
	cfg := poolConfig(e, 2)
	cfg.CPURequest = "200m"
	e.start(cfg)
	fresh := e.waitWarm(2, "replaced", func(tpl string) bool { return tpl != old })
	for _, p := range fresh {
		if q := p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; q.String() != "200m" {
			t.Errorf("pod %s of the new template requests %s CPU", p.Name, q.String())
		}
	}
}

// failingStore fails CreateSession while fail is set, as a database outage or a lost
// quota race would after the claim.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

var errInjected = errors.New("injected create failure")

func (f *failingStore) CreateSession(ctx context.Context, s *store.Session, maxActive int) error {
	if f.fail.Load() {
		return errInjected
	}
	return f.Store.CreateSession(ctx, s, maxActive)
}

// TestWarmPoolFailedCreateLeavesNoOrphan: a create whose row cannot be stored after it
// claimed a pod fails with the store's error and deletes that pod and its Secret; the
// pool refills. A create over the owner's quota claims nothing.
func TestWarmPoolFailedCreateLeavesNoOrphan(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	fs := &failingStore{Store: e.st}
	e.st = fs
	c, _ := e.start(poolConfig(e, 2))
	e.waitWarm(2, "filled", nil)

	// Over quota: refused before any claim.
	first := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, first, 1); err != nil {
		t.Fatal(err)
	}
	e.waitWarm(2, "refilled", nil)
	over := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, over, 1); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("create over quota: %v", err)
	}
	if n := len(e.poolPods(ctx, PoolStateClaimed)); n != 1 {
		t.Errorf("%d claimed pods after a create over quota, want the first session's only", n)
	}

	// The row cannot be stored after the claim.
	fs.fail.Store(true)
	s := &store.Session{OwnerID: e.owner}
	err := c.Create(ctx, s, 0)
	fs.fail.Store(false)
	if !errors.Is(err, errInjected) {
		t.Fatalf("create with a failing store: %v", err)
	}
	if s.ID == first.ID || s.ID == "" {
		t.Fatalf("failed create has id %q", s.ID)
	}
	e.waitGone("pod of the failed create", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
	e.waitGone("secret of the failed create", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
		return err
	})
	if n := len(e.poolPods(ctx, PoolStateClaimed)); n != 1 {
		t.Errorf("%d claimed pods after the failed create, want the first session's only", n)
	}
	e.waitWarm(2, "refilled after the failed create", nil)
}

// TestWarmPoolKeyDeliveryFailureGoesCold: with per-session LiteLLM keys, a claimed pod
// whose OpenCode cannot be given the key before the session is stored is dropped, with
// the key made for it, and the create goes on cold: no session ever runs on an OpenCode
// without its key, and nothing of the claim is left.
func TestWarmPoolKeyDeliveryFailureGoesCold(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	g := newGateway(t)
	cfg := poolConfig(e, 1)
	cl, err := litellm.New(g.URL, testMasterKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LiteLLMBaseURL, cfg.LiteLLM = g.URL, cl
	var tries atomic.Int32
	c, _ := e.startWith(cfg, func(c *Controller) {
		c.SetKeyDelivery(func(context.Context, *store.Session, string, string) error {
			tries.Add(1)
			return errors.New("the tunnel to the pod was refused")
		})
	})
	poolID := e.waitWarm(1, "filled", nil)[0].Labels[apiv1.LabelSessionID]
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if tries.Load() == 0 {
		t.Fatal("the claim never tried to give OpenCode the key")
	}
	if s.StartKind != apiv1.StartKindCold || s.ID == poolID {
		t.Fatalf("create after a failed key delivery: id %s (pool pod %s), start kind %q; want a cold session of its own", s.ID, poolID, s.StartKind)
	}
	if _, err := e.st.GetSession(ctx, poolID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a session row under the dropped pool pod's id: %v", err)
	}
	e.waitGone("the claimed pod", func(ctx context.Context) error { _, err := e.pod(ctx, poolID); return err })
	e.waitGone("the claimed pod's Secret", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(poolID), metav1.GetOptions{})
		return err
	})
	for _, k := range g.Keys() {
		if k.Metadata["session"] == poolID {
			t.Errorf("the key made for the dropped claim is still live: %+v", k.Metadata)
		}
	}
	if sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{}); err != nil || len(sec.Data[SecretKeyLiteLLM]) == 0 {
		t.Errorf("the cold session's Secret has no LiteLLM key (%v)", err)
	}
}

// TestWarmPoolClonesAtClaim: a session with a repository whose clone needs no credential
// claims a warm pod, and its repository is cloned into that pod's workspace (with the
// init container's git arguments, never prompting) before Create returns. One whose clone
// needs the owner's credential, or an ssh repository, starts cold; a clone that fails at
// claim sends the create cold with nothing left of the claim.
func TestWarmPoolClonesAtClaim(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	type call struct {
		id, dir string
		env     map[string]string
		argv    []string
	}
	var (
		mu    sync.Mutex
		calls []call
		fail  atomic.Bool
	)
	c, _ := e.startWith(poolConfig(e, 2), func(c *Controller) {
		c.SetWorkspacePrep(func(_ context.Context, s *store.Session, dir string, env map[string]string, argv []string) error {
			mu.Lock()
			calls = append(calls, call{s.ID, dir, env, argv})
			mu.Unlock()
			if fail.Load() {
				return errors.New("git in the session's workspace exited with status 128")
			}
			return nil
		})
	})
	ncalls := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
	e.waitWarm(2, "filled", nil)

	const repo = "https://git.example.com:8443/org/repo.git"
	s := &store.Session{OwnerID: e.owner, Repo: repo, Branch: "dev", Private: true}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.StartKind != apiv1.StartKindWarm {
		t.Fatalf("a private session whose owner has no credential for the host: start kind %q, want warm", s.StartKind)
	}
	if ncalls() != 1 {
		t.Fatalf("%d clones at claim, want 1", ncalls())
	}
	got := calls[0]
	want := append([]string{"git"}, sessioninit.CloneArgs(repo, "dev", "", false)...)
	if got.id != s.ID || got.dir != "" || fmt.Sprint(got.argv) != fmt.Sprint(want) || got.env["GIT_TERMINAL_PROMPT"] != "0" {
		t.Errorf("clone at claim = %+v; want session %s, OpenCode's own directory, argv %v and GIT_TERMINAL_PROMPT=0", got, s.ID, want)
	}
	if stored, err := e.st.GetSession(ctx, s.ID); err != nil || stored.Repo != repo || stored.Branch != "dev" {
		t.Errorf("stored session: %+v, %v", stored, err)
	}

	// The owner's token for the host lives in the Secret behind a helper the init
	// container configures: that session starts cold, and nothing is run in a pool pod.
	sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: "x-access-token", Token: "tok"}
	if err := e.st.PutCredential(ctx, &store.Credential{OwnerID: e.owner, Provider: gitcred.Provider("git.example.com:8443"), Secret: gitcred.Encode(sec)}); err != nil {
		t.Fatal(err)
	}
	e.waitWarm(2, "refilled", nil)
	withCred := &store.Session{OwnerID: e.owner, Repo: repo, Private: true}
	if err := c.Create(ctx, withCred, 0); err != nil {
		t.Fatal(err)
	}
	// A shared session never carries anyone's credential, so it still starts warm.
	shared := &store.Session{OwnerID: e.owner, Repo: repo}
	if err := c.Create(ctx, shared, 0); err != nil {
		t.Fatal(err)
	}
	ssh := &store.Session{OwnerID: e.owner, Repo: "git@git.example.com:org/repo.git"}
	if err := c.Create(ctx, ssh, 0); err != nil {
		t.Fatal(err)
	}
	if withCred.StartKind != apiv1.StartKindCold || shared.StartKind != apiv1.StartKindWarm || ssh.StartKind != apiv1.StartKindCold {
		t.Errorf("start kinds: with the owner's credential %q (want cold), shared %q (want warm), ssh %q (want cold)", withCred.StartKind, shared.StartKind, ssh.StartKind)
	}
	if n := ncalls(); n != 2 {
		t.Errorf("%d clones at claim after the shared session, want 2", n)
	}

	// A clone that fails at claim: the create goes cold (its init container clones and
	// reports), and the claimed pod is gone for good.
	fail.Store(true)
	poolIDs := map[string]bool{}
	for _, p := range e.waitWarm(2, "refilled again", nil) {
		poolIDs[p.Labels[apiv1.LabelSessionID]] = true
	}
	failed := &store.Session{OwnerID: e.owner, Repo: repo, Private: false}
	if err := c.Create(ctx, failed, 0); err != nil {
		t.Fatal(err)
	}
	if failed.StartKind != apiv1.StartKindCold || poolIDs[failed.ID] {
		t.Fatalf("create after a failed clone at claim: start kind %q, id %s; want a cold session of its own", failed.StartKind, failed.ID)
	}
	mu.Lock()
	dropped := calls[len(calls)-1].id
	mu.Unlock()
	if !poolIDs[dropped] {
		t.Fatalf("the failed clone ran in %s, not a pool pod (%v)", dropped, poolIDs)
	}
	if _, err := e.st.GetSession(ctx, dropped); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a session row under the dropped pool pod's id: %v", err)
	}
	e.waitGone("the claimed pod", func(ctx context.Context) error { _, err := e.pod(ctx, dropped); return err })
	pod, err := e.pod(ctx, failed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if args := fmt.Sprint(pod.Spec.InitContainers[0].Args); !strings.Contains(args, repo) {
		t.Errorf("the cold pod's init container does not clone %s: %s", repo, args)
	}
}
