package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/cakeai/cake-agents/internal/figures"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// secrets collects every secret value an installation holds — the ones the test chose (the
// model gateway key, the auth secret, the database password, a personal access token) and
// every session's OpenCode password as the agent writes its Secret — so the leak scan can
// look for each one in everything the run left behind.
type secrets struct {
	mu     sync.Mutex
	values map[string]string // value -> what it is
	out    strings.Builder   // every plugin output of the run
}

func newSecrets() *secrets { return &secrets{values: map[string]string{}} }

// canary makes a secret value for what, remembered for the scan.
func (s *secrets) canary(what string) string {
	b := make([]byte, 16) // long enough for every secret the chart checks (the auth secret: 32+)
	_, _ = rand.Read(b)
	v := "canary-" + hex.EncodeToString(b)
	s.add(v, what)
	return v
}

func (s *secrets) add(value, what string) {
	if len(value) < 8 {
		return // too short to be told from ordinary text
	}
	s.mu.Lock()
	s.values[value] = what
	s.mu.Unlock()
}

func (s *secrets) transcript(out string) {
	s.mu.Lock()
	s.out.WriteString(out)
	s.mu.Unlock()
}

// watchSessionSecrets records each session Secret's values as the agent creates them
// (deleted sessions take their Secrets along, so they must be caught while they exist).
func (s *secrets) watchSessionSecrets(t *testing.T, p *product) {
	ctx, cancel := context.WithCancel(context.Background())
	w, err := p.kube.CoreV1().Secrets(p.ns).Watch(ctx, metav1.ListOptions{LabelSelector: apiv1.LabelName + "=" + apiv1.SessionAppName})
	if err != nil {
		cancel()
		t.Fatalf("watch session secrets: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			if sec, ok := ev.Object.(interface{ GetName() string }); ok {
				if obj, err := p.kube.CoreV1().Secrets(p.ns).Get(ctx, sec.GetName(), metav1.GetOptions{}); err == nil {
					for k, v := range obj.Data {
						s.add(string(v), "session secret "+obj.Name+" key "+k)
					}
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
}

// scanForLeaks gathers what the run produced — the agent's logs, every plugin output, the
// namespace's Kubernetes Events, the audit log and the API's session listing as an admin sees
// them — into files, and fails on any secret value found in any of them.
func (p *product) scanForLeaks(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's logs (every replica, every restart).
	logs := 0
	if err := filepath.WalkDir(p.envWorkDir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".log") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			logs++
			write("log-"+strings.ReplaceAll(strings.TrimPrefix(path, p.envWorkDir()), "/", "_"), string(b))
		}
		return nil
	}); err != nil {
		t.Fatalf("collect the agent's logs: %v", err)
	}
	if logs == 0 {
		t.Fatalf("no agent log under %s: the scan would miss the likeliest leak", p.envWorkDir())
	}
	p.secrets.mu.Lock()
	write("plugin-output.txt", p.secrets.out.String())
	p.secrets.mu.Unlock()
	// The pods' specs (session pods included) as the API server holds them.
	if pods, err := p.kube.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{}); err == nil {
		j, _ := json.MarshalIndent(pods, "", " ")
		write("pods.json", string(j))
	} else {
		t.Errorf("list pods: %v", err)
	}
	if events, err := p.kube.CoreV1().Events(p.ns).List(ctx, metav1.ListOptions{}); err == nil {
		var b strings.Builder
		for _, e := range events.Items {
			fmt.Fprintf(&b, "%s %s %s: %s\n", e.Type, e.Reason, e.InvolvedObject.Name, e.Message)
		}
		write("events.txt", b.String())
	} else {
		t.Errorf("list events: %v", err)
	}
	if c, err := p.env.AdminClient(ctx); err == nil {
		if a, err := c.Audit(ctx, client.AuditQuery{Limit: 1000}); err == nil {
			j, _ := json.MarshalIndent(a, "", " ")
			write("audit.json", string(j))
		} else {
			t.Errorf("audit log: %v", err)
		}
		// What admins and users read of the model providers.
		if raw, err := c.Providers(ctx); err == nil {
			write("providers.json", string(raw))
		} else {
			t.Errorf("providers: %v", err)
		}
		if m, err := c.Models(ctx); err == nil {
			j, _ := json.MarshalIndent(m, "", " ")
			write("models.json", string(j))
		} else {
			t.Errorf("models: %v", err)
		}
		if l, err := c.ListSessions(ctx, client.ListOptions{AllUsers: true}); err == nil {
			j, _ := json.MarshalIndent(l, "", " ")
			write("sessions.json", string(j))
		} else {
			t.Errorf("session list: %v", err)
		}
	} else {
		t.Errorf("admin client: %v", err)
	}

	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p.secrets.mu.Lock()
	defer p.secrets.mu.Unlock()
	var hits []string
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for v, what := range p.secrets.values {
			if strings.Contains(string(b), v) {
				hits = append(hits, fmt.Sprintf("%s in %s", what, f.Name()))
			}
		}
	}
	sort.Strings(hits)
	line, err := figures.Record("security", "secret scan ("+p.backend+")", "%d hits in %d files, %d secrets looked for", len(hits), len(files), len(p.secrets.values))
	if err != nil {
		t.Errorf("record figure: %v", err)
	}
	t.Log(line)
	if len(p.secrets.values) < 5 {
		t.Errorf("only %d secrets collected: the scan would prove little", len(p.secrets.values))
	}
	for _, h := range hits {
		t.Errorf("secret leaked: %s", h)
	}
}
