package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// builder carries out builds; one at a time per cache directory (a lock file), since they
// share base images and snapshots.
type builder struct {
	root      string // the repository: build context and Go module
	cacheDir  string
	aptDir    string // the host's apt configuration (/etc/apt), read for the Debian mirror
	buildArgs map[string]string
	mirror    string
	verbose   bool
	// hostDryRun classifies host stages' commands without running them (unit tests of the
	// Dockerfile mapping); their outputs then have placeholder hashes.
	hostDryRun bool
	log        io.Writer
	self       string // this executable, re-run as the chroot helper
	lock       *os.File

	dockerfiles map[string]*dockerfile
	stageRoots  map[*stagePlan]string // stages materialized for COPY --from, removed by close
	works       []string
	workSeq     int
}

func newBuilder(root, cacheDir string, buildArgs map[string]string, log io.Writer) (*builder, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if cacheDir, err = filepath.Abs(cacheDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &builder{
		root: root, cacheDir: cacheDir, aptDir: "/etc/apt", buildArgs: buildArgs, log: log, self: self,
		dockerfiles: map[string]*dockerfile{}, stageRoots: map[*stagePlan]string{},
	}
	if b.lock, err = os.OpenFile(filepath.Join(cacheDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(b.lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b.progress("waiting for another imagebuild using %s", cacheDir)
		if err := syscall.Flock(int(b.lock.Fd()), syscall.LOCK_EX); err != nil {
			b.lock.Close()
			return nil, err
		}
	}
	// Leftovers of an interrupted run; nobody else uses them while we hold the lock.
	if err := os.RemoveAll(filepath.Join(cacheDir, "work")); err != nil {
		b.close()
		return nil, err
	}
	b.prune(14 * 24 * time.Hour)
	return b, nil
}

// close removes this run's work directories and releases the lock.
func (b *builder) close() {
	for _, w := range b.works {
		_ = os.RemoveAll(w)
	}
	b.works, b.stageRoots = nil, map[*stagePlan]string{}
	if b.lock != nil {
		b.lock.Close()
		b.lock = nil
	}
}

// prune deletes base images, snapshots and archives unused for longer than age (each use touches them).
func (b *builder) prune(age time.Duration) {
	steps, _ := filepath.Glob(filepath.Join(b.cacheDir, "steps", "*.tar"))
	bases, _ := filepath.Glob(filepath.Join(b.cacheDir, "base", "*.tar"))
	archives, _ := filepath.Glob(filepath.Join(b.cacheDir, "*.tar"))
	for _, f := range slices.Concat(steps, bases, archives) {
		if info, err := os.Stat(f); err == nil && time.Since(info.ModTime()) > age {
			_ = os.Remove(f)
		}
	}
}

func touch(p string) {
	now := time.Now()
	_ = os.Chtimes(p, now, now)
}

// projectCache is $CACHE_DIR for the project's own scripts (the parent of the images cache
// when it is the default).
func (b *builder) projectCache() string {
	if c := os.Getenv("CACHE_DIR"); c != "" {
		return c
	}
	return filepath.Join(b.root, ".cache")
}

func (b *builder) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "imagebuild: "+format+"\n", args...)
}

// workDir makes a fresh directory for this run under the cache (same file system as the
// snapshots, and never /tmp, which may be small or noexec).
func (b *builder) workDir(purpose string) (string, error) {
	b.workSeq++
	dir := filepath.Join(b.cacheDir, "work", fmt.Sprintf("%d-%d-%s", os.Getpid(), b.workSeq, purpose))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b.works = append(b.works, dir)
	return dir, nil
}

// runLogged runs a command with its output kept for the error message (and streamed with -v).
func (b *builder) runLogged(cmd *exec.Cmd, what string) error {
	var buf bytes.Buffer
	out := io.Writer(&buf)
	if b.verbose {
		out = io.MultiWriter(&buf, b.log)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig belongs to the thread that forked: keep it alive until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", what, err, tail(buf.Bytes(), 40))
	}
	return nil
}

// build makes one image archive and returns its path.
func (b *builder) build(ctx context.Context, r request) (string, error) {
	start := time.Now()
	name, err := checkName(r.name)
	if err != nil {
		return "", err
	}
	df, err := b.loadDockerfile(r.dockerfile)
	if err != nil {
		return "", err
	}
	ti, err := df.targetIndex(r.target)
	if err != nil {
		return "", err
	}
	sp, err := b.planStage(ctx, df, ti)
	if err != nil {
		return "", err
	}
	if sp.kind != stageImage {
		return "", fmt.Errorf("stage %s of %s runs on the host and is no image; name an image stage", sp.name, df.path)
	}
	key := hashKey(planVersion, "archive", sp.key, name, runtime.GOARCH)
	base := slug(name) + "-"
	dst := filepath.Join(b.cacheDir, base+key[:12]+".tar")
	if _, err := os.Stat(dst); err == nil {
		touch(dst)
		b.progress("%s: up to date (%s)", name, dst)
		return dst, nil
	}
	if b.hostDryRun {
		return "", errors.New("dry run: nothing is built")
	}

	work, err := b.workDir(slug(sp.name))
	if err != nil {
		return "", err
	}
	rootfs := filepath.Join(work, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return "", err
	}
	if err := b.materialize(ctx, sp, rootfs); err != nil {
		return "", err
	}
	layer := filepath.Join(work, "layer.tar")
	diffID, size, err := writeLayerFile(rootfs, layer)
	if err != nil {
		return "", err
	}
	createdBy := fmt.Sprintf("hack/imagebuild %s", r.describe())
	if err := writeArchive(dst, name, sp.config, layer, diffID, createdBy); err != nil {
		return "", err
	}
	// Older archives of the same name are superseded.
	others, _ := filepath.Glob(filepath.Join(b.cacheDir, base+"????????????.tar"))
	for _, o := range others {
		if o != dst {
			_ = os.Remove(o)
		}
	}
	_ = os.RemoveAll(work)
	b.progress("%s: built in %s, layer %d MiB (%s)", name, time.Since(start).Round(time.Second), size>>20, dst)
	return dst, nil
}

func (b *builder) stepPath(key string) string {
	return filepath.Join(b.cacheDir, "steps", key[:32]+".tar")
}

// materialize builds an interpreted stage's root filesystem into the empty directory dir,
// starting from the latest snapshot taken after one of its RUNs (or from its base) and
// snapshotting after every RUN it carries out.
func (b *builder) materialize(ctx context.Context, sp *stagePlan, dir string) error {
	start := -1
	for i := len(sp.ops) - 1; i >= 0; i-- {
		if sp.ops[i].Kind != opRun {
			continue
		}
		if _, err := os.Stat(b.stepPath(sp.ops[i].key)); err == nil {
			start = i
			break
		}
	}
	switch {
	case start >= 0:
		b.progress("%s: stage %s from the snapshot after %s", sp.df.path, sp.name, sp.ops[start].Where)
		touch(b.stepPath(sp.ops[start].key))
		if err := extractLayer(b.stepPath(sp.ops[start].key), dir); err != nil {
			return err
		}
	case sp.parent != nil:
		if err := b.materialize(ctx, sp.parent, dir); err != nil {
			return err
		}
	case sp.recipe != nil:
		base, err := b.ensureBase(ctx, sp.recipe)
		if err != nil {
			return err
		}
		if err := extractLayer(base, dir); err != nil {
			return err
		}
	}
	for i := start + 1; i < len(sp.ops); i++ {
		o := sp.ops[i]
		var err error
		switch o.Kind {
		case opRun:
			b.progress("%s: RUN %s", o.Where, oneLine(strings.Join(o.Argv, " "), 100))
			if err = b.runInChroot(ctx, dir, o); err == nil {
				_, _, err = writeLayerFile(dir, b.stepPath(o.key))
			}
		case opCopy:
			err = b.copyOp(ctx, dir, o)
		case opMkdir:
			err = mkdirOp(dir, o)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", o.Where, err)
		}
	}
	return nil
}

// stageRoot materializes an interpreted stage once per run for COPY --from.
func (b *builder) stageRoot(ctx context.Context, sp *stagePlan) (string, error) {
	if dir, ok := b.stageRoots[sp]; ok {
		return dir, nil
	}
	work, err := b.workDir("from-" + slug(sp.name))
	if err != nil {
		return "", err
	}
	if err := b.materialize(ctx, sp, work); err != nil {
		return "", err
	}
	b.stageRoots[sp] = work
	return work, nil
}

// chrootHelperArg makes this executable the RUN helper (see chrootHelper).
const chrootHelperArg = "__imagebuild-chroot"

// runInChroot carries out a RUN: this executable again, as PID 1 of new mount and PID
// namespaces (chrootHelper), which mounts what the command needs inside the root and runs it
// there as the stage's user. When the helper exits, the kernel ends every process left in its
// PID namespace and its mounts vanish with the mount namespace.
func (b *builder) runInChroot(ctx context.Context, root string, o op) error {
	uid, gid, home, err := lookupUser(root, o.User)
	if err != nil {
		return err
	}
	env := envList(o.Env)
	if _, ok := env.get("HOME"); !ok {
		env = append(env, "HOME="+home)
	}
	args := append([]string{chrootHelperArg, root, o.Dir, strconv.Itoa(uid), strconv.Itoa(gid), "--"}, o.Argv...)
	cmd := exec.CommandContext(ctx, b.self, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	return b.runLogged(cmd, "RUN "+oneLine(strings.Join(o.Argv, " "), 200))
}

// chrootHelper runs as PID 1 of fresh mount and PID namespaces: it makes every mount private
// (nothing propagates to the host), mounts a new /proc, a read-only /sys and the host's /dev
// into the root, binds the host's resolv.conf over the root's (so apt reaches the mirror and
// the image keeps its own file), and runs the command chrooted, as uid:gid, in dir.
// Arguments: root dir uid gid -- argv...; the environment is the command's.
func chrootHelper(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "imagebuild chroot: "+format+"\n", a...)
		return 125
	}
	if len(args) < 6 || args[4] != "--" {
		return fail("usage: %s root dir uid gid -- argv...", chrootHelperArg)
	}
	root, dir := args[0], args[1]
	uid, err1 := strconv.ParseUint(args[2], 10, 32)
	gid, err2 := strconv.ParseUint(args[3], 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return fail("%v", err)
	}
	argv := args[5:]
	if os.Getpid() != 1 {
		return fail("must run as PID 1 of its own PID namespace")
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fail("make mounts private: %v", err)
	}
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
	}{
		{"proc", "proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"sysfs", "sys", "sysfs", syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{"/dev", "dev", "", syscall.MS_BIND | syscall.MS_REC},
	} {
		target := filepath.Join(root, m.dst)
		if info, err := os.Lstat(target); err != nil {
			if err := os.Mkdir(target, 0o755); err != nil {
				return fail("%v", err)
			}
		} else if !info.IsDir() {
			return fail("/%s in the image is not a directory", m.dst)
		}
		if err := syscall.Mount(m.src, target, m.fstype, m.flags, ""); err != nil {
			return fail("mount %s on %s: %v", m.src, target, err)
		}
	}
	if info, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err == nil && info.Mode().IsRegular() {
		if err := syscall.Mount("/etc/resolv.conf", filepath.Join(root, "etc/resolv.conf"), "", syscall.MS_BIND, ""); err != nil {
			return fail("bind resolv.conf: %v", err)
		}
	}
	bin := argv[0]
	if !strings.Contains(bin, "/") {
		p, _ := envList(os.Environ()).get("PATH")
		for _, d := range filepath.SplitList(p) {
			// Symlinks resolve inside the image (busybox applets, /etc/alternatives).
			hp, err := resolveIn(root, filepath.Join(d, bin), true)
			if err != nil {
				continue
			}
			if info, err := os.Stat(hp); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
				bin = filepath.Join(d, bin)
				break
			}
		}
		if !strings.Contains(bin, "/") {
			return fail("%s: not found in PATH=%s inside the image", argv[0], p)
		}
	}
	cmd := &exec.Cmd{
		Path: bin, Args: argv, Env: os.Environ(), Dir: dir,
		Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:     root,
			Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
		},
	}
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if code := exit.ExitCode(); code >= 0 {
				return code
			}
			return 128 + int(exit.Sys().(syscall.WaitStatus).Signal())
		}
		return fail("%v", err)
	}
	return 0
}
