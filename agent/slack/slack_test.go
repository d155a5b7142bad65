package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakeslack"
)

const (
	testSecret = "8f742231b10e8888abcd99yyyzzz85a5"
	testToken  = "xoxb-test-token"
)

// TestVerifyDocumentedExample: the example request of Slack's "Verifying requests
// from Slack" page verifies at its own time; stale, future, tampered, unsigned and
// malformed ones do not.
func TestVerifyDocumentedExample(t *testing.T) {
	body := []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
	const sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
	at := time.Unix(1531420618, 0)
	if got := Sign(testSecret, "1531420618", body); got != sig {
		t.Fatalf("Sign = %s, want Slack's %s", got, sig)
	}
	if err := Verify(testSecret, "1531420618", sig, body, at.Add(4*time.Minute)); err != nil {
		t.Errorf("good request: %v", err)
	}
	for name, c := range map[string]struct {
		secret, ts, sig string
		body            []byte
		now             time.Time
	}{
		"stale":       {testSecret, "1531420618", sig, body, at.Add(5*time.Minute + time.Second)},
		"future":      {testSecret, "1531420618", sig, body, at.Add(-6 * time.Minute)},
		"tampered":    {testSecret, "1531420618", sig, append([]byte{}, append(body, '&')...), at},
		"wrong key":   {"another secret", "1531420618", sig, body, at},
		"other time":  {testSecret, "1531420619", sig, body, at},
		"unsigned":    {testSecret, "1531420618", "", body, at},
		"no time":     {testSecret, "", sig, body, at},
		"no secret":   {"", "1531420618", sig, body, at},
		"v1 prefixed": {testSecret, "1531420618", "v1=" + sig[3:], body, at},
	} {
		if err := Verify(c.secret, c.ts, c.sig, c.body, c.now); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestParseText(t *testing.T) {
	for _, c := range []struct{ in, repo, prompt string }{
		{"<@U0BOT> repo:acme/widgets fix the flaky test", "https://github.com/acme/widgets", "fix the flaky test"},
		{"<@U0BOT|cake> fix it repo:acme/widgets.git please", "https://github.com/acme/widgets", "fix it please"},
		{"<@U0BOT> look at <https://git.example.com/acme/widgets.git> and <https://example.com/docs/page|the docs>", "https://git.example.com/acme/widgets.git",
			"look at https://git.example.com/acme/widgets.git and https://example.com/docs/page"},
		{"<@U0BOT> read <https://example.com/a/b/c|docs>", "", "read https://example.com/a/b/c"},
		// A two-part link is not a repository unless it ends in .git or is on a git host.
		{"<@U0BOT> follow <https://docs.example.com/guide/setup> on <https://github.com/acme/widgets>", "https://github.com/acme/widgets",
			"follow https://docs.example.com/guide/setup on https://github.com/acme/widgets"},
		{"<@U0BOT> see <http://github.com/acme/widgets>", "", "see http://github.com/acme/widgets"},
		{"<@U0BOT> on <https://ghe.example.com/acme/widgets/>", "https://ghe.example.com/acme/widgets", "on https://ghe.example.com/acme/widgets/"},
		{"<@U0BOT> why is a &lt; b &amp;&amp; c?", "", "why is a < b && c?"},
		{"<@U0BOT>", "", ""},
	} {
		got := ParseText(c.in, append(DefaultRepoHosts, "ghe.example.com")...)
		if got.Repo != c.repo || got.Prompt != c.prompt {
			t.Errorf("ParseText(%q) = %+v, want repo %q prompt %q", c.in, got, c.repo, c.prompt)
		}
	}
}

// fakeSessions creates sessions in the store as the controller would (Pending).
type fakeSessions struct {
	st      store.Store
	mu      sync.Mutex
	n       int
	touched []string
}

func (f *fakeSessions) Create(ctx context.Context, s *store.Session, maxActive int) error {
	f.mu.Lock()
	f.n++
	s.ID = fmt.Sprintf("s%d", f.n)
	f.mu.Unlock()
	s.State = apiv1.StatePending
	return f.st.CreateSession(ctx, s, maxActive)
}

func (f *fakeSessions) Delete(ctx context.Context, id string) error {
	return f.st.DeleteSession(ctx, id)
}

func (f *fakeSessions) Touch(_ context.Context, id, source string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touched = append(f.touched, id+" "+source)
}

// fakeConversation answers with what the test set and records prompts.
type fakeConversation struct {
	mu       sync.Mutex
	sent     []string
	messages map[string][]apiv1.Message
	busy     bool
}

func (f *fakeConversation) Send(_ context.Context, s *store.Session, text string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, s.ID+": "+text)
	return nil
}

func (f *fakeConversation) Messages(_ context.Context, s *store.Session) ([]apiv1.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.messages[s.ID], nil
}

func (f *fakeConversation) Busy(context.Context, *store.Session) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.busy, nil
}

// denyAuthorizer refuses the users it names.
type denyAuthorizer map[string]bool

func (d denyAuthorizer) Authorize(_ context.Context, id *auth.Identity, _ string) (bool, string, error) {
	return !d[id.Username], "no RoleBinding", nil
}

func (d denyAuthorizer) AuthorizeSession(_ context.Context, id *auth.Identity, _, _ string) (bool, string, error) {
	return !d[id.Username], "no RoleBinding", nil
}

type testEnv struct {
	t     *testing.T
	st    store.Store
	slack *fakeslack.Server
	h     *Handler
	srv   *httptest.Server
	sess  *fakeSessions
	conv  *fakeConversation
	alice *store.User
	now   time.Time
}

func newTestEnv(t *testing.T, mod ...func(*Options)) *testEnv {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	fs := fakeslack.New(testToken)
	api := fs.Start()
	t.Cleanup(api.Close)
	fs.AddUser("UALICE", "Alice@Example.com")
	fs.AddUser("UBOB", "bob@example.com")
	fs.AddUser("UMALLORY", "mallory@example.com")
	fs.AddUser("UNOMAIL", "")
	alice := &store.User{Source: "kubernetes", Subject: "alice@example.com", Email: "alice@example.com", Groups: []string{"cake-agents:users"}}
	bob := &store.User{Source: "header", Subject: "bob@example.com", Email: "bob@example.com"}
	for _, u := range []*store.User{alice, bob} {
		if err := st.UpsertUser(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
	e := &testEnv{t: t, st: st, slack: fs, sess: &fakeSessions{st: st}, conv: &fakeConversation{messages: map[string][]apiv1.Message{}}, alice: alice, now: time.Now()}
	o := Options{SigningSecret: testSecret, Client: &Client{APIURL: api.URL + "/api", Token: testToken}, Store: st,
		Sessions: e.sess, Conversation: e.conv, ExternalURL: "https://agents.example.com/",
		Now: func() time.Time { return e.now }}
	for _, m := range mod {
		m(&o)
	}
	e.h = New(o)
	e.srv = httptest.NewServer(e.h)
	t.Cleanup(e.srv.Close)
	return e
}

// deliver sends a signed delivery and returns the status.
func (e *testEnv) deliver(body []byte, secret string, at time.Time, retry int) int {
	e.t.Helper()
	req, err := fakeslack.Request(e.srv.URL, secret, body, at, retry)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// drain does the queued work now, as Run's workers would.
func (e *testEnv) drain() {
	for {
		select {
		case j := <-e.h.jobs:
			e.h.handle(e.t.Context(), j)
		default:
			return
		}
	}
}

func (e *testEnv) sessions() []*store.Session {
	e.t.Helper()
	page, err := e.st.ListSessions(e.t.Context(), store.SessionFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return page.Items
}

func mention(id, user, text, ts string) fakeslack.Event {
	return fakeslack.Event{EventID: id, Type: "app_mention", User: user, Text: text, Channel: "C0DEV", TS: ts}
}

func TestBadSignatureIsRefusedAndNothingStored(t *testing.T) {
	e := newTestEnv(t)
	body := mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets fix it", "1700000000.000100").Body()
	for name, c := range map[string]struct {
		secret string
		at     time.Time
	}{"wrong secret": {"not the secret", e.now}, "stale": {testSecret, e.now.Add(-6 * time.Minute)}} {
		if code := e.deliver(body, c.secret, c.at, 0); code != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, code)
		}
	}
	// Unsigned.
	resp, err := http.Post(e.srv.URL, "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned: %d, want 401", resp.StatusCode)
	}
	if len(e.h.jobs) != 0 {
		t.Errorf("%d refused deliveries were queued", len(e.h.jobs))
	}
	if first, err := e.st.RecordEvent(t.Context(), Source, "Ev1"); err != nil || !first {
		t.Errorf("a refused delivery's event id was recorded: %v %v", first, err)
	}
}

func TestURLVerification(t *testing.T) {
	e := newTestEnv(t)
	body := []byte(`{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)
	req, _ := fakeslack.Request(e.srv.URL, testSecret, body, e.now, 0)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 || got["challenge"] != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" {
		t.Fatalf("%d %v %v", resp.StatusCode, got, err)
	}
}

// TestMentionStartsOnePublicSession follows a mention from delivery to answer: one
// public session owned by the user with the Slack user's email, however often the
// event arrives (retries, the same message as a message event); the status message in
// the thread names the session, attach and the web UI and follows its state; the answer
// is posted once; a reply in the thread is a prompt to the same session.
func TestMentionStartsOnePublicSession(t *testing.T) {
	e := newTestEnv(t)
	ev := mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets fix the flaky test", "1700000000.000100")
	for retry := range 3 {
		if code := e.deliver(ev.Body(), testSecret, e.now, retry); code != http.StatusOK {
			t.Fatalf("delivery %d: %d", retry, code)
		}
	}
	// The same message, subscribed as a channel message too.
	asMessage := ev
	asMessage.EventID, asMessage.Type, asMessage.ChannelType = "Ev2", "message", "channel"
	if code := e.deliver(asMessage.Body(), testSecret, e.now, 0); code != http.StatusOK {
		t.Fatalf("message delivery: %d", code)
	}
	e.drain()
	ss := e.sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions, want 1", len(ss))
	}
	s := ss[0]
	if s.Private || s.OwnerID != e.alice.ID || s.Repo != "https://github.com/acme/widgets" || s.Prompt != "fix the flaky test" || s.Title != "fix the flaky test" {
		t.Fatalf("session %+v", s)
	}
	thread := e.slack.Messages("C0DEV", ev.TS)
	if len(thread) != 1 {
		t.Fatalf("thread: %+v, want one status message", thread)
	}
	for _, want := range []string{"Session `" + s.ID + "` is *Pending*", "`kubectl agents attach " + s.ID + "`", "https://agents.example.com/sessions/" + s.ID} {
		if !strings.Contains(thread[0].Text, want) {
			t.Errorf("status message %q lacks %q", thread[0].Text, want)
		}
	}
	if got := e.h.Followed(); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("followed %v", got)
	}

	// Running, answered: the status says so and the answer is posted, once.
	s.State, s.OpenCodeSessionID, s.PromptSent = apiv1.StateRunning, "ses_1", true
	if err := e.st.UpdateSession(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	e.conv.busy = true
	e.conv.messages[s.ID] = []apiv1.Message{{ID: "m1", Role: "user", Text: "fix the flaky test"}, {ID: "m2", Role: "assistant", Text: "half an answer"}}
	e.h.FollowOnce(t.Context())
	if thread = e.slack.Messages("C0DEV", ev.TS); len(thread) != 1 || !strings.Contains(thread[0].Text, "*Running*") || thread[0].Updates != 1 {
		t.Fatalf("while busy: %+v", thread)
	}
	e.conv.busy = false
	e.conv.messages[s.ID][1].Text = "Fixed: the test waited on a timer."
	e.h.FollowOnce(t.Context())
	e.h.FollowOnce(t.Context())
	thread = e.slack.Messages("C0DEV", ev.TS)
	if len(thread) != 2 || thread[1].Text != "Fixed: the test waited on a timer." || thread[0].Updates != 1 {
		t.Fatalf("after the answer: %+v", thread)
	}

	// A reply in the thread (no mention needed) is a prompt to the same session.
	reply := fakeslack.Event{EventID: "Ev3", Type: "message", ChannelType: "channel", User: "UALICE", Text: "now add a test", Channel: "C0DEV", TS: "1700000001.000200", ThreadTS: ev.TS}
	if code := e.deliver(reply.Body(), testSecret, e.now, 0); code != http.StatusOK {
		t.Fatal(code)
	}
	// Someone else's message elsewhere in the channel is none of the agent's business.
	other := fakeslack.Event{EventID: "Ev4", Type: "message", ChannelType: "channel", User: "UBOB", Text: "lunch?", Channel: "C0DEV", TS: "1700000002.000300"}
	if code := e.deliver(other.Body(), testSecret, e.now, 0); code != http.StatusOK {
		t.Fatal(code)
	}
	e.drain()
	if len(e.sessions()) != 1 || len(e.conv.sent) != 1 || e.conv.sent[0] != s.ID+": now add a test" {
		t.Fatalf("sessions %d, sent %v", len(e.sessions()), e.conv.sent)
	}
	if len(e.sess.touched) != 1 || e.sess.touched[0] != s.ID+" slack" {
		t.Errorf("touched %v", e.sess.touched)
	}
	e.conv.messages[s.ID] = append(e.conv.messages[s.ID], apiv1.Message{ID: "m3", Role: "user", Text: "now add a test"}, apiv1.Message{ID: "m4", Role: "assistant", Text: "Added."})
	e.h.FollowOnce(t.Context())
	if thread = e.slack.Messages("C0DEV", ev.TS); len(thread) != 3 || thread[2].Text != "Added." {
		t.Fatalf("after the follow-up: %+v", thread)
	}

	// Stopped: the status says so and the session is no longer followed.
	s, _ = e.st.GetSession(t.Context(), s.ID)
	s.State = apiv1.StateStopped
	if err := e.st.UpdateSession(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	e.h.FollowOnce(t.Context())
	if thread = e.slack.Messages("C0DEV", ev.TS); !strings.Contains(thread[0].Text, "*Stopped*") || len(e.h.Followed()) != 0 {
		t.Fatalf("after stop: %+v, followed %v", thread, e.h.Followed())
	}
	// A reply to a stopped session says how to start it.
	late := reply
	late.EventID, late.TS = "Ev5", "1700000003.000400"
	e.deliver(late.Body(), testSecret, e.now, 0)
	e.drain()
	if thread = e.slack.Messages("C0DEV", ev.TS); !strings.Contains(thread[len(thread)-1].Text, "kubectl agents session start "+s.ID) || len(e.conv.sent) != 1 {
		t.Fatalf("reply to a stopped session: %+v, sent %v", thread, e.conv.sent)
	}
}

func TestDirectMessageStartsPrivateSession(t *testing.T) {
	e := newTestEnv(t)
	dm := fakeslack.Event{EventID: "Ev1", Type: "message", ChannelType: "im", User: "UBOB", Text: "repo:acme/secret rotate the keys", Channel: "D0BOB", TS: "1700000000.000100"}
	e.deliver(dm.Body(), testSecret, e.now, 0)
	e.drain()
	ss := e.sessions()
	if len(ss) != 1 || !ss[0].Private || ss[0].Repo != "https://github.com/acme/secret" {
		t.Fatalf("sessions %+v", ss)
	}
	if thread := e.slack.Messages("D0BOB", dm.TS); len(thread) != 1 || !strings.Contains(thread[0].Text, ss[0].ID) {
		t.Fatalf("DM thread %+v", thread)
	}
}

func TestUnknownUsersAreToldHowToGetAccess(t *testing.T) {
	e := newTestEnv(t, func(o *Options) { o.Authorizer = denyAuthorizer{"bob@example.com": true} })
	for i, c := range []struct{ user, want string }{
		{"UMALLORY", "I don't know mallory@example.com in Cake Agents yet. Sign in to the agent once as mallory@example.com — the web UI (https://agents.example.com) or `kubectl agents whoami` — or ask an admin to give you access"},
		{"UNOMAIL", "users:read.email"},
		{"UBOB", "bob@example.com may not create sessions: ask an admin to bind the cake-agents-user ClusterRole"},
	} {
		ev := mention(fmt.Sprintf("Ev%d", i), c.user, "<@U0BOT> repo:acme/widgets hi", fmt.Sprintf("1700000000.00010%d", i))
		e.deliver(ev.Body(), testSecret, e.now, 0)
		e.drain()
		thread := e.slack.Messages("C0DEV", ev.TS)
		if len(thread) != 1 || !strings.Contains(thread[0].Text, c.want) {
			t.Errorf("%s: thread %+v, want %q", c.user, thread, c.want)
		}
	}
	if ss := e.sessions(); len(ss) != 0 {
		t.Errorf("sessions %+v", ss)
	}
}

func TestChannelDefaultRepository(t *testing.T) {
	e := newTestEnv(t)
	if err := e.st.PutSetting(t.Context(), ChannelRepoSetting("C0DEV"), "https://github.com/acme/default"); err != nil {
		t.Fatal(err)
	}
	e.deliver(mention("Ev1", "UALICE", "<@U0BOT> update the changelog", "1700000000.000100").Body(), testSecret, e.now, 0)
	e.deliver(mention("Ev2", "UALICE", "<@U0BOT> repo:acme/other bump deps", "1700000000.000200").Body(), testSecret, e.now, 0)
	e.deliver(mention("Ev3", "UALICE", "<@U0BOT> repo:acme/x", "1700000000.000300").Body(), testSecret, e.now, 0)
	e.drain()
	ss := e.sessions()
	if len(ss) != 2 || ss[0].Repo != "https://github.com/acme/default" || ss[1].Repo != "https://github.com/acme/other" {
		t.Fatalf("sessions %+v", ss)
	}
	if thread := e.slack.Messages("C0DEV", "1700000000.000300"); len(thread) != 1 || !strings.Contains(thread[0].Text, "Tell me what to do") {
		t.Errorf("no prompt: %+v", thread)
	}
}

// TestConcurrentStartsInOneThread: two replicas starting a session for the same thread
// at once leave one session and one link: the loser deletes its own.
func TestConcurrentStartsInOneThread(t *testing.T) {
	e := newTestEnv(t)
	other := New(e.h.o)
	var wg sync.WaitGroup
	for i, h := range []*Handler{e.h, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Two mentions in the same (not yet followed) thread.
			ev := event{Type: "app_mention", User: "UALICE", Text: "<@U0BOT> repo:acme/widgets go", Channel: "C0DEV",
				TS: fmt.Sprintf("1700000000.00020%d", i), ThreadTS: "1700000000.000100"}
			h.handle(t.Context(), &eventJob{id: fmt.Sprintf("Ev%d", i), ev: ev})
		}()
	}
	wg.Wait()
	ss := e.sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions, want 1", len(ss))
	}
	l, err := e.st.GetLink(t.Context(), Source, "C0DEV:1700000000.000100")
	if err != nil || l.SessionID != ss[0].ID {
		t.Fatalf("link %+v, %v", l, err)
	}
}

// TestMessageCopyFirstStillStarts: with message.channels subscribed, a mention also
// arrives as a plain channel message; when that copy is handled first it is ignored
// without hiding the app_mention, which then starts the session.
func TestMessageCopyFirstStillStarts(t *testing.T) {
	e := newTestEnv(t)
	ev := mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets fix the flaky test", "1700000000.000100")
	asMessage := ev
	asMessage.EventID, asMessage.Type, asMessage.ChannelType = "Ev2", "message", "channel"
	for _, d := range []fakeslack.Event{asMessage, ev} {
		if code := e.deliver(d.Body(), testSecret, e.now, 0); code != http.StatusOK {
			t.Fatal(code)
		}
		e.drain()
	}
	ss := e.sessions()
	if len(ss) != 1 {
		t.Fatalf("%d sessions, want 1", len(ss))
	}
	ss[0].State, ss[0].OpenCodeSessionID, ss[0].PromptSent = apiv1.StateRunning, "ses_1", true
	if err := e.st.UpdateSession(t.Context(), ss[0]); err != nil {
		t.Fatal(err)
	}
	// In a followed thread both copies of a mention are one prompt, whichever comes first.
	reply := fakeslack.Event{EventID: "Ev3", Type: "message", ChannelType: "channel", User: "UALICE", Text: "<@U0BOT> and the docs", Channel: "C0DEV", TS: "1700000001.000200", ThreadTS: ev.TS}
	replyMention := reply
	replyMention.EventID, replyMention.Type, replyMention.ChannelType = "Ev4", "app_mention", ""
	for _, d := range []fakeslack.Event{reply, replyMention} {
		e.deliver(d.Body(), testSecret, e.now, 0)
		e.drain()
	}
	if len(e.conv.sent) != 1 || !strings.HasSuffix(e.conv.sent[0], ": and the docs") {
		t.Fatalf("sent %v, want one prompt", e.conv.sent)
	}
}

// TestPrivateConversationsStartPrivateSessions: a mention in a private channel or a
// group DM starts a private session, as a DM does; one in a public channel does not.
func TestPrivateConversationsStartPrivateSessions(t *testing.T) {
	e := newTestEnv(t)
	for i, c := range []struct {
		channel, channelType string
		private              bool
	}{{"C0PUB", "", false}, {"G0PRIV", "", true}, {"C0MPIM", "mpim", true}, {"C0GRP", "group", true}} {
		ev := fakeslack.Event{EventID: fmt.Sprintf("Ev%d", i), Type: "app_mention", ChannelType: c.channelType, User: "UALICE",
			Text: "<@U0BOT> repo:acme/widgets go", Channel: c.channel, TS: fmt.Sprintf("1700000000.00010%d", i)}
		e.deliver(ev.Body(), testSecret, e.now, 0)
		e.drain()
		l, err := e.st.GetLink(t.Context(), Source, c.channel+":"+ev.TS)
		if err != nil {
			t.Fatalf("%s: %v", c.channel, err)
		}
		s, err := e.st.GetSession(t.Context(), l.SessionID)
		if err != nil || s.Private != c.private {
			t.Errorf("%s (%q): session %+v, %v; want private %v", c.channel, c.channelType, s, err, c.private)
		}
	}
}

// TestTwoReplicasPostOnce: every replica follows every Slack session; each status
// change and each answer still reaches the thread once.
func TestTwoReplicasPostOnce(t *testing.T) {
	e := newTestEnv(t)
	ev := mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets go", "1700000000.000100")
	e.deliver(ev.Body(), testSecret, e.now, 0)
	e.drain()
	other := New(e.h.o)
	other.resume(t.Context())
	s := e.sessions()[0]
	s.State, s.OpenCodeSessionID, s.PromptSent = apiv1.StateRunning, "ses_1", true
	if err := e.st.UpdateSession(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	e.conv.messages[s.ID] = []apiv1.Message{{ID: "m1", Role: "user", Text: "go"}, {ID: "m2", Role: "assistant", Text: "Done."}}
	var wg sync.WaitGroup
	for _, h := range []*Handler{e.h, other, e.h, other} {
		wg.Add(1)
		go func() { defer wg.Done(); h.FollowOnce(t.Context()) }()
	}
	wg.Wait()
	thread := e.slack.Messages("C0DEV", ev.TS)
	if len(thread) != 2 || thread[1].Text != "Done." || thread[0].Updates != 1 {
		t.Fatalf("thread %+v, want the status updated once and the answer posted once", thread)
	}
}

// TestFailedPostIsRetried: an answer Slack refuses is posted at the next look.
func TestFailedPostIsRetried(t *testing.T) {
	e := newTestEnv(t)
	ev := mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets go", "1700000000.000100")
	e.deliver(ev.Body(), testSecret, e.now, 0)
	e.drain()
	s := e.sessions()[0]
	s.State, s.OpenCodeSessionID, s.PromptSent = apiv1.StateRunning, "ses_1", true
	if err := e.st.UpdateSession(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	e.conv.messages[s.ID] = []apiv1.Message{{ID: "m2", Role: "assistant", Text: "Done."}}
	e.slack.FailNext("chat.postMessage", "ratelimited")
	e.h.FollowOnce(t.Context())
	if thread := e.slack.Messages("C0DEV", ev.TS); len(thread) != 1 {
		t.Fatalf("thread after a refused post: %+v", thread)
	}
	e.h.FollowOnce(t.Context())
	if thread := e.slack.Messages("C0DEV", ev.TS); len(thread) != 2 || thread[1].Text != "Done." {
		t.Fatalf("thread after the next look: %+v", thread)
	}
}

func TestFullQueueAsksSlackToRetry(t *testing.T) {
	e := newTestEnv(t, func(o *Options) { o.Queue = 1 })
	if code := e.deliver(mention("Ev1", "UALICE", "<@U0BOT> a", "1.1").Body(), testSecret, e.now, 0); code != http.StatusOK {
		t.Fatal(code)
	}
	if code := e.deliver(mention("Ev2", "UALICE", "<@U0BOT> b", "1.2").Body(), testSecret, e.now, 0); code != http.StatusServiceUnavailable {
		t.Fatalf("second delivery with a full queue: %d, want 503", code)
	}
	// Nothing was recorded for it: Slack's retry is handled.
	e.drain()
	if code := e.deliver(mention("Ev2", "UALICE", "<@U0BOT> b", "1.2").Body(), testSecret, e.now, 1); code != http.StatusOK {
		t.Fatal(code)
	}
	e.drain()
	if n := len(e.sessions()); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
}

// TestRunResumesFollowing: after a restart, sessions started from Slack that are still
// active are followed again.
func TestRunResumesFollowing(t *testing.T) {
	e := newTestEnv(t)
	e.deliver(mention("Ev1", "UALICE", "<@U0BOT> repo:acme/widgets go", "1.1").Body(), testSecret, e.now, 0)
	e.drain()
	fresh := New(e.h.o)
	fresh.resume(t.Context())
	if got := fresh.Followed(); len(got) != 1 || got[0] != e.sessions()[0].ID {
		t.Fatalf("followed after resume: %v", got)
	}
}

func TestClientAgainstFake(t *testing.T) {
	fs := fakeslack.New(testToken)
	api := fs.Start()
	defer api.Close()
	c := &Client{APIURL: api.URL + "/api", Token: testToken}
	at, err := c.AuthTest(t.Context())
	if err != nil || at.UserID != "U0BOT" {
		t.Fatalf("auth.test: %+v %v", at, err)
	}
	bad := &Client{APIURL: api.URL + "/api", Token: "xoxb-wrong"}
	if _, err := bad.AuthTest(t.Context()); err == nil || !strings.Contains(err.Error(), "invalid_auth") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, err := c.UserInfo(t.Context(), "UNOBODY"); err == nil || !strings.Contains(err.Error(), "user_not_found") {
		t.Fatalf("unknown user: %v", err)
	}
}
