package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestCreateSession(t *testing.T) {
	e := newEnv(t, nil)
	pub := false
	s := e.create("alice", apiv1.CreateSessionRequest{Repo: "https://github.com/org/repo.git", Branch: "main", Prompt: "fix the flaky test", Private: &pub})
	if s.ID != "s001" || s.State != apiv1.StatePending || s.Owner != "alice@example.com" || s.Private || s.Title != "fix the flaky test" {
		t.Fatalf("unexpected session: %+v", s)
	}
	s2 := e.create("alice", apiv1.CreateSessionRequest{Repo: "git@github.com:org/other.git"})
	if !s2.Private || s2.Title != "other" {
		t.Fatalf("defaults: private %v title %q", s2.Private, s2.Title)
	}
}

func TestCreateSessionValidation(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, body, want string
		code             int
	}{
		{"unknown field", `{"repo":"https://h/o/r","colour":"red"}`, `unknown field "colour"; the fields are title, repo, branch`, 400},
		{"unknown field, odd name", `{"a\"b\u00e9":1}`, `unknown field "a\"bé"`, 400},
		{"mistyped field", `{"title":5}`, `field "title": want a string, got number`, 400},
		{"mistyped bool", `{"persistent":"yes"}`, `field "persistent": want true or false, got string`, 400},
		{"not an object", `[1,2]`, `want a JSON object, got array`, 400},
		{"truncated", `{"title":"x"`, `unexpected EOF`, 400},
		{"file repo", `{"repo":"file:///etc"}`, `scheme "file" is not allowed`, 400},
		{"plain http repo", `{"repo":"http://h/o/r"}`, `scheme "http" is not allowed`, 400},
		{"not a url", `{"repo":"hello world"}`, `is not a repository URL`, 400},
		{"password in url", `{"repo":"https://u:p@h/o/r"}`, `contains a password`, 400},
		{"token as https user", `{"repo":"https://ghp_0123456789abcdef@h/o/r"}`, `contains a user name`, 400},
		{"bad branch", `{"repo":"https://h/o/r","branch":"-x"}`, `not a valid git branch`, 400},
		{"branch without repo", `{"branch":"main"}`, `set repo too`, 400},
		{"bad duration", `{"idleTimeout":"soon"}`, `invalid duration "soon"`, 400},
		{"negative ttl", `{"ttl":"-1h"}`, `must not be negative`, 400},
		{"huge ttl", `{"ttl":"100000h"}`, `longer than the maximum`, 400},
		{"control char title", `{"title":"a\nb"}`, `control characters`, 400},
		{"bad model", `{"model":"x y"}`, `not a model name`, 400},
		{"empty body", ``, `request body is empty`, 400},
		{"two values", `{}{}`, `more than one value`, 400},
		{"oversize prompt", `{"prompt":"` + strings.Repeat("a", apiv1.MaxPromptBytes+1) + `"}`, `is more than the maximum`, 400},
		{"oversize body", `{"prompt":"` + strings.Repeat("a", apiv1.MaxBodyBytes) + `"}`, `larger than`, 413},
		// A value that ends before the limit does not make the body acceptable.
		{"oversize after a value", `{"title":"x"}` + strings.Repeat(" ", apiv1.MaxBodyBytes), `larger than`, 413},
		{"garbage after a value", `{"title":"x"} x`, `more than one value`, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do("alice", "POST", "/api/v1/sessions", tc.body)
			if code != tc.code || !strings.Contains(errorOf(t, body).Message, tc.want) {
				t.Fatalf("got %d %s, want %d containing %q", code, body, tc.code, tc.want)
			}
		})
	}
	code, _ := e.do("alice", "GET", "/api/v1/sessions", nil)
	if code != 200 {
		t.Fatal(code)
	}
	page, _ := e.st.ListSessions(context.Background(), store.SessionFilter{})
	if len(page.Items) != 0 {
		t.Fatalf("a rejected create left %d sessions", len(page.Items))
	}
}

func TestQuotaAndPagination(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, e.create("alice", apiv1.CreateSessionRequest{}).ID)
	}
	code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{})
	if code != 429 || errorOf(t, body).Code != apiv1.CodeQuotaExceeded {
		t.Fatalf("quota: %d %s", code, body)
	}
	// A start makes a session active again, so it counts too: stop one, create one in
	// its place, and the stopped one may not start.
	if _, err := e.sess.setState(context.Background(), ids[0], apiv1.StateStopped, ""); err != nil {
		t.Fatal(err)
	}
	e.create("alice", apiv1.CreateSessionRequest{})
	code, body = e.do("alice", "POST", "/api/v1/sessions/"+ids[0]+"/start", nil)
	if code != 429 || errorOf(t, body).Code != apiv1.CodeQuotaExceeded || !strings.Contains(errorOf(t, body).Message, "maximum of 3 active sessions") {
		t.Fatalf("start over the quota: %d %s", code, body)
	}
	seen := map[string]bool{}
	cont := ""
	for pages := 0; ; pages++ {
		_, body := e.do("alice", "GET", "/api/v1/sessions?limit=2&continue="+cont, nil)
		var list apiv1.SessionList
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			if seen[s.ID] {
				t.Fatalf("duplicate %s", s.ID)
			}
			seen[s.ID] = true
		}
		if list.Continue == "" {
			break
		}
		cont = list.Continue
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 4 {
		t.Fatalf("saw %d sessions, want 4", len(seen))
	}
	for _, q := range []string{"limit=0", "limit=x", "state=Sleeping", "continue=garbage"} {
		if code, body := e.do("alice", "GET", "/api/v1/sessions?"+q, nil); code != 400 {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
}

// TestRepoRuleAgreesWithTheInitContainer: a repository the API accepts is one the session's
// init container clones, and one it refuses is answered 400 naming the fix, not 201 and a
// session that fails later (the API once accepted -x@github.com:org/repo and
// git@github.com:/abs/repo, which the init container refused).
func TestRepoRuleAgreesWithTheInitContainer(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.MaxActiveSessions = 100 })
	for _, tc := range []struct{ repo, want string }{
		{"https://github.com/org/repo.git", ""},
		{"ssh://git@github.com:2222/org/repo.git", ""},
		{"git@github.com:org/repo.git", ""},
		{"-x@github.com:org/repo", "must not start with '-', which git would read as an option"},
		{"git@github.com:/abs/repo", "write git@github.com:abs/repo for a path under the login's home, or ssh://git@github.com/abs/repo"},
		{"--upload-pack=touch /tmp/x", "must not start with '-'"},
		{"ext::sh -c touch% /tmp/pwned", `scheme "ext" is not allowed`},
		{"file:///etc", `scheme "file" is not allowed`},
		{"/srv/git/repo", "is not a repository URL"},
		{"https://x-access-token@github.com/org/r", "contains a user name"},
		{"ssh://git:secret@github.com/org/repo.git", "contains a password"},
	} {
		code, body := e.do("alice", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{Repo: tc.repo})
		initErr := sessioninit.CheckRepo(tc.repo, false)
		if tc.want == "" {
			if code != http.StatusCreated || initErr != nil {
				t.Errorf("%q: API %d %s, init container %v; want both to accept", tc.repo, code, body, initErr)
			}
			continue
		}
		if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "repo: ") || !strings.Contains(errorOf(t, body).Message, tc.want) {
			t.Errorf("%q: API %d %s, want 400 naming repo and containing %q", tc.repo, code, body, tc.want)
		}
		if initErr == nil {
			t.Errorf("%q: the init container accepts what the API refuses", tc.repo)
		}
	}
	page, err := e.st.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil || len(page.Items) != 3 {
		t.Fatalf("stored %d sessions (%v), want only the 3 accepted", len(page.Items), err)
	}
}

// TestSessionIDRule: a path id that is not a session id (ids start with a letter, are at
// most 40 characters and do not end with '-') is a 400 stating the rule; a well-formed
// unknown id is a 404.
func TestSessionIDRule(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"1abc", strings.Repeat("a", 41), "abc-", "Abc", "a_b"} {
		for _, route := range []struct{ method, suffix string }{{"GET", ""}, {"POST", "/stop"}, {"POST", "/attach"}, {"GET", "/proxy/"}} {
			code, body := e.do("alice", route.method, "/api/v1/sessions/"+id+route.suffix, nil)
			if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "starting with a letter and not ending with '-'") {
				t.Errorf("%s %s%s: %d %s, want 400 stating the id rule", route.method, id, route.suffix, code, body)
			}
		}
	}
	if code, body := e.do("alice", "GET", "/api/v1/sessions/"+strings.Repeat("a", 40), nil); code != http.StatusNotFound {
		t.Errorf("longest valid id: %d %s, want 404", code, body)
	}
}
