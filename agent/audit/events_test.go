package audit

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// Decisions reach Kubernetes Events regarding the agent's pod, Warning for refusals, with
// the actor in the message and credentials redacted like every audit event.
func TestDecisionsBecomeKubernetesEvents(t *testing.T) {
	ctx := t.Context()
	kube := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-0", Namespace: "cake-agents", UID: "uid-1"}})
	sink, stop := KubeEvents(ctx, kube, "cake-agents", "agent-0", nil)
	defer stop()
	rec := NewRecorder(nil, nil)
	rec.SetSink(sink)
	rec.Denied(ctx, "bob@example.com", "session.message", "s001", "not the owner; token=cka_abcdefghijklmnop")
	rec.Success(ctx, "alice@example.com", "session.create", "s002", "")

	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := kube.CoreV1().Events("cake-agents").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var denied, allowed *corev1.Event
		for i := range list.Items {
			e := &list.Items[i]
			switch e.Reason {
			case ReasonDenied:
				denied = e
			case ReasonAllowed:
				allowed = e
			}
		}
		if denied != nil && allowed != nil {
			if denied.Type != corev1.EventTypeWarning || !strings.Contains(denied.Message, "bob@example.com: session.message s001") {
				t.Errorf("denied event: %s %q", denied.Type, denied.Message)
			}
			if strings.Contains(denied.Message, "cka_abcdefghijklmnop") {
				t.Errorf("a token reached an Event: %q", denied.Message)
			}
			if denied.InvolvedObject.Kind != "Pod" || denied.InvolvedObject.Name != "agent-0" || denied.InvolvedObject.UID != "uid-1" {
				t.Errorf("regarding %+v, want the agent's pod", denied.InvolvedObject)
			}
			if allowed.Type != corev1.EventTypeNormal {
				t.Errorf("allowed event type %s", allowed.Type)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events after 10s: %+v", list.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
