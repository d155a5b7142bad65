package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/test/fakegithub"
	"github.com/cakeai/cake-agents/test/githttp"
)

// githubHost is the local stand-in for github.com: one host:port that answers GitHub's
// device flow and REST API (fakegithub) in plain HTTP, which the agent (a local process
// trusting no test CA) calls, and serves git repositories OWNER/NAME.git over HTTPS,
// which sessions clone: a repository URL on it is then on the agent's GitHub host, as
// https://github.com/OWNER/NAME is on github.com. The TLS certificate is httptest's,
// which sessions trust already (the e2e git server has the same one).
type githubHost struct {
	URL  string // http://127.0.0.1:PORT: the agent's github.url
	Host string // 127.0.0.1:PORT
	gh   *fakegithub.Server
	git  *githttp.Handler
	root string
}

func startGitHubHost(t *testing.T, gh *fakegithub.Server) *githubHost {
	t.Helper()
	root := t.TempDir()
	git, err := githttp.New(root)
	if err != nil {
		t.Fatal(err)
	}
	// httptest's certificate, for 127.0.0.1.
	certSrv := httptest.NewUnstartedServer(nil)
	certSrv.StartTLS()
	cfg := certSrv.TLS.Clone()
	certSrv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &githubHost{Host: ln.Addr().String(), gh: gh, git: git, root: root}
	h.URL = "http://" + h.Host
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(newSniffListener(ln, cfg)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

// ServeHTTP sends GitHub's own paths to the fake GitHub and OWNER/NAME.git/... to git.
func (h *githubHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/login/") {
		h.gh.ServeHTTP(w, r)
		return
	}
	owner, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if !ok || r.TLS == nil {
		http.NotFound(w, r)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + owner + "--" + rest // githttp serves NAME.git at the root
	h.git.ServeHTTP(w, r2)
}

// addAppRepo creates the private repository owner/name with one commit on main, which
// only tokens the fake GitHub issued for it (App installation tokens) may read and push;
// it returns the repository's URL and the bare repository's directory.
func (h *githubHost) addAppRepo(t *testing.T, owner, name string) (string, string) {
	t.Helper()
	return h.addRepo(t, owner, name, func(token string) bool { return h.gh.TokenGrants(token, owner, name) })
}

// addUserRepo is addAppRepo for a repository only the given user token (an account
// linked with the device flow) may read and push.
func (h *githubHost) addUserRepo(t *testing.T, owner, name, token string) (string, string) {
	t.Helper()
	return h.addRepo(t, owner, name, func(tok string) bool { return tok == token })
}

func (h *githubHost) addRepo(t *testing.T, owner, name string, allow func(token string) bool) (string, string) {
	t.Helper()
	work := filepath.Join(h.root, ".work", owner, name)
	bare := filepath.Join(h.root, owner+"--"+name+".git")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("# "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "."},
		{"-C", work, "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "commit", "-q", "-m", "init"},
		{"clone", "-q", "--bare", work, bare},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	h.git.SetPrivateFunc(owner+"--"+name+".git", func(_, token string) bool { return allow(token) })
	return "https://" + h.Host + "/" + owner + "/" + name + ".git", bare
}

// sniffListener hands out each connection as TLS when its first byte opens a TLS
// handshake, else as it is: one port for plain HTTP and HTTPS. Each connection is
// sniffed in its own goroutine, so a silent one holds up no other.
type sniffListener struct {
	net.Listener
	conns chan net.Conn
	errc  chan error
}

func newSniffListener(ln net.Listener, cfg *tls.Config) *sniffListener {
	l := &sniffListener{Listener: ln, conns: make(chan net.Conn), errc: make(chan error, 1)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				l.errc <- err
				return
			}
			go func() {
				br := bufio.NewReader(c)
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				first, err := br.Peek(1)
				_ = c.SetReadDeadline(time.Time{})
				if err != nil {
					_ = c.Close()
					return
				}
				var out net.Conn = &peekedConn{Conn: c, r: br}
				if first[0] == 0x16 { // TLS handshake record
					out = tls.Server(out, cfg)
				}
				l.conns <- out
			}()
		}
	}()
	return l
}

func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		if errors.Is(err, net.ErrClosed) {
			return nil, http.ErrServerClosed
		}
		return nil, err
	}
}

// peekedConn reads what was peeked first.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
