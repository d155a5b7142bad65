// Package dockerfile checks the repository's Dockerfile without a Docker engine: BuildKit's own
// frontend parses and lints it (every rule `docker build --check` runs, experimental ones
// included, for each target platform), and the tests assert what the images promise — the three
// targets, a non-root numeric USER in each, base images named without a registry host, and the
// packages and files the session pod relies on. test/dataplane checks the data-plane stage
// against the pod spec the agent builds and runs its command for real.
package dockerfile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// targets are the images the Dockerfile must build; the chart and the agent refer to them.
var targets = []string{"control-plane", "data-plane", "data-plane-init"}

var platforms = []ocispecs.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "versions.env")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root (with hack/versions.env) not found above the working directory")
		}
		dir = parent
	}
}

func readDockerfile(t testing.TB) []byte {
	t.Helper()
	dt, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

// offlineResolver answers BuildKit's base-image lookups without a registry: an empty image of
// the requested platform. Linting never needs the real image configuration.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	p := ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		p = *opt.ImageOpt.Platform
	}
	cfg, err := json.Marshal(ocispecs.Image{
		Platform: p,
		Config:   ocispecs.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
	})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(cfg), cfg, nil
}

// lint runs BuildKit's Dockerfile linter (all rules, experimental ones too) over every stage for
// one platform and returns the findings as "line N: Rule: message" strings.
func lint(t testing.TB, dt []byte, platform ocispecs.Platform) []string {
	t.Helper()
	res, err := dockerfile2llb.DockerfileLint(context.Background(), dt, dockerfile2llb.ConvertOpt{
		Config: dockerui.Config{
			LinterConfig:    &linter.Config{ExperimentalAll: true},
			TargetPlatforms: []ocispecs.Platform{platform},
			BuildPlatforms:  []ocispecs.Platform{{OS: "linux", Architecture: "amd64"}},
		},
		SourceMap:      &llb.SourceMap{Filename: "Dockerfile", Language: "Dockerfile", Data: dt, Definition: &llb.Definition{}},
		TargetPlatform: &platform,
		MetaResolver:   offlineResolver{},
	})
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	var out []string
	if res.Error != nil {
		out = append(out, "error: "+res.Error.Message)
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 && w.Location.Ranges[0].Start != nil {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		out = append(out, fmt.Sprintf("line %d: %s: %s", line, w.RuleName, w.Detail))
	}
	return out
}

func TestLintIsClean(t *testing.T) {
	dt := readDockerfile(t)
	for _, p := range platforms {
		t.Run(p.OS+"/"+p.Architecture, func(t *testing.T) {
			if findings := lint(t, dt, p); len(findings) > 0 {
				t.Errorf("BuildKit lint findings in Dockerfile:\n  %s", strings.Join(findings, "\n  "))
			}
		})
	}
}

// TestLintFindsProblems proves the lint above can fail: a Dockerfile with known mistakes must
// produce exactly the rules BuildKit documents for them.
func TestLintFindsProblems(t *testing.T) {
	bad := []byte(`FROM debian:bookworm-slim as Base
ENV A 1
RUN echo hi
from base AS two
COPY --from=base /etc/hostname $UNDEFINED_DEST
CMD echo hi
`)
	got := map[string]bool{}
	for _, f := range lint(t, bad, platforms[0]) {
		if _, rest, ok := strings.Cut(f, ": "); ok {
			rule, _, _ := strings.Cut(rest, ":")
			got[rule] = true
		}
	}
	for _, want := range []string{"FromAsCasing", "StageNameCasing", "LegacyKeyValueFormat", "ConsistentInstructionCasing", "UndefinedVar", "JSONArgsRecommended"} {
		if !got[want] {
			t.Errorf("lint did not report %s for a Dockerfile that breaks it; got %v", want, got)
		}
	}
}

// dockerfile is the parsed file: its global ARG defaults and its stages.
type dockerfile struct {
	args   map[string]string
	stages []instructions.Stage
}

func parse(t testing.TB, dt []byte) dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("parse Dockerfile instructions: %v", err)
	}
	d := dockerfile{args: map[string]string{}, stages: stages}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				d.args[kv.Key] = *kv.Value
			}
		}
	}
	return d
}

func (d dockerfile) stage(name string) (instructions.Stage, bool) {
	for _, s := range d.stages {
		if strings.EqualFold(s.Name, name) {
			return s, true
		}
	}
	return instructions.Stage{}, false
}

// baseImage expands a FROM base name with the global ARG defaults (the build platform ARGs
// stand for themselves).
func (d dockerfile) baseImage(t testing.TB, s instructions.Stage) string {
	t.Helper()
	var env []string
	for k, v := range d.args {
		env = append(env, k+"="+v)
	}
	name, _, err := shell.NewLex('\\').ProcessWord(s.BaseName, shell.EnvsFromSlice(env))
	if err != nil {
		t.Fatalf("expand FROM %q: %v", s.BaseName, err)
	}
	return name
}

// chain returns the stage and the stages it is built FROM, nearest first.
func (d dockerfile) chain(t testing.TB, name string) []instructions.Stage {
	t.Helper()
	var out []instructions.Stage
	for name != "" {
		s, ok := d.stage(name)
		if !ok {
			break
		}
		out = append(out, s)
		name = d.baseImage(t, s)
		if len(out) > len(d.stages) {
			t.Fatalf("stage %q: FROM loop", name)
		}
	}
	return out
}

// last returns the last command of type T in a stage or the stages it builds on.
func last[T instructions.Command](d dockerfile, t testing.TB, stage string) (T, bool) {
	for _, s := range d.chain(t, stage) {
		for i := len(s.Commands) - 1; i >= 0; i-- {
			if c, ok := s.Commands[i].(T); ok {
				return c, true
			}
		}
	}
	var zero T
	return zero, false
}

func TestTargetsRunAsNonRoot(t *testing.T) {
	d := parse(t, readDockerfile(t))
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			if _, ok := d.stage(target); !ok {
				t.Fatalf("no stage %q: `docker build --target %s` would fail", target, target)
			}
			u, ok := last[*instructions.UserCommand](d, t, target)
			if !ok {
				t.Fatalf("stage %q sets no USER: the image would run as root", target)
			}
			// Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
			uid, _, _ := strings.Cut(u.User, ":")
			n, err := strconv.Atoi(uid)
			if err != nil {
				t.Fatalf("USER %q in %s: use a numeric uid so runAsNonRoot can verify it", u.User, target)
			}
			if n == 0 {
				t.Fatalf("USER %q in %s is root", u.User, target)
			}
		})
	}
}

// registryHosts are hosts that must never be named: images are referred to by their official
// short names and the registry is chosen by whoever builds or pulls.
var registryHosts = regexp.MustCompile(`(?i)\b(docker\.io|index\.docker\.io|registry-1\.docker\.io|ghcr\.io|gcr\.io|[a-z0-9-]+\.gcr\.io|[a-z0-9-]+\.pkg\.dev|quay\.io|registry\.k8s\.io|k8s\.gcr\.io|mcr\.microsoft\.com|public\.ecr\.aws|[a-z0-9.-]+\.amazonaws\.com|registry\.npmjs\.org|registry\.gitlab\.com|localhost:\d+)\b`)

func TestNoRegistryHost(t *testing.T) {
	dt := readDockerfile(t)
	sc := bufio.NewScanner(bytes.NewReader(dt))
	for n := 1; sc.Scan(); n++ {
		if m := registryHosts.FindString(sc.Text()); m != "" {
			t.Errorf("Dockerfile line %d names the registry host %q: use an official short name or an ARG", n, m)
		}
	}
	d := parse(t, dt)
	stageNames := map[string]bool{}
	for _, s := range d.stages {
		stageNames[strings.ToLower(s.Name)] = true
	}
	for _, s := range d.stages {
		base := d.baseImage(t, s)
		if stageNames[strings.ToLower(base)] || base == "scratch" {
			continue
		}
		ref, err := reference.ParseNormalizedNamed(base)
		if err != nil {
			t.Errorf("stage %s: FROM %q is not an image reference: %v", s.Name, base, err)
			continue
		}
		// A short name normalises to Docker Hub; anything else means a host was written.
		if reference.Domain(ref) != "docker.io" || strings.HasPrefix(base, "docker.io/") {
			t.Errorf("stage %s: FROM %q names registry host %q: use the official short name", s.Name, base, reference.Domain(ref))
		}
	}
}

// runWords returns the words of a stage's RUN commands (shell form), for package checks.
func runWords(s instructions.Stage) []string {
	var words []string
	for _, c := range s.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			for _, l := range r.CmdLine {
				words = append(words, strings.FieldsFunc(l, func(r rune) bool {
					return r == ' ' || r == '\t' || r == '\n' || r == ';' || r == '\\' || r == '"'
				})...)
			}
		}
	}
	return words
}

func TestImagesHaveWhatTheirCommandsNeed(t *testing.T) {
	d := parse(t, readDockerfile(t))
	for _, tc := range []struct {
		target   string
		packages []string
		files    []string // absolute paths COPYed into the target stage
	}{
		// The exec readiness probe runs sh + curl; OpenCode's tools need bash, git and rg; TLS
		// to the model gateway and git remotes needs the CA bundle; git over ssh (a session's
		// GIT_SSH_COMMAND) needs ssh.
		{"data-plane", []string{"bash", "ca-certificates", "curl", "git", "openssh-client", "ripgrep"}, []string{"/usr/local/bin/opencode"}},
		// `agent session-init` clones over https or ssh.
		{"data-plane-init", []string{"ca-certificates", "git", "openssh-client"}, []string{"/usr/local/bin/agent"}},
		// The agent talks TLS to the API server, Postgres and the gateway.
		{"control-plane", []string{"ca-certificates"}, []string{"/usr/local/bin/agent"}},
	} {
		t.Run(tc.target, func(t *testing.T) {
			s, ok := d.stage(tc.target)
			if !ok {
				t.Fatalf("no stage %q", tc.target)
			}
			words := runWords(s)
			if !slices.Contains(words, "install") || !slices.Contains(words, "--no-install-recommends") {
				t.Errorf("stage %s: no `apt-get install -y --no-install-recommends` found", tc.target)
			}
			for _, p := range tc.packages {
				if !slices.Contains(words, p) {
					t.Errorf("stage %s does not install %s", tc.target, p)
				}
			}
			var copied []string
			for _, c := range s.Commands {
				if cp, ok := c.(*instructions.CopyCommand); ok {
					copied = append(copied, cp.DestPath)
				}
			}
			for _, f := range tc.files {
				if !slices.Contains(copied, f) {
					t.Errorf("stage %s does not COPY %s (copied: %v)", tc.target, f, copied)
				}
			}
		})
	}
	// The chart runs the control plane with `args: [serve]` and no command, and the session
	// pod's init container runs `agent session-init`: both need the agent as entrypoint/on PATH.
	for _, target := range []string{"control-plane", "data-plane-init"} {
		ep, ok := last[*instructions.EntrypointCommand](d, t, target)
		if !ok || ep.PrependShell || !slices.Equal(ep.CmdLine, []string{"agent"}) {
			t.Errorf("stage %s: want ENTRYPOINT [\"agent\"] (exec form), got %+v", target, ep)
		}
	}
	cmd, ok := last[*instructions.CmdCommand](d, t, "control-plane")
	if !ok || !slices.Equal(cmd.CmdLine, []string{"serve"}) {
		t.Errorf("control-plane: want CMD [\"serve\"], got %+v", cmd)
	}
}

// TestOpenCodePins keeps the image's OpenCode in step with the version the tests run
// (hack/versions.env), and the arm64 pin at a version the registry has.
func TestOpenCodePins(t *testing.T) {
	root := repoRoot(t)
	env, err := os.ReadFile(filepath.Join(root, "hack", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^OPENCODE_VERSION=(\S+)$`).FindSubmatch(env)
	if m == nil {
		t.Fatal("OPENCODE_VERSION not found in hack/versions.env")
	}
	want := string(m[1])
	d := parse(t, readDockerfile(t))
	s, ok := d.stage("opencode-fetch")
	if !ok {
		t.Fatal("no opencode-fetch stage")
	}
	args := map[string]string{}
	for _, c := range s.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				if kv.Value != nil {
					args[kv.Key] = *kv.Value
				}
			}
		}
	}
	if got := args["OPENCODE_VERSION_AMD64"]; got != want {
		t.Errorf("Dockerfile OPENCODE_VERSION_AMD64=%q, hack/versions.env OPENCODE_VERSION=%q: keep them equal", got, want)
	}
	if args["OPENCODE_VERSION_ARM64"] == "" {
		t.Error("Dockerfile has no OPENCODE_VERSION_ARM64 default")
	}
}

// TestDockerignoreKeepsTheBuildInputs: BuildKit's CopyIgnoredFile rule needs a build client,
// so check with the same matcher that what the build COPYs is not ignored, and that caches and
// VCS data are.
func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	root := repoRoot(t)
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	for path, wantIgnored := range map[string]bool{
		"go.mod": false, "go.sum": false,
		"cmd/agent/main.go":                          false,
		"agent/store/sqlite/migrations/0001_x.sql":   false,
		"agent/store/postgres/migrations/0001_x.sql": false,
		"agent/ui/assets/index.html":                 false,
		"pkg/version/version.go":                     false,
		".git/config":                                true,
		".cache/opencode/bin/opencode":               true,
		"bin/agent":                                  true,
		"dist/checksums.txt":                         true,
	} {
		got, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != wantIgnored {
			t.Errorf(".dockerignore: %s ignored=%v, want %v", path, got, wantIgnored)
		}
	}
}
