package reliability

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/internal/figures"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// corpusInput is one input of a fuzz test's committed corpus.
type corpusInput struct {
	name string
	data []byte
}

// readCorpus reads testdata/fuzz/<target> of agent/server: files of `go test fuzz v1`
// with one []byte(...) or string(...) value each.
func readCorpus(t *testing.T, target string) []corpusInput {
	t.Helper()
	dir := filepath.Join(bins.root, "agent", "server", "testdata", "fuzz", target)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []corpusInput
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 8<<20)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		_ = f.Close()
		if err := sc.Err(); err != nil || len(lines) != 2 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s/%s is not a one-value corpus file: %v", target, e.Name(), err)
		}
		v := lines[1]
		for _, prefix := range []string{"[]byte(", "string("} {
			if strings.HasPrefix(v, prefix) && strings.HasSuffix(v, ")") {
				s, err := strconv.Unquote(v[len(prefix) : len(v)-1])
				if err != nil {
					t.Fatalf("%s/%s: %v", target, e.Name(), err)
				}
				out = append(out, corpusInput{name: e.Name(), data: []byte(s)})
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no corpus for %s", target)
	}
	return out
}

// TestBadInput sends the agent binary what its API's fuzz tests were seeded with (the
// committed corpus of agent/server), bodies past the size limit and bodies with unknown
// fields, through its HTTPS listener like any client. Nothing may panic or answer 5xx,
// every oversized body gets 413, every unknown field a 400 that names it.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := testcluster.Get(t)
	p := install(t, c, "badinput", installOptions{})
	ctx := context.Background()
	pid := p.env.AgentPID()
	target, err := p.api.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "bad input target"})
	if err != nil {
		t.Fatal(err)
	}
	// Messages go to a Running session.
	if _, pr, err := p.converge(ctx, 2*time.Minute, func(w *world) error {
		if s := w.rows[target.ID]; s.State != apiv1.StateRunning {
			return fmt.Errorf("session %s is %s", target.ID, s.State)
		}
		return nil
	}); err != nil || !pr.none() {
		t.Fatalf("target session: %v %s", err, pr)
	}

	type endpoint struct {
		fuzz, method, path string
		query              bool // the input is the query, not the body
		// fields is the request type, for unknown-field bodies; nil for queries.
		fields any
		// valid is a small body the endpoint accepts.
		valid string
	}
	endpoints := []endpoint{
		{"FuzzCreateSession", http.MethodPost, "/api/v1/sessions", false, &apiv1.CreateSessionRequest{}, `{"title":"x"}`},
		{"FuzzPatchSession", http.MethodPatch, "/api/v1/sessions/" + target.ID, false, &apiv1.UpdateSessionRequest{}, `{"title":"x"}`},
		{"FuzzSendMessage", http.MethodPost, "/api/v1/sessions/" + target.ID + "/messages", false, &apiv1.SendMessageRequest{}, `{"text":"x"}`},
		{"FuzzCreateToken", http.MethodPost, "/api/v1/tokens", false, &apiv1.CreateTokenRequest{}, `{"name":"x"}`},
		{"FuzzListSessions", http.MethodGet, "/api/v1/sessions", true, nil, ""},
		{"FuzzListAudit", http.MethodGet, "/api/v1/audit", true, nil, ""},
	}
	var sent, corpus, serverErrors, oversized, tooLarge, unknown, named int
	var failures []string
	check := func(what string, resp *http.Response, body []byte, err error) bool {
		sent++
		// A message that decodes goes to the session's OpenCode, here a stand-in that
		// answers nothing but its health: a 502 is the agent saying so.
		standIn := resp != nil && resp.StatusCode == http.StatusBadGateway && strings.Contains(what, "/messages")
		switch {
		case err != nil:
			failures = append(failures, fmt.Sprintf("%s: no answer: %v", what, err))
			return false
		case resp.StatusCode >= 500 && !standIn:
			serverErrors++
			failures = append(failures, fmt.Sprintf("%s: %d %s", what, resp.StatusCode, body))
			return false
		case resp.StatusCode >= 300:
			var e apiv1.Error
			if json.Unmarshal(body, &e) != nil || e.Body.Code == "" || e.Body.Message == "" {
				failures = append(failures, fmt.Sprintf("%s: %d without the API's error shape: %s", what, resp.StatusCode, body))
				return false
			}
		}
		return true
	}
	for _, ep := range endpoints {
		for _, in := range readCorpus(t, ep.fuzz) {
			corpus++
			what := fmt.Sprintf("%s %s (corpus %s/%s)", ep.method, ep.path, ep.fuzz, in.name)
			var resp *http.Response
			var body []byte
			var err error
			if ep.query {
				resp, body, err = p.rawRequest(ctx, ep.method, ep.path, string(in.data), nil, nil)
			} else {
				resp, body, err = p.rawRequest(ctx, ep.method, ep.path, "", in.data, nil)
			}
			check(what, resp, body, err)
		}
		if ep.query {
			continue
		}

		// Past the limit, three ways: announced by Content-Length, streamed without one,
		// and behind a JSON value that ends early.
		key, _, _ := strings.Cut(strings.TrimPrefix(ep.valid, `{"`), `"`)
		huge := `{"` + key + `":"` + strings.Repeat("x", apiv1.MaxBodyBytes) + `"}`
		for _, b := range []struct {
			name    string
			body    io.Reader
			chunked bool
		}{
			{"with Content-Length", strings.NewReader(huge), false},
			{"chunked", strings.NewReader(huge), true},
			{"after a complete value", strings.NewReader(ep.valid + strings.Repeat(" ", apiv1.MaxBodyBytes)), true},
		} {
			what := fmt.Sprintf("%s %s: oversized body %s", ep.method, ep.path, b.name)
			resp, body, err := p.streamRequest(ctx, ep.method, ep.path, b.body, b.chunked)
			oversized++
			if check(what, resp, body, err) {
				if resp.StatusCode == http.StatusRequestEntityTooLarge {
					tooLarge++
				} else {
					failures = append(failures, fmt.Sprintf("%s: %d, want 413: %s", what, resp.StatusCode, body))
				}
			}
		}

		// Unknown fields, alone and among known ones.
		for _, b := range []string{`{"bogusField":1}`, `{"title":"x","text":"y","name":"z","colour":"red"}`} {
			var probe map[string]any
			_ = json.Unmarshal([]byte(b), &probe)
			var unknownKeys []string
			for k := range probe {
				if !containsFold(requestFields(ep.fields), k) {
					unknownKeys = append(unknownKeys, k)
				}
			}
			sort.Strings(unknownKeys)
			what := fmt.Sprintf("%s %s: unknown fields %v", ep.method, ep.path, unknownKeys)
			resp, body, err := p.rawRequest(ctx, ep.method, ep.path, "", []byte(b), nil)
			unknown++
			if !check(what, resp, body, err) {
				continue
			}
			ok := resp.StatusCode == http.StatusBadRequest
			if ok {
				ok = false
				for _, k := range unknownKeys {
					ok = ok || bytes.Contains(body, []byte(`unknown field \"`+k+`\"`))
				}
			}
			if ok {
				named++
			} else {
				failures = append(failures, fmt.Sprintf("%s: %d, want 400 naming the field: %s", what, resp.StatusCode, body))
			}
		}
	}

	if got := p.env.AgentPID(); got != pid {
		t.Errorf("the agent process changed (pid %d, then %d)", pid, got)
	}
	if err := p.waitReady(ctx, time.Minute); err != nil {
		t.Errorf("after the bad input: %v", err)
	}
	panics := p.panics()
	line, ferr := figures.Record("reliability", "bad input",
		"%d requests to the agent binary (%d fuzz corpus inputs of %d decoders and query parsers, %d oversized bodies, %d with unknown fields): %d panics, %d 5xx; %d of %d oversized bodies 413, %d of %d unknown fields 400 naming the field",
		sent, corpus, len(endpoints), oversized, unknown, panics, serverErrors, tooLarge, oversized, named, unknown)
	t.Log(line)
	if ferr != nil {
		t.Errorf("record figure: %v", ferr)
	}
	if panics > 0 {
		t.Errorf("%d panics in the agent's log", panics)
	}
	for _, f := range failures {
		t.Error(f)
	}
}

// streamRequest sends body to the agent; chunked leaves Content-Length unset, so the
// agent learns the size only by reading.
func (p *product) streamRequest(ctx context.Context, method, path string, body io.Reader, chunked bool) (*http.Response, []byte, error) {
	if chunked {
		body = io.MultiReader(body) // hides the length from net/http
	}
	req, err := http.NewRequestWithContext(ctx, method, p.api.URL(path, nil).String(), body)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	p.api.Authorize(req)
	resp, err := p.api.HTTPClient().Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	return resp, out, err
}

// requestFields lists the JSON names of the fields of the struct v points to.
func requestFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	var out []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// containsFold reports whether key names one of fields, ignoring case as encoding/json does.
func containsFold(fields []string, key string) bool {
	for _, f := range fields {
		if strings.EqualFold(f, key) {
			return true
		}
	}
	return false
}
