package sessions

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

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
			got := observe(tc.pod())
			want := observation{tc.state, tc.reason, tc.msg}
			if got != want {
				t.Errorf("observe = %+v, want %+v", got, want)
			}
		})
	}
}
