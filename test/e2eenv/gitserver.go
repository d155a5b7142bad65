package e2eenv

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cakeai/cake-agents/test/githttp"
	"github.com/cakeai/cake-agents/test/gitssh"
)

// GitServer serves git repositories over HTTPS with git's own smart-HTTP backend
// (test/githttp), so sessions clone a local repository — shallow, like real ones —
// through the same https:// path a hosted one takes; private ones (AddPrivateRepo) need
// an access token and take pushes. Its CA is written to CAFile; give git
// GIT_SSL_CAINFO=CAFile. SSH serves the same repositories over SSH (test/gitssh) to the
// keys it authorizes.
type GitServer struct {
	srv    *httptest.Server
	h      *githttp.Handler
	root   string
	CAFile string
	SSH    *gitssh.Server
}

// NewGitServer serves the bare repositories under root (created if missing).
func NewGitServer(root string) (*GitServer, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	h, err := githttp.New(root)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv.Listener = ln
	srv.StartTLS()
	g := &GitServer{srv: srv, h: h, root: root, CAFile: filepath.Join(root, "ca.crt")}
	cert := srv.Certificate()
	if err := os.WriteFile(g.CAFile, pemCert(cert.Raw), 0o644); err != nil {
		srv.Close()
		return nil, err
	}
	if g.SSH, err = gitssh.New(root); err != nil {
		srv.Close()
		return nil, err
	}
	return g, nil
}

// Close stops the servers.
func (g *GitServer) Close() {
	g.srv.Close()
	g.SSH.Close()
}

// AddRepo creates repository name.git with files committed on branch main and returns
// its https:// URL. Calling it again with the same name adds a commit.
func (g *GitServer) AddRepo(name string, files map[string]string) (string, error) {
	work := filepath.Join(g.root, ".work", name)
	bare := filepath.Join(g.root, name+".git")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	for f, content := range files {
		p := filepath.Join(work, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	steps := [][]string{}
	if _, err := os.Stat(filepath.Join(work, ".git")); err != nil {
		steps = append(steps, []string{"-C", work, "init", "-q", "-b", "main"})
	}
	steps = append(steps,
		[]string{"-C", work, "add", "."},
		[]string{"-C", work, "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "commit", "-q", "--allow-empty", "-m", "update"},
	)
	if _, err := os.Stat(bare); err != nil {
		steps = append(steps, []string{"clone", "-q", "--bare", work, bare})
	} else {
		steps = append(steps, []string{"-C", work, "push", "-q", bare, "main"})
	}
	for _, args := range steps {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return g.srv.URL + "/" + name + ".git", nil
}

// AddPrivateRepo is AddRepo for a repository that answers only to user and token
// (HTTP basic authentication), and takes their pushes.
func (g *GitServer) AddPrivateRepo(name string, files map[string]string, user, token string) (string, error) {
	g.h.SetPrivate(name+".git", user, token)
	return g.AddRepo(name, files)
}

// Dir is the bare repository of name on disk, to check what was pushed.
func (g *GitServer) Dir(name string) string { return filepath.Join(g.root, name+".git") }

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
