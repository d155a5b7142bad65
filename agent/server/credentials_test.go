package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

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

// sshKeyPair returns a fresh unencrypted ed25519 key in OpenSSH format and its
// authorized_keys line, and a known_hosts line for host.
func sshKeyPair(t *testing.T, host string) (private, public, known string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(key)
	hostPub, _, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewPublicKey(hostPub)
	return string(pem.EncodeToMemory(block)), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), knownhosts.Line([]string{host}, hk)
}

// TestSSHCredentials: an SSH key is stored next to the host's token (not over it), its
// answer and the list show the fingerprint and public key but never the private key,
// removing one kind keeps the other, and what a session could not use is refused with
// the fix.
func TestSSHCredentials(t *testing.T) {
	e := newEnv(t, denyAuthorizer{})
	const host = "git.example.com:2222"
	private, public, known := sshKeyPair(t, host)
	keyBody := private[strings.Index(private, "\n")+1 : strings.Index(private, "\n-----END")]
	if code, body := e.do("alice", "PUT", "/api/v1/credentials/"+host, apiv1.PutCredentialRequest{Token: "tok-https"}); code != http.StatusOK {
		t.Fatalf("put token: %d %s", code, body)
	}
	code, body := e.do("alice", "PUT", "/api/v1/credentials/"+host, apiv1.PutCredentialRequest{Kind: "ssh", PrivateKey: private, KnownHosts: "# from ssh-keyscan\n" + known + "\n"})
	if code != http.StatusOK {
		t.Fatalf("put ssh: %d %s", code, body)
	}
	var c apiv1.Credential
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(public))
	if c.Host != host || c.Kind != apiv1.CredentialKindSSH || c.PublicKey != public || c.Fingerprint != ssh.FingerprintSHA256(pub) || c.Username != "" {
		t.Errorf("put answer %+v", c)
	}
	stored, err := e.st.GetCredential(t.Context(), e.users["alice"].UserID, gitcred.SSHProvider(host))
	if err != nil {
		t.Fatal(err)
	}
	if sec, _ := gitcred.Decode(stored.Secret); !strings.Contains(sec.PrivateKey, "OPENSSH PRIVATE KEY") || sec.KnownHosts != known+"\n" {
		t.Errorf("stored %+v", sec)
	}

	code, body = e.do("alice", "GET", "/api/v1/credentials", nil)
	var list apiv1.CredentialList
	if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list: %d %s", code, body)
	}
	var kinds []string
	for _, it := range list.Items {
		kinds = append(kinds, it.Host+"/"+it.Kind+"/"+it.Fingerprint)
	}
	if want := []string{host + "/ssh/" + c.Fingerprint, host + "/token/"}; !slices.Equal(sortedCopy(kinds), sortedCopy(want)) {
		t.Errorf("list = %v, want %v", kinds, want)
	}
	if strings.Contains(string(body), keyBody[:40]) || strings.Contains(string(body), "tok-https") {
		t.Errorf("list shows a secret: %s", body)
	}

	// Refusals: the field, the fix, never the key.
	_, encKey, _ := ed25519.GenerateKey(rand.Reader)
	enc, _ := ssh.MarshalPrivateKeyWithPassphrase(encKey, "", []byte("pw"))
	for _, tc := range []struct {
		req  apiv1.PutCredentialRequest
		want string
	}{
		{apiv1.PutCredentialRequest{Kind: "ssh", PrivateKey: string(pem.EncodeToMemory(enc)), KnownHosts: known}, "privateKey: the private key is protected by a passphrase"},
		{apiv1.PutCredentialRequest{Kind: "ssh", PrivateKey: private}, "knownHosts: the host's key is required"},
		{apiv1.PutCredentialRequest{Kind: "ssh", PrivateKey: private, KnownHosts: strings.Replace(known, "[git.example.com]:2222", "git.example.com", 1)}, "knownHosts: no line names [git.example.com]:2222: give the host key line of [git.example.com]:2222, as `ssh-keyscan -p 2222 git.example.com` prints it"},
		{apiv1.PutCredentialRequest{Kind: "ssh", PrivateKey: private, KnownHosts: known, Username: "git"}, "an ssh credential takes privateKey and knownHosts, not token or username"},
		{apiv1.PutCredentialRequest{PrivateKey: private, KnownHosts: known}, `send them with kind "ssh"`},
		{apiv1.PutCredentialRequest{Kind: "gpg", Token: "x"}, `kind "gpg" is not a credential kind`},
	} {
		code, body := e.do("alice", "PUT", "/api/v1/credentials/"+host, tc.req)
		if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, tc.want) || strings.Contains(string(body), keyBody[:40]) {
			t.Errorf("PUT %+v: %d %s, want 400 with %q", tc.req.Kind, code, body, tc.want)
		}
	}

	// Removing the SSH key keeps the token; removing without a kind takes what is left.
	if code, body := e.do("alice", "DELETE", "/api/v1/credentials/"+host+"?kind=ssh", nil); code != http.StatusNoContent {
		t.Fatalf("delete ssh: %d %s", code, body)
	}
	if _, err := e.st.GetCredential(t.Context(), e.users["alice"].UserID, gitcred.Provider(host)); err != nil {
		t.Errorf("the token went with the SSH key: %v", err)
	}
	if code, _ := e.do("alice", "DELETE", "/api/v1/credentials/"+host+"?kind=ssh", nil); code != http.StatusNotFound {
		t.Errorf("second delete of the SSH key: %d", code)
	}
	if code, body := e.do("alice", "DELETE", "/api/v1/credentials/"+host+"?kind=pgp", nil); code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, `kind "pgp" is not a credential kind`) {
		t.Errorf("delete ?kind=pgp: %d %s", code, body)
	}
	if code, _ := e.do("alice", "DELETE", "/api/v1/credentials/"+host, nil); code != http.StatusNoContent {
		t.Errorf("delete the rest: %d", code)
	}
	// The audit trail names the key by fingerprint only.
	page, err := e.st.ListAudit(t.Context(), store.AuditFilter{Target: host})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range page.Items {
		found = found || (ev.Action == "credential.put" && ev.Detail == "kind ssh, key "+c.Fingerprint)
		if strings.Contains(ev.Detail, keyBody[:40]) {
			t.Errorf("audit detail holds the key: %+v", ev)
		}
	}
	if !found {
		t.Errorf("no audit event names the key's fingerprint: %+v", page.Items)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
