package ui_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/opencode/opencodetest"
	"github.com/cakeai/cake-agents/agent/proxy"
	"github.com/cakeai/cake-agents/agent/server"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/ui"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// loopbackPool reaches every session's OpenCode at one loopback address: the real
// OpenCode of the test, standing in for a session pod's.
type loopbackPool string

func (p loopbackPool) Transport(string, string, int) http.RoundTripper {
	addr := string(p)
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}}
}

// openCodeConversation is the stack's conversation with the real proxy to a real
// OpenCode.
type openCodeConversation struct {
	*fakeConversation
	proxy    *proxy.Proxy
	password string
}

func (c *openCodeConversation) Proxy(w http.ResponseWriter, r *http.Request, s *store.Session, rest string, onActivity func()) {
	c.proxy.Serve(w, r, proxy.Target{SessionID: s.ID, Namespace: "sessions", Pod: "cake-session-" + s.ID, Password: c.password, OnActivity: onActivity}, rest)
}

// TestBrowserOpenCodeWebUI: "Open in OpenCode" opens the session's own OpenCode web UI
// (real OpenCode behind the agent's real proxy) in a new tab on the session's host
// (<id>.localhost, which Chromium resolves to loopback); it loads, and a prompt typed
// there gets the fake model's reply.
func TestBrowserOpenCodeWebUI(t *testing.T) {
	chromiumPath(t)
	oc := opencodetest.Start(t, opencodetest.Options{})
	s := newStackConfig(t, nil, func(so *server.Options, uo *ui.Options, kr *keyring.Keyring, authn *auth.Middleware, agentHost string) {
		_, port, _ := net.SplitHostPort(agentHost)
		so.SessionWeb = &server.SessionWeb{Domain: "localhost:" + port, Scheme: "http", Sealer: kr, Authenticate: authn.WrapWith, Workspace: oc.Workspace}
		so.Conversation = &openCodeConversation{fakeConversation: so.Conversation.(*fakeConversation),
			proxy: proxy.New(loopbackPool(oc.Addr), nil), password: oc.Password}
		uo.SessionWeb = true
	})
	b := newBrowser(t)
	base := s.proxy("alice@example.com").URL
	id := s.createSession(context.Background(), "alice@example.com", apiv1.CreateSessionRequest{Prompt: "Look around."})

	// The conversation the agent made for the session (its initial prompt's): signing in
	// on the session's host lands there, and a prompt typed there is answered by the model.
	conv, err := oc.Client.CreateSession(context.Background(), "fix the flaky test")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := s.st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	sess.OpenCodeSessionID = conv.ID
	if err := s.st.UpdateSession(context.Background(), sess); err != nil {
		t.Fatal(err)
	}

	b.navigate("open the session", chromedp.Navigate(base+"/sessions/"+id))
	b.wait("Open in OpenCode", `document.querySelector('#open-web') && !document.querySelector('#open-web').hidden`, 30*time.Second)
	b.shot("opencode-web-01-session")
	opened := chromedp.WaitNewTarget(b.ctx, func(info *target.Info) bool {
		return info.Type == "page" && strings.HasPrefix(info.URL, "http://"+id+".localhost:")
	})
	b.do("click Open in OpenCode", chromedp.Click(css("#open-web")))
	var tid target.ID
	select {
	case tid = <-opened:
	case <-time.After(30 * time.Second):
		b.fail("the OpenCode tab", context.DeadlineExceeded)
	}
	tabCtx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(tid))
	defer cancel()
	tab := &browser{t: t, ctx: tabCtx}
	tab.wait("OpenCode's web UI in the session's conversation", `location.host.startsWith(`+jsString(id+".localhost:")+`) && location.pathname.endsWith(`+jsString("/session/"+conv.ID)+`) && document.body.innerText.includes("fix the flaky test")`, 60*time.Second)
	tab.shot("opencode-web-02-loaded")
	tab.wait("the prompt box", `document.querySelector('[data-component="prompt-input"]')`, 60*time.Second)
	const prompt = "why is TestQueueDrain flaky"
	tab.do("type a prompt",
		chromedp.Click(css(`[data-component="prompt-input"]`)),
		chromedp.SendKeys(css(`[data-component="prompt-input"]`), prompt),
		chromedp.KeyEvent("\r"),
	)
	tab.wait("the model's reply", `document.body.innerText.includes(`+jsString(fakemodel.Reply(prompt))+`)`, 90*time.Second)
	tab.shot("opencode-web-03-reply")
	if host := tab.eval(`location.host`); !strings.HasPrefix(host, id+".localhost:") {
		t.Errorf("the OpenCode UI ended up at %s", host)
	}
	// The reply went through the agent: the prompt reached the model.
	msgs, err := oc.Client.Messages(context.Background(), conv.ID)
	if err != nil || len(msgs) < 2 {
		t.Fatalf("OpenCode's conversation after the prompt: %d messages (%v)", len(msgs), err)
	}
	// Leave no page streaming from the test servers, which wait for them on Close.
	cancel()
	b.navigate("leave the session page", chromedp.Navigate("about:blank"))
}

func jsString(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
