// Package opencodetest starts a real `opencode serve` for tests, wired to the fake
// OpenAI-compatible model in test/fakemodel and isolated from the machine: its own HOME
// and workspace in t.TempDir, no network (models fetch, autoupdate, share and plugin
// installs are switched off), and killed in t.Cleanup.
//
// The binary comes from OPENCODE_BIN, else from hack/install-opencode.sh (which
// downloads the pinned version once into the repository's cache).
package opencodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/opencode"
	"github.com/cakeai/cake-agents/internal/syncbuf"
	"github.com/cakeai/cake-agents/test/fakemodel"
)

// Server is a running OpenCode.
type Server struct {
	// URL is OpenCode's base URL (http://127.0.0.1:PORT).
	URL string
	// Addr is host:port of URL.
	Addr     string
	Password string
	// Model is the fake model OpenCode talks to.
	Model *fakemodel.Server
	// Workspace is OpenCode's working directory (a git repository).
	Workspace string
	// Client is an opencode.Client for URL with the password.
	Client *opencode.Client

	logs *syncbuf.Buffer
}

// Logs returns what OpenCode printed so far.
func (s *Server) Logs() string { return s.logs.String() }

// Config is the OpenCode configuration for an OpenAI-compatible model at baseURL (ending
// in /v1), shaped like the one the session pods get: provider "litellm", model
// "litellm/<model>", offline, with limit.output set so OpenCode does not ask for 32000
// tokens.
func Config(baseURL, model string) []byte {
	cfg := map[string]any{
		"$schema": "https://opencode.ai/config.json",
		"provider": map[string]any{
			"litellm": map[string]any{
				"npm":     "@ai-sdk/openai-compatible",
				"name":    "LiteLLM",
				"options": map[string]any{"baseURL": baseURL, "apiKey": "{env:LITELLM_API_KEY}"},
				"models": map[string]any{
					model: map[string]any{"name": model, "limit": map[string]any{"context": 128000, "output": 4096}},
				},
			},
		},
		"model":             "litellm/" + model,
		"small_model":       "litellm/" + model,
		"enabled_providers": []string{"litellm"},
		"autoupdate":        false,
		"share":             "disabled",
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// Binary returns the OpenCode binary to use, installing the pinned one if needed. In
// -short mode it skips the test when no binary is at hand rather than downloading.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("OPENCODE_BIN"); p != "" {
		return p
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cached := filepath.Join(root, ".cache", "opencode", "bin", "opencode")
	if testing.Short() {
		if _, err := os.Stat(cached); err != nil {
			t.Skip("OpenCode is not installed: run hack/install-opencode.sh or set OPENCODE_BIN (tests without -short install it)")
		}
	}
	cmd := exec.Command(filepath.Join(root, "hack", "install-opencode.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/install-opencode.sh failed: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "install-opencode.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (no hack/install-opencode.sh above the working directory)")
		}
		dir = parent
	}
}

// Options tune Start.
type Options struct {
	// Password defaults to a fixed test password.
	Password string
	// Model defaults to a new fakemodel.Server served on a loopback port.
	Model *fakemodel.Server
	// ReadyTimeout defaults to 90s (OpenCode takes 4-17 s on a busy 2-core machine).
	ReadyTimeout time.Duration
}

// Start runs `opencode serve` on a free loopback port and waits until it is healthy.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary(t)
	if _, err := exec.LookPath("rg"); err != nil {
		t.Fatal("ripgrep (rg) must be on PATH for OpenCode's tools: apt-get install -y ripgrep")
	}
	if opts.Password == "" {
		opts.Password = "opencodetest-password"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	if opts.Model == nil {
		opts.Model = fakemodel.New()
	}
	modelSrv := httptest.NewServer(opts.Model)
	t.Cleanup(modelSrv.Close)

	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	ws := filepath.Join(dir, "workspace")
	for _, d := range []string{home, ws, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("git", "-C", ws, "init", "-q").CombinedOutput(); err != nil {
		t.Fatalf("git init workspace: %v: %s", err, out)
	}
	cfgPath := filepath.Join(dir, "opencode.json")
	if err := os.WriteFile(cfgPath, Config(modelSrv.URL+"/v1", fakemodel.ModelID), 0o600); err != nil {
		t.Fatal(err)
	}

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "serve", "--port", strconv.Itoa(port), "--hostname", "127.0.0.1", "--print-logs", "--log-level", "INFO")
	cmd.Dir = ws
	cmd.Env = append(filteredEnv(),
		"HOME="+home,
		"TMPDIR="+filepath.Join(dir, "tmp"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
		"OPENCODE_CONFIG="+cfgPath,
		"OPENCODE_SERVER_PASSWORD="+opts.Password,
		"OPENCODE_DISABLE_MODELS_FETCH=1",
		"OPENCODE_DISABLE_AUTOUPDATE=1",
		"OPENCODE_DISABLE_SHARE=1",
		"LITELLM_API_KEY=fake-key",
		// Any npm access (a background plugin install) fails fast instead of hanging.
		"npm_config_registry=http://127.0.0.1:9/",
	)
	logs := &syncbuf.Buffer{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	// Own process group so Cleanup kills anything OpenCode started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start opencode: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("opencode output:\n%s", tail(logs.String(), 4000))
		}
	})

	url := "http://" + addr
	// A hung request still fails, but only its answer's headers are bounded: Client.Timeout
	// would also cut the event streams Run and the relays read for as long as the caller's
	// context allows (a loaded machine took a terminal's exit past 30 s into the stream).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = 30 * time.Second
	client, err := opencode.New(url, opts.Password, &http.Client{Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.ReadyTimeout)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := client.WaitHealthy(ctx, 250*time.Millisecond); err != nil {
		t.Fatalf("opencode did not become healthy: %v\n%s", err, tail(logs.String(), 4000))
	}
	return &Server{URL: url, Addr: addr, Password: opts.Password, Model: opts.Model, Workspace: ws, Client: client, logs: logs}
}

// filteredEnv drops variables that would make OpenCode read the developer's own
// configuration or credentials.
func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OPENCODE_") || strings.HasPrefix(k, "XDG_") || k == "HOME" ||
			strings.HasSuffix(k, "_API_KEY") || strings.HasPrefix(k, "npm_config_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "...\n" + s
}
