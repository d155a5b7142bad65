package sessioninit

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/test/githttp"
)

// privateServer serves one private repository, private.git, over HTTPS; it returns the
// repository's URL. git trusts the server through GIT_SSL_CAINFO.
func privateServer(t *testing.T, token string) string {
	t.Helper()
	root := t.TempDir()
	src := gitRepo(t)
	if out, err := exec.Command("git", "clone", "-q", "--bare", src, filepath.Join(root, "private.git")).CombinedOutput(); err != nil {
		t.Fatalf("git clone --bare: %v %s", err, out)
	}
	h, err := githttp.New(root)
	if err != nil {
		t.Fatal(err)
	}
	h.SetPrivate("private.git", "x-access-token", token)
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSL_CAINFO", ca)
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	return srv.URL + "/private.git"
}

// TestClonesPrivateRepositoryWithTheCredentialFile: with the owner's token in the
// credential file the clone works, and the token ends up in neither the checkout's
// config, nor the log; the GitHub CLI's hosts file is installed in $HOME.
func TestClonesPrivateRepositoryWithTheCredentialFile(t *testing.T) {
	const token = "tok-0123456789"
	repo := privateServer(t, token)
	host := strings.TrimPrefix(repo, "https://")
	host = host[:strings.Index(host, "/")]
	secrets := t.TempDir()
	creds := filepath.Join(secrets, "credentials")
	if err := os.WriteFile(creds, gitcred.StoreFile(map[string]gitcred.Secret{host: {Username: "x-access-token", Token: token}}), 0o400); err != nil {
		t.Fatal(err)
	}
	gh := filepath.Join(secrets, "gh-hosts.yml")
	if err := os.WriteFile(gh, gitcred.GHHostsFile("github.com", gitcred.Secret{Token: token}), 0o400); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	ws := t.TempDir()
	var log bytes.Buffer
	o := Options{Repo: repo, Workspace: ws, ConfigPath: filepath.Join(t.TempDir(), "c.json"), GitCredentials: creds, GHHosts: gh, Stderr: &log}
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if b, err := os.ReadFile(filepath.Join(ws, "README.md")); err != nil || string(b) != "main\n" {
		t.Errorf("README.md = %q, %v", b, err)
	}
	cfg, _ := os.ReadFile(filepath.Join(ws, ".git", "config"))
	if strings.Contains(string(cfg), token) || strings.Contains(log.String(), token) {
		t.Errorf("the token leaked:\n.git/config: %s\nlog: %s", cfg, log.String())
	}
	// gh's hosts.yml follows the Secret volume's file, which the kubelet updates when the
	// agent replaces a GitHub App token.
	hosts := filepath.Join(home, ".config", "gh", "hosts.yml")
	if b, err := os.ReadFile(hosts); err != nil || !strings.Contains(string(b), token) {
		t.Errorf("gh hosts.yml = %q, %v", b, err)
	}
	if err := os.Chmod(gh, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gh, gitcred.GHHostsFile("github.com", gitcred.Secret{Token: "tok-replaced"}), 0o400); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(hosts); err != nil || !strings.Contains(string(b), "tok-replaced") {
		t.Errorf("gh hosts.yml after the Secret's token was replaced = %q, %v", b, err)
	}
	// A second run (a restarted init container) keeps it working.
	if err := installGHHosts(o); err != nil {
		t.Fatalf("install again: %v", err)
	}
	if b, err := os.ReadFile(hosts); err != nil || !strings.Contains(string(b), "tok-replaced") {
		t.Errorf("gh hosts.yml after a second install = %q, %v", b, err)
	}

	// git in the session (OpenCode's shell: the same $HOME, its own environment) pushes
	// with the credential through the helper in $HOME/.gitconfig, which names only the file.
	gc, err := os.ReadFile(filepath.Join(home, ".gitconfig"))
	if err != nil || !strings.Contains(string(gc), creds) || strings.Contains(string(gc), token) {
		t.Fatalf("$HOME/.gitconfig (want the helper naming %s, not the token): %q %v", creds, gc, err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_CONFIG_GLOBAL=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=s", "GIT_AUTHOR_EMAIL=s@example.com",
		"GIT_COMMITTER_NAME=s", "GIT_COMMITTER_EMAIL=s@example.com")
	for _, args := range [][]string{{"commit", "-q", "--allow-empty", "-m", "from the session"}, {"push", "-q", "origin", "HEAD:refs/heads/session"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = ws, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s in the session: %v\n%s", args[0], err, out)
		}
	}
}

// TestPrivateCloneErrorsSayWhatToDo: without a credential for the host the error names
// the command that adds one; with a refused one, the command that replaces it. Neither
// repeats the token.
func TestPrivateCloneErrorsSayWhatToDo(t *testing.T) {
	repo := privateServer(t, "right-token")
	host := strings.TrimPrefix(repo, "https://")
	host = host[:strings.Index(host, "/")]
	wrong := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(wrong, gitcred.StoreFile(map[string]gitcred.Secret{host: {Username: "x-access-token", Token: "wrong-token"}}), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, creds, want string
	}{
		{"no file", "", "you have no credential for " + host + "; if the repository is private, add an access token with `kubectl agents credential add " + host + "`"},
		{"missing file", filepath.Join(t.TempDir(), "credentials"), "you have no credential for " + host},
		{"shared session", "", "this session is shared with every user (created with --private=false), so it carries no one's git credentials"},
		{"refused", wrong, "your credential for " + host + " was used; if it was refused, replace it with `kubectl agents credential add " + host + "`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Repo: repo, Workspace: t.TempDir(), ConfigPath: filepath.Join(t.TempDir(), "c.json"), GitCredentials: tc.creds, Shared: tc.name == "shared session"}
			err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-token") {
				t.Errorf("the error repeats the token: %v", err)
			}
		})
	}
}
