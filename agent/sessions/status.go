package sessions

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Reasons the controller records on sessions (besides the kubelet's own, such as
// ImagePullBackOff, CrashLoopBackOff or OOMKilled, which are passed through).
const (
	ReasonUnschedulable = "Unschedulable"
	ReasonInitFailed    = "InitFailed"
	ReasonPodFailed     = "PodFailed"
	ReasonPodExited     = "PodExited"
	ReasonPodRejected   = "PodRejected"
	ReasonCreateFailed  = "CreateFailed"
	ReasonStartTimeout  = "StartTimeout"
	ReasonPodRecreated  = "PodRecreated"
	ReasonIdleTimeout   = "IdleTimeout"
	ReasonTTLExpired    = "TTLExpired"
	ReasonStoppedByUser = "StoppedByUser"
	ReasonDeletedByUser = "DeletedByUser"
	ReasonStarted       = "Started"

	// ReasonNotAnswering: a Running session's OpenCode stopped passing its readiness
	// probe while its container kept running (busy, or a loaded node): the session
	// stays Running, since nothing restarted, and the reason says why it may be slow.
	ReasonNotAnswering = "NotAnswering"

	// ReasonCABundleMissing: the configured CA bundle ConfigMap (or its key) is not in
	// the session namespace, so the pod would wait in ContainerCreating forever.
	ReasonCABundleMissing = "CABundleMissing"
)

// observation is what a pod says about its session.
type observation struct {
	State   apiv1.SessionState
	Reason  string
	Message string
}

// waiting reasons that do not heal by themselves: the image name is wrong, the pull
// secret is missing, the container cannot be configured. ErrImagePull alone is often a
// registry hiccup, so it keeps the session Starting until the kubelet backs off.
var fatalWaiting = map[string]bool{
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
	"CrashLoopBackOff":           true,
}

// observe maps a pod's phase, conditions and container states onto a session state,
// with the machine-readable reason and a message for people. cur is the session's
// stored state: a Running session whose pod merely lost readiness stays Running.
func observe(pod *corev1.Pod, cur apiv1.SessionState) observation {
	switch pod.Status.Phase {
	case corev1.PodFailed:
		o := observation{State: apiv1.StateFailed, Reason: ReasonPodFailed, Message: pod.Status.Message}
		if pod.Status.Reason != "" {
			o.Reason = pod.Status.Reason // Evicted, DeadlineExceeded, ...
		}
		if t := terminated(pod.Status.ContainerStatuses); t != nil && pod.Status.Reason == "" {
			o.Reason, o.Message = terminationReason(t, ReasonPodFailed), terminationMessage(ContainerName, t)
		}
		if o.Message == "" {
			o.Message = "the session pod failed"
		}
		return o
	case corev1.PodSucceeded:
		return observation{State: apiv1.StateFailed, Reason: ReasonPodExited, Message: "OpenCode exited"}
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return observation{apiv1.StateFailed, terminationReason(t, ReasonInitFailed), terminationMessage(cs.Name, t)}
		}
		if t := cs.LastTerminationState.Terminated; t != nil && t.ExitCode != 0 {
			// The kubelet restarts a failed init container; a clone that failed once
			// (bad URL, missing branch) fails again, so report it now.
			return observation{apiv1.StateFailed, terminationReason(t, ReasonInitFailed), terminationMessage(cs.Name, t)}
		}
		if w := cs.State.Waiting; w != nil {
			if o, ok := waitingObservation(cs, w); ok {
				return o
			}
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			if o, ok := waitingObservation(cs, w); ok {
				return o
			}
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return observation{apiv1.StatePending, ReasonUnschedulable, c.Message}
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return observation{State: apiv1.StateRunning}
		}
	}
	if pod.Spec.NodeName == "" {
		return observation{State: apiv1.StatePending}
	}
	if cur == apiv1.StateRunning {
		if o, ok := readinessLapse(pod); ok {
			return o
		}
	}
	return observation{State: apiv1.StateStarting}
}

// readinessLapse tells a readiness blip from a restart: the pod turned unready after
// its OpenCode container had started, and that container still runs. A restarted
// container starts after the pod turned unready (the kubelet marks it unready when the
// old one dies), so it does not count; nor does a pod that was never ready. Reporting a
// blip as Starting would make `session send` and the web UI refuse a session whose
// OpenCode is only slow for a moment.
func readinessLapse(pod *corev1.Pod) (observation, bool) {
	var unreadySince *metav1.Time
	for i, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse {
			unreadySince = &pod.Status.Conditions[i].LastTransitionTime
		}
	}
	if unreadySince == nil || unreadySince.IsZero() {
		return observation{}, false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name != ContainerName {
			continue
		}
		if r := cs.State.Running; r != nil && !r.StartedAt.IsZero() && r.StartedAt.Before(unreadySince) {
			return observation{State: apiv1.StateRunning, Reason: ReasonNotAnswering,
				Message: fmt.Sprintf("OpenCode has not passed its readiness probe since %s; its container is still running", unreadySince.UTC().Format(time.RFC3339))}, true
		}
	}
	return observation{}, false
}

func waitingObservation(cs corev1.ContainerStatus, w *corev1.ContainerStateWaiting) (observation, bool) {
	switch {
	case w.Reason == "CrashLoopBackOff":
		reason, msg := "CrashLoopBackOff", fmt.Sprintf("container %s keeps crashing", cs.Name)
		if t := cs.LastTerminationState.Terminated; t != nil {
			reason = terminationReason(t, reason)
			msg = terminationMessage(cs.Name, t)
		}
		return observation{apiv1.StateFailed, reason, msg}, true
	case fatalWaiting[w.Reason]:
		return observation{apiv1.StateFailed, w.Reason, fmt.Sprintf("container %s: %s", cs.Name, orText(w.Message, w.Reason))}, true
	case w.Reason == "ErrImagePull":
		return observation{apiv1.StateStarting, w.Reason, fmt.Sprintf("container %s: %s", cs.Name, orText(w.Message, w.Reason))}, true
	}
	return observation{}, false
}

func terminated(statuses []corev1.ContainerStatus) *corev1.ContainerStateTerminated {
	for _, cs := range statuses {
		if cs.State.Terminated != nil {
			return cs.State.Terminated
		}
	}
	return nil
}

func terminationReason(t *corev1.ContainerStateTerminated, fallback string) string {
	if t.Reason == "OOMKilled" {
		return "OOMKilled"
	}
	if fallback != "" {
		return fallback
	}
	return t.Reason
}

func terminationMessage(name string, t *corev1.ContainerStateTerminated) string {
	msg := fmt.Sprintf("container %s exited with code %d", name, t.ExitCode)
	if t.Reason != "" {
		msg += " (" + t.Reason + ")"
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		// FallbackToLogsOnError may put a long log tail here; keep the end, which
		// holds the error.
		if len(m) > 1024 {
			m = "..." + m[len(m)-1024:]
		}
		msg += ": " + m
	}
	return msg
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
