package sessions

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/store"
)

// TestColdReasons: what a pool pod cannot give a session sends it cold, and only that.
func TestColdReasons(t *testing.T) {
	st, owner := newStore(t)
	cfg := testConfig("sessions")
	cfg.WarmPoolSize = 2
	c := newTestController(t, cfg, fake.NewClientset(), st)
	base := func() *store.Session {
		s := &store.Session{OwnerID: owner}
		if err := c.fillNew(s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if why := c.coldReason(base(), false); why != "" {
		t.Errorf("a plain session goes cold: %s", why)
	}
	for name, tc := range map[string]struct {
		mutate   func(*store.Session)
		idChosen bool
	}{
		"id chosen":    {func(*store.Session) {}, true},
		"other model":  {func(s *store.Session) { s.Model = "other" }, false},
		"image":        {func(s *store.Session) { s.Image = "img:2" }, false},
		"init image":   {func(s *store.Session) { s.InitImage = "init:2" }, false},
		"persistent":   {func(s *store.Session) { s.Persistent = true }, false},
		"a repository": {func(s *store.Session) { s.Repo = "https://github.com/org/repo" }, false},
	} {
		s := base()
		tc.mutate(s)
		if c.coldReason(s, tc.idChosen) == "" {
			t.Errorf("%s: the session would take a pool pod", name)
		}
	}
	// Per-session LiteLLM keys need a way to hand the key over.
	lc := cfg
	lc.LiteLLM, lc.Registerer = &litellm.Client{}, prometheus.NewRegistry()
	withKeys := newTestController(t, lc, fake.NewClientset(), st)
	if withKeys.coldReason(base(), false) == "" {
		t.Error("with LiteLLM keys and no key delivery a session would take a pool pod")
	}
	withKeys.SetKeyDelivery(func(context.Context, *store.Session, string, string) error { return nil })
	if why := withKeys.coldReason(base(), false); why != "" {
		t.Errorf("with key delivery: %s", why)
	}
	off := cfg
	off.WarmPoolSize, off.Registerer = 0, prometheus.NewRegistry()
	if newTestController(t, off, fake.NewClientset(), st).coldReason(base(), false) == "" {
		t.Error("with the pool off a session would take a pool pod")
	}
}

// TestPoolTemplate: the hash is stable for one configuration and changes with what the
// pod is built from; with LiteLLM keys the pool pod's config is told to name no key.
func TestPoolTemplate(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	hashOf := func(cfg Config) string {
		t.Helper()
		cfg.Registerer = prometheus.NewRegistry()
		_, h, err := newTestController(t, cfg, fake.NewClientset(), st).poolTemplate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	cfg := testConfig("sessions")
	h := hashOf(cfg)
	if len(h) != 16 || hashOf(cfg) != h {
		t.Fatalf("hash %q is not stable", h)
	}
	for name, mutate := range map[string]func(*Config){
		"cpu request":   func(c *Config) { c.CPURequest = "200m" },
		"image":         func(c *Config) { c.DataPlaneImage = "example.invalid/data-plane:2" },
		"default model": func(c *Config) { c.DefaultModel = "m2" },
		"gateway":       func(c *Config) { c.LiteLLMBaseURL = "http://other:4000/v1" },
	} {
		c := cfg
		mutate(&c)
		if hashOf(c) == h {
			t.Errorf("%s: the template hash did not change", name)
		}
	}
	lc := cfg
	lc.LiteLLM, lc.Registerer = &litellm.Client{}, prometheus.NewRegistry()
	c := newTestController(t, lc, fake.NewClientset(), st)
	pod, err := c.buildPoolPod(c.poolSession("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pod.Spec.InitContainers[0].Args, "--key-at-claim") {
		t.Errorf("pool pod init args %v lack --key-at-claim", pod.Spec.InitContainers[0].Args)
	}
	plain, err := c.buildPod(c.poolSession("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(plain.Spec.InitContainers[0].Args, "--key-at-claim") {
		t.Error("a session pod's config leaves its key out")
	}
}

// splitPodLister lists from one cache and gets from another: the pod cache as a pool
// pass sees it when the watch delivers a pod between the pass's list and its later reads.
type splitPodLister struct{ list, get corelisters.PodLister }

func (s splitPodLister) List(sel labels.Selector) ([]*corev1.Pod, error) { return s.list.List(sel) }
func (s splitPodLister) Pods(ns string) corelisters.PodNamespaceLister {
	return splitPodNamespaceLister{s.list.Pods(ns), s.get.Pods(ns)}
}

type splitPodNamespaceLister struct {
	list, get corelisters.PodNamespaceLister
}

func (s splitPodNamespaceLister) List(sel labels.Selector) ([]*corev1.Pod, error) {
	return s.list.List(sel)
}
func (s splitPodNamespaceLister) Get(name string) (*corev1.Pod, error) { return s.get.Get(name) }

// TestPoolCountsAPodTheCacheShowsLate: a pool pod created by one pass, missing from the
// next pass's list but in the cache by the time the pass reads it again, still counts —
// the pass creates no second pod (which the pool would then delete as surplus).
func TestPoolCountsAPodTheCacheShowsLate(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	cfg := testConfig("sessions")
	cfg.WarmPoolSize = 1
	kube := fake.NewClientset()
	c := newTestController(t, cfg, kube, st)
	empty := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	c.podLister = corelisters.NewPodLister(empty)
	count := func() int {
		t.Helper()
		pods, err := kube.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(pods.Items)
	}
	if err := c.reconcilePool(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("first pass: %d pods, want 1", n)
	}
	// Still not in the list; already in the cache when read by name.
	late := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	pods, _ := kube.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{})
	for i := range pods.Items {
		if err := late.Add(&pods.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	c.podLister = splitPodLister{list: corelisters.NewPodLister(empty), get: corelisters.NewPodLister(late)}
	if err := c.reconcilePool(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("a pass that met the pod late: %d pods, want 1", n)
	}
	// Claimed meanwhile: a session's pod now, so the pool makes a new warm one.
	claimed := pods.Items[0].DeepCopy()
	claimed.Labels[LabelPoolState] = PoolStateClaimed
	if err := late.Update(claimed); err != nil {
		t.Fatal(err)
	}
	if err := c.reconcilePool(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("after a claim the cache showed late: %d pods, want 2 (the claimed one and a new warm one)", n)
	}
}
