// Package gitssh serves bare git repositories over SSH the way a hosted git server does:
// an SSH server (golang.org/x/crypto/ssh) on loopback that lets in only the public keys
// it was given, whatever the login name (git@), and runs git-upload-pack or
// git-receive-pack on the repository the client names, so clones and pushes go through
// the real ssh client and git's own pack protocol. Its host key is fresh per server:
// KnownHosts is the line a client must trust. The end-to-end environment (test/e2eenv)
// and package tests use it.
package gitssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Server serves the bare repositories (NAME.git) under a root directory.
type Server struct {
	root    string
	ln      net.Listener
	hostKey ssh.Signer
	config  *ssh.ServerConfig

	mu         sync.Mutex
	authorized map[string]bool // by marshalled public key
	conns      map[net.Conn]bool
	wg         sync.WaitGroup
}

// New starts a server for root on a loopback port.
func New(root string) (*Server, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{root: root, ln: ln, hostKey: hostKey, authorized: map[string]bool{}, conns: map[net.Conn]bool{}}
	s.config = &ssh.ServerConfig{PublicKeyCallback: s.checkKey}
	s.config.AddHostKey(hostKey)
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Authorize lets the holder of pub's private key in.
func (s *Server) Authorize(pub ssh.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorized[string(pub.Marshal())] = true
}

// Host is the server's host:port, as a credential for it is keyed.
func (s *Server) Host() string { return s.ln.Addr().String() }

// KnownHosts is the known_hosts line for the server's host key ("[127.0.0.1]:PORT
// ssh-ed25519 ..."), what `ssh-keyscan -p PORT 127.0.0.1` would print.
func (s *Server) KnownHosts() string {
	return knownhosts.Line([]string{s.Host()}, s.hostKey.PublicKey())
}

// URL is the ssh:// URL of repository name (NAME.git under the root).
func (s *Server) URL(name string) string { return "ssh://git@" + s.Host() + "/" + name + ".git" }

// Close stops accepting, closes the connections being served and waits for them.
func (s *Server) Close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) checkKey(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.authorized[string(key.Marshal())] {
		return &ssh.Permissions{}, nil
	}
	return nil, errors.New("public key not authorized")
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) handle(c net.Conn) {
	defer func() { _ = c.Close() }()
	conn, chans, reqs, err := ssh.NewServerConn(c, s.config)
	if err != nil {
		return // a refused key or a client that gave up at the host key
	}
	defer func() { _ = conn.Close() }()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(ch, creqs)
		}()
	}
	wg.Wait()
}

// session answers one session channel: env requests (GIT_PROTOCOL, for protocol v2)
// and one exec of git-upload-pack or git-receive-pack.
func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer func() { _ = ch.Close() }()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			if ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" {
				env = append(env, kv.Name+"="+kv.Value)
			}
			_ = req.Reply(true, nil)
		case "exec":
			var cmd struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &cmd); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			service, dir, err := s.parse(cmd.Command)
			if err != nil {
				_ = req.Reply(true, nil)
				fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
				exit(ch, 128)
				return
			}
			_ = req.Reply(true, nil)
			exit(ch, s.run(ch, service, dir, env))
			return
		default:
			_ = req.Reply(false, nil)
		}
	}
}

// parse reads git's remote command, `git-upload-pack '/org/repo.git'` (or without the
// leading slash for scp-like addresses), into the service and the repository directory
// under the root; nothing outside the root is served.
func (s *Server) parse(command string) (service, dir string, err error) {
	name, arg, ok := strings.Cut(command, " ")
	if !ok || (name != "git-upload-pack" && name != "git-receive-pack") {
		return "", "", fmt.Errorf("only git-upload-pack and git-receive-pack are served, not %q", command)
	}
	if len(arg) < 2 || arg[0] != '\'' || arg[len(arg)-1] != '\'' || strings.Contains(arg[1:len(arg)-1], "'") {
		return "", "", fmt.Errorf("unexpected repository argument %q", arg)
	}
	rel := path.Clean("/" + arg[1:len(arg)-1])
	if !strings.HasSuffix(rel, ".git") || rel == "/.git" {
		return "", "", fmt.Errorf("'%s' does not appear to be a git repository", rel)
	}
	return strings.TrimPrefix(name, "git-"), filepath.Join(s.root, filepath.FromSlash(rel)), nil
}

// run runs `git SERVICE DIR` with the channel as its standard streams and returns its
// exit status.
func (s *Server) run(ch ssh.Channel, service, dir string, env []string) int {
	cmd := exec.Command("git", service, dir)
	// Command-line scope counts as protected configuration, where safe.directory is
	// read: the repositories may belong to another user than the server.
	cmd.Env = append(append(os.Environ(), env...), "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=safe.directory", "GIT_CONFIG_VALUE_0=*")
	cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 128
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(ch.Stderr(), "fatal: %v\n", err)
		return 128
	}
	// Not waited for: the client need not close its side before the service is done.
	go func() {
		_, _ = io.Copy(stdin, ch)
		_ = stdin.Close()
	}()
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return 128
	}
	return 0
}

func exit(ch ssh.Channel, status int) {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(status))
	_, _ = ch.SendRequest("exit-status", false, b)
}
