package litellm_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/test/fakelitellm"
)

const master = "sk-master-test"

func newClient(t *testing.T, url, key string) *litellm.Client {
	t.Helper()
	c, err := litellm.New(url, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeyLifecycle generates a key with every field the agent sends, uses it for a
// completion, reads its spend and deletes it: the fake enforces the documented
// field names (it refuses unknown ones), so a misspelt field fails here.
func TestKeyLifecycle(t *testing.T) {
	fake := fakelitellm.New(master)
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := newClient(t, srv.URL+"/v1", master)
	ctx := context.Background()

	if err := c.SetUserBudget(ctx, "u1", 5, 0); err != nil {
		t.Fatal(err)
	}
	if u, _ := fake.User("u1"); u.BudgetDuration != "" {
		t.Fatalf("user = %+v; want no budget_duration (a budget for all time)", u)
	}
	if err := c.SetUserBudget(ctx, "u1", 7, 30*24*time.Hour); err != nil { // now an update
		t.Fatal(err)
	}
	if u, ok := fake.User("u1"); !ok || u.MaxBudget == nil || *u.MaxBudget != 7 || u.BudgetDuration != "2592000s" {
		t.Fatalf("user = %+v, %v; want max_budget 7 reset every 30 days", u, ok)
	}
	k, err := c.GenerateKey(ctx, litellm.KeyRequest{Alias: "a1", Models: []string{"fake-model"}, MaxBudget: 2.5,
		Duration: 90 * time.Minute, UserID: "u1", Metadata: map[string]string{"session": "s1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Key, "sk-") || k.Token != litellm.HashKey(k.Key) || k.Alias != "a1" {
		t.Fatalf("key = %+v; want the token to be token_id, the key's hash", k)
	}
	keys := fake.Keys()
	if len(keys) != 1 || keys[0].UserID != "u1" || keys[0].Metadata["session"] != "s1" || *keys[0].MaxBudget != 2.5 ||
		keys[0].Expires == nil || time.Until(*keys[0].Expires) < 89*time.Minute {
		t.Fatalf("stored keys = %+v", keys)
	}

	chat := func(key, model string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions",
			bytes.NewBufferString(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := chat(k.Key, "fake-model"); got != 200 {
		t.Fatalf("completion with the virtual key: HTTP %d", got)
	}
	if got := chat(k.Key, "other-model"); got != 400 {
		t.Fatalf("completion with a model the key may not use: HTTP %d, want 400", got)
	}
	if got := chat("sk-made-up", "fake-model"); got != 401 {
		t.Fatalf("completion with an unknown key: HTTP %d, want 401", got)
	}
	for _, ref := range []string{k.Key, k.Token} {
		info, err := c.KeyInfo(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if info.Spend != fake.CostPerRequest || info.UserID != "u1" || info.MaxBudget == nil || *info.MaxBudget != 2.5 {
			t.Fatalf("info = %+v; want one request's spend", info)
		}
	}

	if err := c.DeleteKeysByAlias(ctx, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteKeysByAlias(ctx, "a1"); err != nil {
		t.Fatalf("deleting a deleted key: %v, want nil", err)
	}
	if got := chat(k.Key, "fake-model"); got != 401 {
		t.Fatalf("completion with a deleted key: HTTP %d, want 401", got)
	}
	if _, err := c.KeyInfo(ctx, k.Token); !errors.Is(err, litellm.ErrNotFound) {
		t.Fatalf("info of a deleted key: %v, want ErrNotFound", err)
	}
}

func TestBudgetEnforced(t *testing.T) {
	fake := fakelitellm.New(master)
	fake.CostPerRequest = 1
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := newClient(t, srv.URL, master)
	ctx := context.Background()
	if err := c.SetUserBudget(ctx, "u", 1.5, 0); err != nil {
		t.Fatal(err)
	}
	k1, err := c.GenerateKey(ctx, litellm.KeyRequest{Alias: "k1", MaxBudget: 1, UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := c.GenerateKey(ctx, litellm.KeyRequest{Alias: "k2", MaxBudget: 10, UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	status := func(key string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// k1: one request spends its budget; k2 then spends the rest of the user's.
	got := []int{status(k1.Key), status(k1.Key), status(k2.Key), status(k2.Key)}
	want := []int{200, 400, 200, 400}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("statuses = %v, want %v (key budget, then the user's)", got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := litellm.New("litellm:4000", master, nil); err == nil {
		t.Error("a URL without scheme was accepted")
	}
	if _, err := litellm.New("http://litellm:4000", "", nil); err == nil || !strings.Contains(err.Error(), "master key") {
		t.Errorf("empty master key: %v", err)
	}

	// Down: nothing listens.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, err := newClient(t, dead.URL, master).GenerateKey(ctx, litellm.KeyRequest{Alias: "x"})
	if !errors.Is(err, litellm.ErrUnavailable) || !strings.Contains(err.Error(), "LiteLLM generate a key") {
		t.Errorf("down: %v; want ErrUnavailable naming LiteLLM and the call", err)
	}

	// 5xx is an outage too; 401 names the master key, and never prints it.
	var status int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":{"message":"boom"}}`))
	}))
	defer srv.Close()
	status = 503
	if _, err := newClient(t, srv.URL, master).GenerateKey(ctx, litellm.KeyRequest{}); !errors.Is(err, litellm.ErrUnavailable) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("503: %v", err)
	}
	status = 401
	err = newClient(t, srv.URL, master).DeleteKeysByAlias(ctx, "a")
	if err == nil || errors.Is(err, litellm.ErrUnavailable) || !strings.Contains(err.Error(), "master key was refused") || strings.Contains(err.Error(), master) {
		t.Errorf("401: %v", err)
	}
	// The fake refuses a wrong master key the same way.
	fake := httptest.NewServer(fakelitellm.New(master))
	defer fake.Close()
	if _, err := newClient(t, fake.URL, "sk-wrong").GenerateKey(ctx, litellm.KeyRequest{Alias: "a"}); err == nil || !strings.Contains(err.Error(), "master key was refused") {
		t.Errorf("wrong master key: %v", err)
	}
}

// TestGenerateKeyNeverKeepsTheKeyAsToken: a LiteLLM whose answer has no token_id (its
// "token" is the key itself) gives a Key whose Token is the key's hash, never the key.
func TestGenerateKeyNeverKeepsTheKeyAsToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"key":"sk-virtual-1","token":"sk-virtual-1","key_alias":"a1"}`))
	}))
	defer srv.Close()
	k, err := newClient(t, srv.URL, master).GenerateKey(context.Background(), litellm.KeyRequest{Alias: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	if k.Token == k.Key || k.Token != litellm.HashKey("sk-virtual-1") {
		t.Fatalf("token = %q; want sha256 hex of the key", k.Token)
	}
}
