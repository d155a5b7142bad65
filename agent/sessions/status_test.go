package sessions

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

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
			// None of these pods shows a readiness lapse, so what the session was
			// before does not change what the pod says.
			for _, cur := range []apiv1.SessionState{apiv1.StateStarting, apiv1.StateRunning} {
				got := observe(tc.pod(), cur)
				want := observation{tc.state, tc.reason, tc.msg}
				if got != want {
					t.Errorf("observe(was %s) = %+v, want %+v", cur, got, want)
				}
			}
		})
	}
}

// TestObserveReadinessLapse: a Running session whose pod turns unready while its
// OpenCode container keeps running stays Running (reason NotAnswering); a restarted
// container, a container that is not running, or a session that was not Running yet
// reads as Starting.
func TestObserveReadinessLapse(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	pod := func(started time.Time, unreadySince time.Time, state corev1.ContainerState) *corev1.Pod {
		p := running(&corev1.Pod{})
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(unreadySince)}}
		if state.Running != nil {
			state.Running.StartedAt = metav1.NewTime(started)
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: state}}
		return p
	}
	runningState := func() corev1.ContainerState {
		return corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	}
	cases := []struct {
		name   string
		pod    *corev1.Pod
		cur    apiv1.SessionState
		state  apiv1.SessionState
		reason string
	}{
		{"blip while running", pod(t0, t0.Add(time.Minute), runningState()), apiv1.StateRunning, apiv1.StateRunning, ReasonNotAnswering},
		{"blip before it ever ran", pod(t0, t0.Add(time.Minute), runningState()), apiv1.StateStarting, apiv1.StateStarting, ""},
		{"restarted container", pod(t0.Add(time.Minute), t0.Add(time.Minute), runningState()), apiv1.StateRunning, apiv1.StateStarting, ""},
		{"restarted later", pod(t0.Add(2*time.Minute), t0.Add(time.Minute), runningState()), apiv1.StateRunning, apiv1.StateStarting, ""},
		{"container not running", pod(t0, t0.Add(time.Minute), corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}), apiv1.StateRunning, apiv1.StateStarting, ""},
		{"no transition time", pod(t0, time.Time{}, runningState()), apiv1.StateRunning, apiv1.StateStarting, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := observe(tc.pod, tc.cur)
			if got.State != tc.state || got.Reason != tc.reason {
				t.Errorf("observe = %+v; want %s %q", got, tc.state, tc.reason)
			}
			if tc.reason == ReasonNotAnswering && got.Message == "" {
				t.Error("a lapse must say since when")
			}
		})
	}
}
