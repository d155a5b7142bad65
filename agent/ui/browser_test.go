package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// These tests drive the system's Chromium (Debian package chromium) headless against
// the real agent HTTP stack of newStack. They are skipped with -short.

// artifactDir is where screenshots go (gitignored); look at them after a run.
var artifactDir = filepath.Join("..", "..", "test", "artifacts", "ui")

func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test: skipped with -short")
	}
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found for the browser tests: install it (Debian: apt-get install -y chromium), set CHROMIUM=/path/to/chrome, or run go test -short")
	return ""
}

type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	// problems are uncaught exceptions and Content-Security-Policy violations.
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", exe, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") || strings.Contains(m.Text, "Refused to") {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("browser console: %s", p)
		}
	})
	return b
}

// do runs actions, failing the test with a screenshot on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// navigate runs actions that end in a navigation and returns the document's response.
func (b *browser) navigate(what string, actions ...chromedp.Action[chromedp.Void]) *network.Response {
	b.t.Helper()
	res, err := chromedp.RunResponse(b.ctx, actions...)
	if err != nil {
		b.fail(what, err)
	}
	return res
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	b.shot("failure-" + strings.NewReplacer(" ", "-", "/", "-").Replace(what))
	text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	b.t.Fatalf("%s: %v\npage text:\n%s", what, err, text)
}

// wait polls a JavaScript expression until it is truthy.
func (b *browser) wait(what, expr string, timeout time.Duration) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingTimeout(timeout))); err != nil {
		b.fail("wait for "+what, err)
	}
}

func (b *browser) eval(expr string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.fail("evaluate "+expr, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return b.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

// shot saves a screenshot of the viewport under test/artifacts/ui.
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.MkdirAll(artifactDir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(artifactDir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func css(s string) chromedp.CSS { return chromedp.CSS(s) }

// TestBrowserSessionLifecycle: a user behind the authenticating proxy creates a
// session from the form, sees it turn Running, sees the agent's reply stream in,
// sends a prompt, stops and deletes the session.
func TestBrowserSessionLifecycle(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	lifecycle(t, s, b, "", true)
}

// TestBrowserFormRefusesBadRepository: the form shows the API's refusal of a repository
// the session's init container could not clone, naming the fix, and creates nothing (the
// API once answered 201 and the session failed later).
func TestBrowserFormRefusesBadRepository(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	base := s.proxy("alice@example.com").URL
	for i, tc := range []struct{ repo, want string }{
		{"-x@github.com:org/repo", "must not start with '-'"},
		{"git@github.com:/abs/repo", "ssh://git@github.com/abs/repo"},
	} {
		b.navigate("open the form", chromedp.Navigate(base+"/new"))
		b.do("fill the form",
			chromedp.WaitVisible(css("#prompt")),
			chromedp.SendKeys(css("#prompt"), "Fix the build."),
			chromedp.SendKeys(css("#repo"), tc.repo),
			chromedp.Click(css("#submit")),
		)
		b.wait("the error", `!document.querySelector('#error').hidden && document.querySelector('#error').textContent !== ''`, 10*time.Second)
		b.shot(fmt.Sprintf("form-refuses-repo-%d", i+1))
		if got := b.text("#error"); !strings.Contains(got, tc.want) {
			t.Errorf("%q: the form shows %q, want it to contain %q", tc.repo, got, tc.want)
		}
		if path := b.eval(`location.pathname`); path != "/new" {
			t.Errorf("%q: after submit the browser is at %q", tc.repo, path)
		}
	}
	page, err := s.st.ListSessions(context.Background(), store.SessionFilter{})
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("the form created %d sessions (%v)", len(page.Items), err)
	}
}

// lifecycle is the session flow of a user behind the proxy; screenshots are named
// with prefix. persistent asks for a persistent workspace.
func lifecycle(t *testing.T, s *stack, b *browser, prefix string, persistent bool) {
	base := s.proxy("alice@example.com").URL

	res := b.navigate("open the sessions page", chromedp.Navigate(base+"/"))
	if res.Status != http.StatusOK || res.Headers["Content-Security-Policy"] == nil {
		t.Fatalf("GET /: %d, headers %v", res.Status, res.Headers)
	}
	b.wait("the empty state", `!document.querySelector('#empty').hidden`, 10*time.Second)
	b.shot(prefix + "01-sessions-empty")

	b.navigate("open the form", chromedp.Click(css(`.pagehead a[href="/new"]`)))
	b.do("fill the form",
		chromedp.WaitVisible(css("#prompt")),
		chromedp.SendKeys(css("#prompt"), "Fix the flaky TestQueueDrain and explain the cause."),
		chromedp.SendKeys(css("#repo"), "https://github.com/cakeai/demo-service.git"),
		chromedp.SendKeys(css("#branch"), "main"),
		chromedp.SendKeys(css("#title"), "Flaky queue test"),
		chromedp.Click(css("#private")),
	)
	if persistent {
		b.do("persistent", chromedp.Click(css("#persistent")))
	}
	b.shot(prefix + "02-create-form")
	// The branch the agent in the session will work on has a pull request already (a
	// session may be Running, and looked at, before the test gets to see it).
	pr := s.github.OpenPullRequest("cakeai", "demo-service", WorkBranch)
	b.navigate("submit the form", chromedp.Click(css("#submit")))
	path := b.eval(`location.pathname`)
	id := strings.TrimPrefix(path, "/sessions/")
	if !strings.HasPrefix(path, "/sessions/") || id == "" {
		t.Fatalf("after create the browser is at %q", path)
	}
	sess, err := s.st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatalf("the form created no session %s: %v", id, err)
	}
	if sess.Title != "Flaky queue test" || sess.Repo != "https://github.com/cakeai/demo-service.git" || sess.Branch != "main" || sess.Private || sess.Persistent != persistent ||
		sess.Prompt != "Fix the flaky TestQueueDrain and explain the cause." {
		t.Errorf("stored session does not match the form: %+v", sess)
	}
	b.wait("the session detail", `!document.querySelector('#detail').hidden`, 10*time.Second)
	if got := b.text("#attach-cmd"); got != "kubectl agents attach "+id {
		t.Errorf("attach command %q", got)
	}
	if got := b.text("#pf-cmd"); got != "kubectl agents port-forward "+id {
		t.Errorf("port-forward command %q", got)
	}
	b.shot(prefix + "03-session-starting")

	b.wait("state Running", `document.querySelector('#state').textContent === 'Running'`, 20*time.Second)
	b.wait("the branch and pull request", fmt.Sprintf(`(() => { const a = document.querySelector('#pull-request'); return a && a.href === %q && [...document.querySelectorAll('#kv dd')].some(e => e.textContent === %q) })()`, pr, WorkBranch), 10*time.Second)
	if got := b.text("#pull-request"); got != "cakeai/demo-service/pull/1" {
		t.Errorf("pull request link text %q", got)
	}
	// OpenCode's own web UI cannot live under the proxy path (its assets load from
	// absolute paths: a blank page), so no button offers it.
	if got := b.eval(`String(document.querySelector('#open') === null && ![...document.querySelectorAll('a, button')].some(e => /Open in OpenCode/.test(e.textContent)))`); got != "true" {
		t.Errorf("the page offers Open in OpenCode, which opens a blank page")
	}
	// The initial prompt goes to the agent when the session is Running; its reply
	// shows up in the conversation.
	b.wait("the reply to the initial prompt", fmt.Sprintf(`[...document.querySelectorAll('.msg-assistant .msg-text')].some(e => e.textContent === %q)`, Reply), 30*time.Second)
	b.wait("the initial prompt", `[...document.querySelectorAll('.msg-user .msg-text')].some(e => e.textContent.startsWith('Fix the flaky'))`, 5*time.Second)

	// A prompt from the composer: the reply streams in, delta by delta, over SSE.
	b.do("send a prompt",
		chromedp.SendKeys(css("#text"), "Please add a regression test too."),
		chromedp.Click(css("#send-btn")),
	)
	b.wait("a streaming reply", `(() => { const m = document.querySelector('.msg-streaming .msg-text'); return m && m.textContent.length > 0 && m.textContent.length < `+fmt.Sprint(len(Reply))+` })()`, 15*time.Second)
	b.shot(prefix + "04-reply-streaming")
	b.wait("the full second reply", fmt.Sprintf(`[...document.querySelectorAll('.msg-assistant .msg-text')].filter(e => e.textContent === %q).length === 2 && !document.querySelector('.msg-streaming')`, Reply), 30*time.Second)
	if got := s.conv.sentTexts(); len(got) != 2 || got[1] != id+":Please add a regression test too." {
		t.Errorf("prompts delivered: %q", got)
	}
	b.shot(prefix + "05-conversation")

	// Phone-sized screens get the same page, one column.
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.wait("layout", `document.querySelector('#detail').getBoundingClientRect().width <= 390`, 5*time.Second)
	if overflow := b.eval(`String(document.documentElement.scrollWidth > window.innerWidth + 1)`); overflow != "false" {
		t.Errorf("the session page scrolls sideways on a phone")
	}
	b.shot(prefix + "06-session-phone")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// What the agent recorded of the conversation is what a stopped session shows.
	recorded, _ := json.Marshal(apiv1.Message{ID: "msg_recorded", Role: "assistant", Text: "Recorded before the stop.", CreatedAt: time.Now()})
	if err := s.st.PutTranscript(context.Background(), &store.Transcript{SessionID: id, OwnerID: sess.OwnerID},
		[]*store.TranscriptMessage{{ID: "msg_recorded", Role: "assistant", Body: recorded, CreatedAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	b.do("stop", chromedp.Click(css("#stop")))
	b.wait("state Stopped", `document.querySelector('#state').textContent === 'Stopped'`, 20*time.Second)
	b.wait("the Start button", `!document.querySelector('#start').hidden && document.querySelector('#stop').hidden`, 5*time.Second)
	if got := b.text("#reason"); !strings.Contains(got, "StoppedByUser") {
		t.Errorf("the stop reason is not shown: %q", got)
	}
	b.wait("the recorded conversation of the stopped session", `[...document.querySelectorAll('.msg-assistant .msg-text')].some(e => e.textContent === 'Recorded before the stop.')`, 10*time.Second)
	b.shot(prefix + "07-session-stopped")

	// Fork: a new session from this one, which names it; then it goes again.
	b.navigate("fork", chromedp.Click(css("#fork")))
	forkPath := b.eval(`location.pathname`)
	forkID := strings.TrimPrefix(forkPath, "/sessions/")
	if forkID == id || !strings.HasPrefix(forkPath, "/sessions/") {
		t.Fatalf("after fork the browser is at %q", forkPath)
	}
	if f, err := s.st.GetSession(context.Background(), forkID); err != nil || f.ForkedFrom != id || f.Repo != sess.Repo || f.Title != "fork of Flaky queue test" {
		t.Fatalf("the fork: %+v, %v", f, err)
	}
	b.wait("the fork's page", `!document.querySelector('#detail').hidden`, 10*time.Second)
	if err := s.st.DeleteSession(context.Background(), forkID); err != nil {
		t.Fatal(err)
	}
	b.navigate("back to the session", chromedp.Navigate(base+"/sessions/"+id))
	b.wait("the session detail again", `!document.querySelector('#detail').hidden`, 10*time.Second)

	b.do("ask to delete", chromedp.Click(css("#delete")), chromedp.WaitVisible(css("#confirm-ok")))
	b.shot(prefix + "08-delete-confirm")
	b.navigate("confirm delete", chromedp.Click(css("#confirm-ok")))
	if p := b.eval(`location.pathname`); p != "/" {
		t.Fatalf("after delete the browser is at %q", p)
	}
	b.wait("the session to leave the list", fmt.Sprintf(`!document.querySelector('tr[data-id=%q]') && !document.querySelector('#empty').hidden`, id), 20*time.Second)
	if _, err := s.st.GetSession(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session %s still stored: %v", id, err)
	}
}

// TestBrowserListTokensAdminAndSignIn: the live list, the tokens page, the admin
// view, and token sign-in for a browser without the proxy.
func TestBrowserListTokensAdminAndSignIn(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	alice := s.proxy("alice@example.com").URL
	root := s.proxy("root@example.com").URL

	// Alice's list updates by itself when a session appears and changes state.
	b.navigate("sessions", chromedp.Navigate(alice+"/"))
	b.wait("the empty state", `!document.querySelector('#empty').hidden`, 10*time.Second)
	ctx := context.Background()
	for i, title := range []string{"Upgrade the Go toolchain", "Triage flaky e2e", "Write the release notes"} {
		priv := i != 1
		s.createSession(ctx, "alice@example.com", apiv1.CreateSessionRequest{Title: title, Repo: "https://github.com/cakeai/cake-agents.git", Private: &priv})
	}
	b.wait("three rows", `document.querySelectorAll('#sessions tbody tr').length === 3`, 15*time.Second)
	b.wait("all Running", `[...document.querySelectorAll('#sessions tbody tr')].every(r => r.dataset.state === 'Running')`, 20*time.Second)
	b.shot("10-sessions-list")
	b.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.wait("layout", `window.innerWidth <= 390`, 5*time.Second)
	if overflow := b.eval(`String(document.documentElement.scrollWidth > window.innerWidth + 1)`); overflow != "false" {
		t.Errorf("the session list scrolls sideways on a phone")
	}
	b.shot("11-sessions-phone")
	b.do("desktop viewport", chromedp.EmulateViewport(1280, 860))

	// Tokens: created and shown once, then revoked.
	b.navigate("tokens", chromedp.Navigate(alice+"/tokens"))
	b.wait("the empty tokens state", `!document.querySelector('#empty').hidden`, 10*time.Second)
	b.do("create a token", chromedp.SendKeys(css("#name"), "laptop"), chromedp.Click(css(`#create-token button[type="submit"]`)))
	b.wait("the new secret", `!document.querySelector('#secret').hidden && document.querySelector('#secret-value').textContent.startsWith('cka_')`, 10*time.Second)
	b.wait("the token row", `document.querySelectorAll('#tokens tbody tr').length === 1`, 10*time.Second)
	b.shot("12-tokens-created")
	secret := b.text("#secret-value")
	b.navigate("reload tokens", chromedp.Reload())
	if strings.Contains(b.eval(`document.documentElement.outerHTML`), secret) {
		t.Error("the token secret is still on the page after a reload")
	}
	b.wait("the token row", `document.querySelectorAll('#tokens tbody tr').length === 1`, 10*time.Second)
	b.do("revoke", chromedp.Click(css(`[data-revoke]`)))
	b.wait("no tokens", `!document.querySelector('#empty').hidden`, 10*time.Second)

	// Admin: every session, private ones of others included, and the audit log.
	b.navigate("admin", chromedp.Navigate(root+"/admin"))
	b.wait("all sessions", `document.querySelectorAll('#sessions tbody tr').length === 3`, 15*time.Second)
	b.wait("audit rows", `document.querySelectorAll('#audit tbody tr').length >= 2`, 10*time.Second)
	if !strings.Contains(b.text("#audit"), "token.delete") {
		t.Errorf("the audit log lacks the revocation: %s", b.text("#audit"))
	}
	b.shot("13-admin")
	// Root sees only alice's public session on the normal list.
	b.navigate("root's list", chromedp.Navigate(root+"/"))
	b.wait("one public row", `document.querySelectorAll('#sessions tbody tr').length === 1`, 15*time.Second)

	// A browser without the proxy signs in with a token and works with the cookie
	// (the API's CSRF checks pass for the UI's own requests).
	token := s.token("erin@example.com")
	res := b.navigate("the agent without the proxy", chromedp.Navigate(s.agent.URL+"/new"))
	if res.Status != http.StatusUnauthorized {
		t.Errorf("no credentials: status %d, want 401", res.Status)
	}
	b.do("the sign-in form", chromedp.WaitVisible(css("#token")))
	b.shot("14-sign-in")
	b.navigate("sign in", chromedp.SendKeys(css("#token"), token), chromedp.Submit(css("#token")))
	if p := b.eval(`location.pathname`); p != "/new" {
		t.Fatalf("after sign-in the browser is at %q", p)
	}
	b.do("create with the cookie", chromedp.WaitVisible(css("#prompt")), chromedp.SendKeys(css("#prompt"), "Hello from a token user"))
	b.navigate("submit", chromedp.Click(css("#submit")))
	b.wait("state Running", `document.querySelector('#state').textContent === 'Running'`, 20*time.Second)
	if owner := b.eval(`[...document.querySelectorAll('#kv dd')][1].textContent`); owner != "erin@example.com" {
		t.Errorf("owner shown as %q", owner)
	}
	b.shot("15-session-token-user")
	b.navigate("sign out", chromedp.Click(css(`form[action="/logout"] button`)))
	if p := b.eval(`location.pathname`); p != "/login" {
		t.Errorf("after sign-out the browser is at %q", p)
	}
	res = b.navigate("after sign-out", chromedp.Navigate(s.agent.URL+"/"))
	if res.Status != http.StatusUnauthorized {
		t.Errorf("after sign-out: status %d, want 401", res.Status)
	}
}

// TestBrowserForgedIdentityHeader: a browser that sends an identity header itself,
// from a peer that is not a trusted proxy, gets no page.
func TestBrowserForgedIdentityHeader(t *testing.T) {
	s := newStack(t)
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback for an untrusted peer address: %v", err)
	}
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	s.createSession(context.Background(), "root@example.com", apiv1.CreateSessionRequest{Title: "root's secret work"})

	b := newBrowser(t)
	if _, err := chromedp.Call(b.ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(b.ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{emailHeader: "root@example.com"}}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/admin"} {
		res := b.navigate("forged "+path, chromedp.Navigate("http://"+ln.Addr().String()+path))
		if res.Status != http.StatusUnauthorized {
			t.Errorf("forged header on %s: status %d, want 401", path, res.Status)
		}
		if res.Headers["Content-Security-Policy"] == nil {
			t.Errorf("forged header on %s: no Content-Security-Policy", path)
		}
		page := b.eval(`document.body.innerText`)
		if strings.Contains(page, "root's secret work") || strings.Contains(page, "root@example.com") || b.eval(`document.body.dataset.page`) != "login" {
			t.Errorf("forged header on %s got a page:\n%s", path, page)
		}
		if !strings.Contains(page, "not a trusted proxy") {
			t.Errorf("the 401 page does not say why:\n%s", page)
		}
	}
	b.shot("20-forged-header")
}

// createSession creates a session owned by email through the controller stand-in.
func (s *stack) createSession(ctx context.Context, email string, req apiv1.CreateSessionRequest) string {
	s.t.Helper()
	sess := &store.Session{Title: req.Title, Repo: req.Repo, OwnerID: s.user(email), Private: req.Private == nil || *req.Private,
		State: apiv1.StatePending, IdleTimeout: time.Hour, TTL: 24 * time.Hour}
	sess.ID = fmt.Sprintf("t%d", time.Now().UnixNano()%1000000000)
	now := time.Now().UTC()
	sess.CreatedAt, sess.UpdatedAt, sess.LastActivityAt, sess.LastActivitySource = now, now, now, "create"
	if err := s.ctrl.Create(ctx, sess, 0); err != nil {
		s.t.Fatal(err)
	}
	return sess.ID
}

// TestBrowserGitCredentials: a token saved in the form is listed by host and user name and
// never shown again (nor left in the form); linking GitHub shows GitHub's code, and once
// the user authorizes at (the local stand-in for) GitHub the page says so and lists
// github.com; Remove removes.
func TestBrowserGitCredentials(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	alice := s.proxy("alice@example.com").URL
	const token = "glpat-ui-secret-0123456789"

	b.navigate("git credentials", chromedp.Navigate(alice+"/credentials"))
	b.wait("the empty state", `!document.querySelector('#empty').hidden`, 10*time.Second)
	b.do("fill the form",
		chromedp.SendKeys(css("#host"), "https://Git.Example.com/org/repo.git"),
		chromedp.SendKeys(css("#username"), "alice"),
		chromedp.SendKeys(css("#token"), token),
		chromedp.Click(css(`#add-credential button[type=submit]`)),
	)
	b.wait("the listed credential", `document.querySelector('#credentials tbody tr[data-host="git.example.com"]') !== null`, 10*time.Second)
	if got := b.text(`#credentials tbody tr[data-host="git.example.com"]`); !strings.Contains(got, "alice") {
		t.Errorf("row = %q, want the user name", got)
	}
	if html := b.eval(`document.documentElement.outerHTML + document.querySelector('#token').value`); strings.Contains(html, token) {
		t.Error("the token is still on the page after saving")
	}
	b.shot("40-git-credentials")

	b.do("link GitHub", chromedp.Click(css("#github-link")))
	b.wait("GitHub's code", `document.querySelector('#github-user-code').textContent !== ''`, 10*time.Second)
	code := b.text("#github-user-code")
	if uri := b.text("#github-uri"); uri != "https://github.com/login/device" {
		t.Errorf("verification URI %q", uri)
	}
	b.shot("41-github-code")
	if !s.github.Approve(code, "gho_ui_linked_token") {
		t.Fatalf("the page shows %q, which GitHub never issued", code)
	}
	b.wait("linked", `document.querySelector('#github-status').textContent.startsWith('linked')`, 15*time.Second)
	b.wait("github.com listed", `document.querySelector('#credentials tbody tr[data-host="github.com"]') !== null`, 10*time.Second)
	if html := b.eval(`document.documentElement.outerHTML`); strings.Contains(html, "gho_ui_linked_token") {
		t.Error("the linked token is on the page")
	}

	b.do("remove", chromedp.Click(css(`#credentials tbody tr[data-host="git.example.com"] [data-remove]`)))
	b.wait("removed", `document.querySelector('#credentials tbody tr[data-host="git.example.com"]') === null`, 10*time.Second)
}
