package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbesOpenAPIAndUnknownRoutes(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/api/v1/openapi.json": 200} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	code, body := e.do("alice", "GET", "/api/v1/nope", nil)
	if code != 404 || !strings.Contains(errorOf(t, body).Message, "openapi.json") {
		t.Fatalf("unknown route: %d %s", code, body)
	}
	code, body = e.do("alice", "PUT", "/api/v1/sessions", nil)
	if code != 405 {
		t.Fatalf("wrong method: %d %s", code, body)
	}
	resp, err := http.Get(e.srv.URL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	s := &Server{}
	for _, rt := range s.apiRoutes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = strings.ReplaceAll(path, "{rest...}", "{rest}")
		if _, ok := doc.Paths[path][strings.ToLower(method)]; !ok && !strings.HasPrefix(rt.pattern, "/") {
			t.Errorf("route %s missing from the OpenAPI document", rt.pattern)
		}
	}
	// Without an identity the API is closed.
	resp, err = http.Get(e.srv.URL + "/api/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous list: %d", resp.StatusCode)
	}
}

func TestNotReady(t *testing.T) {
	h := NotReady(func() map[string]error { return map[string]error{"store": errors.New("connecting")} })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/api/v1/sessions": 503} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}
