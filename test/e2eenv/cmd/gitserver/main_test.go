package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syncWriter hands the first write (the URL line) to a channel.
type syncWriter chan string

func (w syncWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key; the certificate is
// also the CA a client trusts.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gitserver test"},
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
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func git(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestServesAShallowCloneOverHTTPS clones a repository the server's user does not own (as a
// hostPath volume is) over HTTPS, shallow like a session's init container.
func TestServesAShallowCloneOverHTTPS(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	root := filepath.Join(dir, "repos")
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "README.md"), []byte("hello from gitserver\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, nil, "-C", work, "init", "-q", "-b", "main")
	git(t, nil, "-C", work, "add", ".")
	git(t, nil, "-C", work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
	git(t, nil, "clone", "-q", "--bare", work, filepath.Join(root, "demo.git"))
	git(t, nil, "clone", "-q", "--bare", work, filepath.Join(root, "private.git"))
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		// Owned by someone else, so git's safe.directory check would refuse it.
		if out, err := exec.Command("chown", "-R", "65534:65534", filepath.Join(root, "demo.git")).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	out := make(syncWriter, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"-root", root, "-cert", certFile, "-key", keyFile, "-listen", "127.0.0.1:0", "-private", "private.git", "-token-file", tokenFile}, out)
	}()
	var base string
	select {
	case line := <-out:
		base = strings.TrimSpace(line)
	case err := <-errc:
		t.Fatalf("run ended early: %v", err)
	}

	clone := filepath.Join(dir, "clone")
	git(t, []string{"GIT_SSL_CAINFO=" + certFile, "GIT_TERMINAL_PROMPT=0"}, "clone", "-q", "--depth", "1", base+"/demo.git", clone)
	got, err := os.ReadFile(filepath.Join(clone, "README.md"))
	if err != nil || string(got) != "hello from gitserver\n" {
		t.Fatalf("cloned README.md = %q, %v", got, err)
	}
	// An unknown repository is an error, not an empty clone.
	cmd := exec.Command("git", "ls-remote", base+"/missing.git")
	cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+certFile, "GIT_TERMINAL_PROMPT=0")
	if err := cmd.Run(); err == nil {
		t.Error("ls-remote of a missing repository succeeded")
	}

	// The private repository answers only to its token.
	cmd = exec.Command("git", "ls-remote", base+"/private.git")
	cmd.Env = append(os.Environ(), "GIT_SSL_CAINFO="+certFile, "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("ls-remote of the private repository without the token succeeded: %s", out)
	}
	withToken := strings.Replace(base, "https://", "https://x-access-token:s3cret@", 1)
	git(t, []string{"GIT_SSL_CAINFO=" + certFile, "GIT_TERMINAL_PROMPT=0"}, "ls-remote", withToken+"/private.git")

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestRequiresACertificate(t *testing.T) {
	t.Setenv("GITSERVER_TLS_CERT", "")
	t.Setenv("GITSERVER_TLS_KEY", "")
	err := run(context.Background(), []string{"-root", t.TempDir()}, os.Stdout)
	if err == nil || !strings.Contains(err.Error(), "-cert and -key") {
		t.Fatalf("got %v, want an error naming -cert and -key", err)
	}
}
