package sessioninit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/test/gitssh"
)

// sshServer serves one repository, private.git, over SSH (test/gitssh) and returns the
// server; nobody is authorized yet.
func sshServer(t *testing.T) *gitssh.Server {
	t.Helper()
	root := t.TempDir()
	if out, err := exec.Command("git", "clone", "-q", "--bare", gitRepo(t), filepath.Join(root, "private.git")).CombinedOutput(); err != nil {
		t.Fatalf("git clone --bare: %v %s", err, out)
	}
	s, err := gitssh.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	t.Setenv("HOME", t.TempDir()) // Run configures the session's git in $HOME
	return s
}

// sshFiles writes a fresh key and the given known_hosts lines as the Secret volume does
// (0400) and points GIT_SSH_COMMAND at them as the pod spec does; it returns the key
// file and its public key.
func sshFiles(t *testing.T, knownHosts string) (string, ssh.PublicKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, kh := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o400); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kh, []byte(knownHosts+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_SSH_COMMAND", gitcred.SSHCommand(key, kh))
	signer, _ := ssh.NewSignerFromKey(priv)
	return key, signer.PublicKey()
}

// TestClonesOverSSHWithTheOwnersKey: with the key the host authorizes and the host's
// key, the clone of an ssh:// repository works through the real ssh.
func TestClonesOverSSHWithTheOwnersKey(t *testing.T) {
	s := sshServer(t)
	key, pub := sshFiles(t, s.KnownHosts())
	s.Authorize(pub)
	ws := t.TempDir()
	o := Options{Repo: s.URL("private"), Workspace: ws, ConfigPath: filepath.Join(t.TempDir(), "c.json"), SSHKey: key}
	if err := Run(context.Background(), o); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(ws, "README.md")); err != nil || string(b) != "main\n" {
		t.Errorf("README.md = %q, %v", b, err)
	}
	if args := strings.Join(o.Args(), " "); !strings.Contains(args, "--ssh-key="+key) {
		t.Errorf("Args() = %q", args)
	}
	// git in the session (the same $HOME, without the init container's GIT_SSH_COMMAND)
	// pushes with the owner's key through core.sshCommand in $HOME/.gitconfig.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_CONFIG_GLOBAL=") && !strings.HasPrefix(kv, "GIT_SSH_COMMAND=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GIT_AUTHOR_NAME=s", "GIT_AUTHOR_EMAIL=s@example.com", "GIT_COMMITTER_NAME=s", "GIT_COMMITTER_EMAIL=s@example.com")
	for _, args := range [][]string{{"commit", "-q", "--allow-empty", "-m", "from the session"}, {"push", "-q", "origin", "HEAD:refs/heads/session"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir, cmd.Env = ws, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s in the session: %v\n%s", args[0], err, out)
		}
	}
}

// TestSSHCloneErrorsSayWhatToDo: no key mounted, a key the host refuses, and a host key
// that is not the stored one each fail with what to do, naming the command.
func TestSSHCloneErrorsSayWhatToDo(t *testing.T) {
	s := sshServer(t)
	host := s.Host()
	add := "`kubectl agents credential add " + host + " --ssh-key-file KEY --known-hosts FILE`"
	other, err := gitssh.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, tc := range []struct {
		name       string
		knownHosts string
		authorize  bool
		noKey      bool
		want       string
	}{
		{"no key", s.KnownHosts(), false, true, "you have no SSH key for " + host + "; add one (a deploy key of the repository, with the host's key) with " + add},
		{"refused key", s.KnownHosts(), false, false, "your SSH key for " + host + " was used; if it was refused, check that its public key"},
		{"other host key", strings.Replace(other.KnownHosts(), other.Host()[strings.Index(other.Host(), ":"):], host[strings.Index(host, ":"):], 1), true, false, "the host did not present the host key stored with your SSH key for " + host},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, pub := sshFiles(t, tc.knownHosts)
			if tc.authorize {
				s.Authorize(pub)
			}
			if tc.noKey {
				key = filepath.Join(t.TempDir(), "id") // the optional volume without the key
			}
			o := Options{Repo: s.URL("private"), Workspace: t.TempDir(), ConfigPath: filepath.Join(t.TempDir(), "c.json"), SSHKey: key}
			err := Run(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error with %q", err, tc.want)
			}
		})
	}
}
