package fakelitellm

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/test/fakemodel"
)

func post(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStreamingThroughAVirtualKey: a streamed completion with a virtual key is the fake
// model's stream, and is charged to the key.
func TestStreamingThroughAVirtualKey(t *testing.T) {
	s := New("sk-m")
	srv := httptest.NewServer(s)
	defer srv.Close()
	code, body := post(t, srv.URL+"/key/generate", "sk-m", `{"key_alias":"a"}`)
	if code != 200 {
		t.Fatalf("generate: %d %s", code, body)
	}
	key := s.Keys()[0].Key
	code, body = post(t, srv.URL+"/v1/chat/completions", key, `{"model":"fake-model","stream":true,"messages":[{"role":"user","content":"stream me"}]}`)
	if code != 200 || !strings.Contains(body, "data: ") || !strings.Contains(body, "[DONE]") {
		t.Fatalf("stream: %d %s", code, body)
	}
	if !s.Model.Received("stream me") || s.Keys()[0].Spend != DefaultCostPerRequest || s.Keys()[0].Requests != 1 {
		t.Errorf("model received %v, key %+v", s.Model.Requests(), s.Keys()[0])
	}
	if !strings.Contains(body, strings.Fields(fakemodel.ReplyPrefix)[0]) {
		t.Errorf("stream body %s: want the fake model's reply", body)
	}
}

// TestAdminAPIIsStrict: only the master key manages keys, aliases are unique, and a
// field LiteLLM does not document is refused rather than ignored.
func TestAdminAPIIsStrict(t *testing.T) {
	s := New("sk-m")
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, tc := range []struct {
		key, body string
		want      int
	}{
		{"sk-other", `{"key_alias":"a"}`, 401},
		{"sk-m", `{"key_alias":"a"}`, 200},
		{"sk-m", `{"key_alias":"a"}`, 400},
		{"sk-m", `{"key_alias":"b","budget":5}`, 400},
		{"sk-m", `{"key_alias":"c","duration":"forever"}`, 400},
	} {
		if code, body := post(t, srv.URL+"/key/generate", tc.key, tc.body); code != tc.want {
			t.Errorf("generate %s with %s: %d %s, want %d", tc.body, tc.key, code, body, tc.want)
		}
	}
	if code, _ := post(t, srv.URL+"/key/delete", "sk-m", `{"key_aliases":["nope"]}`); code != 404 {
		t.Errorf("delete of an unknown alias: %d, want 404", code)
	}
	s.SetDown(true)
	if code, _ := post(t, srv.URL+"/key/generate", "sk-m", `{"key_alias":"d"}`); code != 503 {
		t.Errorf("down: %d, want 503", code)
	}
}
