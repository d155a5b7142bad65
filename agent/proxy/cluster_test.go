package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/agent/opencode/opencodetest"
	"github.com/cakeai/cake-agents/agent/proxy"
	"github.com/cakeai/cake-agents/agent/tunnel"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// sessionPod is a pod shaped enough like a session pod for kwok to run it.
func sessionPod(name string) *corev1.Pod {
	no, yes := false, true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "cake-agents-session"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &yes,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "opencode",
				Image: "example.invalid/opencode:never-pulled",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// runSessionPod creates a Running kwok pod whose port 4096 reaches addr.
func runSessionPod(t *testing.T, c *testcluster.Cluster, name, addr string) string {
	t.Helper()
	ns := c.NewNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	c.ForwardPodPort(t, ns, name, 4096, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.AdminClient().CoreV1().Pods(ns).Create(ctx, sessionPod(name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitForPod(t, ns, name, testcluster.PodRunning)
	return ns
}

func newFrontend(t *testing.T, p *proxy.Proxy, target proxy.Target) *httptest.Server {
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

// TestProxyThroughClusterTunnel round-trips HTTP, SSE and WebSocket through the agent's
// proxy and a real API server's port-forward (kwok stands in for the kubelet and
// forwards the pod's port 4096 to a local stand-in for OpenCode).
func TestProxyThroughClusterTunnel(t *testing.T) {
	c := testcluster.Get(t)
	const password = "pod-password"
	releaseSSE := make(chan struct{})
	standIn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, pw, ok := r.BasicAuth(); !ok || u != "opencode" || pw != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="opencode"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		switch {
		case r.URL.Path == "/global/health":
			fmt.Fprint(w, `{"healthy":true,"version":"stand-in"}`)
		case r.URL.Path == "/echo":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.Copy(w, r.Body)
		case r.URL.Path == "/event":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"id\":\"1\",\"type\":\"server.connected\",\"properties\":{}}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-releaseSSE:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, "data: {\"id\":\"2\",\"type\":\"session.idle\",\"properties\":{\"sessionID\":\"ses_1\"}}\n\n")
		case strings.HasSuffix(r.URL.Path, "/connect"):
			ws, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer ws.CloseNow()
			for {
				typ, msg, err := ws.Read(r.Context())
				if err != nil {
					return
				}
				if err := ws.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(standIn.Close)
	const pod = "cake-session-proxytest"
	ns := runSessionPod(t, c, pod, standIn.Listener.Addr().String())

	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: testWriter{t}})
	pool, err := tunnel.NewPool(c.RESTConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var touches int
	touched := make(chan struct{}, 100)
	p := proxy.New(pool, log)
	fe := newFrontend(t, p, proxy.Target{Namespace: ns, Pod: pod, Password: password, OnActivity: func() {
		touched <- struct{}{}
	}})
	base := fe.URL + "/api/v1/sessions/proxytest/proxy"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("http", func(t *testing.T) {
		resp, err := http.Get(base + "/global/health")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != `{"healthy":true,"version":"stand-in"}` {
			t.Fatalf("health through the proxy: %d %s", resp.StatusCode, body)
		}

		// A large body in both directions arrives intact.
		payload := make([]byte, 4<<20)
		_, _ = rand.Read(payload)
		resp, err = http.Post(base+"/echo", "application/octet-stream", bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("echo of %d bytes came back as %d bytes (%v)", len(payload), len(got), err)
		}
	})

	t.Run("sse", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/event", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := make(chan string, 8)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if sc.Text() != "" {
					lines <- sc.Text()
				}
			}
		}()
		select {
		case l := <-lines:
			if !strings.Contains(l, "server.connected") {
				t.Fatalf("first event %q", l)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the first event did not arrive while the stream stayed open")
		}
		close(releaseSSE)
		select {
		case l := <-lines:
			if !strings.Contains(l, "session.idle") {
				t.Fatalf("second event %q", l)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the second event never arrived")
		}
	})

	t.Run("websocket", func(t *testing.T) {
		wsURL := "ws" + strings.TrimPrefix(base, "http") + "/pty/pty_1/connect"
		ws, _, err := websocket.Dial(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		for i := range 3 {
			msg := fmt.Sprintf("keystroke %d", i)
			if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, got, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "echo: "+msg {
				t.Fatalf("got %q", got)
			}
		}
		ws.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("client over the tunnel", func(t *testing.T) {
		oc := opencode.NewForTransport(pool.Transport(ns, pod, opencode.Port), password)
		h, err := oc.Health(ctx)
		if err != nil || h.Version != "stand-in" {
			t.Fatalf("Health over the tunnel = %+v, %v", h, err)
		}
	})

	if n := pool.Len(); n != 1 {
		t.Errorf("everything went to one pod but the pool holds %d connections", n)
	}
	for len(touched) > 0 {
		<-touched
		touches++
	}
	if touches == 0 {
		t.Error("proxied requests were not counted as activity")
	}

	t.Run("nothing listening", func(t *testing.T) {
		// Port 5555 of the pod is forwarded nowhere: the port-forward protocol opens the
		// stream anyway, and the kubelet's error must surface on it instead of a bare EOF.
		rt := pool.Transport(ns, pod, 5555)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a request to an unforwarded port succeeded: %d", resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "error forwarding port 5555") {
			t.Fatalf("err = %v, want the kubelet's forwarding error", err)
		}
	})
}

// TestRealOpenCodeThroughCluster delivers a prompt to a real OpenCode through the
// cluster tunnel, reads the fake model's reply back, and follows the events through the
// proxy: the path a session's first prompt and `session logs -f` take.
func TestRealOpenCodeThroughCluster(t *testing.T) {
	c := testcluster.Get(t)
	model := fakemodel.New()
	oc := opencodetest.Start(t, opencodetest.Options{Password: "real-pod-password", Model: model})
	const pod = "cake-session-realoc"
	ns := runSessionPod(t, c, pod, oc.Addr)

	pool, err := tunnel.NewPool(c.RESTConfig(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Follow the events through the proxy, as a browser or `session logs -f` would.
	fe := newFrontend(t, proxy.New(pool, nil), proxy.Target{Namespace: ns, Pod: pod, Password: oc.Password})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fe.URL+"/api/v1/sessions/realoc/proxy/event", nil)
	req.Header.Set("Authorization", "Bearer not-for-opencode")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events through the proxy: %d %s", resp.StatusCode, b)
	}
	idle := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev opencode.Event
			if json.Unmarshal([]byte(data), &ev) == nil && ev.Type == "session.idle" {
				idle <- ev.SessionID()
				return
			}
		}
	}()

	client := opencode.NewForTransport(pool.Transport(ns, pod, opencode.Port), oc.Password)
	prompt := "prompt through the cluster tunnel"
	id, err := opencode.DeliverPrompt(ctx, client, "through the tunnel", prompt)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case sid := <-idle:
		if sid != id {
			t.Fatalf("session.idle for %q, want %q", sid, id)
		}
	case <-ctx.Done():
		t.Fatal("no session.idle event through the proxy")
	}
	msgs, err := client.Messages(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Text != prompt || msgs[1].Role != "assistant" || msgs[1].Text != fakemodel.Reply(prompt) {
		t.Fatalf("messages over the tunnel: %+v", msgs)
	}
	if !model.Received(prompt) {
		t.Fatal("the fake model never received the prompt")
	}

	// OpenCode answers /config with the resolved provider key; through the proxy it is
	// redacted (opencodetest's key is "fake-key").
	for _, path := range []string{"/config", "/config/providers", "/provider"} {
		r, err := http.Get(fe.URL + "/api/v1/sessions/realoc/proxy" + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusOK || strings.Contains(string(b), "fake-key") || !strings.Contains(string(b), proxy.Redacted) {
			t.Fatalf("%s through the proxy: %d %s", path, r.StatusCode, b)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
