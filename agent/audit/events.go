package audit

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Event reasons of the Kubernetes Events KubeEvents emits.
const (
	ReasonAllowed = "AccessAllowed"
	ReasonDenied  = "AccessDenied"
	ReasonFailed  = "AccessFailed"
)

// KubeEvents returns a sink for Recorder.SetSink that emits each decision as a Kubernetes
// Event in namespace, regarding the agent's own pod (podName; its UID is looked up so `kubectl
// describe pod` lists them), and a function that stops the broadcaster. client-go's
// broadcaster aggregates repeats and rate-limits, so a burst of refusals costs the API server
// little.
func KubeEvents(ctx context.Context, kube kubernetes.Interface, namespace, podName string, log hclog.Logger) (func(Event), func()) {
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: podName}
	if p, err := kube.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{}); err == nil {
		ref.UID = p.UID
	} else if log != nil {
		log.Warn("audit events will name the agent's pod without its UID", "pod", podName, "error", err)
	}
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(namespace)})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cake-agents"})
	sink := func(e Event) {
		kind, reason := corev1.EventTypeNormal, ReasonAllowed
		switch e.Outcome {
		case OutcomeDenied:
			kind, reason = corev1.EventTypeWarning, ReasonDenied
		case OutcomeError:
			kind, reason = corev1.EventTypeWarning, ReasonFailed
		}
		msg := fmt.Sprintf("%s: %s %s", e.Actor, e.Action, e.Target)
		if e.Detail != "" {
			msg += ": " + e.Detail
		}
		rec.Event(ref, kind, reason, msg)
	}
	return sink, b.Shutdown
}
