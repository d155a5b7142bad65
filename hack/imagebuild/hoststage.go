package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// isGoImage reports a Go toolchain image (golang:1.26-bookworm, ...), whose stages run on the
// host's Go toolchain.
func isGoImage(ref string) bool { return imageRepo(ref) == "golang" }

// isNodeImage reports a Node image; the only Node stage hack/imagebuild knows is the OpenCode
// download.
func isNodeImage(ref string) bool { return imageRepo(ref) == "node" }

// imageRepo is the last path element of an image reference without tag or digest.
func imageRepo(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, "/"); i >= 0 {
		ref = ref[i+1:]
	}
	repo, _, _ := strings.Cut(ref, ":")
	return repo
}

// goEnvPassed are the variables a Dockerfile's `go build` may set for the compiler; they reach
// the host's go command. GOOS and GOARCH must name this machine (builds are native).
var goEnvPassed = []string{"CGO_ENABLED", "CC", "CXX", "GOOS", "GOARCH", "GOAMD64", "GOARM64", "GOEXPERIMENT", "GOFLAGS", "CGO_CFLAGS", "CGO_LDFLAGS"}

// hostRun is one RUN of a host stage.
type hostRun struct {
	where  string
	script string
	env    envList
}

// planGoStage carries out a Go build stage on the host. The stage may only set ARG/ENV/WORKDIR,
// COPY the build context into its WORKDIR (the host build runs in the repository itself) and
// RUN shell scripts. Each script runs in a POSIX shell interpreter (mvdan.cc/sh) whose only
// external command is `go`: `go build` runs on the host with exactly the Dockerfile's flags,
// environment and ldflags, its `-o /out/...` redirected to the cache; `go mod download` runs
// as is. Anything else a script would execute (apt-get, go generate, a file write) fails the
// build, so a Dockerfile change can never be skipped silently. Conditions are evaluated for
// real: the cross-compiler setup guarded by TARGETARCH != BUILDARCH does not run natively.
func (b *builder) planGoStage(ctx context.Context, df *dockerfile, st *instructions.Stage, sp *stagePlan) error {
	var args, env envList
	wd := "/"
	var runs []hostRun
	for _, cmd := range st.Commands {
		where := df.where(cmd)
		scope := append(slices.Clone(args), env...)
		expandWord := func(w string) (string, error) {
			s, _, err := df.lex.ProcessWord(w, shell.EnvsFromSlice(scope))
			return s, err
		}
		switch c := cmd.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				v, ok, err := df.stageArg(kv, scope, b.buildArgs)
				if err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				if ok {
					args = args.set(kv.Key, v)
				}
			}
		case *instructions.EnvCommand:
			if err := c.Expand(expandWord); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			for _, kv := range c.Env {
				env = env.set(kv.Key, kv.Value)
			}
		case *instructions.WorkdirCommand:
			if err := c.Expand(expandWord); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			wd = path.Join(wd, c.Path)
		case *instructions.CopyCommand:
			if err := c.Expand(expandWord); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			dest := path.Clean(path.Join(wd, c.DestPath))
			if c.From != "" || dest != wd || c.Chown != "" || c.Chmod != "" {
				return fmt.Errorf("%s: in the Go stage %s, hack/imagebuild only implements COPY of the build context into the WORKDIR (%s): the host build runs in the repository itself", where, sp.name, wd)
			}
		case *instructions.RunCommand:
			if err := c.Expand(expandWord); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			for _, m := range instructions.GetMounts(c) {
				if m.Type != instructions.MountTypeCache {
					return fmt.Errorf("%s: RUN --mount=type=%s in the Go stage %s is not implemented by hack/imagebuild (cache mounts are: the host's Go caches stand in for them)", where, m.Type, sp.name)
				}
			}
			for _, f := range c.FlagsUsed {
				if f != "mount" {
					return fmt.Errorf("%s: RUN --%s in the Go stage %s is not implemented by hack/imagebuild", where, f, sp.name)
				}
			}
			if !c.PrependShell || len(c.Files) > 0 {
				return fmt.Errorf("%s: hack/imagebuild runs Go stages' RUN only in shell form", where)
			}
			runs = append(runs, hostRun{where: where, script: strings.Join(c.CmdLine, " "), env: scope})
		default:
			return fmt.Errorf("%s: %s in the Go stage %s is not implemented by hack/imagebuild (implemented there: ARG, ENV, WORKDIR, COPY of the context, RUN of go build)", where, strings.ToUpper(cmd.Name()), sp.name)
		}
	}

	outDir := filepath.Join(b.cacheDir, "artifacts", slug(df.path)+"-"+slug(sp.name))
	sp.outputs = map[string]artifact{}
	for _, r := range runs {
		if err := b.runGoScript(ctx, sp, r, outDir); err != nil {
			return err
		}
	}
	if len(sp.outputs) == 0 {
		return fmt.Errorf("%s: the Go stage %s builds nothing (no go build -o /out/...)", df.path, sp.name)
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sp.outputs)) {
		parts = append(parts, k, sp.outputs[k].hash)
	}
	sp.key = hashKey(append([]string{planVersion, "host"}, parts...)...)
	return nil
}

// runGoScript interprets one RUN of a Go stage; see planGoStage.
func (b *builder) runGoScript(ctx context.Context, sp *stagePlan, r hostRun, outDir string) error {
	file, err := syntax.NewParser(syntax.Variant(syntax.LangPOSIX)).Parse(strings.NewReader(r.script), r.where)
	if err != nil {
		return fmt.Errorf("%s: parse RUN: %w", r.where, err)
	}
	var log bytes.Buffer
	out := io.Writer(&log)
	if b.verbose {
		out = io.MultiWriter(&log, b.log)
	}
	handler := func(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
		return func(ctx context.Context, argv []string) error {
			hc := interp.HandlerCtx(ctx)
			if argv[0] != "go" || len(argv) < 2 {
				return fmt.Errorf("%s: RUN in the Go stage %s runs %q, which hack/imagebuild does not run on the host (only go build and go mod download; teach hoststage.go if the image needs it)", r.where, sp.name, strings.Join(argv, " "))
			}
			goEnv := os.Environ()
			var shown []string
			for _, k := range goEnvPassed {
				v := hc.Env.Get(k)
				if !v.IsSet() || !v.Exported {
					continue
				}
				val := v.String()
				if (k == "GOOS" && val != "linux") || (k == "GOARCH" && val != runtime.GOARCH) {
					return fmt.Errorf("%s: %s=%s: hack/imagebuild builds for this machine only (linux/%s)", r.where, k, val, runtime.GOARCH)
				}
				if k == "CC" && val != "" {
					if _, err := exec.LookPath(val); err != nil {
						return fmt.Errorf("%s: CC=%s is not installed on this machine (apt-get install -y gcc)", r.where, val)
					}
				}
				goEnv = append(goEnv, k+"="+val)
				shown = append(shown, k+"="+val)
			}
			switch {
			case slices.Equal(argv[1:], []string{"mod", "download"}):
			case argv[1] == "build":
				var err error
				if argv, err = b.redirectGoOutput(sp, argv, outDir, r.where); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%s: RUN in the Go stage %s runs %q; hack/imagebuild runs only go build and go mod download on the host", r.where, sp.name, strings.Join(argv, " "))
			}
			sp.hostRan = append(sp.hostRan, append(shown, argv...))
			if b.hostDryRun {
				return nil
			}
			cmd := execCommand(ctx, argv[0], argv[1:]...)
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = b.root, goEnv, out, out
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %s: %w\n%s", r.where, strings.Join(argv, " "), err, tail(log.Bytes(), 40))
			}
			return nil
		}
	}
	runner, err := interp.New(
		interp.Env(expand.ListEnviron(r.env...)),
		interp.Dir(b.root),
		interp.StdIO(nil, out, out),
		interp.ExecHandlers(handler),
		interp.OpenHandler(func(ctx context.Context, p string, flag int, perm os.FileMode) (io.ReadWriteCloser, error) {
			if p == "/dev/null" {
				return interp.DefaultOpenHandler()(ctx, p, flag, perm)
			}
			return nil, fmt.Errorf("%s: RUN in the Go stage %s opens %s; hack/imagebuild allows no file access there", r.where, sp.name, p)
		}),
	)
	if err != nil {
		return err
	}
	b.progress("%s: host %s", r.where, oneLine(r.script, 100))
	if err := runner.Run(ctx, file); err != nil {
		if status, ok := interp.IsExitStatus(err); ok {
			return fmt.Errorf("%s: RUN exited with status %d in the host interpreter\n%s", r.where, status, tail(log.Bytes(), 40))
		}
		return err
	}
	for p, a := range sp.outputs {
		if a.hash != "" {
			continue
		}
		if b.hostDryRun {
			a.hash = hashKey("dry-run", p)
		} else if a.hash, err = artifactHash(a.path); err != nil {
			return fmt.Errorf("%s: %w", r.where, err)
		}
		sp.outputs[p] = a
	}
	return nil
}

// redirectGoOutput rewrites `-o /out/x` to the stage's artifact directory and records the
// output; a go build without -o /out/... has no output the image could copy.
func (b *builder) redirectGoOutput(sp *stagePlan, argv []string, outDir, where string) ([]string, error) {
	argv = slices.Clone(argv)
	found := false
	for i := 2; i < len(argv); i++ {
		var p string
		switch {
		case argv[i] == "-o" && i+1 < len(argv):
			i++
			p = argv[i]
		case strings.HasPrefix(argv[i], "-o="):
			p = strings.TrimPrefix(argv[i], "-o=")
		default:
			continue
		}
		if !strings.HasPrefix(p, "/out/") || path.Clean(p) != p {
			return nil, fmt.Errorf("%s: go build -o %s: hack/imagebuild expects the output under /out/", where, p)
		}
		host := filepath.Join(outDir, filepath.FromSlash(strings.TrimPrefix(p, "/out/")))
		if strings.HasPrefix(argv[i], "-o=") {
			argv[i] = "-o=" + host
		} else {
			argv[i] = host
		}
		sp.outputs[p] = artifact{path: host}
		found = true
	}
	if !found {
		return nil, fmt.Errorf("%s: go build without -o /out/...: hack/imagebuild cannot tell what it produces", where)
	}
	return argv, nil
}

// planOpenCodeStage serves the OpenCode download stage with hack/install-opencode.sh (which
// caches the pinned binary for the tests too), after checking the stage is the download the
// builder knows and pins the same version as hack/versions.env.
func (b *builder) planOpenCodeStage(ctx context.Context, df *dockerfile, st *instructions.Stage, sp *stagePlan) error {
	var args envList
	ran := false
	for _, cmd := range st.Commands {
		where := df.where(cmd)
		switch c := cmd.(type) {
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				v, ok, err := df.stageArg(kv, args, b.buildArgs)
				if err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				if ok {
					args = args.set(kv.Key, v)
				}
			}
		case *instructions.WorkdirCommand:
		case *instructions.RunCommand:
			script := strings.Join(c.CmdLine, " ")
			if ran || !strings.Contains(script, "npm pack") || !strings.Contains(script, "/out/opencode") {
				return fmt.Errorf("%s: the node stage %s is expected to be the OpenCode download (one RUN: npm pack opencode-linux-<arch> into /out/opencode); hack/imagebuild has no host recipe for anything else", where, sp.name)
			}
			ran = true
		default:
			return fmt.Errorf("%s: %s in the node stage %s is not implemented by hack/imagebuild", where, strings.ToUpper(cmd.Name()), sp.name)
		}
	}
	if !ran {
		return fmt.Errorf("%s: the node stage %s downloads nothing", df.path, sp.name)
	}
	argName := "OPENCODE_VERSION_" + strings.ToUpper(runtime.GOARCH)
	want, ok := args.get(argName)
	if !ok || want == "" {
		return fmt.Errorf("%s: stage %s declares no %s; hack/imagebuild reads the pinned OpenCode version from it", df.path, sp.name, argName)
	}
	a := artifact{path: "/dry-run/opencode", hash: hashKey("dry-run", "opencode", want)}
	if !b.hostDryRun {
		bin, version, err := b.installOpenCode(ctx)
		if err != nil {
			return err
		}
		if version != want {
			return fmt.Errorf("%s pins OpenCode %s (%s) but hack/install-opencode.sh installed %s (OPENCODE_VERSION in hack/versions.env): make them equal", df.path, want, argName, version)
		}
		b.progress("%s: host hack/install-opencode.sh (OpenCode %s)", df.path, version)
		if a.hash, err = artifactHash(bin); err != nil {
			return err
		}
		a.path = bin
	}
	sp.outputs = map[string]artifact{"/out/opencode": a}
	sp.key = hashKey(planVersion, "host", "/out/opencode", a.hash)
	return nil
}

// installOpenCode runs hack/install-opencode.sh (a no-op when the pinned version is cached)
// and returns the binary and the version its stamp records.
func (b *builder) installOpenCode(ctx context.Context) (string, string, error) {
	var stderr bytes.Buffer
	cmd := execCommand(ctx, filepath.Join(b.root, "hack", "install-opencode.sh"))
	cmd.Dir, cmd.Stderr = b.root, &stderr
	cmd.Env = append(os.Environ(), "CACHE_DIR="+b.projectCache())
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("hack/install-opencode.sh: %w\n%s", err, tail(stderr.Bytes(), 20))
	}
	bin := strings.TrimSpace(string(out))
	stamp, err := os.ReadFile(filepath.Join(filepath.Dir(bin), ".opencode.version"))
	if err != nil {
		return "", "", fmt.Errorf("hack/install-opencode.sh left no version stamp beside %s: %w", bin, err)
	}
	return bin, strings.TrimSpace(string(stamp)), nil
}

// artifactHash hashes a host artifact's mode and content.
func artifactHash(p string) (string, error) {
	info, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	if !info.Mode().IsRegular() {
		return "", errors.New(p + " is not a regular file")
	}
	sum, err := fileHash(p)
	if err != nil {
		return "", err
	}
	return hashKey(info.Mode().Perm().String(), sum), nil
}

// slug makes a string safe as a file name.
func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}

// oneLine shortens a script for progress lines.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// tail returns the last n lines of output, for error messages.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// execCommand is exec.CommandContext; a variable so the name "exec" stays free for handlers.
var execCommand = exec.CommandContext
