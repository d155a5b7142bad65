package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// directPool stands in for the tunnel: every pod is the given local address. The real
// tunnel is exercised by the cluster integration test.
type directPool struct {
	addr  string
	calls atomic.Int32
}

func (d *directPool) Transport(namespace, pod string, port int) http.RoundTripper {
	d.calls.Add(1)
	return &http.Transport{
		DisableCompression: true, // like the tunnel's Transports
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dd net.Dialer
			return dd.DialContext(ctx, "tcp", d.addr)
		},
	}
}

// frontend serves the proxy the way the agent's server does: /api/v1/sessions/{id}/proxy/...
func frontend(t *testing.T, p *Proxy, target Target) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/sessions/{id}/proxy/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		tt := target
		tt.SessionID = r.PathValue("id")
		p.Serve(w, r, tt, r.PathValue("rest"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func backend(t *testing.T, h http.Handler) (*httptest.Server, *directPool) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, &directPool{addr: srv.Listener.Addr().String()}
}

func TestProxyHTTPRewritesPathAndCredentials(t *testing.T) {
	type seen struct {
		Path, Query, Host, User, Pass, Body string
		Headers                             http.Header
	}
	got := make(chan seen, 1)
	_, pool := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, pw, _ := r.BasicAuth()
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Host, u, pw, string(b), r.Header.Clone()}
		w.Header().Set("X-From-Pod", "yes")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"ok":true}`)
	}))
	var touches atomic.Int32
	p := New(pool, hclog.NewNullLogger(), WithStripHeaders("X-Company-Identity"))
	fe := frontend(t, p, Target{Namespace: "ns", Pod: "cake-session-abc", Password: "s3cret", OnActivity: func() { touches.Add(1) }})

	req, _ := http.NewRequest(http.MethodPost, fe.URL+"/api/v1/sessions/abc/proxy/session/ses_1/prompt_async?directory=%2Fworkspace&auth_token=Zm9vOmJhcg%3D%3D", strings.NewReader(`{"parts":[]}`))
	req.Header.Set("Authorization", "Bearer user-kube-token")
	req.Header.Set("Cookie", "session=user")
	req.Header.Set("X-Auth-Request-Email", "mallory@example.com")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("X-Company-Identity", "admin")
	req.Header.Set("Impersonate-User", "system:admin")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || string(body) != `{"ok":true}` || resp.Header.Get("X-From-Pod") != "yes" {
		t.Fatalf("response %d %q %v", resp.StatusCode, body, resp.Header)
	}

	s := <-got
	if s.Path != "/session/ses_1/prompt_async" {
		t.Errorf("pod saw path %q", s.Path)
	}
	if s.Query != "directory=%2Fworkspace" {
		t.Errorf("pod saw query %q, want auth_token removed and the rest kept", s.Query)
	}
	if s.User != "opencode" || s.Pass != "s3cret" {
		t.Errorf("pod saw Basic auth %q:%q, want the session's OpenCode credentials", s.User, s.Pass)
	}
	if s.Body != `{"parts":[]}` || s.Headers.Get("Content-Type") != "application/json" {
		t.Errorf("pod saw body %q content type %q", s.Body, s.Headers.Get("Content-Type"))
	}
	if s.Host != "127.0.0.1:4096" {
		t.Errorf("pod saw Host %q, want OpenCode's own address", s.Host)
	}
	for _, h := range []string{"Cookie", "X-Auth-Request-Email", "X-Forwarded-For", "X-Company-Identity", "Impersonate-User"} {
		if v := s.Headers.Get(h); v != "" {
			t.Errorf("header %s=%q reached the pod", h, v)
		}
	}
	if touches.Load() < 1 {
		t.Error("a proxied request did not count as activity")
	}
}

func TestProxySSEFlushesEachEvent(t *testing.T) {
	release := make(chan struct{})
	_, pool := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "data: {\"type\":\"server.connected\"}\n\n")
		w.(http.Flusher).Flush()
		// Hold the stream open: the first event must reach the client before this ends.
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "data: {\"type\":\"session.idle\"}\n\n")
	}))
	defer close(release)
	fe := frontend(t, New(pool, nil), Target{Namespace: "ns", Pod: "p", Password: "pw"})

	resp, err := http.Get(fe.URL + "/api/v1/sessions/abc/proxy/event")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case l := <-lines:
		if l != `data: {"type":"server.connected"}` {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first SSE event was held back by the proxy")
	}
}

func TestProxyWebSocket(t *testing.T) {
	_, pool := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, pw, _ := r.BasicAuth(); u != "opencode" || pw != "pw" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("pty: "), msg...)); err != nil {
				return
			}
		}
	}))
	var touches atomic.Int32
	p := New(pool, nil, WithActivityInterval(0))
	fe := frontend(t, p, Target{Namespace: "ns", Pod: "p", Password: "pw", OnActivity: func() { touches.Add(1) }})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(fe.URL, "http") + "/api/v1/sessions/abc/proxy/pty/pty_1/connect"
	c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer user"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	before := touches.Load()
	for _, m := range []string{"ls", "pwd"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "pty: "+m {
			t.Fatalf("got %q", got)
		}
	}
	if touches.Load() <= before {
		t.Error("typing into an upgraded connection did not count as activity")
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func TestProxyOpenCodeRefusesCredentials(t *testing.T) {
	_, pool := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="opencode"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	}))
	fe := frontend(t, New(pool, nil), Target{Namespace: "ns", Pod: "p", Password: "stale"})
	resp, err := http.Get(fe.URL + "/api/v1/sessions/abc/proxy/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("status %d, WWW-Authenticate %q; want 502 and no Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	var e apiv1.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Body.Code != apiv1.CodeUnavailable || !strings.Contains(e.Body.Message, "refused the agent's credentials") {
		t.Fatalf("error body %+v, %v", e, err)
	}
}

func TestProxyPodUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	fe := frontend(t, New(&directPool{addr: addr}, nil), Target{Namespace: "ns", Pod: "p", Password: "pw"})
	resp, err := http.Get(fe.URL + "/api/v1/sessions/abc/proxy/global/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e apiv1.Error
	if resp.StatusCode != http.StatusBadGateway || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Body.Code != apiv1.CodeUnavailable {
		t.Fatalf("status %d body %+v; want 502 Unavailable", resp.StatusCode, e)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want the API's JSON error", ct)
	}
	if !strings.HasPrefix(e.Body.Message, "cannot reach the session's OpenCode: ") {
		t.Errorf("message %q", e.Body.Message)
	}
}

func TestProxyRedactsProviderKeys(t *testing.T) {
	const cfg = `{"provider":{"litellm":{"npm":"@ai-sdk/openai-compatible","options":{"baseURL":"http://litellm/v1","apiKey":"sk-master","headers":{"X-Api-Key":"sk-header"}},"models":{"m":{"limit":{"output":4096}}}}},"model":"litellm/m","count":12345678901234567890}`
	_, pool := backend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/config", "/api/config", "/config/providers":
			if r.Header.Get("Accept-Encoding") != "" {
				t.Errorf("configuration request asked for encoding %q", r.Header.Get("Accept-Encoding"))
			}
			io.WriteString(w, cfg)
		case "/provider":
			io.WriteString(w, `not json`)
		default:
			io.WriteString(w, `{"apiKey":"left-alone-elsewhere"}`)
		}
	}))
	fe := frontend(t, New(pool, nil), Target{Namespace: "ns", Pod: "p", Password: "pw"})
	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, fe.URL+"/api/v1/sessions/abc/proxy"+path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/config", "/api/config", "/config/providers"} {
		code, body := get(path)
		if code != http.StatusOK || strings.Contains(body, "sk-master") || strings.Contains(body, "sk-header") {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if !strings.Contains(body, `"baseURL":"http://litellm/v1"`) || !strings.Contains(body, Redacted) || !strings.Contains(body, "12345678901234567890") {
			t.Fatalf("%s: redaction lost more than the secrets: %s", path, body)
		}
	}
	if code, body := get("/provider"); code != http.StatusBadGateway || strings.Contains(body, "not json") {
		t.Fatalf("an unparseable configuration answer was passed on: %d %s", code, body)
	}
	if _, body := get("/session"); !strings.Contains(body, "left-alone-elsewhere") {
		t.Fatalf("a non-configuration route was rewritten: %s", body)
	}
}
