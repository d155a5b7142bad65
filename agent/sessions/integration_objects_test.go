package sessions

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestRestrictedAdmission: the pod passes PodSecurity "restricted" on the real API
// server (a dry-run create, so nothing else interferes).
func TestRestrictedAdmission(t *testing.T) {
	e := newEnv(t)
	c := newTestController(t, e.config(), e.kube, e.st)
	pod, err := c.buildPod(&store.Session{ID: NewID(), OwnerID: "u", Persistent: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctxT(t), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("restricted namespace rejected the session pod: %v", err)
	}
	// And the check is real: a root pod is refused there.
	pod.Spec.SecurityContext.RunAsNonRoot = nil
	pod.Spec.Containers[0].SecurityContext.RunAsNonRoot = nil
	pod.Spec.InitContainers[0].SecurityContext.RunAsNonRoot = nil
	pod.Spec.SecurityContext.RunAsUser = nil
	pod.Spec.Containers[0].SecurityContext.RunAsUser = nil
	pod.Spec.InitContainers[0].SecurityContext.RunAsUser = nil
	pod.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctxT(t), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); !apierrors.IsForbidden(err) {
		t.Fatalf("a non-restricted pod was not refused: %v", err)
	}
}

// TestRejectedPodLeavesNoOrphans: admission refusing the pod (here: a baseline namespace
// that forbids nothing, and a LimitRange-free ResourceQuota of zero pods) leaves the
// session Failed with the API server's message and no Secret or PVC.
func TestRejectedPodLeavesNoOrphans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "no-pods", Namespace: e.ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}},
	}
	if _, err := e.kube.CoreV1().ResourceQuotas(e.ns).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The quota controller must have computed usage before admission enforces it.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		q, err := e.kube.CoreV1().ResourceQuotas(e.ns).Get(ctx, "no-pods", metav1.GetOptions{})
		return err == nil && q.Status.Hard != nil, nil
	}); err != nil {
		t.Fatalf("quota never computed: %v", err)
	}
	c, _ := e.start(e.config())
	s := &store.Session{OwnerID: e.owner, Persistent: true}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State != apiv1.StateFailed || s.Reason != ReasonPodRejected || s.Message == "" {
		t.Fatalf("session %s/%s/%q, want Failed/PodRejected with the API message", s.State, s.Reason, s.Message)
	}
	t.Logf("rejected with: %s", s.Message)
	for what, get := range map[string]func(context.Context) error{
		"secret": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
			return err
		},
		"pvc": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(s.ID), metav1.GetOptions{})
			return err
		},
	} {
		e.waitGone(what, get)
	}
}

// TestProvidersOnCluster: with stored providers, a created session's Secret holds the
// keys, its pod (admitted as "restricted") mounts them, and the pod spec holds none.
func TestProvidersOnCluster(t *testing.T) {
	e := newEnv(t)
	e.st, e.owner = storeWithProviders(t, sessionProvidersJSON)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	s := &store.Session{OwnerID: e.owner, Model: "acme/big"}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State == apiv1.StateFailed {
		t.Fatalf("session failed: %s", s.Message)
	}
	sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil || string(sec.Data["provider.acme.apiKey"]) != keyCanary {
		t.Fatalf("secret: %v", err)
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(pod)
	if bytes.Contains(b, []byte("CANARY")) || !bytes.Contains(b, []byte(ProviderKeysDir)) {
		t.Errorf("pod spec: holds a key or lacks the keys mount: %s", b)
	}
}
