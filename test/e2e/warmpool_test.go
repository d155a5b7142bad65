package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/agent/sessions"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testWarmPool runs the agent with a warm pool of one: the pool pod runs the real
// OpenCode; a create claims it (the session's id is the pod's, startKind warm), gets its
// own LiteLLM key at claim (the fake LiteLLM answers only live session keys, so the
// reply proves it), answers its initial prompt, a sent one and one typed into
// `kubectl agents attach`, shows as warm in `session list -o wide`; after the delete the
// pool holds a new pod, never the claimed one, which a create with a repository claims,
// the repository cloned into it at claim.
func (p *product) testWarmPool(t *testing.T) {
	ctx := context.Background()
	restart := func(size int) {
		p.env.StopAgent(false)
		if err := p.env.StartAgentEnv(ctx, fmt.Sprintf("AGENT_WARM_POOL_SIZE=%d", size)); err != nil {
			t.Fatal(err)
		}
	}
	restart(1)
	defer restart(0) // the other tests run without a pool; size 0 deletes its pod
	warm := p.waitWarmPod(t, "")

	prompt := "hello from the warm pool"
	id := lastField(p.agents(t, p.alice, "session", "create", "--prompt", prompt, "--wait", "-o", "name"))
	if id != warm {
		t.Fatalf("the create made session %s instead of claiming the warm pod's %s", id, warm)
	}
	if kind := strings.TrimSpace(p.agents(t, p.alice, "session", "get", id, "-o", "jsonpath={.startKind}")); kind != string(apiv1.StartKindWarm) {
		t.Fatalf("startKind %q, want warm", kind)
	}
	p.waitReply(t, p.alice, id, prompt)
	p.send(t, p.alice, id, "and a second prompt")
	p.waitReply(t, p.alice, id, "and a second prompt")
	// Attached as a user would be: OpenCode's TUI through the agent, a prompt typed in it.
	p.attachAndPrompt(t, id, "typed into the claimed pod")
	if wide := p.agents(t, p.alice, "session", "list", "-o", "wide"); !strings.Contains(wide, " warm ") {
		t.Errorf("session list -o wide does not show the warm start:\n%s", wide)
	}
	pod, err := p.kube.CoreV1().Pods(p.ns).Get(ctx, sessions.PodName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[sessions.LabelPoolState] != sessions.PoolStateClaimed {
		t.Errorf("the claimed pod is labelled %v", pod.Labels)
	}

	p.agents(t, p.alice, "session", "delete", id)
	refill := p.waitWarmPod(t, id)
	if refill == id {
		t.Fatalf("the claimed pod %s came back to the pool", id)
	}

	// A session with a repository claims the refilled pod too: the repository is cloned
	// into the running pod's workspace before the create returns.
	withRepo := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--wait", "-o", "name"))
	if withRepo != refill {
		t.Fatalf("the create with a repository made session %s instead of claiming the warm pod's %s", withRepo, refill)
	}
	repoPod, err := p.kube.CoreV1().Pods(p.ns).Get(ctx, sessions.PodName(withRepo), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := p.env.Runner.Exec(ctx, repoPod.Namespace, repoPod.Name, "git", "show", "HEAD:README.md"); err != nil || !strings.Contains(string(out), "# project") {
		t.Fatalf("the claimed pod's workspace has no clone of %s: %v: %s", p.repo, err, out)
	}
	if got := strings.TrimSpace(p.agents(t, p.alice, "session", "get", withRepo, "-o", "jsonpath={.currentBranch}")); got != "main" {
		t.Errorf("currentBranch of the session cloned at claim = %q, want main", got)
	}
	p.agents(t, p.alice, "session", "delete", withRepo)
}

// waitWarmPod waits until the pool holds a warm pod, other than not's, whose OpenCode
// answers, and returns its session id.
func (p *product) waitWarmPod(t *testing.T, not string) string {
	t.Helper()
	var id string
	eventually(t, 3*time.Minute, "a warm pool pod whose OpenCode answers", func() error {
		pods, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), metav1.ListOptions{LabelSelector: sessions.LabelPoolState + "=" + sessions.PoolStateWarm})
		if err != nil {
			return err
		}
		for _, pod := range pods.Items {
			cand := pod.Labels[apiv1.LabelSessionID]
			if cand == not || pod.DeletionTimestamp != nil {
				continue
			}
			if err := p.openCodeAnswers(&pod); err != nil {
				return fmt.Errorf("pod %s: %w", pod.Name, err)
			}
			id = cand
			return nil
		}
		return fmt.Errorf("%d warm pods, none new", len(pods.Items))
	})
	return id
}

// openCodeAnswers asks the OpenCode the session runner started for pod for its health,
// with the password of the pod's Secret.
func (p *product) openCodeAnswers(pod *corev1.Pod) error {
	port := p.env.Runner.Port(pod.Namespace, pod.Name)
	if port == 0 {
		return fmt.Errorf("not started by the session runner yet")
	}
	sec, err := p.kube.CoreV1().Secrets(pod.Namespace).Get(context.Background(), sessions.SecretName(pod.Labels[apiv1.LabelSessionID]), metav1.GetOptions{})
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/global/health", port), nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("opencode", string(sec.Data[sessions.SecretKeyPassword]))
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s", resp.Status)
	}
	return nil
}
