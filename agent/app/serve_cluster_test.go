package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/syncbuf"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

// The install guide's minimal values enable header auth and name no trusted proxy
// network. The agent used to exit at start with "header auth is enabled but no trusted
// proxy CIDR is set" (a crash loop in a real cluster). Run on the test cluster with the
// environment the chart renders for those values, it must become ready, serve
// Kubernetes identities, refuse identity headers naming the chart value, report the
// state in whoami, and log one warning about it.
func TestServeWithHeaderAuthAndNoTrustedProxy(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	cfg, err := parseArgs(t, map[string]string{
		// As charts/cake-agents/templates/_env.tpl renders headerAuth from the seed values.
		"AGENT_HEADER_AUTH_ENABLED":      "true",
		"AGENT_HEADER_AUTH_EMAIL_HEADER": "x-auth-request-email",
		"AGENT_HEADER_AUTH_EMAIL_CLAIM":  "email",
		"AGENT_HEADER_AUTH_USER_HEADER":  "x-auth-request-user",
		"AGENT_HEADER_AUTH_JWT_HEADER":   "x-auth-request-access-token",
		"AGENT_HEADER_AUTH_GROUPS":       "cake-agents:users",
	},
		"--kubeconfig", c.Kubeconfig(), "--namespace", ns, "--http-addr", addr, "--https-addr", "",
		"--database-url", "sqlite://"+filepath.Join(t.TempDir(), "agents.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncbuf.Buffer{}
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, cfg, logs) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("agent stopped with %v\n%s", err, logs)
		}
	}()

	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-served:
			served <- err
			t.Fatalf("the agent exited at start: %v\n%s", err, logs)
		default:
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready after 60s (last: %v)\n%s", err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	sa := c.ServiceAccountConfig(t, ns, "jane")
	whoami := func(headers map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/whoami", nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return resp.StatusCode, body.Bytes()
	}

	code, body := whoami(map[string]string{"Authorization": "Bearer " + sa.BearerToken})
	var who apiv1.WhoAmI
	if code != http.StatusOK || json.Unmarshal(body, &who) != nil {
		t.Fatalf("whoami with a ServiceAccount token: %d %s", code, body)
	}
	if wantUser := fmt.Sprintf("system:serviceaccount:%s:jane", ns); who.Username != wantUser || who.HeaderAuth != apiv1.HeaderAuthNoTrustedProxy {
		t.Errorf("whoami = %s, want user %s and headerAuth %s", body, wantUser, apiv1.HeaderAuthNoTrustedProxy)
	}

	code, body = whoami(map[string]string{"X-Auth-Request-Email": "jane@example.com"})
	if code != http.StatusUnauthorized || !strings.Contains(string(body), "headerAuth.trustedProxyCIDRs") {
		t.Errorf("identity header: %d %s, want 401 naming headerAuth.trustedProxyCIDRs", code, body)
	}
	if n := strings.Count(logs.String(), "header auth is inert"); n != 1 {
		t.Errorf("the inert header auth warning was logged %d times, want once:\n%s", n, logs)
	}
}
