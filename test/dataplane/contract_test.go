// Package dataplane holds the data-plane image to the session pod the agent creates. The pod
// spec comes from the real sessions controller (agent/sessions, with a fake clientset and an
// in-memory store); the image from the Dockerfile's data-plane and data-plane-init stages
// (parsed with BuildKit's parser). Without a Docker engine the image cannot run here, so the
// last test runs the pinned OpenCode binary the image ships with the pod's own command line,
// environment, uid and probe — HOME, TMPDIR, the workspace and the config directory in temp
// dirs, as the pod's volumes are — and checks the readiness probe passes with the password and
// fails without it. test/dockerfile lints the Dockerfile itself.
package dataplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/keyring"
	"github.com/cakeai/cake-agents/agent/store/sqlite"
	"github.com/cakeai/cake-agents/internal/syncbuf"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

const namespace = "sessions"

// sessionPod returns the pod the agent creates for a session, built by the real controller.
func sessionPod(t *testing.T) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	// With a keyring, as the agent always opens it: the controller reads the owner's
	// git credentials.
	kr, err := keyring.New([]byte("dataplane test auth secret, 32+ bytes"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, sqlite.Options{Path: sqlite.Memory, Keyring: kr})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := &store.User{Source: "kubernetes", Subject: "alice"}
	if err := st.UpsertUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	kube := fake.NewClientset()
	c, err := sessions.New(sessions.Config{
		Namespace:          namespace,
		Release:            "cake-agents",
		DataPlaneImage:     "data-plane:test",
		DataPlaneInitImage: "data-plane-init:test",
		LiteLLMBaseURL:     "http://127.0.0.1:9/v1",
		DefaultModel:       "m",
		Registerer:         prometheus.NewRegistry(),
	}, kube, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &store.Session{OwnerID: u.ID, Repo: "https://example.invalid/org/repo.git"}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	pod, err := kube.CoreV1().Pods(namespace).Get(ctx, sessions.PodName(s.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the controller created no pod: %v", err)
	}
	return pod
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("pod has no container %q", name)
	return corev1.Container{}
}

// image is what a Dockerfile stage gives a container: the result of its (and its base
// stages') ENV, USER, WORKDIR, ENTRYPOINT, CMD and COPY destinations.
type image struct {
	env        map[string]string
	user       string
	workdir    string
	entrypoint []string
	cmd        []string
	files      []string
}

func parseImage(t *testing.T, target string) image {
	t.Helper()
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dt, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		t.Fatal(err)
	}
	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]instructions.Stage{}
	for _, s := range stages {
		byName[s.Name] = s
	}
	var chain []instructions.Stage
	for name := target; ; {
		s, ok := byName[name]
		if !ok {
			break
		}
		chain = append([]instructions.Stage{s}, chain...)
		name = s.BaseName
	}
	if len(chain) == 0 {
		t.Fatalf("Dockerfile has no stage %q", target)
	}
	img := image{env: map[string]string{}}
	// ENV values are words of the Dockerfile's shell syntax (quotes, escapes, $VAR): expand
	// them as the builder does, with the ENV set so far (no stage here uses ARG in ENV).
	lex := shell.NewLex(res.EscapeToken)
	for _, s := range chain {
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.EnvCommand:
				var env []string
				for k, v := range img.env {
					env = append(env, k+"="+v)
				}
				if err := c.Expand(func(w string) (string, error) {
					v, _, err := lex.ProcessWord(w, shell.EnvsFromSlice(env))
					return v, err
				}); err != nil {
					t.Fatalf("Dockerfile stage %s: %v", s.Name, err)
				}
				for _, kv := range c.Env {
					img.env[kv.Key] = kv.Value
				}
			case *instructions.UserCommand:
				img.user = c.User
			case *instructions.WorkdirCommand:
				img.workdir = c.Path
			case *instructions.EntrypointCommand:
				if c.PrependShell {
					t.Fatalf("stage %s: ENTRYPOINT in shell form", s.Name)
				}
				img.entrypoint, img.cmd = c.CmdLine, nil
			case *instructions.CmdCommand:
				if c.PrependShell {
					t.Fatalf("stage %s: CMD in shell form", s.Name)
				}
				img.cmd = c.CmdLine
			case *instructions.CopyCommand:
				img.files = append(img.files, c.DestPath)
			}
		}
	}
	return img
}

func literalEnv(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func TestImagesMatchThePodSpec(t *testing.T) {
	pod := sessionPod(t)
	uid := pod.Spec.SecurityContext.RunAsUser
	gid := pod.Spec.SecurityContext.RunAsGroup
	wantUser := fmt.Sprintf("%d:%d", *uid, *gid)

	t.Run("data-plane", func(t *testing.T) {
		c := container(t, pod.Spec.Containers, sessions.ContainerName)
		img := parseImage(t, "data-plane")
		// The pod sets command, which replaces ENTRYPOINT and CMD; `docker run image` must
		// start the same process, so no ENTRYPOINT and CMD equal to the pod's command.
		if len(img.entrypoint) > 0 {
			t.Errorf("data-plane ENTRYPOINT %q: the pod's command bypasses it, so docker run and the pod would differ", img.entrypoint)
		}
		if !slices.Equal(img.cmd, c.Command) {
			t.Errorf("data-plane CMD %q, pod command %q", img.cmd, c.Command)
		}
		if img.workdir != c.WorkingDir {
			t.Errorf("data-plane WORKDIR %q, pod workingDir %q", img.workdir, c.WorkingDir)
		}
		if img.user != wantUser {
			t.Errorf("data-plane USER %q, pod runs as %s", img.user, wantUser)
		}
		for k, v := range literalEnv(c) {
			if got, ok := img.env[k]; !ok || got != v {
				t.Errorf("data-plane ENV %s=%q (set: %v), pod sets %q", k, got, ok, v)
			}
		}
		// The command and the probe name programs the image must have on PATH.
		if c.Command[0] != "opencode" || !slices.Contains(img.files, "/usr/local/bin/opencode") {
			t.Errorf("pod runs %q; the image must COPY it to /usr/local/bin (has %v)", c.Command[0], img.files)
		}
		probe := c.ReadinessProbe.Exec.Command
		if probe[0] != "sh" || !strings.Contains(probe[len(probe)-1], "curl ") {
			t.Errorf("readiness probe %q: the image test (test/dockerfile) assumes sh + curl", probe)
		}
		// Offline safety that the pod does not set itself (DESIGN §8.2).
		if img.env["npm_config_registry"] == "" {
			t.Error("data-plane sets no npm_config_registry: OpenCode would try to install plugins from the network")
		}
	})

	t.Run("data-plane-init", func(t *testing.T) {
		c := container(t, pod.Spec.InitContainers, sessions.InitContainerName)
		img := parseImage(t, "data-plane-init")
		if want := []string{"agent", "session-init"}; !slices.Equal(c.Command[:2], want) {
			t.Errorf("init container command %q, want it to start with %q", c.Command, want)
		}
		if !slices.Contains(img.files, "/usr/local/bin/agent") {
			t.Errorf("data-plane-init does not COPY the agent to /usr/local/bin (has %v)", img.files)
		}
		if !slices.Equal(img.entrypoint, []string{"agent"}) {
			t.Errorf("data-plane-init ENTRYPOINT %q, want [agent]", img.entrypoint)
		}
		if img.user != wantUser {
			t.Errorf("data-plane-init USER %q, pod runs as %s", img.user, wantUser)
		}
		for k, v := range literalEnv(c) {
			if got, ok := img.env[k]; ok && got != v {
				t.Errorf("data-plane-init ENV %s=%q, pod sets %q", k, got, v)
			}
		}
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writableByOthers are the places a process that is not root can write on a normal root
// filesystem; in the pod they are read-only, so the OpenCode process must leave them alone.
var writableByOthers = []string{"/tmp", "/var/tmp", "/dev/shm"}

// filesOwnedBy lists entries directly under dirs owned by uid and modified after since.
func filesOwnedBy(uid int, since time.Time, dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && info.ModTime().After(since) {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out
}

func TestOpenCodeServesThePodContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real OpenCode (5-20 s); skipped with -short")
	}
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "hack", "install-opencode.sh")).Output()
	if err != nil {
		t.Fatalf("hack/install-opencode.sh: %v", err)
	}
	opencode := strings.TrimSpace(string(out))

	pod := sessionPod(t)
	c := container(t, pod.Spec.Containers, sessions.ContainerName)
	img := parseImage(t, "data-plane")
	uid, gid := int(*pod.Spec.SecurityContext.RunAsUser), int(*pod.Spec.SecurityContext.RunAsGroup)
	asPodUser := os.Geteuid() == 0 // only root can switch to the pod's uid

	// The pod's volumes, as temp dirs owned by the pod's user.
	// (Not t.TempDir: its parent is private to root, and the pod's uid must reach these.)
	base, err := os.MkdirTemp("", "dataplane-contract-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	volumes := map[string]string{}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(base, strings.ReplaceAll(strings.Trim(m.MountPath, "/"), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		volumes[m.MountPath] = dir
	}
	hostPath := func(p string) string {
		for mount, dir := range volumes {
			if p == mount || strings.HasPrefix(p, mount+"/") {
				return dir + strings.TrimPrefix(p, mount)
			}
		}
		return p
	}

	// What the init container writes: the OpenCode config of the pod's session-init args.
	var initOpts sessioninit.Options
	flags := pflag.NewFlagSet("session-init", pflag.ContinueOnError)
	initOpts.BindFlags(flags)
	initC := container(t, pod.Spec.InitContainers, sessions.InitContainerName)
	if err := flags.Parse(initC.Args); err != nil {
		t.Fatalf("parse init container args %q: %v", initC.Args, err)
	}
	cfg, err := sessioninit.BuildConfig(initOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hostPath(initOpts.ConfigPath), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if asPodUser {
		_ = filepath.WalkDir(base, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && p != base {
				err = os.Lchown(p, uid, gid)
			}
			return err
		})
	}

	// The container's environment: the image's ENV, then the pod's (paths mapped onto the
	// temp dirs), then the Secret's values.
	password := randomHex(t)
	env := map[string]string{"PATH": filepath.Dir(opencode) + ":/usr/local/bin:/usr/bin:/bin"}
	for k, v := range img.env {
		env[k] = hostPath(v)
	}
	for k, v := range literalEnv(c) {
		env[k] = hostPath(v)
	}
	env["OPENCODE_SERVER_PASSWORD"] = password
	env["LITELLM_API_KEY"] = "sk-test"
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}

	// The pod's command, on a free port (4096 may be taken on a shared machine).
	port := freePort(t)
	podPort := strconv.Itoa(apiv1.OpenCodePort)
	args := slices.Clone(c.Command)
	if i := slices.Index(args, "--port"); i < 0 || args[i+1] != podPort {
		t.Fatalf("pod command %q has no --port %s", args, podPort)
	} else {
		args[i+1] = strconv.Itoa(port)
	}
	start := time.Now()
	logs := &syncbuf.Buffer{}
	// As root, a private mount namespace gives the pod's filesystem: the root (and /tmp,
	// /var/tmp, /dev/shm when they are mounts of their own) read-only, the volume dirs bound
	// writable over themselves, then setpriv drops to the pod's uid/gid.
	readOnlyRoot := asPodUser && exec.Command("unshare", "--mount", "true").Run() == nil && hasCommand("setpriv")
	podUser := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asPodUser {
		podUser.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	var cmd *exec.Cmd
	switch {
	case readOnlyRoot:
		script := `for d; do [ "$d" = -- ] && break; mount --bind "$d" "$d"; done
while [ "$1" != -- ]; do shift; done; shift
mount -o remount,bind,ro /
for m in /tmp /var/tmp /dev/shm; do if mountpoint -q "$m"; then mount -o remount,bind,ro "$m"; fi; done
cd "$PWD"
exec setpriv --reuid=` + strconv.Itoa(uid) + ` --regid=` + strconv.Itoa(gid) + ` --clear-groups --pdeathsig SIGKILL -- "$@"`
		shArgs := []string{"--mount", "--propagation", "private", "sh", "-ec", script, "sh"}
		for _, dir := range volumes {
			shArgs = append(shArgs, dir)
		}
		shArgs = append(shArgs, "--", opencode)
		cmd = exec.Command("unshare", append(shArgs, args[1:]...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	case asPodUser:
		t.Log("no mount namespace here: running OpenCode as the pod's uid on the normal root filesystem")
		cmd = exec.Command(opencode, args[1:]...)
		cmd.SysProcAttr = podUser
	default:
		t.Logf("not root: running OpenCode as uid %d instead of the pod's %d, root filesystem writable", os.Geteuid(), uid)
		cmd = exec.Command(opencode, args[1:]...)
		cmd.SysProcAttr = podUser
	}
	cmd.Dir = hostPath(c.WorkingDir)
	cmd.Env = append(slices.Clone(environ), "PWD="+cmd.Dir)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The readiness probe exactly as the kubelet execs it, with the container's env.
	probe := func(pw string) error {
		pc := slices.Clone(c.ReadinessProbe.Exec.Command)
		last := len(pc) - 1
		pc[last] = strings.ReplaceAll(pc[last], "127.0.0.1:"+podPort, "127.0.0.1:"+strconv.Itoa(port))
		p := exec.Command(pc[0], pc[1:]...)
		p.Env = append(slices.Clone(environ), "OPENCODE_SERVER_PASSWORD="+pw)
		p.SysProcAttr = podUser // the kubelet execs the probe as the container's user
		o, err := p.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, o)
		}
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := probe(password)
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			stopped = true
			t.Fatalf("opencode exited before it was ready (%v):\n%s", werr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness probe still failing after 2m (%v); opencode output:\n%s", err, logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("ready in %s (readiness probe passed; read-only root: %v)", time.Since(start).Round(100*time.Millisecond), readOnlyRoot)

	if err := probe("wrong-" + password); err == nil {
		t.Error("readiness probe passed with a wrong password: OpenCode is not guarded")
	}

	// Read-only root: as the pod's uid the process cannot write to root's files anyway; the
	// world-writable places must stay untouched too (they are read-only in the pod).
	if asPodUser {
		if stray := filesOwnedBy(uid, start, writableByOthers...); len(stray) > 0 {
			t.Errorf("opencode wrote outside HOME/TMPDIR/workspace (read-only in the pod): %v", stray)
		}
	}

	// Kubernetes stops the pod with SIGTERM and waits terminationGracePeriodSeconds.
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		stopped = true
	case <-time.After(grace):
		t.Errorf("opencode did not exit within the pod's grace period (%s) after SIGTERM", grace)
	}
}

func hasCommand(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
