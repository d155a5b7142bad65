package portforward

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// upgradeProxy stands in front of the test cluster's API server like a proxy that
// allows only one upgrade protocol ("websocket" or "spdy"); it answers the other with
// 400, as such proxies and older API servers do, and counts what it saw.
type upgradeProxy struct {
	allow string

	mu   sync.Mutex
	seen map[string]int
}

func newUpgradeProxy(t *testing.T, c *testcluster.Cluster, allow string) (*upgradeProxy, *rest.Config) {
	t.Helper()
	target, err := url.Parse(c.RESTConfig().Host)
	if err != nil {
		t.Fatal(err)
	}
	// HTTP/1.1 only: upgrades cannot pass through HTTP/2.
	upstream := c.RESTConfig()
	upstream.NextProtos = []string{"http/1.1"}
	rt, err := rest.TransportFor(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &upgradeProxy{allow: allow, seen: map[string]int{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		},
		Transport: rt,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto := strings.ToLower(r.Header.Get("Upgrade"))
		if strings.HasPrefix(proto, "spdy") {
			proto = "spdy"
		}
		p.mu.Lock()
		p.seen[proto]++
		p.mu.Unlock()
		if proto != "" && proto != p.allow {
			http.Error(w, proto+" upgrades are not allowed here", http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return p, &rest.Config{Host: srv.URL}
}

func (p *upgradeProxy) count(proto string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[proto]
}

// echoPod runs a pod whose port 8080 leads to a local server that answers every line
// with "pod: " and the line.
func echoPod(t *testing.T, c *testcluster.Cluster) (namespace, pod string) {
	t.Helper()
	ns := c.NewNamespace(t, nil)
	c.ForwardPodPort(t, ns, "echo", 8080, testcluster.EchoServer(t, "pod: ").Addr().String())
	c.RunPod(t, ns, "echo", nil)
	return ns, "echo"
}

// TestDialerWebSocketFirstSPDYFallback forwards a port of a real pod through a proxy
// that lets only one of the two protocols through: the WebSocket one is tried first,
// and SPDY is used when the WebSocket upgrade is refused.
func TestDialerWebSocketFirstSPDYFallback(t *testing.T) {
	c := testcluster.Get(t)
	ns, pod := echoPod(t, c)
	for _, allow := range []string{"websocket", "spdy"} {
		t.Run(allow, func(t *testing.T) {
			proxy, cfg := newUpgradeProxy(t, c, allow)
			d, err := NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := d.Dial(ns, pod)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			c, err := Open(conn, 8080, 1, Options{RemoteAddr: ns + "/" + pod + ":8080"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "hello\n"); err != nil {
				t.Fatal(err)
			}
			if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "pod: hello\n" {
				t.Fatalf("through the tunnel: %q, %v", got, err)
			}
			if proxy.count("websocket") != 1 {
				t.Errorf("WebSocket upgrades tried: %d, want 1 (always first)", proxy.count("websocket"))
			}
			wantSPDY := 0
			if allow == "spdy" {
				wantSPDY = 1
			}
			if got := proxy.count("spdy"); got != wantSPDY {
				t.Errorf("SPDY upgrades tried: %d, want %d", got, wantSPDY)
			}
		})
	}
}

func TestDialerErrors(t *testing.T) {
	if _, err := NewDialer(nil); err == nil {
		t.Error("NewDialer(nil) succeeded")
	}
	// An API server that refuses both upgrades: the error is the SPDY dialer's, after the
	// WebSocket one was refused.
	var upgrades []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upgrades = append(upgrades, strings.ToLower(r.Header.Get("Upgrade")))
		mu.Unlock()
		http.Error(w, `pods "nope" is forbidden`, http.StatusForbidden)
	}))
	defer srv.Close()
	d, err := NewDialer(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Dial("ns", "nope"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("dial through a refusing server: %v, want the server's reason", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(upgrades) != 2 || upgrades[0] != "websocket" || !strings.HasPrefix(upgrades[1], "spdy") {
		t.Errorf("upgrades tried: %q, want websocket then SPDY", upgrades)
	}
}
