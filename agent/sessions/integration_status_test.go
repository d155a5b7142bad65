package sessions

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestPodStatusFailures: kubelet-reported failures reach the session and its pod goes.
func TestPodStatusFailures(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: ContainerName, Image: pod.Spec.Containers[0].Image,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}},
	}}
	if _, err := e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	failed := e.waitSession(s.ID, "Failed", inState(apiv1.StateFailed))
	if failed.Reason != "OOMKilled" {
		t.Errorf("reason %q, want OOMKilled (message %q)", failed.Reason, failed.Message)
	}
	e.waitGone("failed session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err })
	// A failed session can be started again.
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running after restart", inState(apiv1.StateRunning))
}

// TestReadinessLapseKeepsRunning: a Running session whose pod turns unready while its
// OpenCode container keeps running stays Running with reason NotAnswering (so `session
// send` and attach are not refused for a moment's slowness) and its ready hook does
// not fire again; once the pod is ready again the reason clears.
func TestReadinessLapseKeepsRunning(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	var hooked atomic.Int32
	c.SetReadyHook(func(context.Context, *store.Session) { hooked.Add(1) })
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return hooked.Load() == 1, nil
	}); err != nil {
		t.Fatalf("ready hook called %d times, want once", hooked.Load())
	}
	setReady := func(ready corev1.ConditionStatus, since time.Time) {
		t.Helper()
		pod, err := e.pod(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready, LastTransitionTime: metav1.NewTime(since)}}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, Image: pod.Spec.Containers[0].Image, Ready: ready == corev1.ConditionTrue,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(since.Add(-time.Minute))}}}}
		if _, err := e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady(corev1.ConditionFalse, time.Now())
	lapse := e.waitSession(s.ID, "NotAnswering", func(x *store.Session) bool {
		if x != nil && x.State != apiv1.StateRunning {
			t.Errorf("a readiness lapse made the session %s (%s)", x.State, x.Reason)
		}
		return x != nil && x.Reason == ReasonNotAnswering
	})
	if lapse.State != apiv1.StateRunning || !strings.Contains(lapse.Message, "still running") {
		t.Errorf("lapse: %s %s %q", lapse.State, lapse.Reason, lapse.Message)
	}
	setReady(corev1.ConditionTrue, time.Now())
	e.waitSession(s.ID, "ready again", func(x *store.Session) bool {
		return x != nil && x.State == apiv1.StateRunning && x.Reason == ""
	})
	if n := hooked.Load(); n != 1 {
		t.Errorf("ready hook called %d times across the lapse, want once", n)
	}
}

// kwok reports a session pod Ready at once, long before OpenCode would listen in it:
// exactly the case where `session create --wait` used to return before `attach` could
// connect. With a health check set, the session stays Starting (OpenCodeStarting) while
// nothing answers, turns Running once the server does, and fails with a message naming
// OpenCode when it never does.
func TestRunningWaitsForOpenCode(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens until the test says so: connections are refused, as before OpenCode starts
	var probes atomic.Int32
	check := func(ctx context.Context, s *store.Session) error {
		probes.Add(1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/global/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	}

	c, stopFirst := e.start(e.config())
	c.SetHealthCheck(check)
	var hooked atomic.Int32
	c.SetReadyHook(func(context.Context, *store.Session) { hooked.Add(1) })
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	e.cl.WaitForPod(t, e.ns, PodName(s.ID), testcluster.PodRunning)
	waiting := e.waitSession(s.ID, "OpenCodeStarting", func(s *store.Session) bool { return s != nil && s.Reason == ReasonOpenCodeStarting })
	if waiting.State != apiv1.StateStarting || !strings.Contains(waiting.Message, "waiting for OpenCode") {
		t.Fatalf("pod Ready, OpenCode silent: session %s %s %q, want Starting", waiting.State, waiting.Reason, waiting.Message)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return probes.Load() >= 3, nil
	}); err != nil {
		t.Fatalf("the controller stopped probing: %d probes", probes.Load())
	}
	if cur, err := e.st.GetSession(ctx, s.ID); err != nil || cur.State != apiv1.StateStarting || hooked.Load() != 0 {
		t.Fatalf("before OpenCode answers: %+v %v, hook calls %d", cur, err, hooked.Load())
	}

	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"healthy":true}`))
	})}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	running := e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	if running.Reason != "" || running.Message != "" {
		t.Errorf("running session keeps reason %q message %q", running.Reason, running.Message)
	}
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return hooked.Load() == 1, nil
	}); err != nil {
		t.Errorf("ready hook called %d times, want once after OpenCode answered", hooked.Load())
	}

	// An OpenCode that never answers ends in StartTimeout, naming it.
	_ = srv.Close()
	stopFirst()
	cfg := e.config()
	cfg.StartTimeout = 4 * time.Second
	c2, stop := e.start(cfg)
	c2.SetHealthCheck(check)
	silent := &store.Session{OwnerID: e.owner}
	if err := c2.Create(ctx, silent, 0); err != nil {
		t.Fatal(err)
	}
	f := e.waitSession(silent.ID, "Failed", inState(apiv1.StateFailed))
	if f.Reason != ReasonStartTimeout || !strings.Contains(f.Message, "OpenCode did not answer") {
		t.Errorf("silent OpenCode: %s %q", f.Reason, f.Message)
	}
	e.waitGone("the silent session's pod", func(ctx context.Context) error { _, err := e.pod(ctx, silent.ID); return err })
	stop()
}
