package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testPrivateRepoSSH: a repository on the local SSH git server (test/gitssh, which lets
// in only the keys it was given) fails to clone without a key, with a `session why`
// naming the command to add one; once alice adds a deploy key made as the help says,
// with the host's key from a known_hosts file, a session clones it through the real ssh
// and a push from the session's workspace, with the session's own GIT_SSH_COMMAND, lands
// on the server. The key is a canary for the leak scan.
func (p *product) testPrivateRepoSSH(t *testing.T) {
	g := p.env.Git
	if _, err := g.AddPrivateRepo("private-ssh", map[string]string{"README.md": "# private over ssh\n"}, apiv1.DefaultCredentialUsername, p.secrets.canary("the https token of the ssh repository")); err != nil {
		t.Fatal(err)
	}
	repo, host := g.SSH.URL("private-ssh"), g.SSH.Host()

	denied := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", denied)
	p.waitState(t, p.alice, denied, apiv1.StateFailed)
	why := p.agents(t, p.alice, "session", "why", denied)
	if want := "kubectl agents credential add " + host + " --ssh-key-file"; !strings.Contains(why, want) {
		t.Fatalf("session why does not name %q:\n%s", want, why)
	}

	// The deploy key as the help makes it, and the host's key as ssh-keyscan prints it.
	dir := t.TempDir()
	key := filepath.Join(dir, "deploy_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cake-agents", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pubLine, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubLine)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key's first line of base64 stands for the key in the leak scan.
	p.secrets.add(strings.Split(string(priv), "\n")[1], "an SSH deploy key")
	g.SSH.Authorize(pub)
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte(g.SSH.KnownHosts()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	added := p.agents(t, p.alice, "credential", "add", host, "--ssh-key-file", key, "--known-hosts", known)
	defer p.agents(t, p.alice, "credential", "remove", host, "--kind", "ssh")
	fingerprint := ssh.FingerprintSHA256(pub)
	if !strings.Contains(added, fingerprint) || !strings.Contains(added, strings.Fields(string(pubLine))[1]) {
		t.Fatalf("credential add does not show the key's fingerprint %s and public key:\n%s", fingerprint, added)
	}
	if list := p.agents(t, p.alice, "credential", "list"); !strings.Contains(list, host) || !strings.Contains(list, "ssh") || !strings.Contains(list, fingerprint) {
		t.Fatalf("credential list:\n%s", list)
	}

	id := lastField(p.agents(t, p.alice, "session", "create", "--repo", repo, "--wait", "-o", "name"))
	defer p.agents(t, p.alice, "session", "delete", id)
	pods, err := p.kube.CoreV1().Pods(p.ns).List(context.Background(), podOf(id))
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("session pod of %s: %v (%d)", id, err, len(pods.Items))
	}
	pod := pods.Items[0]
	var out []byte
	eventually(t, time.Minute, "the checkout over ssh", func() error {
		out, err = p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, "cat", "README.md")
		if err != nil || string(out) != "# private over ssh\n" {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	run := func(args ...string) {
		t.Helper()
		out, err := p.env.Runner.Exec(context.Background(), pod.Namespace, pod.Name, args...)
		if err != nil {
			t.Fatalf("%s in the session: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("git", "-c", "user.name=session", "-c", "user.email=session@example.com", "commit", "-q", "--allow-empty", "-m", "from the session over ssh")
	run("git", "push", "-q", "origin", "HEAD:refs/heads/from-session-ssh")
	got, err := exec.Command("git", "--git-dir", g.Dir("private-ssh"), "log", "-1", "--format=%s", "from-session-ssh").CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "from the session over ssh" {
		t.Fatalf("the push did not land on the git server: %q %v", got, err)
	}
}
