package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests build real images from the repository's Dockerfiles (debootstrap base,
// apt-get in chroots, the agent and OpenCode built or installed on the host) into the shared
// cache, so they are slow only the first time, then run the images' programs in a chroot of
// the extracted layer as the image's user. Image names carry an imagebuild-e2e/ prefix so the
// archives never replace those hack/build-images.sh makes for the real-node tier.

func e2eBuild(t *testing.T, spec ...string) map[string]archiveRun {
	t.Helper()
	requireRoot(t)
	if testing.Short() {
		t.Skip("builds real images (minutes the first time): not in -short")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap is not installed (apt-get install -y debootstrap)")
	}
	var stdout, stderr bytes.Buffer
	args := append([]string{"--build-arg", "VERSION=v0.0.0-imagebuild-e2e"}, spec...)
	if err := run(context.Background(), args, &stdout, io.MultiWriter(&stderr, testWriter{t})); err != nil {
		t.Fatalf("imagebuild %s: %v", strings.Join(args, " "), err)
	}
	out := map[string]archiveRun{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		name, path, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("output line %q is not name<TAB>path", line)
		}
		out[name] = archiveRun{archive: readArchive(t, path), path: path}
	}
	return out
}

// testWriter sends the builder's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type archiveRun struct {
	archive
	path string
}

// extract unpacks the image's layer into a fresh directory.
func (a archiveRun) extract(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	layerTar := filepath.Join(t.TempDir(), "layer.tar")
	cmd := exec.Command("tar", "-x", "-f", a.path, "-O", a.manifest[0].Layers[0])
	f, err := os.Create(layerTar)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = f
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := extractLayer(layerTar, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// exec runs argv in a chroot of the extracted image as the image's user, in its working
// directory, with its environment (plus extra), as a container would, and returns the output.
func (a archiveRun) exec(t *testing.T, root string, extra []string, argv ...string) string {
	t.Helper()
	out, err := a.run(context.Background(), t, root, extra, argv...)
	if err != nil {
		t.Fatalf("%s in the image: %v", strings.Join(argv, " "), err)
	}
	return out
}

// run is exec that returns the error; cancelling ctx ends the program and all it started.
func (a archiveRun) run(ctx context.Context, t *testing.T, root string, extra []string, argv ...string) (string, error) {
	var out bytes.Buffer
	b := &builder{log: &out, verbose: true, self: selfExe(t)}
	c := a.config.Config
	dir := c.WorkingDir
	if dir == "" {
		dir = "/"
	}
	env := append(slices.Clone(c.Env), extra...)
	if _, ok := envList(env).get("PATH"); !ok {
		env = append(env, defaultPath)
	}
	err := b.runInChroot(ctx, root, op{Argv: argv, Env: env, User: c.User, Dir: dir})
	return out.String(), err
}

func selfExe(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (a archiveRun) requireFile(t *testing.T, name string, uid, gid int, mode int64) {
	t.Helper()
	h := a.layer[name]
	if h == nil {
		t.Errorf("%s is missing from the image", name)
		return
	}
	if h.Uid != uid || h.Gid != gid || (mode >= 0 && h.Mode != mode) {
		t.Errorf("%s: %d:%d mode %o, want %d:%d mode %o", name, h.Uid, h.Gid, h.Mode, uid, gid, mode)
	}
}

// TestE2EDataPlaneInit builds the session init container's image and runs the agent in it.
func TestE2EDataPlaneInit(t *testing.T) {
	const name = "imagebuild-e2e/data-plane-init:test"
	img := e2eBuild(t, "--target", "data-plane-init="+name)[name]
	c := img.config.Config
	if c.User != "1000:1000" || !slices.Equal(c.Entrypoint, []string{"agent"}) || c.WorkingDir != "/workspace" {
		t.Errorf("config: User %q Entrypoint %q WorkingDir %q; want 1000:1000, [agent], /workspace", c.User, c.Entrypoint, c.WorkingDir)
	}
	if !slices.Equal(img.manifest[0].RepoTags, []string{name}) {
		t.Errorf("RepoTags %v", img.manifest[0].RepoTags)
	}
	img.requireFile(t, "usr/local/bin/agent", 0, 0, 0o755)
	img.requireFile(t, "usr/bin/git", 0, 0, 0o755)
	img.requireFile(t, "usr/bin/ssh", 0, 0, 0o755)
	img.requireFile(t, "workspace", 1000, 1000, 0o755)
	img.requireFile(t, "etc/opencode", 1000, 1000, 0o755)
	img.requireFile(t, "home/opencode", 1000, 1000, -1)
	img.requireFile(t, "etc/ssl/certs/ca-certificates.crt", 0, 0, 0o644)
	if _, ok := img.layer["var/lib/apt/lists/lock"]; ok {
		t.Error("apt lists shipped in the image (the RUN removes them)")
	}
	for name := range img.layer {
		if strings.HasPrefix(name, "usr/share/man/") || strings.HasPrefix(name, "usr/share/locale/") {
			t.Errorf("%s shipped: the slim base excludes man pages and translations", name)
			break
		}
	}

	root := img.extract(t)
	if out := img.exec(t, root, nil, "agent", "version"); !strings.Contains(out, "agent v0.0.0-imagebuild-e2e") {
		t.Errorf("agent version printed %q", out)
	}
	if out := img.exec(t, root, nil, "sh", "-c", "id -u; id -g; git --version"); !strings.Contains(out, "1000\n1000\ngit version 2.") {
		t.Errorf("id and git in the image printed %q", out)
	}
}

// TestE2EDataPlane builds the session image and runs its OpenCode.
func TestE2EDataPlane(t *testing.T) {
	const name = "imagebuild-e2e/data-plane:test"
	img := e2eBuild(t, "--target", "data-plane="+name)[name]
	c := img.config.Config
	if c.User != "1000:1000" || c.Entrypoint != nil || len(c.Cmd) == 0 || c.Cmd[0] != "opencode" {
		t.Errorf("config: User %q Entrypoint %q Cmd %q", c.User, c.Entrypoint, c.Cmd)
	}
	img.requireFile(t, "usr/local/bin/opencode", 0, 0, 0o755)
	for _, tool := range []string{"usr/bin/bash", "usr/bin/git", "usr/bin/ssh", "usr/bin/rg", "usr/bin/curl"} {
		img.requireFile(t, tool, 0, 0, 0o755)
	}
	root := img.extract(t)
	out := img.exec(t, root, nil, "opencode", "--version")
	versions, err := os.ReadFile(filepath.Join(repoRoot(t), "hack", "versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, line := range strings.Split(string(versions), "\n") {
		if v, ok := strings.CutPrefix(line, "OPENCODE_VERSION="); ok {
			want = v
		}
	}
	if want == "" || !strings.Contains(out, want) {
		t.Errorf("opencode --version printed %q, want %s", out, want)
	}
}

// TestE2EPostgres builds the Postgres image and starts it as the chart does: uid 999, the
// chart's variables, PGDATA below the volume; then the chart's probe command and a query.
// It runs in its own network namespace (unshare), so its port 5432 is private.
func TestE2EPostgres(t *testing.T) {
	const name = "imagebuild-e2e/postgres:15"
	img := e2eBuild(t, "--dockerfile", "test/images/postgres="+name)[name]
	c := img.config.Config
	if c.User != "999:999" || !slices.Equal(c.Cmd, []string{"postgres"}) || c.StopSignal != "SIGINT" {
		t.Errorf("config %+v", c)
	}
	if _, ok := c.ExposedPorts["5432/tcp"]; !ok {
		t.Errorf("ExposedPorts %v", c.ExposedPorts)
	}
	img.requireFile(t, "usr/lib/postgresql/15/bin/pg_isready", 0, 0, 0o755)
	img.requireFile(t, "run/postgresql", 999, 999, 0o3777) // /var/run is a link to /run
	img.requireFile(t, "var/lib/postgresql/data", 999, 999, 0o700)
	root := img.extract(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is missing")
	}
	// The chart's probe and env, and a query through TCP with the password.
	script := `set -e
docker-entrypoint.sh postgres >/tmp/pg.log 2>&1 &
until sh -c 'pg_isready -U "$POSTGRES_USER" -d "$POSTGRES_DB" -h 127.0.0.1' >/dev/null 2>&1; do
  kill -0 $! 2>/dev/null || { cat /tmp/pg.log; exit 1; }
  sleep 0.5
done
PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "select current_database() || ' ' || current_user || ' ' || (select rolpassword like 'SCRAM-SHA-256%' from pg_authid where rolname = current_user)::text || ' ' || current_setting('listen_addresses')"
kill -INT $!
wait $! || true
echo stopped`
	env := []string{"POSTGRES_USER=cake_agents", "POSTGRES_PASSWORD=s3cret", "POSTGRES_DB=cake_agents", "PGDATA=/var/lib/postgresql/data/pgdata"}
	out := img.execInNetns(t, root, env, "sh", "-c", script)
	t.Logf("%s", out)
	if !strings.Contains(out, "cake_agents cake_agents true *") || !strings.Contains(out, "stopped") {
		t.Errorf("postgres in the image:\n%s", out)
	}
}

// execInNetns is exec inside a fresh network namespace with loopback up.
func (a archiveRun) execInNetns(t *testing.T, root string, extra []string, argv ...string) string {
	t.Helper()
	c := a.config.Config
	uid, gid, home, err := lookupUser(root, c.User)
	if err != nil {
		t.Fatal(err)
	}
	env := append(append(slices.Clone(c.Env), "HOME="+home), extra...)
	args := append([]string{"--net", "--pid", "--mount", "--fork", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`,
		selfExe(t), chrootHelperArg, root, c.WorkingDir + "/", fmt.Sprint(uid), fmt.Sprint(gid), "--"}, argv...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// TestE2EBusybox builds the helm-test image and runs the chart's wget in it as uid 65532.
func TestE2EBusybox(t *testing.T) {
	const name = "imagebuild-e2e/busybox:1.37"
	img := e2eBuild(t, "--dockerfile", "test/images/busybox="+name)[name]
	if h := img.layer["bin/wget"]; h == nil || h.Linkname != "/bin/busybox" {
		t.Fatalf("bin/wget: %+v", h)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "ready at %s\n", r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	root := img.extract(t)
	img.config.Config.User = "65532:65532" // the chart's helm test pod
	if out := img.exec(t, root, nil, "wget", "-q", "-O-", "http://"+l.Addr().String()+"/readyz"); !strings.Contains(out, "ready at /readyz") {
		t.Errorf("wget in the image printed %q", out)
	}
}

// TestE2ESmallImages builds the fake model, the git server and the pause image.
func TestE2ESmallImages(t *testing.T) {
	imgs := e2eBuild(t,
		"--dockerfile", "test/images/fakemodel=imagebuild-e2e/fakemodel:test",
		"--dockerfile", "test/images/gitserver=imagebuild-e2e/gitserver:test",
		"--dockerfile", "test/images/pause=imagebuild-e2e/pause:test")
	fm := imgs["imagebuild-e2e/fakemodel:test"]
	fm.requireFile(t, "fakemodel", 0, 0, 0o755)
	if c := fm.config.Config; !slices.Equal(c.Entrypoint, []string{"/fakemodel"}) || !slices.Equal(c.Cmd, []string{"-listen", "0.0.0.0:8080"}) {
		t.Errorf("fakemodel config %+v", c)
	}
	gs := imgs["imagebuild-e2e/gitserver:test"]
	gs.requireFile(t, "usr/local/bin/gitserver", 0, 0, 0o755)
	gs.requireFile(t, "usr/lib/git-core/git-http-backend", 0, 0, 0o755)
	cloneFromGitserverImage(t, gs)

	ps := imgs["imagebuild-e2e/pause:test"]
	ps.requireFile(t, "pause", 0, 0, 0o755)
	if c := ps.config.Config; !slices.Equal(c.Entrypoint, []string{"/pause"}) || c.User != "65535:65535" {
		t.Errorf("pause config %+v", c)
	}
	if len(ps.layer) > 8 {
		t.Errorf("the pause image holds %d entries, want the binary and the runtime's mount points only", len(ps.layer))
	}
	// It waits until SIGTERM and then exits 0 (a static binary: it runs on the host as well).
	pause := exec.Command(filepath.Join(ps.extract(t), "pause"))
	stderr, err := pause.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	// Its first line says the handlers are in place (the Go runtime catches every signal from
	// the start, so /proc's SigCgt cannot tell).
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil || !strings.Contains(line, "waiting") {
		t.Fatalf("pause said %q, %v", line, err)
	}
	if err := pause.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := pause.Wait(); err != nil {
		t.Errorf("pause after SIGTERM: %v, want exit 0", err)
	}
}

// cloneFromGitserverImage serves a bare repository from the gitserver image (as uid 65532,
// the repository owned by root as on a hostPath volume) and clones it over HTTPS.
func cloneFromGitserverImage(t *testing.T, gs archiveRun) {
	t.Helper()
	root := gs.extract(t)
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("served from the image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-C", work, "init", "-q", "-b", "main"},
		{"-C", work, "add", "."},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first"},
		{"clone", "-q", "--bare", work, filepath.Join(root, "srv/git/demo.git")},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	certPEM, keyPEM := selfSignedCert(t)
	for name, data := range map[string][]byte{"tmp/tls.crt": certPEM, "tmp/tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(root, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	caFile := filepath.Join(work, "ca.crt")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := gs.run(ctx, t, root, []string{"GITSERVER_TLS_CERT=/tmp/tls.crt", "GITSERVER_TLS_KEY=/tmp/tls.key", "GITSERVER_LISTEN=" + addr}, "gitserver")
		errc <- err
	}()
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("gitserver in the image exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	clone := filepath.Join(work, "clone")
	cmd := exec.Command("git", "clone", "-q", "--depth", "1", "https://"+addr+"/demo.git", clone)
	cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+caFile, "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clone from the gitserver image: %v\n%s", err, out)
	}
	if got, err := os.ReadFile(filepath.Join(clone, "README.md")); err != nil || string(got) != "served from the image\n" {
		t.Errorf("cloned README.md = %q, %v", got, err)
	}
	cancel()
	<-errc
}

// selfSignedCert makes a certificate for 127.0.0.1 that is its own CA.
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imagebuild e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
