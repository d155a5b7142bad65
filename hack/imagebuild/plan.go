package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// request is one image to build.
type request struct {
	dockerfile string // path relative to the repository root
	target     string // stage name; "" means the last stage
	name       string // image reference the archive carries
}

func (r request) describe() string {
	if r.target == "" {
		return r.dockerfile
	}
	return r.dockerfile + " target " + r.target
}

// defaultPath is the PATH of the Debian base image, which RUN and the image config start from.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageConfig is the "config" object of a Docker/OCI image configuration.
type imageConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

func (c imageConfig) clone() imageConfig {
	c.Env = slices.Clone(c.Env)
	c.Entrypoint = slices.Clone(c.Entrypoint)
	c.Cmd = slices.Clone(c.Cmd)
	if c.ExposedPorts != nil {
		m := make(map[string]struct{}, len(c.ExposedPorts))
		for k := range c.ExposedPorts {
			m[k] = struct{}{}
		}
		c.ExposedPorts = m
	}
	if c.Labels != nil {
		m := make(map[string]string, len(c.Labels))
		for k, v := range c.Labels {
			m[k] = v
		}
		c.Labels = m
	}
	return c
}

// stageKind says how a stage is produced.
type stageKind int

const (
	// stageImage stages are interpreted: a root filesystem that RUN and COPY change.
	stageImage stageKind = iota
	// stageGo stages (FROM a Go image) run their go build commands on the host.
	stageGo
	// stageOpenCode is the OpenCode download stage, served by hack/install-opencode.sh.
	stageOpenCode
)

// opKind is a file system change an interpreted stage makes.
type opKind int

const (
	opRun opKind = iota
	opCopy
	opMkdir
)

// op is one file system change, with everything needed to carry it out.
type op struct {
	Kind  opKind   `json:"kind"`
	Where string   `json:"-"`               // Dockerfile:line, for messages
	Argv  []string `json:"argv,omitempty"`  // RUN
	Env   []string `json:"env,omitempty"`   // RUN
	User  string   `json:"user,omitempty"`  // RUN, WORKDIR (owner of a new directory)
	Dir   string   `json:"dir,omitempty"`   // RUN working directory, WORKDIR path
	Srcs  []string `json:"srcs,omitempty"`  // COPY: context-relative paths, or paths in srcStage
	Dest  string   `json:"dest,omitempty"`  // COPY destination (absolute; a trailing / kept)
	Chown string   `json:"chown,omitempty"` // COPY --chown
	Chmod string   `json:"chmod,omitempty"` // COPY --chmod (octal)
	// SrcHash identifies the copied content: the files' hash for the context and host
	// artifacts, the source stage's key for an interpreted stage.
	SrcHash string `json:"srcHash,omitempty"`
	// FromHost marks Srcs as files a host stage built.
	FromHost bool `json:"fromHost,omitempty"`

	srcStage *stagePlan // COPY --from; nil for the build context
	key      string     // the stage's state key after this op
}

// artifact is a file a host stage produced.
type artifact struct {
	path string // on the host
	hash string // sha256 of mode and content
}

// stagePlan is a stage resolved for one build: its base, its file system ops in order, the
// image config it ends with and a key that changes whenever anything it depends on changes.
type stagePlan struct {
	df      *dockerfile
	index   int
	name    string
	kind    stageKind
	recipe  *baseRecipe // FROM a synthesized base image
	parent  *stagePlan  // FROM an earlier stage
	ops     []op
	config  imageConfig
	key     string
	outputs map[string]artifact // host stages: path in the stage (/out/x) → file
	hostRan [][]string          // host stages: the commands run, as KEY=value... argv...
}

// dockerfile is one parsed Dockerfile with the global build arguments resolved.
type dockerfile struct {
	path    string // relative to the root, for messages
	stages  []instructions.Stage
	globals envList // meta ARGs before the first FROM, plus the automatic platform ARGs
	lex     *shell.Lex
	plans   map[int]*stagePlan
}

// envList is an ordered KEY=VALUE list; later entries win.
type envList []string

func (e envList) get(k string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		if key, v, _ := strings.Cut(e[i], "="); key == k {
			return v, true
		}
	}
	return "", false
}

func (e envList) set(k, v string) envList {
	out := slices.DeleteFunc(slices.Clone(e), func(s string) bool {
		key, _, _ := strings.Cut(s, "=")
		return key == k
	})
	return append(out, k+"="+v)
}

// platformArgs are BuildKit's automatic platform ARGs for a native build of this machine.
func platformArgs() envList {
	p := "linux/" + runtime.GOARCH
	return envList{
		"BUILDPLATFORM=" + p, "BUILDOS=linux", "BUILDARCH=" + runtime.GOARCH, "BUILDVARIANT=",
		"TARGETPLATFORM=" + p, "TARGETOS=linux", "TARGETARCH=" + runtime.GOARCH, "TARGETVARIANT=",
	}
}

// hashKey chains a state key: sha256 over the parts, each length-prefixed.
func hashKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// planVersion changes every key when the way stages are carried out changes.
const planVersion = "imagebuild-v1"

func (b *builder) loadDockerfile(rel string) (*dockerfile, error) {
	if df, ok := b.dockerfiles[rel]; ok {
		return df, nil
	}
	dt, err := os.ReadFile(filepath.Join(b.root, rel))
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	df, err := parseDockerfile(rel, dt, b.buildArgs)
	if err != nil {
		return nil, err
	}
	b.dockerfiles[rel] = df
	return df, nil
}

// parseDockerfile parses with BuildKit's parser and resolves the global ARGs as BuildKit does:
// in order, each from --build-arg if given, else its default expanded with those before it.
func parseDockerfile(rel string, dt []byte, buildArgs map[string]string) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", rel, err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", rel, err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%s has no FROM", rel)
	}
	df := &dockerfile{path: rel, stages: stages, lex: shell.NewLex(res.EscapeToken), plans: map[int]*stagePlan{}}
	df.globals = platformArgs()
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				df.globals = df.globals.set(kv.Key, v)
				continue
			}
			if kv.Value == nil {
				continue
			}
			v, _, err := df.lex.ProcessWord(*kv.Value, shell.EnvsFromSlice(df.globals))
			if err != nil {
				return nil, fmt.Errorf("%s: ARG %s: %w", rel, kv.Key, err)
			}
			df.globals = df.globals.set(kv.Key, v)
		}
	}
	return df, nil
}

// stageIndex finds a stage by name (case-insensitive, as BuildKit) or by number.
func (df *dockerfile) stageIndex(name string, before int) (int, bool) {
	for i := range before {
		if strings.EqualFold(df.stages[i].Name, name) {
			return i, true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n < before {
		return n, true
	}
	return 0, false
}

func (df *dockerfile) where(cmd instructions.Command) string {
	if loc := cmd.Location(); len(loc) > 0 {
		return fmt.Sprintf("%s:%d", df.path, loc[0].Start.Line)
	}
	return df.path
}

// targetIndex resolves a request's target stage.
func (df *dockerfile) targetIndex(target string) (int, error) {
	if target == "" {
		return len(df.stages) - 1, nil
	}
	for i, s := range df.stages {
		if strings.EqualFold(s.Name, target) {
			return i, nil
		}
	}
	var names []string
	for _, s := range df.stages {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	return 0, fmt.Errorf("%s has no stage %q (stages: %s)", df.path, target, strings.Join(names, ", "))
}

// planStage resolves stage i (and, recursively, every stage it uses). Host stages are built
// here, since their outputs' hashes are part of the keys.
func (b *builder) planStage(ctx context.Context, df *dockerfile, i int) (*stagePlan, error) {
	if sp, ok := df.plans[i]; ok {
		if sp == nil {
			return nil, fmt.Errorf("%s: stage %d depends on itself", df.path, i)
		}
		return sp, nil
	}
	df.plans[i] = nil
	st := &df.stages[i]
	sp := &stagePlan{df: df, index: i, name: st.Name}
	if sp.name == "" {
		sp.name = strconv.Itoa(i)
	}
	base, _, err := df.lex.ProcessWord(st.BaseName, shell.EnvsFromSlice(df.globals))
	if err != nil {
		return nil, fmt.Errorf("%s: FROM %s: %w", df.path, st.BaseName, err)
	}
	where := fmt.Sprintf("%s:%d", df.path, st.Location[0].Start.Line)
	switch {
	case strings.EqualFold(base, "scratch"):
		sp.kind = stageImage
		sp.key = hashKey(planVersion, "scratch")
	case func() bool { _, ok := df.stageIndex(base, i); return ok }():
		pi, _ := df.stageIndex(base, i)
		parent, err := b.planStage(ctx, df, pi)
		if err != nil {
			return nil, err
		}
		if parent.kind != stageImage {
			return nil, fmt.Errorf("%s: FROM %s: a stage cannot build on the host stage %q; COPY --from it instead", where, base, parent.name)
		}
		sp.kind, sp.parent, sp.config, sp.key = stageImage, parent, parent.config.clone(), hashKey(planVersion, "stage", parent.key)
	case baseRecipes[base] != nil:
		r := baseRecipes[base]
		key, err := b.baseKey(r)
		if err != nil {
			return nil, err
		}
		sp.kind, sp.recipe, sp.config, sp.key = stageImage, r, r.config(), hashKey(planVersion, "base", key)
	case isGoImage(base):
		sp.kind = stageGo
	case isNodeImage(base):
		sp.kind = stageOpenCode
	default:
		return nil, fmt.Errorf("%s: FROM %s: no recipe for this image; hack/imagebuild makes %s from Debian packages, golang and node build stages run on the host (add a recipe in base.go or hoststage.go)", where, base, strings.Join(recipeNames(), ", "))
	}

	switch sp.kind {
	case stageImage:
		err = b.planImageStage(ctx, df, st, sp)
	case stageGo:
		err = b.planGoStage(ctx, df, st, sp)
	case stageOpenCode:
		err = b.planOpenCodeStage(ctx, df, st, sp)
	}
	if err != nil {
		return nil, err
	}
	df.plans[i] = sp
	return sp, nil
}

// stageArg resolves `ARG name[=default]` inside a stage as BuildKit does: --build-arg wins,
// then the default, then the global ARG of that name, then the automatic platform ARG.
func (df *dockerfile) stageArg(kv instructions.KeyValuePairOptional, env envList, buildArgs map[string]string) (string, bool, error) {
	if v, ok := buildArgs[kv.Key]; ok {
		return v, true, nil
	}
	if kv.Value != nil {
		v, _, err := df.lex.ProcessWord(*kv.Value, shell.EnvsFromSlice(env))
		return v, true, err
	}
	if v, ok := df.globals.get(kv.Key); ok {
		return v, true, nil
	}
	return "", false, nil
}

// planImageStage turns an interpreted stage's instructions into file system ops and config.
func (b *builder) planImageStage(ctx context.Context, df *dockerfile, st *instructions.Stage, sp *stagePlan) error {
	cfg := sp.config
	key := sp.key
	var args envList
	cmdSet := false
	for _, cmd := range st.Commands {
		where := df.where(cmd)
		// ENV wins over ARG of the same name, in expansion and in RUN's environment.
		scope := append(slices.Clone(args), cfg.Env...)
		expand := func(w string) (string, error) {
			s, _, err := df.lex.ProcessWord(w, shell.EnvsFromSlice(scope))
			return s, err
		}
		var o *op
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
			if err := c.Expand(expand); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			for _, kv := range c.Env {
				cfg.Env = envList(cfg.Env).set(kv.Key, kv.Value)
			}
		case *instructions.LabelCommand:
			if err := c.Expand(expand); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			for _, kv := range c.Labels {
				cfg.Labels[kv.Key] = kv.Value
			}
		case *instructions.UserCommand:
			if err := c.Expand(expand); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			cfg.User = c.User
		case *instructions.WorkdirCommand:
			if err := c.Expand(expand); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			wd := c.Path
			if !path.IsAbs(wd) {
				wd = path.Join("/", cfg.WorkingDir, wd)
			}
			cfg.WorkingDir = path.Clean(wd)
			if cfg.WorkingDir != "/" {
				o = &op{Kind: opMkdir, Dir: cfg.WorkingDir, User: cfg.User}
			}
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				p, err := expand(p)
				if err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				if !strings.Contains(p, "/") {
					p += "/tcp"
				}
				if cfg.ExposedPorts == nil {
					cfg.ExposedPorts = map[string]struct{}{}
				}
				cfg.ExposedPorts[p] = struct{}{}
			}
		case *instructions.EntrypointCommand:
			argv, err := cmdline(c.ShellDependantCmdLine, where)
			if err != nil {
				return err
			}
			cfg.Entrypoint = argv
			if !cmdSet {
				// As in BuildKit: a new ENTRYPOINT drops the CMD inherited from the base.
				cfg.Cmd = nil
			}
		case *instructions.CmdCommand:
			argv, err := cmdline(c.ShellDependantCmdLine, where)
			if err != nil {
				return err
			}
			cfg.Cmd, cmdSet = argv, true
		case *instructions.StopSignalCommand:
			if err := c.Expand(expand); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			cfg.StopSignal = c.Signal
		case *instructions.RunCommand:
			if len(c.FlagsUsed) > 0 {
				return fmt.Errorf("%s: RUN --%s is not implemented by hack/imagebuild in an image stage (drop the flag, or teach plan.go what it means)", where, strings.Join(c.FlagsUsed, ", --"))
			}
			argv, err := cmdline(c.ShellDependantCmdLine, where)
			if err != nil {
				return err
			}
			env := envList(slices.Clone(args))
			for _, e := range cfg.Env {
				k, v, _ := strings.Cut(e, "=")
				env = env.set(k, v)
			}
			if _, ok := env.get("PATH"); !ok {
				env = append(env, defaultPath)
			}
			dir := cfg.WorkingDir
			if dir == "" {
				dir = "/"
			}
			o = &op{Kind: opRun, Argv: argv, Env: env, User: cfg.User, Dir: dir}
		case *instructions.CopyCommand:
			var err error
			if o, err = b.planCopy(ctx, df, sp, c, cfg, expand, where); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: %s is not implemented by hack/imagebuild (implemented: FROM, RUN, COPY, ARG, ENV, LABEL, USER, WORKDIR, EXPOSE, ENTRYPOINT, CMD, STOPSIGNAL); rewrite it with those or teach plan.go", where, strings.ToUpper(cmd.Name()))
		}
		state, err := json.Marshal(struct {
			Op     *op         `json:"op"`
			Config imageConfig `json:"config"`
			Args   envList     `json:"args"`
		}{o, cfg, args})
		if err != nil {
			return err
		}
		key = hashKey(key, fmt.Sprint(cmd), string(state))
		if o != nil {
			o.Where, o.key = where, key
			sp.ops = append(sp.ops, *o)
		}
	}
	sp.config, sp.key = cfg, key
	return nil
}

// cmdline turns a RUN/CMD/ENTRYPOINT into argv: the shell form runs under /bin/sh -c.
func cmdline(c instructions.ShellDependantCmdLine, where string) ([]string, error) {
	if len(c.Files) > 0 {
		return nil, fmt.Errorf("%s: heredocs are not implemented by hack/imagebuild; write the command inline", where)
	}
	if c.PrependShell {
		return []string{"/bin/sh", "-c", strings.Join(c.CmdLine, " ")}, nil
	}
	return slices.Clone(c.CmdLine), nil
}

// planCopy resolves a COPY: its sources (build context, an interpreted stage or a host
// stage's outputs), destination, ownership and mode, and the hash of what it copies.
func (b *builder) planCopy(ctx context.Context, df *dockerfile, sp *stagePlan, c *instructions.CopyCommand, cfg imageConfig, expand func(string) (string, error), where string) (*op, error) {
	switch {
	case len(c.ExcludePatterns) > 0:
		return nil, fmt.Errorf("%s: COPY --exclude is not implemented by hack/imagebuild", where)
	case c.Parents:
		return nil, fmt.Errorf("%s: COPY --parents is not implemented by hack/imagebuild", where)
	case len(c.SourceContents) > 0:
		return nil, fmt.Errorf("%s: COPY with a heredoc is not implemented by hack/imagebuild", where)
	}
	if err := c.Expand(expand); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	o := &op{Kind: opCopy, Chown: c.Chown, Chmod: c.Chmod}
	if c.Chmod != "" {
		if _, err := strconv.ParseUint(c.Chmod, 8, 32); err != nil {
			return nil, fmt.Errorf("%s: COPY --chmod=%s: only octal modes are implemented by hack/imagebuild", where, c.Chmod)
		}
	}
	dest := c.DestPath
	if !path.IsAbs(dest) {
		wd := cfg.WorkingDir
		if wd == "" {
			wd = "/"
		}
		trailing := strings.HasSuffix(dest, "/") || dest == "." || strings.HasSuffix(dest, "/.")
		dest = path.Join(wd, dest)
		if trailing && dest != "/" {
			dest += "/"
		}
	}
	o.Dest = dest

	if c.From == "" {
		hash, srcs, err := hashContext(b.root, c.SourcePaths)
		if err != nil {
			return nil, fmt.Errorf("%s: COPY: %w", where, err)
		}
		o.Srcs, o.SrcHash = srcs, hash
		return o, nil
	}
	from, err := expand(c.From)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	si, ok := df.stageIndex(from, sp.index)
	if !ok {
		return nil, fmt.Errorf("%s: COPY --from=%s: not an earlier stage of %s; hack/imagebuild copies only from stages (an image would need a recipe)", where, from, df.path)
	}
	src, err := b.planStage(ctx, df, si)
	if err != nil {
		return nil, err
	}
	switch src.kind {
	case stageImage:
		for _, s := range c.SourcePaths {
			if !path.IsAbs(s) {
				s = "/" + s
			}
			o.Srcs = append(o.Srcs, path.Clean(s))
		}
		o.srcStage, o.SrcHash = src, src.key
	default:
		var hashes []string
		for _, s := range c.SourcePaths {
			a, ok := src.outputs[path.Clean(s)]
			if !ok {
				var have []string
				for k := range src.outputs {
					have = append(have, k)
				}
				slices.Sort(have)
				return nil, fmt.Errorf("%s: COPY --from=%s %s: the host build of stage %s produces only %s", where, from, s, src.name, strings.Join(have, ", "))
			}
			o.Srcs = append(o.Srcs, a.path)
			hashes = append(hashes, a.hash)
		}
		o.SrcHash, o.FromHost = hashKey(hashes...), true
	}
	return o, nil
}

// hashContext expands COPY sources in the build context (globs allowed, nothing outside the
// root) and hashes their paths, modes and contents.
func hashContext(root string, sources []string) (string, []string, error) {
	h := sha256.New()
	var srcs []string
	for _, s := range sources {
		clean := path.Clean("/" + s)[1:]
		if clean == "" {
			clean = "."
		}
		matches, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(clean)))
		if err != nil {
			return "", nil, err
		}
		if len(matches) == 0 {
			return "", nil, fmt.Errorf("%s: no such file in the build context (the repository root)", s)
		}
		for _, m := range matches {
			rel, err := filepath.Rel(root, m)
			if err != nil {
				return "", nil, err
			}
			srcs = append(srcs, rel)
			err = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				r, _ := filepath.Rel(root, p)
				fmt.Fprintf(h, "%s\x00%o\x00", r, info.Mode())
				switch {
				case info.Mode().IsRegular():
					sum, err := fileHash(p)
					if err != nil {
						return err
					}
					h.Write([]byte(sum))
				case info.Mode()&fs.ModeSymlink != 0:
					t, err := os.Readlink(p)
					if err != nil {
						return err
					}
					h.Write([]byte(t))
				}
				return nil
			})
			if err != nil {
				return "", nil, err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)), srcs, nil
}

// fileHash is the sha256 of a file's content.
func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
