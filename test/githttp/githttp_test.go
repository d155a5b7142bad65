package githttp

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func git(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com"}, env...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestPrivateRepository: a private repository refuses clones without the token, serves
// them with it and takes a push; a public one stays readable and refuses pushes.
func TestPrivateRepository(t *testing.T) {
	root := t.TempDir()
	work := filepath.Join(root, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "init"}, {"clone", "-q", "--bare", ".", "../secret.git"}, {"clone", "-q", "--bare", ".", "../public.git"}, {"clone", "-q", "--bare", ".", "../public-later.git"}} {
		if out, err := git(t, work, nil, args...); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	h, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	h.SetPrivate("secret.git", "x-access-token", "tok")
	// Tokens that change (a GitHub App's): whoever allow accepts.
	h.SetPrivateFunc("public-later.git", func(user, token string) bool { return token == "tok-of-the-hour" })
	srv := httptest.NewServer(h)
	defer srv.Close()
	u := strings.Replace(srv.URL, "http://", "http://x-access-token:%s@", 1) + "/secret.git"

	if out, err := git(t, root, nil, "clone", "-q", srv.URL+"/secret.git", "anon"); err == nil {
		t.Errorf("anonymous clone of the private repository worked: %s", out)
	}
	if out, err := git(t, root, nil, "clone", "-q", strings.Replace(u, "%s", "wrong", 1), "wrong"); err == nil {
		t.Errorf("clone with a wrong token worked: %s", out)
	}
	clone := filepath.Join(root, "clone")
	if out, err := git(t, root, nil, "clone", "-q", strings.Replace(u, "%s", "tok", 1), clone); err != nil {
		t.Fatalf("clone with the token: %v %s", err, out)
	}
	if out, err := git(t, clone, nil, "commit", "-q", "--allow-empty", "-m", "pushed"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := git(t, clone, nil, "push", "-q", "origin", "HEAD:refs/heads/pushed"); err != nil {
		t.Fatalf("push with the token: %v %s", err, out)
	}
	if out, err := git(t, root, nil, "--git-dir=secret.git", "log", "-1", "--format=%s", "pushed"); err != nil || strings.TrimSpace(out) != "pushed" {
		t.Errorf("pushed branch on the server: %q %v", out, err)
	}

	if out, err := git(t, root, nil, "clone", "-q", srv.URL+"/public-later.git", "anon2"); err == nil {
		t.Errorf("anonymous clone of a repository with an allow func worked: %s", out)
	}
	if out, err := git(t, root, nil, "clone", "-q", strings.Replace(srv.URL, "http://", "http://x-access-token:tok-of-the-hour@", 1)+"/public-later.git", "hour"); err != nil {
		t.Errorf("clone with the token allow accepts: %v %s", err, out)
	}

	pub := filepath.Join(root, "pub")
	if out, err := git(t, root, nil, "clone", "-q", srv.URL+"/public.git", pub); err != nil {
		t.Fatalf("public clone: %v %s", err, out)
	}
	if out, err := git(t, pub, nil, "push", "-q", "origin", "HEAD:refs/heads/x"); err == nil {
		t.Errorf("anonymous push to the public repository worked: %s", out)
	}
}
