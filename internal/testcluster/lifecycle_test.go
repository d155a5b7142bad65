package testcluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const helperEnv = "CAKE_TESTCLUSTER_HELPER_DIR"

// TestHelperOwnedCluster is not a test: TestNoStraysWhenTestBinaryIsKilled runs this binary
// again with helperEnv set, and this starts a cluster the way Get does and waits to be killed.
func TestHelperOwnedCluster(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process only")
	}
	if _, err := Start(context.Background(), Options{Dir: filepath.Join(dir, "cluster")}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ready"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Minute)
}

// TestNoStraysWhenTestBinaryIsKilled proves Pdeathsig: a test binary that owns a cluster dies by
// SIGKILL (no cleanup code runs at all), and still every control-plane process goes with it.
func TestNoStraysWhenTestBinaryIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster; skipped with -short")
	}
	if err := CheckBinaries(DefaultBinDir()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOwnedCluster$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := os.Create(filepath.Join(dir, "helper.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	deadline := time.After(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("helper exited early (%v):\n%s", err, tailFile(filepath.Join(dir, "helper.out"), 4000))
		case <-deadline:
			t.Fatalf("helper's cluster not ready after 3 minutes:\n%s", tailFile(filepath.Join(dir, "helper.out"), 4000))
		case <-time.After(200 * time.Millisecond):
		}
	}
	st, err := ReadState(filepath.Join(dir, "cluster"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Processes) != len(requiredBinaries) {
		t.Fatalf("state records %d processes, want %d", len(st.Processes), len(requiredBinaries))
	}
	for _, p := range st.Processes {
		if !p.alive() {
			t.Fatalf("%s (pid %d) not running before the kill", p.Name, p.PID)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	waitUntil := time.Now().Add(15 * time.Second)
	for _, p := range st.Processes {
		for p.alive() && time.Now().Before(waitUntil) {
			time.Sleep(20 * time.Millisecond)
		}
		if p.alive() {
			t.Errorf("%s (pid %d) outlived its killed test binary", p.Name, p.PID)
		}
	}
	if t.Failed() {
		_ = StopDir(filepath.Join(dir, "cluster"))
	}
}

func TestNamespaceName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	for _, name := range []string{
		"TestFoo", "TestFoo/sub_test#01", strings.Repeat("TestVeryLong", 10), "///", "Test-",
	} {
		got := namespaceName(name)
		if len(got) > 63 || !valid.MatchString(got) {
			t.Errorf("namespaceName(%q) = %q: not a DNS-1123 label", name, got)
		}
	}
	if a, b := namespaceName("TestFoo"), namespaceName("TestFoo"); a == b {
		t.Error("two namespaces for the same test share a name")
	}
}

func TestCRILogLine(t *testing.T) {
	ts := time.Date(2026, 11, 28, 12, 0, 0, 5, time.UTC)
	if got, want := CRILogLine(ts, "stdout", "hi"), "2026-11-28T12:00:00.000000005Z stdout F hi\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestProcStatOfSelf(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.startTime == 0 {
		t.Error("no start time")
	}
	self := ProcessRecord{Name: "self", PID: os.Getpid(), StartTime: st.startTime}
	if !self.alive() {
		t.Error("this process is not alive")
	}
	self.StartTime++
	if self.alive() {
		t.Error("a record with another start time matched this process (PID reuse guard)")
	}
	if (ProcessRecord{Name: "none", PID: 0}).alive() {
		t.Error("PID 0 is alive")
	}
}

func TestPKI(t *testing.T) {
	dir := t.TempDir()
	ca, err := writePKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	serving := readCert(t, filepath.Join(dir, "apiserver.crt"))
	for _, host := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc", kubernetesServiceIP} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}

	reloaded, err := loadAuthority(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := reloaded.clientCert("bob", "g1", "g2")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(ck.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate from the reloaded CA: %v", err)
	}
	if cert.Subject.CommonName != "bob" || strings.Join(cert.Subject.Organization, ",") != "g1,g2" {
		t.Errorf("subject %v", cert.Subject)
	}
	for _, f := range []string{"ca.key", "sa.key", "apiserver.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is readable by others: %v", f, st.Mode())
		}
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestWriteKubeconfigRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	in := &rest.Config{
		Host:            "https://127.0.0.1:6443",
		BearerToken:     "tok",
		TLSClientConfig: rest.TLSClientConfig{CAData: []byte("ca"), CertData: []byte("cert"), KeyData: []byte("key")},
	}
	if err := writeKubeconfig(path, in, "x"); err != nil {
		t.Fatal(err)
	}
	out, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if out.Host != in.Host || out.BearerToken != "tok" || string(out.CAData) != "ca" || string(out.CertData) != "cert" || string(out.KeyData) != "key" {
		t.Errorf("round trip lost data: %+v", out)
	}
}

func TestCheckBinariesNamesTheMakeTarget(t *testing.T) {
	err := CheckBinaries(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make cluster-binaries") {
		t.Errorf("err = %v, want one naming make cluster-binaries", err)
	}
}
