package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// repoDockerfiles are every Dockerfile the builder is meant to build.
func repoDockerfiles(t testing.TB) []string {
	t.Helper()
	root := repoRoot(t)
	files := []string{"Dockerfile"}
	more, err := filepath.Glob(filepath.Join(root, "test", "images", "*", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		rel, _ := filepath.Rel(root, m)
		files = append(files, rel)
	}
	return files
}

// TestEveryStageIsMapped plans every stage of every Dockerfile the builder builds: a stage,
// a COPY --from, a base image or an instruction the builder has no mapping for fails here.
func TestEveryStageIsMapped(t *testing.T) {
	b := dryBuilder(t, nil)
	for _, rel := range repoDockerfiles(t) {
		t.Run(rel, func(t *testing.T) {
			text, err := os.ReadFile(filepath.Join(b.root, rel))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := planText(t, b, rel, string(text)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDockerfileTargets checks what the builder makes of the three targets: the ops, and the
// image config BuildKit would write.
func TestDockerfileTargets(t *testing.T) {
	b := dryBuilder(t, nil)
	df, err := b.loadDockerfile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	plan := func(target string) *stagePlan {
		t.Helper()
		i, err := df.targetIndex(target)
		if err != nil {
			t.Fatal(err)
		}
		sp, err := b.planStage(context.Background(), df, i)
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	kinds := func(sp *stagePlan) string {
		var s []string
		for _, o := range sp.ops {
			s = append(s, [...]string{"RUN", "COPY", "MKDIR"}[o.Kind]+" "+o.Dest+o.Dir)
		}
		return strings.Join(s, ", ")
	}

	cp := plan("control-plane")
	if cp.recipe == nil || cp.recipe.ref != "debian:bookworm-slim" {
		t.Errorf("control-plane base: %+v", cp.recipe)
	}
	if got, want := kinds(cp), "RUN /, COPY /usr/local/bin/agent, MKDIR /data"; got != want {
		t.Errorf("control-plane ops: %s, want %s", got, want)
	}
	if c := cp.config; c.User != "65532:65532" || c.WorkingDir != "/data" || !slices.Equal(c.Entrypoint, []string{"agent"}) ||
		!slices.Equal(c.Cmd, []string{"serve"}) || len(c.ExposedPorts) != 2 || !slices.Contains(c.Env, defaultPath) {
		t.Errorf("control-plane config: %+v", c)
	}
	if _, ok := cp.config.ExposedPorts["8443/tcp"]; !ok {
		t.Errorf("control-plane exposes %v, want 8080/tcp and 8443/tcp", cp.config.ExposedPorts)
	}
	if cp.ops[1].User != "" || cp.ops[1].Chown != "" || !cp.ops[1].FromHost {
		t.Errorf("COPY of the agent: %+v", cp.ops[1])
	}
	if run := cp.ops[0]; run.Argv[0] != "/bin/sh" || run.Argv[1] != "-c" || !strings.Contains(run.Argv[2], "install -d -o 65532 -g 65532 -m 0750 /data") || run.Dir != "/" {
		t.Errorf("control-plane RUN: %+v", run)
	}

	dpi := plan("data-plane-init")
	if c := dpi.config; c.User != "1000:1000" || c.WorkingDir != "/workspace" || !slices.Equal(c.Entrypoint, []string{"agent"}) ||
		!slices.Equal(c.Cmd, []string{"session-init", "--help"}) || !slices.Contains(c.Env, "GIT_TERMINAL_PROMPT=0") || !slices.Contains(c.Env, "HOME=/home/opencode") {
		t.Errorf("data-plane-init config: %+v", c)
	}
	if dpi.ops[len(dpi.ops)-1].User != "1000:1000" {
		t.Errorf("WORKDIR after USER creates the directory as that user: %+v", dpi.ops[len(dpi.ops)-1])
	}

	dp := plan("data-plane")
	if c := dp.config; c.Entrypoint != nil || !slices.Equal(c.Cmd, []string{"opencode", "serve", "--port", "4096", "--hostname", "127.0.0.1", "--print-logs"}) ||
		!slices.Contains(c.Env, "OPENCODE_DISABLE_AUTOUPDATE=1") || !slices.Contains(c.Env, "npm_config_registry=http://127.0.0.1:9/") {
		t.Errorf("data-plane config: %+v", c)
	}
	if o := dp.ops[1]; o.Kind != opCopy || o.Dest != "/usr/local/bin/opencode" || !o.FromHost {
		t.Errorf("data-plane COPY of OpenCode: %+v", o)
	}
	// The agent stage is shared, planned (and built) once for both targets that copy it.
	if cp.ops[1].SrcHash != dpi.ops[1].SrcHash {
		t.Error("control-plane and data-plane-init copy different agent builds")
	}
}

// TestAgentBuildIsTheDockerfiles checks the host runs the Dockerfile's own go build: its
// flags, ldflags (with the build args) and environment, with only -o redirected.
func TestAgentBuildIsTheDockerfiles(t *testing.T) {
	b := dryBuilder(t, map[string]string{"VERSION": "v9.8.7", "COMMIT": "abc123", "DATE": "2026-01-02T03:04:05Z"})
	df, err := b.loadDockerfile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	i, _ := df.stageIndex("agent-build", len(df.stages))
	sp, err := b.planStage(context.Background(), df, i)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.hostRan) != 2 {
		t.Fatalf("want go mod download and go build, ran %q", sp.hostRan)
	}
	if got := sp.hostRan[0]; !slices.Equal(got[len(got)-3:], []string{"go", "mod", "download"}) {
		t.Errorf("first host command %q, want go mod download", got)
	}
	vpkg := "github.com/cakeai/cake-agents/pkg/version"
	out := filepath.Join(b.cacheDir, "artifacts", "Dockerfile-agent-build", "agent")
	want := []string{"CGO_ENABLED=1", "CC=gcc", "GOOS=linux", "GOARCH=" + strings.TrimPrefix(platformArgs()[2], "BUILDARCH="),
		"go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X " + vpkg + ".Version=v9.8.7 -X " + vpkg + ".Commit=abc123 -X " + vpkg + ".Date=2026-01-02T03:04:05Z",
		"-o", out, "./cmd/agent"}
	if got := sp.hostRan[1]; !slices.Equal(got, want) {
		t.Errorf("host go build\n got %q\nwant %q", got, want)
	}
	if a, ok := sp.outputs["/out/agent"]; !ok || a.path != out {
		t.Errorf("outputs %+v, want /out/agent at %s", sp.outputs, out)
	}
}

// TestRefusesWhatItCannotDo: every instruction, flag, stage or command the builder does not
// implement fails the plan, naming the line, instead of being skipped.
func TestRefusesWhatItCannotDo(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// insertAfter puts lines right after the first line starting with anchor.
	insertAfter := func(anchor, lines string) string {
		i := strings.Index(string(orig), "\n"+anchor)
		if i < 0 {
			t.Fatalf("anchor %q not in the Dockerfile", anchor)
		}
		j := i + 1 + strings.Index(string(orig[i+1:]), "\n")
		return string(orig[:j+1]) + lines + "\n" + string(orig[j+1:])
	}
	for _, tc := range []struct {
		name, text, want string
	}{
		{"healthcheck", string(orig) + "HEALTHCHECK CMD true\n", "HEALTHCHECK is not implemented"},
		{"add", string(orig) + "ADD README.md /README.md\n", "ADD is not implemented"},
		{"volume", string(orig) + "VOLUME /data\n", "VOLUME is not implemented"},
		{"shell", string(orig) + "SHELL [\"/bin/bash\", \"-c\"]\n", "SHELL is not implemented"},
		{"onbuild", string(orig) + "ONBUILD RUN true\n", "ONBUILD is not implemented"},
		{"run mount in an image stage", string(orig) + "RUN --mount=type=secret,id=token true\n", "RUN --mount is not implemented"},
		{"run network", string(orig) + "RUN --network=none true\n", "RUN --network is not implemented"},
		{"heredoc", string(orig) + "RUN <<EOF\ntrue\nEOF\n", "heredocs are not implemented"},
		{"copy from an image", string(orig) + "COPY --from=busybox:1.37 /bin/busybox /bin/busybox\n", "not an earlier stage"},
		{"copy an output the host does not build", string(orig) + "COPY --from=agent-build /out/kubectl-agents /usr/local/bin/\n", "produces only /out/agent"},
		{"unknown base image", string(orig) + "FROM alpine:3.20 AS extra\nRUN true\n", "FROM alpine:3.20: no recipe"},
		{"go stage gains a command", insertAfter("RUN --mount=type=cache,target=/go/pkg/mod go mod download", "RUN go generate ./..."), `runs "go generate ./..."`},
		{"go stage gains apt-get", insertAfter("RUN --mount=type=cache,target=/go/pkg/mod go mod download", "RUN apt-get update"), `runs "apt-get update"`},
		{"go stage writes a file", insertAfter("RUN --mount=type=cache,target=/go/pkg/mod go mod download", "RUN echo x > /out/extra"), "allows no file access"},
		{"go stage copies elsewhere", insertAfter("COPY . .", "COPY hack /hack"), "only implements COPY of the build context into the WORKDIR"},
		{"go stage cross-builds", insertAfter("ARG BUILDARCH", "ENV GOOS=windows"), "builds for this machine only"},
		{"node stage does something else", insertAfter("WORKDIR /fetch", "RUN npm install -g typescript"), "expected to be the OpenCode download"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := dryBuilder(t, nil)
			_, err := planText(t, b, "Dockerfile", tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Dockerfile:") {
				t.Errorf("error does not name the line: %v", err)
			}
		})
	}
	// The unchanged Dockerfile plans: the cases above fail because of their change.
	if _, err := planText(t, dryBuilder(t, nil), "Dockerfile", string(orig)); err != nil {
		t.Fatal(err)
	}
}

// TestKeys: a key covers everything a stage depends on, and only that.
func TestKeys(t *testing.T) {
	ctxDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := func(text string, args map[string]string) *stagePlan {
		t.Helper()
		b, err := newBuilder(ctxDir, t.TempDir(), args, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		defer b.close()
		b.aptDir = writeAptDir(t, "http://mirror.invalid/debian")
		df, err := planText(t, b, "Dockerfile", text)
		if err != nil {
			t.Fatal(err)
		}
		return df.plans[len(df.stages)-1]
	}
	const text = "FROM debian:bookworm-slim\nARG X=1\nRUN echo $X\nCOPY a.txt /a.txt\nUSER 1000\n"
	base := plan(text, nil)
	same := plan(text, nil)
	if base.key != same.key || base.ops[0].key != same.ops[0].key {
		t.Fatal("the same Dockerfile and context give different keys")
	}
	arg := plan(text, map[string]string{"X": "2"})
	if arg.ops[0].key == base.ops[0].key {
		t.Error("a build arg RUN sees does not change the RUN's key")
	}
	user := plan(strings.Replace(text, "USER 1000", "USER 1001", 1), nil)
	if user.ops[0].key != base.ops[0].key || user.key == base.key {
		t.Error("USER after the RUN must change the image key but not the RUN snapshot's")
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "a.txt"), []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := plan(text, nil)
	if changed.ops[0].key != base.ops[0].key || changed.ops[1].key == base.ops[1].key {
		t.Error("a changed context file must change the COPY's key only from the COPY on")
	}
}

func TestAptSources(t *testing.T) {
	deb822 := parseDeb822Sources(`Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
`)
	oneLine := parseOneLineSources("deb [arch=amd64 signed-by=/k.gpg] https://other.example/apt cloud-sdk main\n# deb http://x bookworm main\n")
	mirror, sources, err := debianSources(append(oneLine, deb822...), "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	if mirror != "http://mirror.example/debian" {
		t.Errorf("mirror %q", mirror)
	}
	for _, want := range []string{"URIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n", "URIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"} {
		if !strings.Contains(sources, want) {
			t.Errorf("image sources lack %q:\n%s", want, sources)
		}
	}
	if strings.Contains(sources, "disabled.example") || strings.Contains(sources, "other.example") {
		t.Errorf("image sources carry a disabled or foreign source:\n%s", sources)
	}
	if _, _, err := debianSources(oneLine, "bookworm"); err == nil || !strings.Contains(err.Error(), "--mirror") {
		t.Errorf("no Debian source: got %v, want an error naming --mirror", err)
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"bin": "usr/bin", "etc/escape": "/../../..", "etc/abs": "/usr/bin", "usr/bin/up": "../../../../../etc"}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	for p, want := range map[string]string{
		"/bin/busybox":        "usr/bin/busybox",
		"/etc/escape/passwd":  "passwd",
		"/etc/abs/x":          "usr/bin/x",
		"/bin/up/shadow":      "etc/shadow",
		"/../../etc/passwd":   "etc/passwd",
		"/usr/local/bin/tool": "usr/local/bin/tool",
	} {
		got, err := resolveIn(root, p, true)
		if err != nil {
			t.Fatal(err)
		}
		if got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%s) = %s, want %s", p, got, filepath.Join(root, want))
		}
	}
	if got, _ := resolveIn(root, "/bin", false); got != filepath.Join(root, "bin") {
		t.Errorf("resolveIn(/bin, followLast=false) = %s", got)
	}
}
