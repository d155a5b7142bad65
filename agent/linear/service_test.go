package linear

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/auth"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakelinear"
)

const (
	svcKey    = "lin_api_service_test"
	svcSecret = "whsec-service-test"
	svcRepo   = "https://git.example.com/acme/app.git"
)

var (
	svcAgent = fakelinear.User{ID: "u-agent", Name: "cake-agent", DisplayName: "cake", Email: "cake@example.com"}
	// The Linear users of the tests; the agent knows alice, bob and root (an admin) by
	// these emails, not the stranger.
	linAlice    = fakelinear.User{ID: "u-alice", Name: "Alice", DisplayName: "alice", Email: "alice@example.com"}
	linBob      = fakelinear.User{ID: "u-bob", Name: "Bob", DisplayName: "bob", Email: "Bob@Example.com"}
	linRoot     = fakelinear.User{ID: "u-root", Name: "Root", DisplayName: "root", Email: "root@example.com"}
	linStranger = fakelinear.User{ID: "u-stranger", Name: "Stranger", DisplayName: "stranger", Email: "stranger@example.com"}
)

// fakeSessions creates sessions in the store as the controller would (Pending).
type fakeSessions struct {
	st      store.Store
	mu      sync.Mutex
	n       int
	touched []string
	// fail, when set, is what Create returns.
	fail error
}

func (f *fakeSessions) Create(ctx context.Context, s *store.Session, maxActive int) error {
	f.mu.Lock()
	f.n++
	s.ID = fmt.Sprintf("s%d", f.n)
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return fail
	}
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

// fakeConversation records prompts and answers with the messages the test set.
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
	return append([]apiv1.Message(nil), f.messages[s.ID]...), nil
}

func (f *fakeConversation) Busy(context.Context, *store.Session) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.busy, nil
}

func (f *fakeConversation) answer(id string, m apiv1.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.messages[id] = append(f.messages[id], m)
}

func (f *fakeConversation) prompts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sent...)
}

// denyAuthorizer refuses the verbs it lists for a user (by Subject).
type denyAuthorizer map[string][]string

func (d denyAuthorizer) Authorize(_ context.Context, id *auth.Identity, verb string) (bool, string, error) {
	for _, v := range d[id.Username] {
		if v == verb {
			return false, "no RBAC rule allows " + verb, nil
		}
	}
	return true, "", nil
}

func (d denyAuthorizer) AuthorizeSession(ctx context.Context, id *auth.Identity, verb, _ string) (bool, string, error) {
	return d.Authorize(ctx, id, verb)
}

type svcEnv struct {
	t     *testing.T
	st    store.Store
	fake  *fakelinear.Server
	sess  *fakeSessions
	conv  *fakeConversation
	deny  denyAuthorizer
	users map[string]*store.User
	now   time.Time
	seq   int
}

func newSvcEnv(t *testing.T) *svcEnv {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Options{Path: sqlite.Memory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	fake := fakelinear.New(svcKey, svcAgent)
	t.Cleanup(fake.Close)
	for _, u := range []fakelinear.User{linAlice, linBob, linRoot, linStranger} {
		fake.AddUser(u)
	}
	e := &svcEnv{t: t, st: st, fake: fake, sess: &fakeSessions{st: st}, conv: &fakeConversation{messages: map[string][]apiv1.Message{}},
		deny: denyAuthorizer{}, users: map[string]*store.User{}, now: time.Now()}
	for _, name := range []string{"alice", "bob", "root"} {
		u := &store.User{Source: "kubernetes", Subject: name, Email: name + "@example.com", Admin: name == "root"}
		if err := st.UpsertUser(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		e.users[name] = u
	}
	if err := st.PutSetting(t.Context(), TeamRepoSetting("ENG"), svcRepo); err != nil {
		t.Fatal(err)
	}
	return e
}

// service is one agent replica's integration on the shared store and fake Linear.
func (e *svcEnv) service(mod ...func(*Options)) *Service {
	o := Options{
		Client: New(e.fake.GraphQLURL(), svcKey, nil), Store: e.st, Sessions: e.sess, Conversation: e.conv,
		WebhookSecret: svcSecret, Authorizer: e.deny, Audit: audit.NewRecorder(e.st, nil),
		ExternalURL: "https://agents.example.com", MaxActiveSessions: 3, Now: func() time.Time { return e.now },
	}
	for _, m := range mod {
		m(&o)
	}
	return NewService(o)
}

// deliver has s act on a signed delivery of payload, as its workers would.
func (e *svcEnv) deliver(s *Service, payload map[string]any) {
	e.t.Helper()
	e.seq++
	d := fakelinear.Sign(svcSecret, fmt.Sprintf("d-%d", e.seq), payload)
	w, err := Verify([]byte(svcSecret), d.Body, d.Header.Get(SignatureHeader), e.now)
	if err != nil {
		e.t.Fatal(err)
	}
	s.handle(e.t.Context(), delivery{id: d.Header.Get(DeliveryHeader), w: w})
}

// issue adds an issue of team ENG created by alice and assigned to the agent.
func (e *svcEnv) issue(id string) fakelinear.Issue {
	iss := fakelinear.Issue{ID: "i-" + id, Identifier: "ENG-" + id, Title: "Fix " + id, TeamID: "t-eng", TeamKey: "ENG",
		Assignee: &svcAgent, Creator: &linAlice}
	e.fake.AddIssue(iss)
	return iss
}

// assign delivers "actor assigned iss to the agent".
func (e *svcEnv) assign(s *Service, iss fakelinear.Issue, actor *fakelinear.User) {
	e.t.Helper()
	e.deliver(s, fakelinear.IssuePayload("update", iss, map[string]any{"assigneeId": nil}, actor, e.now))
}

func (e *svcEnv) sessions() []*store.Session {
	e.t.Helper()
	page, err := e.st.ListSessions(e.t.Context(), store.SessionFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return page.Items
}

func (e *svcEnv) comments(issueID string) []string {
	var out []string
	for _, c := range e.fake.Comments(issueID) {
		out = append(out, c.Body)
	}
	return out
}

// audits lists the audit log, oldest first, as "actor action outcome".
func (e *svcEnv) audits() []string {
	e.t.Helper()
	page, err := e.st.ListAudit(e.t.Context(), store.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for i := len(page.Items) - 1; i >= 0; i-- {
		ev := page.Items[i]
		out = append(out, ev.Actor+" "+ev.Action+" "+ev.Outcome)
	}
	return out
}

func (e *svcEnv) setState(id string, state apiv1.SessionState, message string) {
	e.t.Helper()
	s, err := e.st.GetSession(e.t.Context(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	s.State, s.Message = state, message
	if state == apiv1.StateRunning && s.OpenCodeSessionID == "" {
		s.OpenCodeSessionID = "ses_" + id
	}
	if err := e.st.UpdateSession(e.t.Context(), s); err != nil {
		e.t.Fatal(err)
	}
}

func contains(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s %q lacks %q", what, s, w)
		}
	}
}

// TestOwnerIsWhoAssigned: the session belongs to the Linear user who assigned the
// issue (found by email, read from Linear when the delivery's actor has none), not to
// the issue's creator; the creation is audited as theirs.
func TestOwnerIsWhoAssigned(t *testing.T) {
	e := newSvcEnv(t)
	s := e.service()
	iss := e.issue("1")
	// Bob assigns alice's issue; the delivery names him by id only.
	e.assign(s, iss, &fakelinear.User{ID: linBob.ID})
	ss := e.sessions()
	if len(ss) != 1 || ss[0].OwnerID != e.users["bob"].ID || ss[0].Repo != svcRepo || !ss[0].Private {
		t.Fatalf("sessions %+v, want one of bob's", ss)
	}
	if c := e.comments(iss.ID); len(c) != 1 {
		t.Fatalf("comments %q", c)
	} else {
		contains(t, "comment", c[0], "kubectl agents attach "+ss[0].ID, "owned by bob@example.com", "summary when the session ends")
	}
	if a := e.audits(); len(a) != 1 || a[0] != "bob@example.com session.create success" {
		t.Errorf("audit %q", a)
	}
	if e.fake.Calls("User") != 1 {
		t.Errorf("%d user lookups, want 1 (the actor had no email)", e.fake.Calls("User"))
	}
	// An actor with its email is not looked up.
	e.assign(s, e.issue("2"), &linAlice)
	if ss := e.sessions(); len(ss) != 2 || e.fake.Calls("User") != 1 {
		t.Errorf("sessions %d, lookups %d", len(ss), e.fake.Calls("User"))
	}
}

// TestUnknownOrMissingActorIsToldHowToGetAccess: an actor the agent does not know gets
// a comment saying how to get access; a change no person made starts nothing either.
func TestUnknownOrMissingActorIsToldHowToGetAccess(t *testing.T) {
	e := newSvcEnv(t)
	s := e.service()
	iss := e.issue("1")
	e.assign(s, iss, &fakelinear.User{ID: linStranger.ID})
	c := e.comments(iss.ID)
	if len(c) != 1 {
		t.Fatalf("comments %q", c)
	}
	contains(t, "comment", c[0], "stranger@example.com", "Sign in to the agent once", "https://agents.example.com", "kubectl agents whoami", "RBAC")

	auto := e.issue("2")
	e.assign(s, auto, nil)
	if c := e.comments(auto.ID); len(c) != 1 || !strings.Contains(c[0], "not made by a person") {
		t.Errorf("automation: comments %q", c)
	}
	if n := len(e.sessions()); n != 0 {
		t.Errorf("%d sessions, want none", n)
	}
}

// TestCreateNeedsRBACAndAdminsSkipTheQuota: the actor must be allowed to create
// sessions (a refusal is commented and audited); admins are not held to the quota.
func TestCreateNeedsRBACAndAdminsSkipTheQuota(t *testing.T) {
	e := newSvcEnv(t)
	e.deny["bob"] = []string{apiv1.VerbCreate}
	s := e.service(func(o *Options) { o.MaxActiveSessions = 1 })
	iss := e.issue("1")
	e.assign(s, iss, &linBob)
	if c := e.comments(iss.ID); len(c) != 1 {
		t.Fatalf("comments %q", c)
	} else {
		contains(t, "refusal", c[0], "bob@example.com may not create sessions", "RBAC")
	}
	if n := len(e.sessions()); n != 0 {
		t.Fatalf("%d sessions after a refusal", n)
	}
	if a := e.audits(); len(a) != 1 || a[0] != "bob@example.com session.create denied" {
		t.Errorf("audit %q", a)
	}

	// Root is an admin: two sessions with a quota of one. Alice gets her one.
	e.assign(s, e.issue("2"), &linRoot)
	e.assign(s, e.issue("3"), &linRoot)
	e.assign(s, e.issue("4"), &linAlice)
	quota := e.issue("5")
	e.assign(s, quota, &linAlice)
	if n := len(e.sessions()); n != 3 {
		t.Errorf("%d sessions, want root's two and alice's one", n)
	}
	if c := e.comments(quota.ID); len(c) != 1 || !strings.Contains(c[0], "as many active sessions as allowed") {
		t.Errorf("over the quota: %q", c)
	}
}

// TestFailedStartIsCommented: once its delivery is recorded Linear does not send it
// again, so a start that fails is told on the issue.
func TestFailedStartIsCommented(t *testing.T) {
	e := newSvcEnv(t)
	s := e.service()
	iss := e.issue("1")
	e.fake.FailNext("Issue", 1)
	e.assign(s, iss, &linAlice)
	e.sess.fail = errors.New("the API server is down")
	other := e.issue("2")
	e.assign(s, other, &linAlice)
	for _, id := range []string{iss.ID, other.ID} {
		c := e.comments(id)
		if len(c) != 1 {
			t.Fatalf("%s: comments %q", id, c)
		}
		contains(t, "comment", c[0], "could not start a session", "agent's log")
	}
	if n := len(e.sessions()); n != 0 {
		t.Errorf("%d sessions", n)
	}
}

// TestNoRepositorySaysTheFullURL: the comment names the exact PUT path and a full
// repository URL, which is what the API accepts.
func TestNoRepositorySaysTheFullURL(t *testing.T) {
	e := newSvcEnv(t)
	s := e.service()
	iss := fakelinear.Issue{ID: "i-ops", Identifier: "OPS-1", Title: "t", TeamKey: "OPS", Assignee: &svcAgent}
	e.fake.AddIssue(iss)
	e.assign(s, iss, &linAlice)
	c := e.comments(iss.ID)
	if len(c) != 1 {
		t.Fatalf("comments %q", c)
	}
	contains(t, "comment", c[0], "`kubectl agents integrations linear-team OPS --repo https://github.com/org/name`")
	if err := apiv1.ValidateRepoURL("https://github.com/org/name"); err != nil {
		t.Errorf("the example is refused by the API: %v", err)
	}
}

// TestMentionNeedsTheOwnerAnAdminOrAccess: a comment mentioning the agent reaches the
// session only from its owner, an admin, or (when not private) someone allowed to
// attach; everyone else is told how to get access, and nothing is sent.
func TestMentionNeedsTheOwnerAnAdminOrAccess(t *testing.T) {
	e := newSvcEnv(t)
	s := e.service()
	iss := e.issue("1")
	e.assign(s, iss, &linAlice)
	sess := e.sessions()[0]
	e.setState(sess.ID, apiv1.StateRunning, "")
	mention := func(user fakelinear.User, text string) {
		e.deliver(s, fakelinear.CommentPayload(iss.ID, user.ID, "@cake "+text, e.now))
	}
	before := len(e.comments(iss.ID))
	mention(linBob, "from bob")           // not the owner of a private session
	mention(linStranger, "from stranger") // unknown to the agent
	mention(linAlice, "from alice")       // the owner
	mention(linRoot, "from root")         // an admin
	want := []string{sess.ID + ": @cake from alice", sess.ID + ": @cake from root"}
	if got := e.conv.prompts(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("prompts %q, want %q", got, want)
	}
	c := e.comments(iss.ID)[before:]
	if len(c) != 2 {
		t.Fatalf("replies %q", c)
	}
	contains(t, "bob's reply", c[0], "did not send", "only its owner", "bob@example.com", "RBAC")
	contains(t, "the stranger's reply", c[1], "did not send", "stranger@example.com", "Sign in to the agent once")
	a := strings.Join(e.audits(), ",")
	for _, w := range []string{"bob@example.com session.message denied", "linear:stranger@example.com session.message denied",
		"alice@example.com session.message success", "root@example.com session.message success"} {
		if !strings.Contains(a, w) {
			t.Errorf("audit %s lacks %q", a, w)
		}
	}
	if len(e.sess.touched) != 2 {
		t.Errorf("touched %q", e.sess.touched)
	}

	// Not private: bob may prompt it while RBAC lets him attach, not once it does not.
	cur, _ := e.st.GetSession(t.Context(), sess.ID)
	cur.Private = false
	if err := e.st.UpdateSession(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
	mention(linBob, "shared")
	e.deny["bob"] = []string{apiv1.VerbAttach}
	mention(linBob, "denied")
	got := e.conv.prompts()
	if len(got) != 3 || got[2] != sess.ID+": @cake shared" {
		t.Errorf("prompts %q", got)
	}
}

// TestFollowerCommentsEachAnswerOnceAcrossReplicas: two replicas follow the same
// session; each answer and the end are commented once; a comment Linear fails is
// claimed back and made at the next look.
func TestFollowerCommentsEachAnswerOnceAcrossReplicas(t *testing.T) {
	e := newSvcEnv(t)
	a, b := e.service(), e.service()
	iss := e.issue("1")
	e.assign(a, iss, &linAlice)
	sess := e.sessions()[0]
	b.Follow(sess.ID)
	both := func() {
		a.FollowOnce(t.Context())
		b.FollowOnce(t.Context())
	}
	answers := func() []string {
		var out []string
		for _, c := range e.comments(iss.ID) {
			if strings.Contains(c, "answered:") || strings.Contains(c, "ended") {
				out = append(out, c)
			}
		}
		return out
	}
	both() // Pending: nothing yet
	e.setState(sess.ID, apiv1.StateRunning, "")
	e.conv.answer(sess.ID, apiv1.Message{ID: "m1", Role: "user", Text: "Fix 1"})
	both() // no answer yet
	e.conv.busy = true
	e.conv.answer(sess.ID, apiv1.Message{ID: "m2", Role: "assistant", Text: "Halfway"})
	both() // still working
	if got := answers(); len(got) != 0 {
		t.Fatalf("comments before the answer: %q", got)
	}
	e.conv.busy = false
	e.conv.messages[sess.ID][1].Text = "Fixed the parser."
	both()
	both()
	if got := answers(); len(got) != 1 || !strings.Contains(got[0], "Fixed the parser.") {
		t.Fatalf("after the answer: %q", got)
	}

	// Linear fails the next comment: the claim is given back and the next look makes it.
	e.conv.answer(sess.ID, apiv1.Message{ID: "m3", Role: "user", Text: "@cake more"})
	e.conv.answer(sess.ID, apiv1.Message{ID: "m4", Role: "assistant", Text: "Added tests."})
	e.fake.FailNext("CommentCreate", 1)
	a.FollowOnce(t.Context())
	if got := answers(); len(got) != 1 {
		t.Fatalf("a failed comment was counted: %q", got)
	}
	both()
	both()
	if got := answers(); len(got) != 2 || !strings.Contains(got[1], "Added tests.") {
		t.Fatalf("after the retry: %q", got)
	}

	// The session stops: one summary with its last answer, and neither follows it more.
	e.setState(sess.ID, apiv1.StateStopped, "")
	both()
	both()
	got := answers()
	if len(got) != 3 {
		t.Fatalf("after the stop: %q", got)
	}
	contains(t, "summary", got[2], "Session `"+sess.ID+"` ended (Stopped)", "Added tests.")
	if len(a.Followed())+len(b.Followed()) != 0 {
		t.Errorf("still followed: %v %v", a.Followed(), b.Followed())
	}

	// Started again, it is followed again (the ready hook), and its next end commented.
	e.setState(sess.ID, apiv1.StateRunning, "")
	a.Follow(sess.ID)
	a.FollowOnce(t.Context())
	e.setState(sess.ID, apiv1.StateFailed, "the pod was evicted")
	a.FollowOnce(t.Context())
	if got := answers(); len(got) != 4 || !strings.Contains(got[3], "ended (Failed). the pod was evicted") {
		t.Errorf("after the second end: %q", got)
	}
}

// laggingStore is a replica's view of the store that read the links a moment ago:
// ListLinks answers what it held then.
type laggingStore struct {
	store.Store
	links []*store.IntegrationLink
}

func (l *laggingStore) ListLinks(context.Context, string) ([]*store.IntegrationLink, error) {
	return l.links, nil
}

// TestReplicaThatReadBeforeTheClaimDoesNotComment: two replicas read the link before
// either comments; the one whose swap loses comments nothing, for the answer and for
// the end alike.
func TestReplicaThatReadBeforeTheClaimDoesNotComment(t *testing.T) {
	e := newSvcEnv(t)
	a := e.service()
	iss := e.issue("1")
	e.assign(a, iss, &linAlice)
	sess := e.sessions()[0]
	e.setState(sess.ID, apiv1.StateRunning, "")
	e.conv.answer(sess.ID, apiv1.Message{ID: "m1", Role: "assistant", Text: "Done."})
	late := func() *Service {
		links, err := e.st.ListLinks(t.Context(), sess.ID)
		if err != nil {
			t.Fatal(err)
		}
		b := e.service(func(o *Options) { o.Store = &laggingStore{Store: e.st, links: links} })
		b.Follow(sess.ID)
		return b
	}
	b := late()
	a.FollowOnce(t.Context())
	b.FollowOnce(t.Context())
	if c := e.comments(iss.ID); len(c) != 2 {
		t.Fatalf("comments %q, want the start and one answer", c)
	}
	e.setState(sess.ID, apiv1.StateStopped, "")
	b = late()
	a.FollowOnce(t.Context())
	b.FollowOnce(t.Context())
	if c := e.comments(iss.ID); len(c) != 3 || !strings.Contains(c[2], "ended (Stopped)") {
		t.Fatalf("comments %q, want one end", c)
	}
}

// TestFollowerResumesAfterRestart: a new agent (Run) follows the active sessions of
// issues from the store, comments an answer no one commented, and the end of one that
// ended before answering.
func TestFollowerResumesAfterRestart(t *testing.T) {
	e := newSvcEnv(t)
	old := e.service()
	one, two := e.issue("1"), e.issue("2")
	e.assign(old, one, &linAlice)
	e.assign(old, two, &linAlice)
	ss := e.sessions()
	byTitle := map[string]*store.Session{}
	for _, s := range ss {
		byTitle[s.Title] = s
	}
	s1, s2 := byTitle["ENG-1 Fix 1"], byTitle["ENG-2 Fix 2"]
	e.setState(s1.ID, apiv1.StateRunning, "")
	e.setState(s2.ID, apiv1.StateStopping, "")
	e.conv.answer(s1.ID, apiv1.Message{ID: "m1", Role: "assistant", Text: "Done after the restart."})

	// The old agent is gone; a new one starts.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	restarted := e.service(func(o *Options) { o.PollInterval = 10 * time.Millisecond })
	go func() { defer close(done); _ = restarted.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the answer is commented", func() bool {
		c := e.comments(one.ID)
		return len(c) == 2 && strings.Contains(c[1], "Done after the restart.")
	})
	e.setState(s2.ID, apiv1.StateFailed, "the image could not be pulled")
	waitFor(t, "the end is commented", func() bool {
		c := e.comments(two.ID)
		return len(c) == 2 && strings.Contains(c[1], "ended (Failed) before it answered. the image could not be pulled")
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
