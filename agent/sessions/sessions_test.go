package sessions

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func testConfig(ns string) Config {
	return Config{
		Namespace:          ns,
		Release:            "rel",
		DataPlaneImage:     "example.invalid/data-plane:1",
		DataPlaneInitImage: "example.invalid/data-plane-init:1",
		ImagePullPolicy:    "IfNotPresent",
		CPURequest:         "100m", CPULimit: "1", MemoryRequest: "128Mi", MemoryLimit: "1Gi",
		StorageSize:    "1Gi",
		LiteLLMBaseURL: "http://litellm:4000/v1",
		LiteLLMAPIKey:  "sk-master",
		DefaultModel:   "m",
		Registerer:     prometheus.NewRegistry(),
	}
}

// newStore opens a real (in-memory SQLite) store with one user and returns its id.
func newStore(t *testing.T) (store.Store, string) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return st, u.ID
}

func newTestController(t *testing.T, cfg Config, kube kubernetes.Interface, st store.Store) *Controller {
	t.Helper()
	c, err := New(cfg, kube, st, hclog.New(&hclog.LoggerOptions{Name: "sessions", Level: hclog.Debug, Output: testWriter{t}}))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != 8 || id[0] < 'a' || id[0] > 'z' || !ValidID(id) {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "1abc", "Abc", "a_b", "a-", strings.Repeat("a", 41)} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
	if PodName("abc") != "cake-session-abc" || SecretName("abc") != "cake-session-abc" || PVCName("abc") != "cake-session-abc-workspace" {
		t.Error("object names changed")
	}
}

func TestBuildPod(t *testing.T) {
	c := newTestController(t, testConfig("sessions"), fake.NewClientset(), nil)
	c.cfg.NodeSelector = map[string]string{"pool": "agents"}
	c.cfg.Tolerations = []corev1.Toleration{{Key: "agents", Operator: corev1.TolerationOpExists}}
	c.cfg.ImagePullSecrets = []string{"regcred"}
	s := &store.Session{ID: "abc12345", OwnerID: "u1", Repo: "https://github.com/org/repo", Branch: "dev", Model: "gpt"}
	pod, err := c.buildPod(s)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"app.kubernetes.io/name": "cake-agents-session", "app.kubernetes.io/instance": "rel",
		"app.kubernetes.io/managed-by": "cake-agents", "agents.cake.ai/session-id": "abc12345", "agents.cake.ai/owner-id": "u1",
	}
	for k, v := range wantLabels {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	spec := pod.Spec
	if pod.Name != "cake-session-abc12345" || pod.Namespace != "sessions" {
		t.Errorf("pod %s/%s", pod.Namespace, pod.Name)
	}
	if *spec.AutomountServiceAccountToken || *spec.EnableServiceLinks {
		t.Error("service account token or service links enabled")
	}
	if sc := spec.SecurityContext; !*sc.RunAsNonRoot || *sc.RunAsUser != 1000 || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", sc)
	}
	if spec.NodeSelector["pool"] != "agents" || len(spec.Tolerations) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
		t.Error("scheduling settings from config missing")
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("containers: %d init, %d main", len(spec.InitContainers), len(spec.Containers))
	}
	init, main := spec.InitContainers[0], spec.Containers[0]
	if init.Name != "data-plane-init" || init.Image != "example.invalid/data-plane-init:1" || strings.Join(init.Command, " ") != "agent session-init" {
		t.Errorf("init container %s %s %v", init.Name, init.Image, init.Command)
	}
	args := strings.Join(init.Args, " ")
	for _, want := range []string{"--repo=https://github.com/org/repo", "--branch=dev", "--workspace=/workspace", "--config=/etc/opencode/opencode.json", "--model=gpt", "--litellm-base-url=http://litellm:4000/v1"} {
		if !strings.Contains(args, want) {
			t.Errorf("init args %q lack %q", args, want)
		}
	}
	if main.Name != "opencode" || strings.Join(main.Command, " ") != "opencode serve --port 4096 --hostname 127.0.0.1 --print-logs" || main.WorkingDir != "/workspace" {
		t.Errorf("main container %s %v %s", main.Name, main.Command, main.WorkingDir)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range main.Env {
		env[e.Name] = e
	}
	for k, v := range map[string]string{"OPENCODE_CONFIG": "/etc/opencode/opencode.json", "OPENCODE_DISABLE_AUTOUPDATE": "1",
		"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1", "HOME": "/home/opencode", "TMPDIR": "/tmp"} {
		if env[k].Value != v {
			t.Errorf("env %s = %q, want %q", k, env[k].Value, v)
		}
	}
	for name, key := range map[string]string{"OPENCODE_SERVER_PASSWORD": "password", "LITELLM_API_KEY": "LITELLM_API_KEY"} {
		ref := env[name].ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "cake-session-abc12345" || ref.SecretKeyRef.Key != key {
			t.Errorf("env %s is not a reference to the session Secret: %+v", name, env[name])
		}
	}
	// No secret may appear anywhere in the pod spec.
	if strings.Contains(pod.String(), "sk-master") {
		t.Error("the LiteLLM key is in the pod spec")
	}
	for _, ct := range []corev1.Container{init, main} {
		sc := ct.SecurityContext
		if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !*sc.RunAsNonRoot || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s security context %+v", ct.Name, sc)
		}
		if ct.Resources.Limits.Memory().String() != "1Gi" || ct.Resources.Requests.Cpu().String() != "100m" {
			t.Errorf("%s resources %+v", ct.Name, ct.Resources)
		}
		mounts := map[string]string{}
		for _, m := range ct.VolumeMounts {
			mounts[m.MountPath] = m.Name
		}
		for _, p := range []string{"/workspace", "/etc/opencode", "/home/opencode", "/tmp"} {
			if mounts[p] == "" {
				t.Errorf("%s has no writable volume at %s", ct.Name, p)
			}
		}
	}
	probe := main.ReadinessProbe
	if probe == nil || probe.Exec == nil || !strings.Contains(strings.Join(probe.Exec.Command, " "), "http://127.0.0.1:4096/global/health") ||
		!strings.Contains(strings.Join(probe.Exec.Command, " "), "$") {
		t.Errorf("readiness probe %+v", probe)
	}
	if spec.Volumes[0].Name != "workspace" || spec.Volumes[0].EmptyDir == nil {
		t.Errorf("non-persistent workspace should be an emptyDir: %+v", spec.Volumes[0])
	}

	s.Persistent = true
	s.Image, s.InitImage = "override:1", "override-init:1"
	pod, err = c.buildPod(s)
	if err != nil {
		t.Fatal(err)
	}
	if v := pod.Spec.Volumes[0]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "cake-session-abc12345-workspace" {
		t.Errorf("persistent workspace volume %+v", v)
	}
	if pod.Spec.Containers[0].Image != "override:1" || pod.Spec.InitContainers[0].Image != "override-init:1" {
		t.Error("image overrides ignored")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no namespace":  func(c *Config) { c.Namespace = "" },
		"no image":      func(c *Config) { c.DataPlaneImage = "" },
		"bad quantity":  func(c *Config) { c.MemoryLimit = "lots" },
		"bad size":      func(c *Config) { c.StorageSize = "big" },
		"lease missing": func(c *Config) { c.LeaderElection = true },
		"lease shorter than renew": func(c *Config) {
			c.LeaderElection, c.LeaseNamespace, c.LeaseName, c.Identity = true, "ns", "l", "me"
			c.LeaseDuration, c.RenewDeadline = 5*time.Second, 5*time.Second
		},
		"renew too close to retry": func(c *Config) {
			c.LeaderElection, c.LeaseNamespace, c.LeaseName, c.Identity = true, "ns", "l", "me"
			c.RenewDeadline, c.RetryPeriod = 2*time.Second, 2*time.Second
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("ns")
			mutate(&cfg)
			if _, err := New(cfg, fake.NewClientset(), nil, nil); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

func running(p *corev1.Pod) *corev1.Pod {
	p.Spec.NodeName = "n"
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

func TestObserve(t *testing.T) {
	base := func() *corev1.Pod { return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}} }
	cases := []struct {
		name   string
		pod    func() *corev1.Pod
		state  apiv1.SessionState
		reason string
		msg    string
	}{
		{"not scheduled", base, apiv1.StatePending, "", ""},
		{"unschedulable", func() *corev1.Pod {
			p := base()
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes are available"}}
			return p
		}, apiv1.StatePending, "Unschedulable", "0/1 nodes are available"},
		{"scheduled", func() *corev1.Pod { p := base(); p.Spec.NodeName = "n"; return p }, apiv1.StateStarting, "", ""},
		{"ready", func() *corev1.Pod { return running(base()) }, apiv1.StateRunning, "", ""},
		{"running not ready", func() *corev1.Pod {
			p := running(base())
			p.Status.Conditions[0].Status = corev1.ConditionFalse
			return p
		}, apiv1.StateStarting, "", ""},
		{"err image pull", func() *corev1.Pod {
			p := base()
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "opencode", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "pull failed"}}}}
			return p
		}, apiv1.StateStarting, "ErrImagePull", "container opencode: pull failed"},
		{"image pull backoff", func() *corev1.Pod {
			p := base()
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "opencode", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}}}
			return p
		}, apiv1.StateFailed, "ImagePullBackOff", "container opencode: Back-off pulling image"},
		{"init image pull backoff", func() *corev1.Pod {
			p := base()
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "data-plane-init", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}
			return p
		}, apiv1.StateFailed, "ImagePullBackOff", "container data-plane-init: ImagePullBackOff"},
		{"crash loop", func() *corev1.Pod {
			p := running(base())
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "opencode",
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "ServeError"}}}}
			return p
		}, apiv1.StateFailed, "CrashLoopBackOff", "container opencode exited with code 1 (Error): ServeError"},
		{"oom", func() *corev1.Pod {
			p := running(base())
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "opencode",
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
			return p
		}, apiv1.StateFailed, "OOMKilled", "container opencode exited with code 137 (OOMKilled)"},
		{"init failed", func() *corev1.Pod {
			p := base()
			p.Spec.NodeName = "n"
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "data-plane-init",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: `error: clone https://x/y: branch "nope" does not exist`}}}}
			return p
		}, apiv1.StateFailed, "InitFailed", `container data-plane-init exited with code 1 (Error): error: clone https://x/y: branch "nope" does not exist`},
		{"init failed and restarting", func() *corev1.Pod {
			p := base()
			p.Spec.NodeName = "n"
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "data-plane-init",
				State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Message: "boom"}}}}
			return p
		}, apiv1.StateFailed, "InitFailed", "container data-plane-init exited with code 2: boom"},
		{"evicted", func() *corev1.Pod {
			p := base()
			p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "low on memory"
			return p
		}, apiv1.StateFailed, "Evicted", "low on memory"},
		{"failed phase oom", func() *corev1.Pod {
			p := base()
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "opencode", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
			return p
		}, apiv1.StateFailed, "OOMKilled", "container opencode exited with code 137 (OOMKilled)"},
		{"succeeded", func() *corev1.Pod { p := base(); p.Status.Phase = corev1.PodSucceeded; return p }, apiv1.StateFailed, "PodExited", "OpenCode exited"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := observe(tc.pod())
			want := observation{tc.state, tc.reason, tc.msg}
			if got != want {
				t.Errorf("observe = %+v, want %+v", got, want)
			}
		})
	}
}

// TestCreateRejectedLeavesNothing: admission refusing the pod leaves the session Failed
// with the API server's message and no Secret or PVC behind.
func TestCreateRejectedLeavesNothing(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "cake-session-x",
			errors.New(`violates PodSecurity "restricted:latest": runAsNonRoot != true`))
	})
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), kube, st)
	s := &store.Session{OwnerID: owner, Persistent: true}
	if err := c.Create(context.Background(), s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	got, err := st.GetSession(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != apiv1.StateFailed || got.Reason != ReasonPodRejected || !strings.Contains(got.Message, "violates PodSecurity") {
		t.Errorf("session %s/%s/%q, want Failed/PodRejected with the API message", got.State, got.Reason, got.Message)
	}
	if s.State != apiv1.StateFailed {
		t.Errorf("caller's session state %s, want Failed", s.State)
	}
	ctx := context.Background()
	if l, _ := kube.CoreV1().Secrets("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("orphaned secrets: %d", len(l.Items))
	}
	if l, _ := kube.CoreV1().PersistentVolumeClaims("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("orphaned PVCs: %d", len(l.Items))
	}
}

// TestCreateTransientThenFailed: transient errors keep the session Pending with the
// error in its message until MaxCreateAttempts, then it is Failed.
func TestCreateTransientThenFailed(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		// What a failing admission webhook answers.
		return true, nil, apierrors.NewInternalError(errors.New("etcd is down"))
	})
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.MaxCreateAttempts = 3
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if s.State != apiv1.StatePending || !strings.Contains(s.Message, "etcd is down") {
		t.Fatalf("after a transient failure: %s %q", s.State, s.Message)
	}
	if err := c.reconcile(ctx, s.ID); err == nil {
		t.Fatal("reconcile should report the retryable error")
	}
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatalf("third attempt should give up cleanly: %v", err)
	}
	got, _ := st.GetSession(ctx, s.ID)
	if got.State != apiv1.StateFailed || got.Reason != ReasonCreateFailed || !strings.Contains(got.Message, "etcd is down") {
		t.Errorf("session %s/%s/%q, want Failed/CreateFailed", got.State, got.Reason, got.Message)
	}
}

// TestCreateDeniedToAgentIsRetried: the API server's authorizer refusing the agent (as
// one that has just started does until its RBAC caches are filled) is retried; only
// MaxCreateAttempts of it in a row fail the session, while an admission plugin's
// refusal fails it at once (TestCreateRejectedLeavesNothing).
func TestCreateDeniedToAgentIsRetried(t *testing.T) {
	kube := fake.NewClientset()
	var denials atomic.Int32
	denials.Store(1)
	kube.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if denials.Add(-1) < 0 {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "",
			errors.New(`User "system:serviceaccount:ns:cake-agents" cannot create resource "secrets" in API group "" in the namespace "ns"`))
	})
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.MaxCreateAttempts = 2
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if s.State != apiv1.StatePending || !strings.Contains(s.Message, "cannot create resource") {
		t.Fatalf("after one denial: %s/%s/%q, want Pending with the API server's message", s.State, s.Reason, s.Message)
	}
	if err := c.reconcile(ctx, s.ID); err != nil {
		t.Fatalf("reconcile once the denial is over: %v", err)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
		t.Fatalf("no pod after the denial ended: %v", err)
	}

	// Denied for good: Failed after MaxCreateAttempts.
	denials.Store(100)
	s2 := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s2, 0); err != nil {
		t.Fatalf("Create: %v", err)
	}
	_ = c.reconcile(ctx, s2.ID)
	got, _ := st.GetSession(ctx, s2.ID)
	if got.State != apiv1.StateFailed || got.Reason != ReasonCreateFailed {
		t.Fatalf("after %d denials: %s/%s/%q, want Failed/CreateFailed", cfg.MaxCreateAttempts, got.State, got.Reason, got.Message)
	}
}

// TestCreateDuringAPIOutage: while the API server cannot be reached (no answer, or
// 503), a session stays Pending however often the create is retried, with a message
// that says so, and its pod is made once the API server answers again.
func TestCreateDuringAPIOutage(t *testing.T) {
	for name, outage := range map[string]error{
		"refused":     &url.Error{Op: "Post", URL: "https://127.0.0.1:6443/api/v1/namespaces/ns/pods", Err: syscall.ECONNREFUSED},
		"unavailable": apierrors.NewServiceUnavailable("the server is shutting down"),
	} {
		t.Run(name, func(t *testing.T) {
			kube := fake.NewClientset()
			var down atomic.Bool
			down.Store(true)
			kube.PrependReactor("create", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
				if down.Load() {
					return true, nil, outage
				}
				return false, nil, nil
			})
			st, owner := newStore(t)
			cfg := testConfig("ns")
			cfg.MaxCreateAttempts = 2
			c := newTestController(t, cfg, kube, st)
			ctx := context.Background()
			s := &store.Session{OwnerID: owner}
			if err := c.Create(ctx, s, 0); err != nil {
				t.Fatalf("Create: %v", err)
			}
			for i := 0; i < 4; i++ {
				if err := c.reconcile(ctx, s.ID); err == nil {
					t.Fatal("reconcile during the outage should report the error for a retry")
				}
			}
			got, _ := st.GetSession(ctx, s.ID)
			if got.State != apiv1.StatePending || !strings.Contains(got.Message, "the Kubernetes API cannot be reached") {
				t.Fatalf("after 5 attempts during an outage: %s/%s/%q, want Pending saying the API cannot be reached", got.State, got.Reason, got.Message)
			}
			down.Store(false)
			if err := c.reconcile(ctx, s.ID); err != nil {
				t.Fatalf("reconcile after the outage: %v", err)
			}
			if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
				t.Fatalf("no pod after the outage: %v", err)
			}
		})
	}
}

func TestCreateQuotaAndDefaults(t *testing.T) {
	st, owner := newStore(t)
	cfg := testConfig("ns")
	cfg.DefaultIdleTimeout, cfg.DefaultTTL = time.Hour, 24*time.Hour
	kube := fake.NewClientset()
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 1); err != nil {
		t.Fatal(err)
	}
	if s.IdleTimeout != time.Hour || s.TTL != 24*time.Hour || s.Model != "m" || s.PodName != PodName(s.ID) || s.PodNamespace != "ns" {
		t.Errorf("defaults not applied: %+v", s)
	}
	sec, err := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Data["password"]) < 32 || string(sec.Data["LITELLM_API_KEY"]) != "sk-master" {
		t.Errorf("secret data keys wrong")
	}
	pw, err := c.Password(ctx, s)
	if err != nil || pw != string(sec.Data["password"]) {
		t.Errorf("Password = %q, %v", pw, err)
	}
	err = c.Create(ctx, &store.Session{OwnerID: owner}, 1)
	if !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("second Create: %v, want ErrQuotaExceeded", err)
	}
	if l, _ := kube.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{}); len(l.Items) != 1 {
		t.Errorf("%d pods, want 1 (the refused session must create nothing)", len(l.Items))
	}
}

// TestOperationsWaitForTheSessionLock: an operation waits while the session's lock in
// the database is held (by another replica, here the test), then sees the state the
// holder left; one that waits longer than LockWait gives up with ErrBusy, changing
// nothing.
func TestOperationsWaitForTheSessionLock(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	cfg := testConfig("ns")
	cfg.LockWait = 300 * time.Millisecond
	c := newTestController(t, cfg, kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	unlock, err := st.LockSession(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, s.ID, "", ""); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "is busy") {
		t.Fatalf("Stop while another holder has the lock: %v, want ErrBusy", err)
	}
	if got, _ := st.GetSession(ctx, s.ID); got.State != apiv1.StatePending {
		t.Fatalf("a busy Stop changed the session: %s", got.State)
	}

	// The holder stops the session itself (as another replica would) while a Delete waits.
	c2 := newTestController(t, testConfig("ns"), kube, st)
	done := make(chan error, 1)
	go func() { done <- c2.Delete(ctx, s.ID) }()
	got, _ := st.GetSession(ctx, s.ID)
	got.State = apiv1.StateStopped
	if err := st.UpdateSession(ctx, got); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("Delete ran while the lock was held: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatalf("Delete after the lock was released: %v", err)
	}
	if _, err := st.GetSession(ctx, s.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the session after Delete: %v", err)
	}
}

func TestStartStopStateRules(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	// The fake API deletes at once, so Stop finishes synchronously.
	got, err := c.Stop(ctx, s.ID, "", "")
	if err != nil || got.State != apiv1.StateStopped || got.Reason != ReasonStoppedByUser || got.StoppedAt == nil {
		t.Fatalf("Stop = %+v, %v", got, err)
	}
	if _, err := kube.CoreV1().Secrets("ns").Get(ctx, SecretName(s.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("stop must keep the Secret: %v", err)
	}
	got, err = c.Start(ctx, s.ID, 0)
	if err != nil || got.State != apiv1.StatePending || got.StoppedAt != nil {
		t.Fatalf("Start = %+v, %v", got, err)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{}); err != nil {
		t.Errorf("start must create the pod: %v", err)
	}
	if err := c.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, s.ID, 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Start after delete: %v, want ErrNotFound", err)
	}
	if _, err := c.Stop(ctx, "nosuch", "", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stop of a missing session: %v", err)
	}
}

func TestTouchIsRateLimited(t *testing.T) {
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), fake.NewClientset(), st)
	ctx := context.Background()
	s := &store.Session{OwnerID: owner}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(time.Minute)
	c.now = func() time.Time { return t0 }
	c.Touch(ctx, s.ID, "proxy")
	c.now = func() time.Time { return t0.Add(time.Second) }
	c.Touch(ctx, s.ID, "proxy") // within touchEvery: not written
	got, _ := st.GetSession(ctx, s.ID)
	if d := got.LastActivityAt.Sub(t0); d < -time.Millisecond || d > time.Millisecond || got.LastActivitySource != "proxy" {
		t.Errorf("last activity %s %s, want %s proxy", got.LastActivityAt, got.LastActivitySource, t0.UTC())
	}
	c.Touch(ctx, s.ID, "attach") // another source is written at once
	got, _ = st.GetSession(ctx, s.ID)
	if got.LastActivitySource != "attach" {
		t.Errorf("source %q, want attach", got.LastActivitySource)
	}
}

// TestTimersOnFakeAPI: the TTL deletes a stopped session too; the idle timeout stops a
// running one and records what was last active.
func TestTimersOnFakeAPI(t *testing.T) {
	st, owner := newStore(t)
	kube := fake.NewClientset()
	c := newTestController(t, testConfig("ns"), kube, st)
	ctx := context.Background()
	stopped := &store.Session{OwnerID: owner, TTL: time.Hour}
	if err := c.Create(ctx, stopped, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, stopped.ID, "", ""); err != nil {
		t.Fatal(err)
	}
	idle := &store.Session{OwnerID: owner, IdleTimeout: time.Minute}
	if err := c.Create(ctx, idle, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.update(ctx, idle.ID, func(s *store.Session) (bool, error) { s.State = apiv1.StateRunning; return true, nil }); err != nil {
		t.Fatal(err)
	}
	c.Touch(ctx, idle.ID, "attach")
	c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if err := c.reconcile(ctx, stopped.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSession(ctx, stopped.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("stopped session past its TTL still stored: %v", err)
	}
	if err := c.reconcile(ctx, idle.ID); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetSession(ctx, idle.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != apiv1.StateStopped || got.Reason != ReasonIdleTimeout || !strings.Contains(got.Message, "last: attach") {
		t.Errorf("idle session %s/%s/%q, want Stopped/IdleTimeout naming the last activity", got.State, got.Reason, got.Message)
	}
	if _, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(idle.ID), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("idle session's pod still there: %v", err)
	}
}
