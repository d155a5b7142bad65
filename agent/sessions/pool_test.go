package sessions

import (
	"context"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"

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
