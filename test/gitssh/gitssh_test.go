package gitssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// client is a key file and a known_hosts file for the real ssh client, and git run with
// GIT_SSH_COMMAND pointing at them.
type client struct {
	t               *testing.T
	key, knownHosts string
}

func newClient(t *testing.T, knownHosts string) (*client, ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &client{t: t, key: filepath.Join(dir, "id"), knownHosts: filepath.Join(dir, "known_hosts")}
	if err := os.WriteFile(c.key, pem.EncodeToMemory(block), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.knownHosts, []byte(knownHosts+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return c, signer.PublicKey()
}

func (c *client) git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
		"GIT_SSH_COMMAND=ssh -i "+c.key+" -o IdentitiesOnly=yes -o UserKnownHostsFile="+c.knownHosts+" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// bareRepo makes root/NAME.git with one commit on main.
func bareRepo(t *testing.T, root, name string) {
	t.Helper()
	work := t.TempDir()
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "first"},
		{"clone", "-q", "--bare", work, filepath.Join(root, name+".git")},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
}

// TestCloneAndPushWithTheAuthorizedKey: the real ssh and git clone with the authorized
// key, over ssh:// and the scp-like form, and a push lands in the bare repository.
func TestCloneAndPushWithTheAuthorizedKey(t *testing.T) {
	root := t.TempDir()
	bareRepo(t, root, "repo")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, pub := newClient(t, s.KnownHosts())
	s.Authorize(pub)
	if !strings.HasPrefix(s.KnownHosts(), "[127.0.0.1]:") {
		t.Errorf("KnownHosts = %q", s.KnownHosts())
	}

	work := filepath.Join(t.TempDir(), "w")
	if out, err := c.git("", "clone", "-q", s.URL("repo"), work); err != nil {
		t.Fatalf("clone %s: %v\n%s", s.URL("repo"), err, out)
	}
	if out, err := c.git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "pushed"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := c.git(work, "push", "-q", "origin", "HEAD:refs/heads/feature"); err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	got, err := exec.Command("git", "--git-dir", filepath.Join(root, "repo.git"), "log", "-1", "--format=%s", "feature").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "pushed" {
		t.Errorf("the push did not land: %q %v", got, err)
	}
	// A path that leaves the root is cleaned into it, and one that is not a repository
	// is refused.
	if out, err := c.git("", "ls-remote", "ssh://git@"+s.Host()+"/../../etc/passwd"); err == nil || !strings.Contains(out, "does not appear to be a git repository") {
		t.Errorf("ls-remote outside the root: %v\n%s", err, out)
	}
	if out, err := c.git("", "ls-remote", "ssh://git@"+s.Host()+"/../repo.git"); err != nil || !strings.Contains(out, "refs/heads/feature") {
		t.Errorf("ls-remote /../repo.git: %v\n%s", err, out)
	}
}

// TestRefusesOtherKeysAndHosts: a key it was not given is refused, and a client that
// trusts another host key stops at the host key.
func TestRefusesOtherKeysAndHosts(t *testing.T) {
	root := t.TempDir()
	bareRepo(t, root, "repo")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stranger, _ := newClient(t, s.KnownHosts())
	if out, err := stranger.git("", "ls-remote", s.URL("repo")); err == nil || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("an unauthorized key: %v\n%s", err, out)
	}
	other, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// The other server's host key, under this server's address.
	line := strings.Replace(other.KnownHosts(), knownhosts.Normalize(other.Host()), knownhosts.Normalize(s.Host()), 1)
	if !strings.HasPrefix(line, knownhosts.Normalize(s.Host())+" ") {
		t.Fatalf("known_hosts line %q", line)
	}
	fooled, pub := newClient(t, line)
	s.Authorize(pub)
	if out, err := fooled.git("", "ls-remote", s.URL("repo")); err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Errorf("a wrong host key: %v\n%s", err, out)
	}
}
