package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream plays the agent's proxy endpoint: it echoes what arrived and upgrades
// WebSocket requests to an echo connection.
func upstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Upgrade") == "websocket":
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = brw.Flush()
			line, _ := brw.ReadString('\n')
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
		case r.URL.Path == "/agent/api/v1/sessions/s1/proxy/event":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: first\n\n")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		default:
			fmt.Fprintf(w, "%s %s auth=%q cookie=%q ua=%q", r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("Cookie"), r.Header.Get("User-Agent"))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func startProxy(t *testing.T) (base string, password string) {
	t.Helper()
	up := upstream(t)
	u, _ := url.Parse(up.URL + "/agent")
	p := &LocalProxy{
		Password:  "local-secret",
		Upstream:  u,
		Path:      "/api/v1/sessions/s1/proxy",
		Transport: up.Client().Transport,
		Authorize: func(r *http.Request) { r.Header.Set("Authorization", "Bearer cka_user") },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, p.Handler()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), p.Password
}

func get(t *testing.T, req *http.Request) (int, string, *http.Response) {
	t.Helper()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

func TestLocalProxyRequiresThePasswordAndStripsIt(t *testing.T) {
	base, pass := startProxy(t)

	req, _ := http.NewRequest(http.MethodGet, base+"/session?x=1", nil)
	code, _, resp := get(t, req)
	if code != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("without password: %d %v", code, resp.Header)
	}
	req.SetBasicAuth(LocalUser, "wrong")
	if code, _, _ := get(t, req); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}

	req, _ = http.NewRequest(http.MethodPost, base+"/session/a%2Fb?x=1", nil)
	req.SetBasicAuth(LocalUser, pass)
	req.Header.Set("User-Agent", "opencode/1")
	code, body, _ := get(t, req)
	if want := `POST /agent/api/v1/sessions/s1/proxy/session/a%2Fb?x=1 auth="Bearer cka_user" cookie="" ua="opencode/1"`; code != 200 || body != want {
		t.Fatalf("relayed = %d %q, want %q", code, body, want)
	}

	// A browser arrives with ?auth_token= and gets a cookie for the UI's later requests.
	req, _ = http.NewRequest(http.MethodGet, base+"/?auth_token="+url.QueryEscape(AuthToken(pass))+"&y=2", nil)
	code, body, resp = get(t, req)
	if want := `GET /agent/api/v1/sessions/s1/proxy/?y=2 auth="Bearer cka_user" cookie="" ua="Go-http-client/1.1"`; code != 200 || body != want {
		t.Fatalf("auth_token: %d %q, want %q", code, body, want)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == authCookie {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no auth cookie set")
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/assets/x.js", nil)
	req.AddCookie(cookie)
	req.AddCookie(&http.Cookie{Name: "theme", Value: "dark"})
	code, body, _ = get(t, req)
	if want := `GET /agent/api/v1/sessions/s1/proxy/assets/x.js auth="Bearer cka_user" cookie="theme=dark" ua="Go-http-client/1.1"`; code != 200 || body != want {
		t.Fatalf("cookie: %d %q, want %q", code, body, want)
	}
}

func TestLocalProxyStreamsSSE(t *testing.T) {
	base, pass := startProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/event", nil)
	req.SetBasicAuth(LocalUser, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first SSE line = %q, %v (must arrive before the stream ends)", line, err)
	}
}

func TestLocalProxyUpgradesWebSockets(t *testing.T) {
	base, pass := startProxy(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, base+"/pty/1/connect", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.SetBasicAuth(LocalUser, pass)
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "echo hello\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
}

func TestServeTCPCopiesBothWaysAndSurvivesFailedDials(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	var dials atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1) == 1 {
			return nil, fmt.Errorf("tunnel down")
		}
		return net.Dial("tcp", echo.Addr().String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var reported []error
	done := make(chan error, 1)
	go func() {
		done <- ServeTCP(ctx, ln, dial, func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() })
	}()

	// The first connection's dial fails: that connection is closed, the listener stays.
	c1, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c1.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c1.Read(make([]byte, 1)); err == nil {
		t.Fatal("first connection not closed after a failed dial")
	}
	c1.Close()

	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c2, "ping"); err != nil {
		t.Fatal(err)
	}
	_ = c2.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c2)
	if err != nil || string(b) != "ping" {
		t.Fatalf("echo = %q, %v", b, err)
	}
	c2.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || reported[0].Error() != "tunnel down" {
		t.Errorf("reported = %v", reported)
	}
}
