package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestBuildConfigAndOwnership builds a small image for real (no network, no base image): the
// config every implemented instruction writes, and the layer's ownership and modes.
func TestBuildConfigAndOwnership(t *testing.T) {
	requireRoot(t)
	ctxDir := t.TempDir()
	write := func(p, content string, mode os.FileMode) {
		t.Helper()
		p = filepath.Join(ctxDir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", "from the first stage\n", 0o644)
	write("data/db/seed.sql", "select 1;\n", 0o600)
	write("tool", "#!/bin/sh\n", 0o755|os.ModeSetuid)
	write("sub/Dockerfile", `ARG BASE=scratch
FROM ${BASE} AS files
COPY a.txt /srv/a.txt
FROM scratch
ARG GREETING=hello
ENV GREETING=${GREETING}-world PATH=/usr/local/bin:/bin
LABEL org.example.k="v w"
COPY --from=files /srv/a.txt /opt/
COPY --chown=65532:65532 --chmod=0750 data/ /data/
COPY tool /usr/local/bin/tool
USER 1000:1000
WORKDIR /workspace
EXPOSE 8080 9090/udp
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/tool"]
CMD ["serve", "--port", "8080"]
`, 0o644)

	cache := t.TempDir()
	build := func() string {
		t.Helper()
		b, err := newBuilder(ctxDir, cache, map[string]string{"GREETING": "hi"}, os.Stderr)
		if err != nil {
			t.Fatal(err)
		}
		defer b.close()
		p, err := b.build(context.Background(), request{dockerfile: "sub/Dockerfile", name: "example.test/tool"})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	path := build()
	a := readArchive(t, path)
	if got := a.manifest[0].RepoTags; !slices.Equal(got, []string{"example.test/tool:latest"}) {
		t.Errorf("RepoTags %v", got)
	}
	c := a.config.Config
	if !slices.Equal(c.Env, []string{"GREETING=hi-world", "PATH=/usr/local/bin:/bin"}) {
		t.Errorf("Env %v (the build arg must reach ENV's expansion)", c.Env)
	}
	if c.User != "1000:1000" || c.WorkingDir != "/workspace" || c.StopSignal != "SIGINT" || c.Labels["org.example.k"] != "v w" {
		t.Errorf("config %+v", c)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/tool"}) || !slices.Equal(c.Cmd, []string{"serve", "--port", "8080"}) {
		t.Errorf("Entrypoint %v Cmd %v", c.Entrypoint, c.Cmd)
	}
	if _, ok := c.ExposedPorts["9090/udp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("ExposedPorts %v", c.ExposedPorts)
	}
	if a.config.OS != "linux" || a.config.Architecture == "" {
		t.Errorf("platform %s/%s", a.config.OS, a.config.Architecture)
	}

	for name, want := range map[string]struct {
		typ      byte
		uid, gid int
		mode     int64
	}{
		"opt/a.txt":          {tar.TypeReg, 0, 0, 0o644},
		"data":               {tar.TypeDir, 65532, 65532, 0o750},
		"data/db":            {tar.TypeDir, 65532, 65532, 0o750},
		"data/db/seed.sql":   {tar.TypeReg, 65532, 65532, 0o750},
		"usr/local/bin/tool": {tar.TypeReg, 0, 0, 0o4755},
		"usr/local/bin":      {tar.TypeDir, 0, 0, 0o755},
		"workspace":          {tar.TypeDir, 1000, 1000, 0o755},
	} {
		h, ok := a.layer[name]
		if !ok {
			t.Errorf("%s missing from the layer", name)
			continue
		}
		if h.Typeflag != want.typ || h.Uid != want.uid || h.Gid != want.gid || h.Mode != want.mode {
			t.Errorf("%s: type %c uid %d gid %d mode %o, want type %c %d:%d %o", name, h.Typeflag, h.Uid, h.Gid, h.Mode, want.typ, want.uid, want.gid, want.mode)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s carries user names %q/%q; ownership must be numeric", name, h.Uname, h.Gname)
		}
	}
	if got := string(a.content["opt/a.txt"]); got != "from the first stage\n" {
		t.Errorf("opt/a.txt = %q", got)
	}

	// Warm: the same inputs give the same archive without building.
	if again := build(); again != path {
		t.Errorf("second build wrote %s, want the cached %s", again, path)
	}
	// A changed input gives a new archive, and the superseded one goes.
	write("a.txt", "changed\n", 0o644)
	changed := build()
	if changed == path {
		t.Fatal("a changed context file did not change the archive")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the superseded archive %s is still there", path)
	}
	if got := string(readArchive(t, changed).content["opt/a.txt"]); got != "changed\n" {
		t.Errorf("opt/a.txt = %q after the change", got)
	}
}

// TestRunInChroot runs a probe through RUN: it runs chrooted as the stage's user, in the
// WORKDIR, under the helper as PID 1 of a new PID namespace with its own /proc, and with the
// stage's environment; what it writes lands in the layer with its ownership; the process it
// leaves behind does not outlive the RUN; and no mount is left on the host.
func TestRunInChroot(t *testing.T) {
	requireRoot(t)
	ctxDir := t.TempDir()
	probe := buildProbe(t)
	data, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "probe"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Found through PATH by an absolute symlink, which must resolve inside the image.
	if err := os.MkdirAll(filepath.Join(ctxDir, "links"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/probe", filepath.Join(ctxDir, "links", "run-probe")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(`FROM scratch
COPY probe /probe
COPY links/ /usr/local/bin/
ARG GREETING=from-arg
USER 1000:1000
WORKDIR /work
RUN ["run-probe"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cache := t.TempDir()
	b, err := newBuilder(ctxDir, cache, nil, &log)
	if err != nil {
		t.Fatal(err)
	}
	b.verbose = true
	defer b.close()
	path, err := b.build(context.Background(), request{dockerfile: "Dockerfile", name: "probe:test"})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}

	var report struct {
		UID, GID, PID, BgPID int
		Cwd, Home, Path, Arg string
		Init                 string
		Proc                 bool
		Resolv               int
	}
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), &report); err != nil {
				t.Fatal(err)
			}
		}
	}
	if report.UID != 1000 || report.GID != 1000 || report.Cwd != "/work" || !report.Proc {
		t.Errorf("RUN saw %+v; want uid/gid 1000, cwd /work, a /proc", report)
	}
	if !strings.Contains(report.Init, chrootHelperArg) {
		t.Errorf("PID 1 as the RUN sees it runs %q, want the helper: the RUN is not in its own PID namespace", report.Init)
	}
	if report.Arg != "from-arg" || report.Home != "/" || !strings.HasPrefix(report.Path, "/usr/local/sbin:") {
		t.Errorf("RUN environment: ARG %q HOME %q PATH %q", report.Arg, report.Home, report.Path)
	}
	if report.BgPID <= 2 {
		t.Errorf("background PID %d", report.BgPID)
	}
	a := readArchive(t, path)
	if h := a.layer["work/made-by-run"]; h == nil || h.Uid != 1000 || h.Gid != 1000 || h.Mode != 0o640 {
		t.Errorf("file written by RUN: %+v", h)
	}
	for _, dir := range []string{"proc", "sys", "dev"} {
		if h := a.layer[dir]; h == nil || h.Typeflag != tar.TypeDir {
			t.Errorf("/%s: %+v, want an empty directory", dir, h)
		}
		for name := range a.layer {
			if strings.HasPrefix(name, dir+"/") {
				t.Errorf("the layer carries %s, which the runtime provides", name)
			}
		}
	}
	// The RUN is over: its background process was ended with its PID namespace.
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, cache) {
			t.Errorf("a process from the RUN outlived it: %s -> %s", p, target)
		}
	}
	mountsAfter, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountsAfter), cache) {
		t.Errorf("a mount of the RUN is left on the host:\n%s", mountsAfter)
	}
	// The snapshot after the RUN exists and a rebuild of a changed image starts from it.
	steps, _ := filepath.Glob(filepath.Join(cache, "steps", "*.tar"))
	if len(steps) != 1 {
		t.Errorf("snapshots %v, want one after the RUN", steps)
	}
}

// TestLayerKeepsWhatTheImageNeeds: hard links stay links, FIFOs and symlinks are kept, file
// capabilities survive, sockets are dropped.
func TestLayerKeepsWhatTheImageNeeds(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr/bin/a"), []byte("x"), 0o755))
	must(os.Link(filepath.Join(root, "usr/bin/a"), filepath.Join(root, "usr/bin/b")))
	must(os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	must(os.Lchown(filepath.Join(root, "fifo"), 7, 8))
	// cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
	capability := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	capErr := syscall.Setxattr(filepath.Join(root, "usr/bin/a"), "security.capability", capability, 0)
	var buf bytes.Buffer
	must(writeLayer(root, &buf))
	headers, _ := readLayer(t, &buf)
	if h := headers["usr/bin/b"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/a" {
		t.Errorf("hard link: %+v", h)
	}
	if h := headers["bin"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "usr/bin" {
		t.Errorf("symlink: %+v", h)
	}
	if h := headers["fifo"]; h == nil || h.Typeflag != tar.TypeFifo || h.Uid != 7 || h.Gid != 8 {
		t.Errorf("fifo: %+v", h)
	}
	if capErr == nil {
		if h := headers["usr/bin/a"]; h == nil || h.PAXRecords["SCHILY.xattr.security.capability"] != string(capability) {
			t.Errorf("file capability lost: %+v", h)
		}
	}
	// And back: extractLayer restores the same tree.
	buf.Reset()
	must(writeLayer(root, &buf))
	layerFile := filepath.Join(t.TempDir(), "layer.tar")
	must(os.WriteFile(layerFile, buf.Bytes(), 0o644))
	out := t.TempDir()
	must(extractLayer(layerFile, out))
	var again bytes.Buffer
	must(writeLayer(out, &again))
	h2, _ := readLayer(t, &again)
	for name, h := range headers {
		g := h2[name]
		if g == nil || g.Typeflag != h.Typeflag || g.Uid != h.Uid || g.Mode != h.Mode || g.Linkname != h.Linkname {
			t.Errorf("%s after extract: %+v, want %+v", name, g, h)
		}
	}
}
