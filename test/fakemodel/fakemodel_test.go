package fakemodel

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func post(t *testing.T, srv *httptest.Server, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp
}

type chunk struct {
	Choices []struct {
		Delta struct {
			Role      string `json:"role"`
			Content   string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
}

// readStream returns the decoded chunks and whether the stream ended with [DONE].
func readStream(t *testing.T, resp *http.Response) ([]chunk, bool) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var out []chunk
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return out, true
		}
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		out = append(out, c)
	}
	return out, false
}

func TestStreamedReply(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m)
	defer srv.Close()
	resp := post(t, srv, `{"model":"fake-model","stream":true,"messages":[
		{"role":"system","content":"You are OpenCode."},
		{"role":"user","content":[{"type":"text","text":"fix the flaky test"}]}]}`)
	chunks, done := readStream(t, resp)
	if !done {
		t.Fatal("stream did not end with [DONE]")
	}
	var text strings.Builder
	var finish string
	usage := false
	for _, c := range chunks {
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil && len(c.Choices) == 0 && c.Usage.TotalTokens > 0 {
			usage = true
		}
	}
	if text.String() != "fake-model reply to: fix the flaky test" || finish != "stop" || !usage {
		t.Fatalf("text %q, finish %q, usage chunk %v", text.String(), finish, usage)
	}
	if !m.Received("flaky test") {
		t.Fatal("Received does not see the prompt")
	}
	if len(chunks) < 4 {
		t.Fatalf("the reply came in %d chunks; it must stream word by word", len(chunks))
	}
}

func TestNonStreamReplyAndModels(t *testing.T) {
	srv := httptest.NewServer(New())
	defer srv.Close()
	resp := post(t, srv, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			Message      struct{ Role, Content string } `json:"message"`
			FinishReason string                         `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Object != "chat.completion" || len(out.Choices) != 1 || out.Choices[0].Message.Content != Reply("hi") || out.Choices[0].FinishReason != "stop" {
		t.Fatalf("answer %+v", out)
	}

	r, err := http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var models struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&models); err != nil || len(models.Data) != 1 || models.Data[0].ID != ModelID {
		t.Fatalf("models %+v, %v", models, err)
	}
}

func TestToolCallThenAnswer(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m)
	defer srv.Close()
	resp := post(t, srv, `{"stream":true,"tools":[{"type":"function","function":{"name":"bash"}}],
		"messages":[{"role":"user","content":"look #tool:bash ls -la"}]}`)
	chunks, _ := readStream(t, resp)
	var name, args, finish string
	for _, c := range chunks {
		for _, ch := range c.Choices {
			for _, tc := range ch.Delta.ToolCalls {
				name, args = tc.Function.Name, tc.Function.Arguments
				if tc.ID == "" || tc.Type != "function" {
					t.Fatalf("tool call without id or type: %+v", tc)
				}
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
	}
	var a struct{ Command string }
	if name != "bash" || json.Unmarshal([]byte(args), &a) != nil || a.Command != "ls -la" || finish != "tool_calls" {
		t.Fatalf("tool call %q %q finish %q", name, args, finish)
	}

	// The follow-up turn carries the tool's output: a normal answer quoting it.
	resp = post(t, srv, `{"stream":true,"messages":[
		{"role":"user","content":"look #tool:bash ls -la"},
		{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"bash","arguments":"{}"}}]},
		{"role":"tool","tool_call_id":"call_1","content":"total 0\nREADME.md\n"}]}`)
	chunks, _ = readStream(t, resp)
	var text strings.Builder
	for _, c := range chunks {
		for _, ch := range c.Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if text.String() != ToolResultPrefix+"total 0\nREADME.md" {
		t.Fatalf("follow-up reply %q", text.String())
	}
	if reqs := m.Requests(); len(reqs) != 2 || reqs[0].Tools[0] != "bash" {
		t.Fatalf("recorded %+v", reqs)
	}
}

func TestTitleRequestAndRequestLog(t *testing.T) {
	m := New()
	srv := httptest.NewServer(m)
	defer srv.Close()
	// The shape OpenCode 1.18 uses to name a session.
	resp := post(t, srv, `{"messages":[
		{"role":"system","content":"You are a title generator. You output ONLY a thread title."},
		{"role":"user","content":"Generate a title for this conversation:\n"},
		{"role":"user","content":"please refactor the store package now"}]}`)
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if got := out.Choices[0].Message.Content; got != "Fake: please refactor the store package" {
		t.Fatalf("title %q", got)
	}
	if m.Received("refactor") {
		t.Fatal("a title request counted as the model receiving a prompt")
	}

	r, err := http.Get(srv.URL + "/_requests")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var log []Request
	if err := json.NewDecoder(r.Body).Decode(&log); err != nil || len(log) != 1 || !log[0].Title {
		t.Fatalf("/_requests = %+v, %v", log, err)
	}
	m.Reset()
	if len(m.Requests()) != 0 {
		t.Fatal("Reset kept requests")
	}
}

func TestBadRequest(t *testing.T) {
	srv := httptest.NewServer(New())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// With RequireKey, only that bearer key gets an answer; the others are counted.
func TestRequireKey(t *testing.T) {
	m := New()
	m.RequireKey = "sk-right"
	srv := httptest.NewServer(m)
	defer srv.Close()
	call := func(key string) int {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := call("sk-wrong"); got != http.StatusUnauthorized {
		t.Errorf("wrong key: %d", got)
	}
	if got := call(""); got != http.StatusUnauthorized {
		t.Errorf("no key: %d", got)
	}
	if got := call("sk-right"); got != http.StatusOK {
		t.Errorf("right key: %d", got)
	}
	if m.Refused() != 2 || len(m.Requests()) != 1 {
		t.Errorf("refused %d, answered %d; want 2 and 1", m.Refused(), len(m.Requests()))
	}
}
