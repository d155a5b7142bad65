// Package fakemodel is a small OpenAI-compatible model server for tests and the demo:
// OpenCode talks to it exactly as it talks to LiteLLM, but replies are deterministic and
// every request is recorded, so a test can assert that the model received a prompt and
// what the session shows in return.
//
// Replies derive from the last user message: "fake-model reply to: <prompt>". Title
// requests (OpenCode asks for a title for every untitled session) get a short title. A
// prompt containing "#tool:<name> <args>" makes the model call that tool (for bash, args
// is the command; otherwise args is the tool's JSON arguments); on the turn that carries
// the tool's result the model answers normally, quoting the start of the result.
package fakemodel

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ModelID is the model the server lists and reports when a request names none.
const ModelID = "fake-model"

// ReplyPrefix starts every ordinary reply.
const ReplyPrefix = "fake-model reply to: "

// ToolResultPrefix starts the reply to a turn that carries a tool result.
const ToolResultPrefix = "fake-model saw tool result: "

// Request is one recorded chat completion request.
type Request struct {
	Time     time.Time `json:"time"`
	Model    string    `json:"model"`
	Stream   bool      `json:"stream"`
	Messages []Message `json:"messages"`
	// Tools are the names of the tools the client offered.
	Tools []string `json:"tools,omitempty"`
	// Title is true when the request asked for a conversation title.
	Title bool `json:"title"`
	// Reply is what the server answered (the text, or the tool call it made).
	Reply string `json:"reply"`
}

// LastUserText returns the text of the request's last user message.
func (r Request) LastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// Message is one chat message of a request, its content flattened to text.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Server is an http.Handler serving the OpenAI chat completions API. The zero value is
// not usable; call New.
type Server struct {
	// ChunkDelay is slept between streamed chunks so clients can observe streaming.
	ChunkDelay time.Duration
	// RequireKey, when set, is the only API key accepted (Authorization: Bearer KEY, as
	// OpenAI-compatible clients send options.apiKey): any other request is answered 401
	// and counted in Refused, so a test proves which key a client used.
	RequireKey string

	mu       sync.Mutex
	requests []Request
	refused  int
	seq      int
	mux      *http.ServeMux
}

// New returns a Server.
func New() *Server {
	s := &Server{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.keyed(s.chatCompletions))
	mux.HandleFunc("POST /chat/completions", s.keyed(s.chatCompletions))
	mux.HandleFunc("GET /v1/models", s.keyed(s.models))
	mux.HandleFunc("GET /models", s.keyed(s.models))
	mux.HandleFunc("GET /_requests", s.listRequests)
	mux.HandleFunc("DELETE /_requests", func(w http.ResponseWriter, _ *http.Request) {
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux = mux
	return s
}

// keyed wraps a model route with the RequireKey check.
func (s *Server) keyed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.RequireKey != "" && r.Header.Get("Authorization") != "Bearer "+s.RequireKey {
			s.mu.Lock()
			s.refused++
			s.mu.Unlock()
			writeError(w, http.StatusUnauthorized, "invalid API key")
			return
		}
		h(w, r)
	}
}

// Refused is how many requests RequireKey turned away.
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Requests returns a copy of every chat completion request received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Received reports whether a non-title request's last user message contained text.
func (s *Server) Received(text string) bool {
	for _, r := range s.Requests() {
		if !r.Title && strings.Contains(r.LastUserText(), text) {
			return true
		}
	}
	return false
}

// Reset forgets the recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// Reply is the deterministic answer to a prompt.
func Reply(prompt string) string { return ReplyPrefix + strings.TrimSpace(prompt) }

// Title is the deterministic title for a conversation starting with prompt.
func Title(prompt string) string {
	words := strings.Fields(prompt)
	if len(words) > 5 {
		words = words[:5]
	}
	if len(words) == 0 {
		return "Fake session"
	}
	return "Fake: " + strings.Join(words, " ")
}

// chatRequest is the part of an OpenAI chat completion request the server reads.
type chatRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
}

// contentText flattens a message content (a string or an array of parts) to text.
func contentText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err == nil {
		var b strings.Builder
		for _, p := range parts {
			if p.Text != "" {
				if b.Len() > 0 {
					b.WriteString("\n")
				}
				b.WriteString(p.Text)
			}
		}
		return b.String()
	}
	return string(raw)
}

// toolCall is a function call the model makes.
type toolCall struct {
	ID        string
	Name      string
	Arguments string
}

// answer decides the reply: a text or a tool call.
func answer(req Request) (text string, call *toolCall) {
	if req.Title {
		return Title(titleSource(req)), nil
	}
	// A turn that ends with a tool result answers it.
	if n := len(req.Messages); n > 0 && req.Messages[n-1].Role == "tool" {
		result := strings.TrimSpace(req.Messages[n-1].Content)
		if len(result) > 200 {
			result = result[:200]
		}
		return ToolResultPrefix + result, nil
	}
	prompt := req.LastUserText()
	if i := strings.Index(prompt, "#tool:"); i >= 0 {
		spec := strings.TrimSpace(prompt[i+len("#tool:"):])
		name, args, _ := strings.Cut(spec, " ")
		args = strings.TrimSpace(args)
		if !strings.HasPrefix(args, "{") {
			if name == "bash" {
				b, _ := json.Marshal(map[string]string{"command": args, "description": "Run " + args})
				args = string(b)
			} else {
				args = "{}"
			}
		}
		return "", &toolCall{Name: name, Arguments: args}
	}
	return Reply(prompt), nil
}

// titleSource finds the user's text inside a title request; OpenCode wraps it in its
// own instructions, so prefer the last user message.
func titleSource(req Request) string {
	text := req.LastUserText()
	// OpenCode sends the first user message after a "Generate a title" instruction.
	for _, m := range req.Messages {
		if m.Role == "user" && !isTitleInstruction(m.Content) {
			text = m.Content
		}
	}
	return text
}

// isTitleRequest recognises the request a client makes to name a conversation: its
// system prompt asks for a title.
func isTitleRequest(msgs []Message) bool {
	for _, m := range msgs {
		if m.Role == "system" && isTitleInstruction(m.Content) {
			return true
		}
	}
	return false
}

func isTitleInstruction(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "title generator") || strings.Contains(s, "generate a title") ||
		strings.Contains(s, "you are a title")
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var cr chatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20)).Decode(&cr); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	req := Request{Time: time.Now(), Model: cr.Model, Stream: cr.Stream}
	if req.Model == "" {
		req.Model = ModelID
	}
	for _, m := range cr.Messages {
		req.Messages = append(req.Messages, Message{Role: m.Role, Content: contentText(m.Content)})
	}
	for _, t := range cr.Tools {
		req.Tools = append(req.Tools, t.Function.Name)
	}
	req.Title = isTitleRequest(req.Messages)
	text, call := answer(req)

	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("chatcmpl-fake-%d", s.seq)
	if call != nil {
		call.ID = fmt.Sprintf("call_fake_%d", s.seq)
		req.Reply = fmt.Sprintf("tool %s %s", call.Name, call.Arguments)
	} else {
		req.Reply = text
	}
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	promptTokens := 0
	for _, m := range req.Messages {
		promptTokens += len(strings.Fields(m.Content))
	}
	completionTokens := len(strings.Fields(text)) + 1
	usage := map[string]int{
		"prompt_tokens":     promptTokens,
		"completion_tokens": completionTokens,
		"total_tokens":      promptTokens + completionTokens,
	}
	created := req.Time.Unix()

	if !cr.Stream {
		msg := map[string]any{"role": "assistant", "content": text}
		finish := "stop"
		if call != nil {
			msg["content"] = nil
			msg["tool_calls"] = []any{toolCallJSON(call, false)}
			finish = "tool_calls"
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}},
			"usage":   usage,
		})
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		if s.ChunkDelay > 0 {
			select {
			case <-time.After(s.ChunkDelay):
			case <-r.Context().Done():
				return false
			}
		}
		return true
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	if !send(chunk(map[string]any{"role": "assistant", "content": ""}, nil)) {
		return
	}
	finish := "stop"
	if call != nil {
		if !send(chunk(map[string]any{"tool_calls": []any{toolCallJSON(call, true)}}, nil)) {
			return
		}
		finish = "tool_calls"
	} else {
		for _, piece := range splitKeepSpaces(text) {
			if !send(chunk(map[string]any{"content": piece}, nil)) {
				return
			}
		}
	}
	if !send(chunk(map[string]any{}, finish)) {
		return
	}
	if !send(map[string]any{
		"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
		"choices": []any{}, "usage": usage,
	}) {
		return
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func toolCallJSON(c *toolCall, stream bool) map[string]any {
	m := map[string]any{
		"id":       c.ID,
		"type":     "function",
		"function": map[string]any{"name": c.Name, "arguments": c.Arguments},
	}
	if stream {
		m["index"] = 0
	}
	return m
}

// splitKeepSpaces splits text into words that keep their following space, so the
// concatenated chunks equal the text.
func splitKeepSpaces(text string) []string {
	var out []string
	start := 0
	for i, r := range text {
		if r == ' ' {
			out = append(out, text[start:i+1])
			start = i + 1
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data":   []any{map[string]any{"id": ModelID, "object": "model", "created": 0, "owned_by": "fakemodel"}},
	})
}

func (s *Server) listRequests(w http.ResponseWriter, _ *http.Request) {
	reqs := s.Requests()
	if reqs == nil {
		reqs = []Request{}
	}
	writeJSON(w, http.StatusOK, reqs)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}})
}
