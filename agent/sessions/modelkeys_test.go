package sessions

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakelitellm"
)

const testMasterKey = "sk-master-canary-0123456789"

// gateway is a fake LiteLLM the test can take down (every call answers 503, as a
// proxy in front of a dead LiteLLM would) and bring back.
type gateway struct {
	*fakelitellm.Server
	URL  string
	down atomic.Bool
	// failGenerate makes /key/generate make the key but answer 500, as a LiteLLM whose
	// answer is lost would.
	failGenerate atomic.Bool
	// refuse makes every call answer 401 quoting a prefix of the key presented, as
	// real LiteLLM does for a wrong master key.
	refuse atomic.Bool
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	g := &gateway{Server: fakelitellm.New(testMasterKey)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.down.Load() {
			http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
			return
		}
		if g.refuse.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"message":"Authentication Error, Received API Key = ` + r.Header.Get("Authorization")[7:19] + `..."}}`))
			return
		}
		if g.failGenerate.Load() && r.URL.Path == "/key/generate" {
			g.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, "lost answer", http.StatusInternalServerError)
			return
		}
		g.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL + "/v1"
	return g
}

// keyConfig is testConfig with sessions getting their own keys from g.
func keyConfig(t *testing.T, g *gateway) Config {
	t.Helper()
	cfg := testConfig("ns")
	cl, err := litellm.New(g.URL, testMasterKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LiteLLMBaseURL, cfg.LiteLLM = g.URL, cl
	cfg.LiteLLMSessionBudget, cfg.LiteLLMUserBudget, cfg.LiteLLMUserBudgetPeriod = 2.5, 10, 7*24*time.Hour
	cfg.DefaultModel, cfg.DefaultTTL = "litellm/fake-model", 6*time.Hour
	return cfg
}

func secretKey(t *testing.T, kube kubernetes.Interface, id string) string {
	t.Helper()
	sec, err := kube.CoreV1().Secrets("ns").Get(context.Background(), SecretName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(sec.Data[SecretKeyLiteLLM])
}

// noMasterKey fails when the master key is in any Secret or pod of the namespace.
func noMasterKey(t *testing.T, kube kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	secs, _ := kube.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{})
	for _, s := range secs.Items {
		for k, v := range s.Data {
			if strings.Contains(string(v), testMasterKey) {
				t.Errorf("secret %s key %s holds the master key", s.Name, k)
			}
		}
	}
	pods, _ := kube.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		if strings.Contains(p.String(), testMasterKey) {
			t.Errorf("pod %s holds the master key", p.Name)
		}
	}
}

func chat(t *testing.T, g *gateway, key string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/chat/completions", strings.NewReader(`{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestModelKeyPerSession: each session's Secret holds a key of its own, made with
// the session's budget, model, owner and TTL; the key works, is deleted at stop (its
// spend kept), replaced at start and deleted with the session; the master key is in no
// Secret or pod.
func TestModelKeyPerSession(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()

	a, b := &store.Session{OwnerID: owner}, &store.Session{OwnerID: owner}
	for _, s := range []*store.Session{a, b} {
		if err := c.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
		if s.State != apiv1.StatePending {
			t.Fatalf("session %s is %s: %s", s.ID, s.State, s.Message)
		}
	}
	ka, kb := secretKey(t, kube, a.ID), secretKey(t, kube, b.ID)
	if !strings.HasPrefix(ka, "sk-") || ka == kb {
		t.Fatalf("session keys %q and %q: want two different virtual keys", ka, kb)
	}
	keys := g.Keys()
	if len(keys) != 2 {
		t.Fatalf("%d live keys, want 2", len(keys))
	}
	for _, k := range keys {
		if k.UserID != owner || k.MaxBudget == nil || *k.MaxBudget != 2.5 || len(k.Models) != 1 || k.Models[0] != "fake-model" ||
			k.Expires == nil || time.Until(*k.Expires) > 6*time.Hour || time.Until(*k.Expires) < 5*time.Hour ||
			(k.Metadata["cake_agents_session"] != a.ID && k.Metadata["cake_agents_session"] != b.ID) || k.Metadata["cake_agents_owner"] != owner {
			t.Errorf("key %+v: want the session's budget, model, owner, TTL and metadata", k)
		}
	}
	if u, ok := g.User(owner); !ok || *u.MaxBudget != 10 || u.BudgetDuration != "604800s" {
		t.Errorf("owner's LiteLLM user %+v, %v: want max_budget 10 per week", u, ok)
	}
	noMasterKey(t, kube)
	if got := chat(t, g, ka); got != http.StatusOK {
		t.Fatalf("a session's key was refused: HTTP %d", got)
	}
	if spend, ok, err := c.Spend(ctx, a.ID); err != nil || !ok || spend != g.CostPerRequest {
		t.Errorf("Spend = %v, %v, %v; want one request's", spend, ok, err)
	}

	// Stop: the key goes, its spend stays on the session.
	if _, err := c.Stop(ctx, a.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	if got := chat(t, g, ka); got != http.StatusUnauthorized {
		t.Errorf("a stopped session's key still works: HTTP %d", got)
	}
	if spend, _, err := c.Spend(ctx, a.ID); err != nil || spend != g.CostPerRequest {
		t.Errorf("Spend after stop = %v, %v; want the deleted key's final spend", spend, err)
	}
	// Start: a new key in the same Secret.
	if _, err := c.Start(ctx, a.ID, 0); err != nil {
		t.Fatal(err)
	}
	ka2 := secretKey(t, kube, a.ID)
	if ka2 == ka || !strings.HasPrefix(ka2, "sk-") || chat(t, g, ka2) != http.StatusOK {
		t.Errorf("after start the Secret holds %q (old %q): want a new working key", ka2, ka)
	}
	if spend, _, _ := c.Spend(ctx, a.ID); spend != 2*g.CostPerRequest {
		t.Errorf("Spend over two keys = %v, want %v", spend, 2*g.CostPerRequest)
	}

	// Delete: every key of the session goes, and so do their rows.
	for _, s := range []*store.Session{a, b} {
		if err := c.Delete(ctx, s.ID); err != nil {
			t.Fatal(err)
		}
	}
	if keys := g.Keys(); len(keys) != 0 {
		t.Errorf("live keys after delete: %+v", keys)
	}
	if rows, _ := st.ListModelKeys(ctx, store.ModelKeyFilter{}); len(rows) != 0 {
		t.Errorf("key rows after delete: %+v", rows)
	}
	noMasterKey(t, kube)
}

// TestCreateWhenLiteLLMFails: a create whose key cannot be made fails naming LiteLLM
// and leaves nothing: no row, no Secret, no pod, no key — also when LiteLLM made the
// key but its answer was lost, and when the session is refused after its key was made.
func TestCreateWhenLiteLLMFails(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()
	nothingLeft := func(what string, id string) {
		t.Helper()
		if _, err := st.GetSession(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: session row: %v, want none", what, err)
		}
		if secs, _ := kube.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{}); len(secs.Items) != 0 {
			t.Errorf("%s: %d secrets left", what, len(secs.Items))
		}
		if pods, _ := kube.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
			t.Errorf("%s: %d pods left", what, len(pods.Items))
		}
		if keys := g.Keys(); len(keys) != 0 {
			t.Errorf("%s: live keys %+v", what, keys)
		}
	}

	g.down.Store(true)
	s := &store.Session{OwnerID: owner}
	err := c.Create(ctx, s, 0)
	if !errors.Is(err, ErrModelKey) || !errors.Is(err, litellm.ErrUnavailable) || !strings.Contains(err.Error(), "LiteLLM") {
		t.Fatalf("Create with LiteLLM down: %v; want ErrModelKey wrapping litellm.ErrUnavailable", err)
	}
	nothingLeft("LiteLLM down", s.ID)
	// The key's row stays until LiteLLM confirms there is no key; then it goes.
	g.down.Store(false)
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if rows, _ := st.ListModelKeys(ctx, store.ModelKeyFilter{SessionID: s.ID}); len(rows) != 0 {
		t.Errorf("key rows after the reconciler ran: %+v", rows)
	}

	g.failGenerate.Store(true)
	s = &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); !errors.Is(err, ErrModelKey) {
		t.Fatalf("Create with a lost answer: %v", err)
	}
	if len(g.Deleted()) == 0 {
		t.Error("the key LiteLLM made without answering was not deleted")
	}
	nothingLeft("answer lost", s.ID)
	g.failGenerate.Store(false)

	// Refused by quota after the key was made: the key goes too.
	first := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, first, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &store.Session{OwnerID: owner}, 1); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("second Create: %v, want ErrQuotaExceeded", err)
	}
	if keys := g.Keys(); len(keys) != 1 || keys[0].Metadata["cake_agents_session"] != first.ID {
		t.Errorf("live keys %+v: want only the first session's", keys)
	}
	if n := len(g.Deleted()); n != 1 {
		t.Errorf("%d keys deleted: an over-quota create made a key (want only the lost answer's)", n)
	}
	// Over the quota while LiteLLM is down: the quota error, not LiteLLM's.
	g.down.Store(true)
	if err := c.Create(ctx, &store.Session{OwnerID: owner}, 1); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Create over the quota with LiteLLM down: %v, want ErrQuotaExceeded", err)
	}
}

// TestLiteLLMAnswerStaysInTheLog: a start whose key LiteLLM refuses leaves a session
// message naming what an admin should check, never LiteLLM's answer (which quotes the
// master key's start).
func TestLiteLLMAnswerStaysInTheLog(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	c := newTestController(t, keyConfig(t, g), fake.NewClientset(), st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, s.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	g.refuse.Store(true)
	got, err := c.Start(ctx, s.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.Message, testMasterKey[:12]) || !strings.Contains(got.Message, "litellm.secret") {
		t.Errorf("session message %q: want the fixed text naming litellm.secret, without LiteLLM's answer", got.Message)
	}
}

// TestFailedSessionPodGoesWhileLiteLLMIsDown: the reconciler deletes a Failed
// session's pod even when its key cannot be deleted yet; the key goes once LiteLLM
// answers.
func TestFailedSessionPodGoesWhileLiteLLMIsDown(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	pod, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.factory.Core().V1().Pods().Informer().GetIndexer().Add(pod); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.update(ctx, s.ID, func(s *store.Session) (bool, error) {
		s.State, s.Reason = apiv1.StateFailed, "Test"
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	g.down.Store(true)
	if err := c.reconcile(ctx, s.ID); !errors.Is(err, litellm.ErrUnavailable) {
		t.Errorf("reconcile with LiteLLM down: %v; want the key's error, for a retry", err)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err == nil {
		t.Error("the Failed session's pod was kept while LiteLLM was down")
	}
	g.down.Store(false)
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if keys := g.Keys(); len(keys) != 0 {
		t.Errorf("live keys after LiteLLM came back: %+v", keys)
	}
}

// TestRestartNeverKeepsADeadKey: a start whose Secret update failed after its new key
// was made leaves the stopped key (deleted in LiteLLM) in the Secret; the retry puts a
// live key there, never keeping the dead one.
func TestRestartNeverKeepsADeadKey(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, s.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	dead := secretKey(t, kube, s.ID)
	var failUpdate atomic.Bool
	failUpdate.Store(true)
	kube.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failUpdate.Load() {
			return true, nil, apierrors.NewServiceUnavailable("etcd is down")
		}
		return false, nil, nil
	})
	// The informer's view of the Secret, as the running controller has it.
	sec, err := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.factory.Core().V1().Secrets().Informer().GetIndexer().Add(sec); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if got := secretKey(t, kube, s.ID); got != dead {
		t.Fatalf("the failed update changed the Secret's key")
	}
	failUpdate.Store(false)
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	key := secretKey(t, kube, s.ID)
	if key == dead || chat(t, g, key) != http.StatusOK {
		t.Errorf("after the retry the Secret holds the stopped session's deleted key (%v): want a live one", key == dead)
	}
	if n := len(g.Keys()); n != 1 {
		t.Errorf("%d live keys, want only the Secret's", n)
	}
}

// TestKeyOnlyForLiteLLMModels: a session whose model is another provider's gets no
// LiteLLM key (a key for every model would let it spend on any of LiteLLM's); one with
// no model gets a key for the configured default; a key made at a start lives for what
// is left of the session's TTL.
func TestKeyOnlyForLiteLLMModels(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()

	other := &store.Session{OwnerID: owner, Model: "acme/big-model"}
	if err := c.Create(ctx, other, 0); err != nil {
		t.Fatal(err)
	}
	if k := secretKey(t, kube, other.ID); k != "" || len(g.Keys()) != 0 {
		t.Errorf("a session on another provider's model got a LiteLLM key (Secret %q, live keys %+v)", k, g.Keys())
	}
	// A session stored without a model (the default is resolved at create, but an
	// older row may have none) gets a key for the default model only.
	bare := &store.Session{ID: "bare1", OwnerID: owner, TTL: 6 * time.Hour, CreatedAt: time.Now()}
	if _, err := c.issueKey(ctx, bare); err != nil {
		t.Fatal(err)
	}
	if keys := g.Keys(); len(keys) != 1 || len(keys[0].Models) != 1 || keys[0].Models[0] != "fake-model" {
		t.Errorf("keys %+v: want one for the default model only", keys)
	}

	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, s.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	// Four of the session's six hours later it starts again.
	c.now = func() time.Time { return time.Now().Add(4 * time.Hour) }
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range g.Keys() {
		if k.Metadata["cake_agents_session"] != s.ID {
			continue
		}
		if left := time.Until(*k.Expires); left > 2*time.Hour+time.Minute || left < 110*time.Minute {
			t.Errorf("the restarted session's key expires in %s; want the 2h left of its TTL", left)
		}
	}
}

// TestKeysOfGoneSessionsAreDeleted: a stop or delete that could not reach LiteLLM, or
// a crash between a key and its session row, leaves a live key row; the sweep finds it
// and the reconciler deletes the key once LiteLLM answers.
func TestKeysOfGoneSessionsAreDeleted(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()

	stopped, deleted := &store.Session{OwnerID: owner}, &store.Session{OwnerID: owner}
	for _, s := range []*store.Session{stopped, deleted} {
		if err := c.Create(ctx, s, 0); err != nil {
			t.Fatal(err)
		}
	}
	// A crash right after a key was made for a session never stored.
	crashed := &store.Session{ID: "crashed1", OwnerID: owner, TTL: time.Hour, Model: "litellm/fake-model", CreatedAt: time.Now()}
	if _, err := c.issueKey(ctx, crashed); err != nil {
		t.Fatal(err)
	}
	g.down.Store(true)
	if s, err := c.Stop(ctx, stopped.ID, "", ""); err != nil || s.State != apiv1.StateStopped {
		t.Fatalf("Stop with LiteLLM down: %+v, %v; want Stopped anyway", s, err)
	}
	if err := c.Delete(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSession(ctx, deleted.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a delete waited for LiteLLM: %v", err)
	}
	if n := len(g.Keys()); n != 3 {
		t.Fatalf("%d live keys while LiteLLM is down, want 3", n)
	}
	g.down.Store(false)

	// The sweep enqueues every session with a live key that should have none.
	c.mu.Lock()
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test"})
	c.mu.Unlock()
	c.sweep(ctx)
	ids := map[string]bool{}
	for c.queue.Len() > 0 {
		id, _ := c.queue.Get()
		ids[id] = true
		c.queue.Done(id)
	}
	c.queue.ShutDown()
	for _, want := range []string{stopped.ID, deleted.ID, crashed.ID} {
		if !ids[want] {
			t.Errorf("the sweep did not enqueue %s (enqueued %v)", want, ids)
		}
	}
	for id := range ids {
		if err := c.reconcile(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if keys := g.Keys(); len(keys) != 0 {
		t.Errorf("live keys after reconcile: %+v", keys)
	}
	rows, _ := st.ListModelKeys(ctx, store.ModelKeyFilter{})
	for _, r := range rows {
		if r.SessionID != stopped.ID {
			t.Errorf("row of a gone session kept: %+v", r)
		}
	}
}

// TestSecretWithoutKeyGetsOne: a Secret that lost its key (or was written before
// keys were configured) gets a new key at the next launch, and the old key is deleted.
func TestSecretWithoutKeyGetsOne(t *testing.T) {
	g := newGateway(t)
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, keyConfig(t, g), kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	old := secretKey(t, kube, s.ID)
	sec, _ := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	delete(sec.Data, SecretKeyLiteLLM)
	if _, err := kube.CoreV1().Secrets("ns").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.ensureSecret(ctx, s, nil, ""); err != nil {
		t.Fatal(err)
	}
	now := secretKey(t, kube, s.ID)
	if now == "" || now == old || chat(t, g, old) != http.StatusUnauthorized || chat(t, g, now) != http.StatusOK {
		t.Errorf("key %q (old %q): want a new working key and the old one deleted", now, old)
	}
}
