package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/test/fakelitellm"
)

// testLiteLLMKeys: with LiteLLM configured, each session has a virtual key of its own in
// its Secret; OpenCode in the session reaches the model through it (and only it); the
// session shows the spend; the key is deleted when the session stops or goes; the master
// key is in no session's Secret or pod spec; with LiteLLM down a create fails naming
// LiteLLM and leaves nothing.
func (p *product) testLiteLLMKeys(t *testing.T) {
	ctx := context.Background()
	gw := p.env.LiteLLM
	a := lastField(p.agents(t, p.alice, "session", "create", "--repo", p.repo, "--wait", "-o", "name"))
	b := lastField(p.agents(t, p.alice, "session", "create", "--title", "second", "-o", "name"))

	keyOf := func(id string) fakelitellm.Key {
		t.Helper()
		sec, err := p.kube.CoreV1().Secrets(p.ns).Get(ctx, "cake-session-"+id, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v := string(sec.Data["LITELLM_API_KEY"])
		for _, k := range gw.Keys() {
			if k.Key == v {
				return k
			}
		}
		t.Fatalf("session %s's Secret holds %d bytes that are no live LiteLLM key", id, len(v))
		return fakelitellm.Key{}
	}
	ka, kb := keyOf(a), keyOf(b)
	if ka.Key == kb.Key || ka.Metadata["cake_agents_session"] != a || kb.Metadata["cake_agents_session"] != b ||
		ka.MaxBudget == nil || *ka.MaxBudget != 5 || ka.UserID == "" {
		t.Fatalf("keys %+v and %+v: want one per session, naming it, with the session budget", ka, kb)
	}
	if u, ok := gw.User(ka.UserID); !ok || u.MaxBudget == nil || *u.MaxBudget != 50 {
		t.Errorf("the owner's LiteLLM user %+v: want the per-user budget 50", u)
	}

	// The master key never enters a session: not in any session Secret, not in any pod spec.
	secs, err := p.kube.CoreV1().Secrets(p.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=cake-agents-session"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs.Items {
		for k, v := range s.Data {
			if strings.Contains(string(v), p.masterKey) {
				t.Errorf("session Secret %s key %s holds the LiteLLM master key", s.Name, k)
			}
		}
	}
	pods, err := p.kube.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=cake-agents-session"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Fatal("no session pods to check")
	}
	for _, pod := range pods.Items {
		if strings.Contains(pod.String(), p.masterKey) {
			t.Errorf("pod %s holds the LiteLLM master key", pod.Name)
		}
	}

	// OpenCode in session a talks to the model with a's key.
	prompt := "which key do I use"
	p.send(t, p.alice, a, prompt)
	p.waitReply(t, p.alice, a, prompt)
	if keyOf(a).Requests == 0 || keyOf(b).Requests != 0 {
		t.Fatalf("requests by key: a %d, b %d; want a's key used, b's not", keyOf(a).Requests, keyOf(b).Requests)
	}
	spent, err := strconv.ParseFloat(strings.TrimSpace(p.agents(t, p.alice, "session", "get", a, "-o", "jsonpath={.modelSpend}")), 64)
	if err != nil || spent <= 0 || spent != keyOf(a).Spend {
		t.Errorf("session get shows modelSpend %v (%v); LiteLLM has %v", spent, err, keyOf(a).Spend)
	}
	if wide := p.agents(t, p.alice, "session", "get", a, "-o", "wide"); !strings.Contains(wide, "SPEND") || !strings.Contains(wide, "$") {
		t.Errorf("session get -o wide shows no spend:\n%s", wide)
	}

	// Stop and delete end the keys.
	deleted := func(key string) bool {
		for _, k := range gw.Deleted() {
			if k.Key == key {
				return true
			}
		}
		return false
	}
	p.agents(t, p.alice, "session", "stop", b)
	p.agents(t, p.alice, "session", "delete", a)
	eventually(t, time.Minute, "both keys deleted", func() error {
		if !deleted(ka.Key) || !deleted(kb.Key) {
			return fmt.Errorf("deleted a %v, b %v", deleted(ka.Key), deleted(kb.Key))
		}
		return nil
	})
	p.agents(t, p.alice, "session", "delete", b)

	// LiteLLM down: the create fails, naming LiteLLM and the value to check, and nothing
	// is made.
	gw.SetDown(true)
	before := len(gw.Keys())
	out, err := p.agentsErr(t, p.alice, "session", "create", "--title", "no gateway", "-o", "name")
	gw.SetDown(false)
	if err == nil || !strings.Contains(out, "LiteLLM cannot be reached") || !strings.Contains(out, "litellm.baseURL") {
		t.Fatalf("create with LiteLLM down: %v\n%s", err, out)
	}
	if list := p.agents(t, p.alice, "session", "list"); strings.Contains(list, "no gateway") {
		t.Errorf("a session was left:\n%s", list)
	}
	if after := len(gw.Keys()); after != before {
		t.Errorf("live keys %d → %d", before, after)
	}
	eventually(t, time.Minute, "no objects of the refused session", func() error {
		secs, err := p.kube.CoreV1().Secrets(p.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=cake-agents-session"})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if len(secs.Items) != 0 {
			return fmt.Errorf("%d session Secrets left", len(secs.Items))
		}
		return nil
	})
}
