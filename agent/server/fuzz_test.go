package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// The fuzz tests feed the API's JSON decoders and query parsers whatever the fuzzer
// makes. Their seed corpus is in testdata/fuzz; `go test` runs it as ordinary tests and
// hack/test.sh fuzzes each target for a few seconds. Whatever comes in, the answer is
// never a 5xx (the recoverer turns a panic into a 500, so that is how a panic shows),
// it is JSON, and a refusal is the API's error shape with a code and a message.

// serve answers one request in process, as user (see newEnv).
func (e *env) serve(user, method, target string, rawQuery string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.URL.RawQuery = rawQuery
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Test-User", user)
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	return rec
}

// checkAnswer fails t unless rec is a well-formed answer with one of the allowed codes.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	code := rec.Code
	ok := false
	for _, a := range allowed {
		ok = ok || code == a
	}
	if !ok {
		t.Fatalf("status %d, want one of %v: %s", code, allowed, rec.Body.Bytes())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("status %d with Content-Type %q, want application/json", code, ct)
	}
	if code < 300 {
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("status %d with a body that is not JSON: %q", code, rec.Body.Bytes())
		}
		return
	}
	var e apiv1.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Body.Code == "" || e.Body.Message == "" {
		t.Fatalf("status %d without the API's error shape: %q", code, rec.Body.Bytes())
	}
	if code == http.StatusRequestEntityTooLarge && e.Body.Code != apiv1.CodeTooLarge {
		t.Fatalf("413 with code %q, want %q", e.Body.Code, apiv1.CodeTooLarge)
	}
}

// checkFieldsNamed fails t when body is a JSON object with a key that is no field of v
// and the answer does not refuse it with a 400 that names a field. A field's own
// decoder (durations) may refuse its value first, before the unknown key is read.
func checkFieldsNamed(t *testing.T, rec *httptest.ResponseRecorder, body []byte, v any) {
	t.Helper()
	var obj map[string]json.RawMessage
	if len(body) > apiv1.MaxBodyBytes || json.Unmarshal(body, &obj) != nil {
		return
	}
	var unknown []string
	for k := range obj {
		if !knownField(k, jsonFields(v)) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return
	}
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("body with unknown fields %q answered %d, want 400: %s", unknown, rec.Code, rec.Body.Bytes())
	}
	var e apiv1.Error
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	msg := e.Body.Message
	if !strings.Contains(msg, "unknown field") {
		return // another problem came first (a mistyped field, a bad duration)
	}
	for _, k := range unknown {
		if strings.Contains(msg, "unknown field "+strconv.Quote(k)) {
			return
		}
	}
	t.Fatalf("message %q does not name any of the unknown fields %q", msg, unknown)
}

// knownField matches key to a field name the way encoding/json does: exactly or
// without case, Unicode's simple folding included (the Kelvin sign is a k).
func knownField(key string, fields []string) bool {
	for _, f := range fields {
		if strings.EqualFold(key, f) {
			return true
		}
	}
	return false
}

func FuzzCreateSession(f *testing.F) {
	e := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		// root is an admin, so the quota never decides the answer.
		rec := e.serve("root", "POST", "/api/v1/sessions", "", body)
		checkAnswer(t, rec, http.StatusCreated, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		checkFieldsNamed(t, rec, body, &apiv1.CreateSessionRequest{})
		if rec.Code == http.StatusCreated {
			var s apiv1.Session
			if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil || s.ID == "" {
				t.Fatalf("201 without a session: %s", rec.Body.Bytes())
			}
			// Keep the store small over a long run.
			if err := e.st.DeleteSession(context.Background(), s.ID); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzPatchSession(f *testing.F) {
	e := newEnv(f, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := e.serve("alice", "PATCH", "/api/v1/sessions/"+s.ID, "", body)
		checkAnswer(t, rec, http.StatusOK, http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge)
		checkFieldsNamed(t, rec, body, &apiv1.UpdateSessionRequest{})
	})
}

func FuzzSendMessage(f *testing.F) {
	e := newEnv(f, nil)
	s := e.create("alice", apiv1.CreateSessionRequest{})
	if _, err := e.sess.setState(context.Background(), s.ID, apiv1.StateRunning, ""); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := e.serve("alice", "POST", "/api/v1/sessions/"+s.ID+"/messages", "", body)
		checkAnswer(t, rec, http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge)
		checkFieldsNamed(t, rec, body, &apiv1.SendMessageRequest{})
		e.conv.mu.Lock()
		e.conv.sent = nil
		e.conv.mu.Unlock()
	})
}

func FuzzCreateToken(f *testing.F) {
	e := newEnv(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := e.serve("bob", "POST", "/api/v1/tokens", "", body)
		// 409: bob has a token of that name already.
		checkAnswer(t, rec, http.StatusCreated, http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge)
		checkFieldsNamed(t, rec, body, &apiv1.CreateTokenRequest{})
		if rec.Code == http.StatusCreated {
			var tok apiv1.Token
			if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || tok.Token == "" {
				t.Fatalf("201 without a token: %s", rec.Body.Bytes())
			}
		}
	})
}

// FuzzListSessions fuzzes the list's query (limit, continue, all, owner, state) for a
// user and an admin; a continue token the store made must also be accepted.
func FuzzListSessions(f *testing.F) {
	e := newEnv(f, nil)
	for i := 0; i < 3; i++ {
		e.create("alice", apiv1.CreateSessionRequest{Title: fmt.Sprint("s", i)})
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		for _, user := range []string{"alice", "root"} {
			rec := e.serve(user, "GET", "/api/v1/sessions", rawQuery, nil)
			checkAnswer(t, rec, http.StatusOK, http.StatusBadRequest, http.StatusForbidden)
			if rec.Code != http.StatusOK {
				continue
			}
			var l apiv1.SessionList
			if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
				t.Fatalf("200 without a list: %s", rec.Body.Bytes())
			}
			if q, err := url.ParseQuery(rawQuery); err == nil && q.Get("limit") != "" {
				if n, _ := strconv.Atoi(q.Get("limit")); len(l.Items) > n {
					t.Fatalf("limit=%d answered %d items", n, len(l.Items))
				}
			}
			if l.Continue != "" {
				next := e.serve(user, "GET", "/api/v1/sessions", "continue="+url.QueryEscape(l.Continue), nil)
				checkAnswer(t, next, http.StatusOK)
			}
		}
	})
}

// FuzzListAudit fuzzes the audit log's query (limit, continue, actor, target).
func FuzzListAudit(f *testing.F) {
	e := newEnv(f, nil)
	e.create("alice", apiv1.CreateSessionRequest{})
	f.Fuzz(func(t *testing.T, rawQuery string) {
		rec := e.serve("root", "GET", "/api/v1/audit", rawQuery, nil)
		checkAnswer(t, rec, http.StatusOK, http.StatusBadRequest)
	})
}
