package ui_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cakeai/cake-agents/agent/server"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// TestBrowserLifecycleOnTestCluster runs the browser flow with the real sessions
// controller on the local test cluster: the session's pod is created for real and kwok
// makes it Running. Only the conversation is a stand-in (no OpenCode in the pod).
func TestBrowserLifecycleOnTestCluster(t *testing.T) {
	chromiumPath(t) // skips with -short before a cluster is started
	cl := testcluster.Get(t)
	ns := cl.NewNamespace(t, map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var ctrl *sessions.Controller
	s := newStackWith(t, func(st store.Store, conv *fakeConversation) server.Sessions {
		c, err := sessions.New(sessions.Config{
			Namespace:          ns,
			Release:            "ui-test",
			DataPlaneImage:     "example.invalid/data-plane:1",
			DataPlaneInitImage: "example.invalid/data-plane-init:1",
			ImagePullPolicy:    "IfNotPresent",
			CPURequest:         "100m", CPULimit: "1", MemoryRequest: "128Mi", MemoryLimit: "1Gi",
			StorageSize:       "1Gi",
			LiteLLMBaseURL:    "http://litellm:4000/v1",
			DefaultModel:      "m",
			ReconcileInterval: 2 * time.Second,
			Registerer:        prometheus.NewRegistry(),
		}, cl.AdminClient(), st, hclog.New(&hclog.LoggerOptions{Name: "sessions", Level: hclog.Warn}))
		if err != nil {
			t.Fatal(err)
		}
		// As the agent's wiring does: the initial prompt goes to OpenCode once the pod is ready.
		var mu sync.Mutex
		sent := map[string]bool{}
		c.SetReadyHook(func(ctx context.Context, sess *store.Session) {
			mu.Lock()
			defer mu.Unlock()
			if sess.Prompt == "" || sent[sess.ID] {
				return
			}
			sent[sess.ID] = true
			_ = conv.Send(ctx, sess, sess.Prompt)
		})
		ctrl = c
		return c
	})
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for ctrl.Ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("controller never ready: %v", ctrl.Ready(ctx))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b := newBrowser(t)
	// The cluster has no volume provisioner: an ephemeral workspace.
	lifecycle(t, s, b, "cluster-", false)
}
