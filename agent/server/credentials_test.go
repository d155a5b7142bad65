package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestCredentials(t *testing.T) {
	e := newEnv(t, denyAuthorizer{})
	const secret = "ghp_s3cr3t-value"

	code, body := e.do("alice", "PUT", "/api/v1/credentials/Git.Example.com:8443", apiv1.PutCredentialRequest{Token: secret + "\n"})
	if code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	if strings.Contains(string(body), secret) {
		t.Fatalf("put answer shows the secret: %s", body)
	}
	var c apiv1.Credential
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Host != "git.example.com:8443" || c.Kind != apiv1.CredentialKindToken || c.Username != apiv1.DefaultCredentialUsername {
		t.Errorf("put answer %+v", c)
	}
	// Stored encrypted under the owner, with the trailing newline gone.
	stored, err := e.st.GetCredential(t.Context(), e.users["alice"].UserID, gitcred.Provider("git.example.com:8443"))
	if err != nil {
		t.Fatal(err)
	}
	if sec, _ := gitcred.Decode(stored.Secret); sec.Token != secret {
		t.Errorf("stored token %q", sec.Token)
	}
	// Replace with a user name; other credentials of the user are not listed.
	if code, body := e.do("alice", "PUT", "/api/v1/credentials/git.example.com:8443", apiv1.PutCredentialRequest{Token: "t2", Username: "alice"}); code != http.StatusOK {
		t.Fatalf("replace: %d %s", code, body)
	}
	if err := e.st.PutCredential(t.Context(), &store.Credential{OwnerID: e.users["alice"].UserID, Provider: "openai", Secret: []byte("sk")}); err != nil {
		t.Fatal(err)
	}
	code, body = e.do("alice", "GET", "/api/v1/credentials", nil)
	var list apiv1.CredentialList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list: %d %s", code, body)
	}
	if len(list.Items) != 1 || list.Items[0].Host != "git.example.com:8443" || list.Items[0].Username != "alice" {
		t.Errorf("list = %+v", list.Items)
	}
	if strings.Contains(string(body), "t2") || strings.Contains(string(body), secret) {
		t.Errorf("list shows a secret: %s", body)
	}
	// Owner only: bob (and root, an admin) see none of alice's and cannot delete them.
	for _, u := range []string{"bob", "root"} {
		code, body = e.do(u, "GET", "/api/v1/credentials", nil)
		if code != http.StatusOK || strings.Contains(string(body), "git.example.com") {
			t.Errorf("%s lists: %d %s", u, code, body)
		}
		if code, _ := e.do(u, "DELETE", "/api/v1/credentials/git.example.com:8443", nil); code != http.StatusNotFound {
			t.Errorf("%s deletes alice's credential: %d", u, code)
		}
	}
	// Refusals say what to fix and never echo the token.
	for _, tc := range []struct {
		path string
		req  any
		want string
	}{
		{"/api/v1/credentials/https:%2F%2Fgithub.com", apiv1.PutCredentialRequest{Token: "x"}, "give the host of the repository URL"},
		{"/api/v1/credentials/github.com", apiv1.PutCredentialRequest{Token: " "}, "token: the access token is empty"},
		{"/api/v1/credentials/github.com", apiv1.PutCredentialRequest{Token: "a\x00" + secret}, "token: give one token"},
		{"/api/v1/credentials/github.com", apiv1.PutCredentialRequest{Token: "x", Username: "a\nb"}, "username:"},
		{"/api/v1/credentials/github.com", `{"token":"x","password":"y"}`, "password"},
	} {
		code, body := e.do("alice", "PUT", tc.path, tc.req)
		if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, tc.want) || strings.Contains(string(body), secret) {
			t.Errorf("PUT %s %v: %d %s, want 400 with %q", tc.path, tc.req, code, body, tc.want)
		}
	}
	if code, _ := e.do("alice", "DELETE", "/api/v1/credentials/git.example.com:8443", nil); code != http.StatusNoContent {
		t.Errorf("delete: %d", code)
	}
	if code, body := e.do("alice", "DELETE", "/api/v1/credentials/git.example.com:8443", nil); code != http.StatusNotFound || !strings.Contains(errorOf(t, body).Message, "credential for git.example.com:8443 not found") {
		t.Errorf("second delete: %d %s", code, body)
	}
	// Every change is audited, with the host and never the token.
	page, err := e.st.ListAudit(t.Context(), store.AuditFilter{Target: "git.example.com:8443"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range page.Items {
		actions = append(actions, ev.Action+"/"+ev.Outcome)
		if strings.Contains(ev.Detail, secret) || strings.Contains(ev.Detail, "t2") {
			t.Errorf("audit detail holds the token: %+v", ev)
		}
	}
	// Newest first: the second delete, the delete, bob's and root's refused deletes, the puts.
	want := "credential.delete/error credential.delete/success credential.delete/error credential.delete/error credential.put/success credential.put/success"
	if strings.Join(actions, " ") != want {
		t.Errorf("audit %v, want %s", actions, want)
	}
}
