package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/pkg/version"
)

// fakeAgent implements the agent's HTTP API contract (DESIGN §5) in memory, enough for
// command tests until the real agent can run in-process.
type fakeAgent struct {
	// integrations answers GET /api/v1/integrations (nil: 404, an agent before them).
	integrations *apiv1.IntegrationList
	t            *testing.T
	mu           sync.Mutex

	sessions map[string]*apiv1.Session
	messages map[string][]apiv1.Message
	// progress is the state sequence a session goes through on each GET after create.
	progress []apiv1.SessionState
	gets     map[string]int
	created  []apiv1.CreateSessionRequest
	sent     []string
	who      apiv1.WhoAmI
	version  apiv1.VersionInfo
	ready    apiv1.Readiness
	// token, when set, must arrive as a bearer token.
	token string
	// sessionWebDomain, when set, serves POST /sessions/{id}/web as the agent does with
	// session hosts; empty answers as an agent without them.
	sessionWebDomain string
	// trustHeaders makes the fake (wrongly) accept X-Auth-Request-Email, or the email
	// header who.HeaderAuthInfo names.
	trustHeaders bool
	// identityHeaders records the identity headers (those who.HeaderAuthInfo names) that
	// reached whoami, as "Name: value".
	identityHeaders []string
	// events are the event streams served, one per request; once they are all
	// served the session answers 409 NotRunning, as a stopped one does. afterStream[n],
	// when set, becomes the session's conversation once stream n was served (what
	// happened while the client was away).
	events      []string
	afterStream [][]apiv1.Message
	proxied     []string
	// openCodeDown answers this many proxied requests with 502, as the agent does
	// while a session's OpenCode is not listening yet.
	openCodeDown int
	// eventStreams counts the event streams requested.
	eventStreams int
	// tokens are the personal access tokens by id; tokenRequests what token create sent;
	// tokenQueries the ?user= of token lists and revocations.
	tokens        map[string]apiv1.Token
	tokenRequests []apiv1.CreateTokenRequest
	tokenQueries  []string
	// credentials are the git credentials by host, with the token the plugin sent.
	credentials map[string]apiv1.PutCredentialRequest
	// githubScript answers the GitHub link polls in turn; githubPolls counts them.
	githubScript []apiv1.GitHubLinkStatus
	githubPolls  int
	now          time.Time
	// audit answers GET /api/v1/audit, newest first, in pages; auditQueries records the
	// query of each request.
	audit        []apiv1.AuditEvent
	auditQueries []string
	// models answers GET /api/v1/models; providers GET /api/v1/providers, and each
	// PUT's body is recorded in providerPuts.
	models       apiv1.ModelList
	providers    string
	providerPuts []string
	// repos are Slack channels' and Linear teams' repositories ("slack/C0123", "linear/ENG"),
	// answered as the agent does (a Linear team without one is 404).
	repos map[string]string
}

func newFakeAgent(t *testing.T) *fakeAgent {
	return &fakeAgent{
		t:        t,
		sessions: map[string]*apiv1.Session{},
		messages: map[string][]apiv1.Message{},
		gets:     map[string]int{},
		who: apiv1.WhoAmI{
			User:          apiv1.User{ID: "u-1", Email: "alice@example.com", Source: "kubernetes"},
			Authenticator: "kubernetes", Username: "alice", Groups: []string{"dev", "system:authenticated"},
			Permissions: map[string]bool{"get": true, "list": true, "create": true, "delete": true, "attach": true, "update": true},
		},
		version:     apiv1.VersionInfo{Version: "v0.3.1", Commit: "abc1234", Date: "2026-11-01T00:00:00Z", GoVersion: "go1.26.8", Platform: "linux/amd64"},
		ready:       apiv1.Readiness{Ready: true, Checks: map[string]string{"store": "ok", "kube": "ok"}},
		tokens:      map[string]apiv1.Token{},
		credentials: map[string]apiv1.PutCredentialRequest{},
		repos:       map[string]string{},
		now:         time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
	}
}

func (a *fakeAgent) add(s apiv1.Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions[s.ID] = &s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiv1.Error{Body: apiv1.ErrorBody{Code: code, Message: msg}})
}

func (a *fakeAgent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		if !a.ready.Ready {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, a.ready)
	})
	mux.HandleFunc("GET /api/v1/version", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, a.version) })
	mux.HandleFunc("GET /api/v1/models", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, a.models) })
	mux.HandleFunc("GET /api/v1/integrations", func(w http.ResponseWriter, r *http.Request) {
		if a.integrations == nil {
			writeErr(w, http.StatusNotFound, apiv1.CodeNotFound, "no such API endpoint")
			return
		}
		writeJSON(w, 200, a.integrations)
	})
	mux.HandleFunc("GET /api/v1/integrations/slack/channels/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		writeJSON(w, 200, apiv1.SlackChannel{Channel: r.PathValue("id"), Repo: a.repos["slack/"+r.PathValue("id")]})
	})
	mux.HandleFunc("PUT /api/v1/integrations/slack/channels/{id}", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.SlackChannel
		_ = json.NewDecoder(r.Body).Decode(&req)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.repos["slack/"+r.PathValue("id")] = req.Repo
		writeJSON(w, 200, apiv1.SlackChannel{Channel: r.PathValue("id"), Repo: req.Repo})
	})
	mux.HandleFunc("GET /api/v1/integrations/linear/teams/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := strings.ToUpper(r.PathValue("key"))
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.repos["linear/"+key] == "" {
			writeErr(w, http.StatusNotFound, apiv1.CodeNotFound, "Linear team "+key+" has no repository")
			return
		}
		writeJSON(w, 200, apiv1.LinearTeam{Key: key, Repo: a.repos["linear/"+key]})
	})
	mux.HandleFunc("PUT /api/v1/integrations/linear/teams/{key}", func(w http.ResponseWriter, r *http.Request) {
		key := strings.ToUpper(r.PathValue("key"))
		var req apiv1.LinearTeam
		_ = json.NewDecoder(r.Body).Decode(&req)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.repos["linear/"+key] = req.Repo
		writeJSON(w, 200, apiv1.LinearTeam{Key: key, Repo: req.Repo})
	})
	mux.HandleFunc("GET /api/v1/providers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(a.providers))
	})
	mux.HandleFunc("PUT /api/v1/providers", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), "ftp://") {
			writeErr(w, 400, apiv1.CodeBadRequest, "providers.acme.options.baseURL: must be an http(s) URL without credentials")
			return
		}
		a.mu.Lock()
		a.providerPuts = append(a.providerPuts, string(b))
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /api/v1/whoami", func(w http.ResponseWriter, r *http.Request) {
		emailHeader := "X-Auth-Request-Email"
		if info := a.who.HeaderAuthInfo; info != nil {
			emailHeader = info.EmailHeader
			a.mu.Lock()
			for _, h := range []string{info.EmailHeader, info.UserHeader, info.JWTHeader} {
				if h != "" && r.Header.Get(h) != "" {
					a.identityHeaders = append(a.identityHeaders, h+": "+r.Header.Get(h))
				}
			}
			a.mu.Unlock()
		}
		if e := r.Header.Get(emailHeader); emailHeader != "" && e != "" {
			if !a.trustHeaders {
				writeErr(w, 401, apiv1.CodeUnauthorized, "identity headers are accepted only from the configured proxies")
				return
			}
			who := a.who
			who.User.Email = e
			writeJSON(w, 200, who)
			return
		}
		writeJSON(w, 200, a.who)
	})
	mux.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		var items []apiv1.Session
		for _, s := range a.sessions {
			if st := r.URL.Query().Get("state"); st != "" && string(s.State) != st {
				continue
			}
			items = append(items, *s)
		}
		sort.Slice(items, func(i, j int) bool { return items[i].ID < items[j].ID })
		// Two per page, to exercise continue.
		start := 0
		if c := r.URL.Query().Get("continue"); c != "" {
			_, _ = fmt.Sscan(c, &start)
		}
		end, next := start+2, ""
		if end < len(items) {
			next = fmt.Sprint(end)
		} else {
			end = len(items)
		}
		writeJSON(w, 200, apiv1.SessionList{Items: items[start:end], Continue: next})
	})
	mux.HandleFunc("POST /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.CreateSessionRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeErr(w, 400, apiv1.CodeBadRequest, err.Error())
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.created = append(a.created, req)
		s := &apiv1.Session{ID: fmt.Sprintf("s%d", len(a.created)), Title: req.Title, Repo: req.Repo, Owner: "alice@example.com",
			OwnerID: "u-1", State: apiv1.StatePending, CreatedAt: time.Now(), Private: req.Private == nil || *req.Private}
		a.sessions[s.ID] = s
		writeJSON(w, 201, s)
	})
	withSession := func(fn func(w http.ResponseWriter, r *http.Request, s *apiv1.Session)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			defer a.mu.Unlock()
			s, ok := a.sessions[r.PathValue("id")]
			if !ok {
				writeErr(w, 404, apiv1.CodeNotFound, fmt.Sprintf("session %q not found", r.PathValue("id")))
				return
			}
			fn(w, r, s)
		}
	}
	mux.HandleFunc("GET /api/v1/sessions/{id}", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		if n := a.gets[s.ID]; n < len(a.progress) {
			s.State = a.progress[n]
			if s.State == apiv1.StateFailed {
				s.Reason, s.Message = "ImagePullBackOff", "cannot pull image data-plane:1.0"
			}
		}
		a.gets[s.ID]++
		writeJSON(w, 200, s)
	}))
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		s.State = apiv1.StateDeleting
		delete(a.sessions, s.ID)
		writeJSON(w, 202, s)
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/stop", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		s.State = apiv1.StateStopping
		writeJSON(w, 200, s)
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/web", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		if a.sessionWebDomain == "" {
			writeErr(w, 404, apiv1.CodeNotFound, "this agent does not serve sessions' OpenCode web UI: an admin enables it with the chart's controlPlane.sessionWeb.enabled")
			return
		}
		writeJSON(w, 200, apiv1.SessionWebResponse{URL: "https://" + s.ID + "." + a.sessionWebDomain + "/_cake/enter?ticket=t1", ExpiresAt: time.Now().Add(30 * time.Second)})
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/start", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		s.State = apiv1.StatePending
		writeJSON(w, 200, s)
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/messages", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		if s.State != apiv1.StateRunning {
			writeErr(w, 409, apiv1.CodeNotRunning, "session is "+string(s.State))
			return
		}
		var req apiv1.SendMessageRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		a.sent = append(a.sent, req.Text)
		w.WriteHeader(http.StatusAccepted)
	}))
	mux.HandleFunc("GET /api/v1/sessions/{id}/logs", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		writeJSON(w, 200, apiv1.MessageList{Items: a.messages[s.ID]})
	}))
	mux.HandleFunc("GET /api/v1/sessions/{id}/events", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		n := a.eventStreams
		a.eventStreams++
		if n >= len(a.events) {
			writeErr(w, 409, apiv1.CodeNotRunning, "session "+s.ID+" is Stopped, not Running")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(a.events[n]))
		if n < len(a.afterStream) && a.afterStream[n] != nil {
			a.messages[s.ID] = a.afterStream[n]
		}
	}))
	mux.HandleFunc("POST /api/v1/sessions/{id}/attach", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		writeJSON(w, 200, apiv1.AttachInfo{Password: "session-secret", PodName: s.PodName, PodNamespace: s.PodNamespace})
	}))
	mux.HandleFunc("/api/v1/sessions/{id}/proxy/", withSession(func(w http.ResponseWriter, r *http.Request, s *apiv1.Session) {
		// withSession holds a.mu.
		a.proxied = append(a.proxied, r.Method+" "+r.URL.Path+" auth="+r.Header.Get("Authorization"))
		if a.openCodeDown > 0 {
			a.openCodeDown--
			writeErr(w, http.StatusBadGateway, apiv1.CodeUnavailable, "cannot reach the session's OpenCode: connection refused")
			return
		}
		_, _ = w.Write([]byte(`{"healthy":true,"version":"1.18.33"}`))
	}))
	// Tokens, as the agent answers them: alice owns every token; only "me" and alice
	// may be named in ?user= (the fake has no admins); at most 2160h.
	mux.HandleFunc("POST /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.CreateTokenRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeErr(w, 400, apiv1.CodeBadRequest, err.Error())
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.tokenRequests = append(a.tokenRequests, req)
		ttl := 720 * time.Hour
		if req.ExpiresIn != nil && req.ExpiresIn.Duration > 0 {
			ttl = req.ExpiresIn.Duration
		}
		if ttl > 2160*time.Hour {
			writeErr(w, 400, apiv1.CodeBadRequest, fmt.Sprintf("expiresIn: %s is longer than this agent's maximum token lifetime of 2160h0m0s (--token-max-ttl, chart value tokens.maxTTL)", ttl))
			return
		}
		exp := a.now.Add(ttl)
		id := fmt.Sprintf("tok%d", len(a.tokenRequests))
		t := apiv1.Token{ID: id, Name: req.Name, OwnerID: "u-1", Owner: "alice@example.com", CreatedAt: a.now, ExpiresAt: &exp}
		a.tokens[id] = t
		t.Token = "cka_secret_" + id
		writeJSON(w, 201, t)
	})
	mux.HandleFunc("GET /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		user := r.URL.Query().Get("user")
		a.tokenQueries = append(a.tokenQueries, "list "+user)
		if user != "" && user != "me" && user != "alice@example.com" {
			writeErr(w, 403, apiv1.CodeForbidden, "the tokens of another user ("+user+") are for admins")
			return
		}
		out := apiv1.TokenList{Items: []apiv1.Token{}}
		for _, t := range a.tokens {
			out.Items = append(out.Items, t)
		}
		sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].ID < out.Items[j].ID })
		writeJSON(w, 200, out)
	})
	mux.HandleFunc("DELETE /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		user := r.URL.Query().Get("user")
		a.tokenQueries = append(a.tokenQueries, "revoke "+user)
		if user != "me" && user != "alice@example.com" {
			writeErr(w, 403, apiv1.CodeForbidden, "the tokens of another user ("+user+") are for admins")
			return
		}
		n := len(a.tokens)
		a.tokens = map[string]apiv1.Token{}
		writeJSON(w, 200, apiv1.TokenRevocation{Users: []apiv1.User{{ID: "u-1", Source: "kubernetes", Subject: "alice"}}, Revoked: n})
	})
	mux.HandleFunc("DELETE /api/v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, ok := a.tokens[r.PathValue("id")]; !ok {
			writeErr(w, 404, apiv1.CodeNotFound, "token "+r.PathValue("id")+" not found")
			return
		}
		delete(a.tokens, r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/github/link", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 201, apiv1.GitHubLink{ID: "flow1", UserCode: "ABCD-1234", VerificationURI: "https://github.com/login/device", ExpiresAt: a.now.Add(15 * time.Minute), Interval: 5})
	})
	mux.HandleFunc("POST /api/v1/github/link/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if r.PathValue("id") != "flow1" || a.githubPolls >= len(a.githubScript) {
			writeErr(w, 404, apiv1.CodeNotFound, "no GitHub link "+r.PathValue("id")+" in progress on this agent")
			return
		}
		st := a.githubScript[a.githubPolls]
		a.githubPolls++
		writeJSON(w, 200, st)
	})
	// Git credentials: stored as sent, listed without the token, by host (an SSH key
	// under HOST#ssh, so a host has one of each kind).
	mux.HandleFunc("PUT /api/v1/credentials/{host}", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.PutCredentialRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeErr(w, 400, apiv1.CodeBadRequest, err.Error())
			return
		}
		if req.Kind == apiv1.CredentialKindSSH && !strings.Contains(req.PrivateKey, "PRIVATE KEY") {
			writeErr(w, 400, apiv1.CodeBadRequest, "privateKey: not a private key: give an unencrypted private key")
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		key := r.PathValue("host")
		if req.Kind == apiv1.CredentialKindSSH {
			key += "#ssh"
		}
		a.credentials[key] = req
		writeJSON(w, 200, credentialOf(key, req, a.now))
	})
	mux.HandleFunc("GET /api/v1/audit", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		q := r.URL.Query()
		a.auditQueries = append(a.auditQueries, q.Encode())
		var match []apiv1.AuditEvent
		for _, e := range a.audit {
			if (q.Get("actor") == "" || e.Actor == q.Get("actor")) && (q.Get("target") == "" || e.Target == q.Get("target")) {
				match = append(match, e)
			}
		}
		from, _ := strconv.Atoi(q.Get("continue"))
		limit, _ := strconv.Atoi(q.Get("limit"))
		out := apiv1.AuditList{Items: match[min(from, len(match)):min(from+limit, len(match))]}
		if from+limit < len(match) {
			out.Continue = strconv.Itoa(from + limit)
		}
		writeJSON(w, 200, out)
	})
	mux.HandleFunc("GET /api/v1/credentials", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		out := apiv1.CredentialList{Items: []apiv1.Credential{}}
		for h, req := range a.credentials {
			out.Items = append(out.Items, credentialOf(h, req, a.now))
		}
		sort.Slice(out.Items, func(i, j int) bool {
			return out.Items[i].Host+out.Items[i].Kind < out.Items[j].Host+out.Items[j].Kind
		})
		writeJSON(w, 200, out)
	})
	mux.HandleFunc("DELETE /api/v1/credentials/{host}", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		host := r.PathValue("host")
		keys := []string{host, host + "#ssh"}
		switch r.URL.Query().Get("kind") {
		case apiv1.CredentialKindToken:
			keys = keys[:1]
		case apiv1.CredentialKindSSH:
			keys = keys[1:]
		}
		removed := 0
		for _, k := range keys {
			if _, ok := a.credentials[k]; ok {
				delete(a.credentials, k)
				removed++
			}
		}
		if removed == 0 {
			writeErr(w, 404, apiv1.CodeNotFound, "credential for "+host+" not found")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As the agent does: a plugin outside its window gets a Warning on every answer.
		if v := r.Header.Get(version.HeaderClient); v != "" {
			if text := version.Skew(v, a.version.Version); text != "" {
				w.Header().Add("Warning", version.WarningHeader(text))
			}
		}
		if a.token != "" && r.Header.Get("Authorization") != "Bearer "+a.token && !strings.HasPrefix(r.URL.Path, "/healthz") {
			writeErr(w, 401, apiv1.CodeUnauthorized, "invalid or expired token")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// start serves the fake and returns a Factory whose client reaches it.
func (a *fakeAgent) start() (*Factory, *httptest.Server) {
	srv := httptest.NewServer(a.handler())
	a.t.Cleanup(srv.Close)
	f := NewFactory()
	c, err := client.New(srv.URL, srv.Client(), f.clientOptions()...)
	if err != nil {
		a.t.Fatal(err)
	}
	f.Client = c
	return f, srv
}

func credentialOf(key string, req apiv1.PutCredentialRequest, now time.Time) apiv1.Credential {
	if host, ok := strings.CutSuffix(key, "#ssh"); ok {
		return apiv1.Credential{Host: host, Kind: apiv1.CredentialKindSSH, Fingerprint: "SHA256:fakeFingerprint", PublicKey: "ssh-ed25519 AAAAfake",
			CreatedAt: now.Add(-time.Hour), UpdatedAt: now.Add(-time.Hour)}
	}
	host := key
	user := req.Username
	if user == "" {
		user = apiv1.DefaultCredentialUsername
	}
	return apiv1.Credential{Host: host, Kind: apiv1.CredentialKindToken, Username: user, CreatedAt: now.Add(-time.Hour), UpdatedAt: now.Add(-time.Hour)}
}
