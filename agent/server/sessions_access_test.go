package server

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestVisibilityAndOwnership(t *testing.T) {
	e := newEnv(t, nil)
	pub := false
	priv := e.create("alice", apiv1.CreateSessionRequest{Title: "private"})
	public := e.create("alice", apiv1.CreateSessionRequest{Title: "public", Private: &pub})

	if code, body := e.do("bob", "GET", "/api/v1/sessions/"+priv.ID, nil); code != 404 || errorOf(t, body).Code != apiv1.CodeNotFound {
		t.Fatalf("bob sees alice's private session: %d %s", code, body)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/sessions/"+public.ID, nil); code != 200 {
		t.Fatalf("bob cannot see a public session: %d", code)
	}
	if code, body := e.do("bob", "DELETE", "/api/v1/sessions/"+public.ID, nil); code != 403 || !strings.Contains(string(body), "only the owner") {
		t.Fatalf("bob deleted alice's session: %d %s", code, body)
	}
	if code, _ := e.do("bob", "POST", "/api/v1/sessions/"+public.ID+"/stop", nil); code != 403 {
		t.Fatalf("bob stopped alice's session: %d", code)
	}
	// Bob's list holds only the public one; root's all=true holds both.
	var list apiv1.SessionList
	_, body := e.do("bob", "GET", "/api/v1/sessions", nil)
	_ = json.Unmarshal(body, &list)
	if len(list.Items) != 1 || list.Items[0].ID != public.ID {
		t.Fatalf("bob's list: %s", body)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/sessions?all=true", nil); code != 403 {
		t.Fatalf("non-admin listed all: %d", code)
	}
	_, body = e.do("root", "GET", "/api/v1/sessions?all=true", nil)
	_ = json.Unmarshal(body, &list)
	if len(list.Items) != 2 {
		t.Fatalf("admin list: %s", body)
	}
	// The admin may delete anyone's session.
	if code, body := e.do("root", "DELETE", "/api/v1/sessions/"+priv.ID, nil); code != 202 || !strings.Contains(string(body), `"Deleting"`) {
		t.Fatalf("admin delete: %d %s", code, body)
	}
	// Direct-attach credentials are the owner's alone.
	s, _ := e.sess.setState(context.Background(), public.ID, apiv1.StateRunning, "")
	_ = s
	if code, _ := e.do("bob", "POST", "/api/v1/sessions/"+public.ID+"/attach", nil); code != 403 {
		t.Fatalf("bob got alice's password: %d", code)
	}
	code, body := e.do("alice", "POST", "/api/v1/sessions/"+public.ID+"/attach", nil)
	// The answer is exactly the shared wire type the plugin decodes.
	var info apiv1.AttachInfo
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if code != 200 || dec.Decode(&info) != nil || info.Password != "s3cret-password" {
		t.Fatalf("owner attach: %d %s", code, body)
	}
	// But bob may talk to a public running session through the proxy.
	if code, body := e.do("bob", "GET", "/api/v1/sessions/"+public.ID+"/proxy/global/health", nil); code != 200 || string(body) != "proxied "+public.ID+" /global/health" {
		t.Fatalf("proxy: %d %s", code, body)
	}
}

// TestWhoMayDriveASession: reading a public session is for every user; sending it prompts and
// attaching through the proxy are for its owner, admins, and users RBAC grants "attach" on it
// (on every session, or on this one by resourceNames).
func TestWhoMayDriveASession(t *testing.T) {
	// bob holds no attach at all; carol holds it on sessions in general; dave only on s999.
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbAttach}, "dave": {apiv1.VerbAttach + "/s001"}})
	pub := false
	public := e.create("alice", apiv1.CreateSessionRequest{Title: "pairing", Private: &pub})
	if public.ID != "s001" {
		t.Fatalf("session id %s, the test grants on s001", public.ID)
	}
	if _, err := e.sess.setState(context.Background(), public.ID, apiv1.StateRunning, ""); err != nil {
		t.Fatal(err)
	}
	send := apiv1.SendMessageRequest{Text: "rm -rf the tests"}
	proxy := "/api/v1/sessions/" + public.ID + "/proxy/global/health"
	for _, user := range []string{"bob", "dave"} {
		if code, _ := e.do(user, "GET", "/api/v1/sessions/"+public.ID, nil); code != 200 {
			t.Errorf("%s cannot read a public session: %d", user, code)
		}
		code, body := e.do(user, "POST", "/api/v1/sessions/"+public.ID+"/messages", send)
		if code != 403 || !strings.Contains(string(body), "--resource-name="+public.ID) || !strings.Contains(string(body), "attach") {
			t.Errorf("%s sent a prompt to alice's session: %d %s", user, code, body)
		}
		if code, body := e.do(user, "GET", proxy, nil); code != 403 {
			t.Errorf("%s attached to alice's session through the proxy: %d %s", user, code, body)
		}
	}
	for _, user := range []string{"alice", "root", "carol"} {
		if code, body := e.do(user, "POST", "/api/v1/sessions/"+public.ID+"/messages", send); code != 202 {
			t.Errorf("%s may not send to the session: %d %s", user, code, body)
		}
		if code, body := e.do(user, "GET", proxy, nil); code != 200 {
			t.Errorf("%s may not attach through the proxy: %d %s", user, code, body)
		}
	}
	// Denials are audited.
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, ev := range page.Items {
		if ev.Outcome == audit.OutcomeDenied && ev.Target == public.ID {
			denied++
		}
	}
	if denied != 4 {
		t.Errorf("%d denials audited, want 4", denied)
	}
}

func TestAuthorizationDeniedIsAudited(t *testing.T) {
	e := newEnv(t, denyAuthorizer{"bob": {apiv1.VerbCreate}})
	code, body := e.do("bob", "POST", "/api/v1/sessions", apiv1.CreateSessionRequest{})
	if code != 403 || !strings.Contains(errorOf(t, body).Message, "cake-agents-user") {
		t.Fatalf("got %d %s", code, body)
	}
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range page.Items {
		if ev.Action == "session.create" && ev.Outcome == "denied" && ev.Actor == "bob@example.com" {
			found = true
		}
	}
	if !found {
		t.Fatalf("denial not audited: %+v", page.Items)
	}
	if code, _ := e.do("bob", "GET", "/api/v1/audit", nil); code != 403 {
		t.Fatalf("non-admin read the audit log: %d", code)
	}
	if code, _ := e.do("root", "GET", "/api/v1/audit", nil); code != 200 {
		t.Fatalf("admin audit: %d", code)
	}
}
