package gitcred

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// hostKeyLine is a known_hosts line for addr with a fresh ed25519 host key.
func hostKeyLine(t *testing.T, addr string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return knownhosts.Line([]string{addr}, k)
}

// TestNewSSHSecretTakesEveryKeyFormat: ed25519, ECDSA and RSA keys in OpenSSH, PKCS#1,
// SEC 1 and PKCS#8 PEM (with CRLF line ends too) are stored in OpenSSH's format, which
// the real ssh-keygen reads back to the same public key the credential shows.
func TestNewSSHSecretTakesEveryKeyFormat(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	openssh := func(k any) []byte {
		b, err := ssh.MarshalPrivateKey(k, "me@laptop")
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(b)
	}
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	known := hostKeyLine(t, "git.example.com")
	for name, key := range map[string][]byte{
		"ed25519 openssh":  openssh(edKey),
		"ed25519 crlf":     []byte(strings.ReplaceAll(string(openssh(edKey)), "\n", "\r\n")),
		"ed25519 pkcs8":    pkcs8(edKey),
		"ecdsa openssh":    openssh(ecKey),
		"ecdsa sec1":       pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}),
		"rsa pkcs1":        pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}),
		"rsa pkcs8 spaced": append([]byte("\n\n"), pkcs8(rsaKey)...),
	} {
		t.Run(name, func(t *testing.T) {
			sec, err := NewSSHSecret("git.example.com", key, []byte(known+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if sec.Kind != apiv1.CredentialKindSSH || !strings.HasPrefix(sec.Fingerprint, "SHA256:") || sec.KnownHosts != known+"\n" {
				t.Errorf("secret = kind %q fingerprint %q known hosts %q", sec.Kind, sec.Fingerprint, sec.KnownHosts)
			}
			if !strings.HasPrefix(sec.PrivateKey, "-----BEGIN OPENSSH PRIVATE KEY-----\n") || !strings.HasSuffix(sec.PrivateKey, "-----END OPENSSH PRIVATE KEY-----\n") {
				t.Errorf("stored key is not in OpenSSH format:\n%s", sec.PrivateKey)
			}
			file := filepath.Join(t.TempDir(), "id")
			if err := os.WriteFile(file, []byte(sec.PrivateKey), 0o400); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("ssh-keygen", "-y", "-f", file).CombinedOutput()
			if err != nil {
				t.Fatalf("ssh-keygen -y on the stored key: %v %s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != sec.PublicKey {
				t.Errorf("ssh-keygen reads public key %q, the credential shows %q", got, sec.PublicKey)
			}
			api := ToAPI(&store.Credential{Provider: SSHProvider("git.example.com")}, sec)
			if api.Host != "git.example.com" || api.Kind != "ssh" || api.Fingerprint != sec.Fingerprint || api.PublicKey != sec.PublicKey || api.Username != "" {
				t.Errorf("ToAPI = %+v", api)
			}
		})
	}
}

// TestNewSSHSecretRefusesWhatASessionCannotUse: encrypted keys, public keys, DSA keys and
// garbage are refused with an error naming the field and the fix, and never quoting the
// key.
func TestNewSSHSecretRefusesWhatASessionCannotUse(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(edKey, "", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(edKey)
	dsaPEM, err := exec.Command("sh", "-c", `d=$(mktemp -d) && ssh-keygen -q -t dsa -N '' -f "$d/k" >/dev/null 2>&1 && cat "$d/k"; rm -rf "$d"`).Output()
	known := []byte(hostKeyLine(t, "git.example.com"))
	cases := []struct {
		name string
		key  []byte
		want string
	}{
		{"empty", nil, "privateKey: the private key is empty: give an unencrypted private key"},
		{"passphrase", pem.EncodeToMemory(enc), "privateKey: the private key is protected by a passphrase, which a session cannot type: remove it from a copy with `ssh-keygen -p -N '' -f COPY`"},
		{"public", ssh.MarshalAuthorizedKey(signer.PublicKey()), "privateKey: this is a public key (a .pub file): give the private half"},
		{"garbage", []byte("-----BEGIN NONSENSE-----\nc2VjcmV0LXN0dWZm\n-----END NONSENSE-----\n"), "privateKey: not a private key: give an unencrypted private key in OpenSSH or PEM format"},
		{"token", []byte("ghp_secret-stuff"), "privateKey: not a private key: "},
		{"huge", []byte(strings.Repeat("A", MaxSSHKey+1)), "privateKey: the private key is larger than"},
	}
	if err == nil && len(dsaPEM) > 0 {
		// OpenSSH builds without DSA cannot make one; the check is then moot here.
		cases = append(cases, struct {
			name string
			key  []byte
			want string
		}{"dsa", dsaPEM, "privateKey: this type of key is not supported (DSA keys are refused by current OpenSSH)"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSSHSecret("git.example.com", tc.key, known)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("NewSSHSecret = %v, want an error starting %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "secret-stuff") {
				t.Errorf("the error quotes the key: %v", err)
			}
		})
	}
}

// TestKnownHostsFor: lines naming the host (plain, hashed, with a port in brackets,
// among others) are kept and the others dropped; no line for the host, no lines at all
// or a broken line are refused with the ssh-keyscan command that gets the right one.
func TestKnownHostsFor(t *testing.T) {
	plain := hostKeyLine(t, "git.example.com")
	other := hostKeyLine(t, "elsewhere.example.com")
	ported := hostKeyLine(t, "git.example.com:2222")
	hashedLine := func(addr string) string {
		_, rest, _ := strings.Cut(hostKeyLine(t, addr), " ")
		return knownhosts.HashHostname(addr) + " " + rest
	}
	hashed := hashedLine("git.example.com")
	multi := "Git.Example.com,10.0.0.1 " + strings.SplitN(plain, " ", 2)[1]
	file := strings.Join([]string{"# my hosts", other, plain, "", ported, hashed, hashedLine("elsewhere.example.com"), multi}, "\n")

	got, err := KnownHostsFor("git.example.com", []byte(file))
	if want := plain + "\n" + hashed + "\n" + multi + "\n"; err != nil || string(got) != want {
		t.Errorf("KnownHostsFor(git.example.com) = %q, %v; want %q", got, err, want)
	}
	got, err = KnownHostsFor("git.example.com:2222", []byte(file))
	if want := ported + "\n"; err != nil || string(got) != want {
		t.Errorf("KnownHostsFor(git.example.com:2222) = %q, %v; want %q", got, err, want)
	}

	for _, tc := range []struct {
		name, host, data, want string
	}{
		{"none", "git.example.com", "", "the host's key is required (a session's ssh accepts no host key it was not given): give the host key line of git.example.com, as `ssh-keyscan git.example.com` prints it"},
		{"other host", "git.example.com:2222", other + "\n" + plain, "no line names [git.example.com]:2222: give the host key line of [git.example.com]:2222, as `ssh-keyscan -p 2222 git.example.com` prints it"},
		{"broken", "git.example.com", plain + "\ngit.example.com ssh-ed25519 !!!", "line 2 is not a known_hosts entry"},
		{"wildcard", "git.example.com", "*.example.com " + strings.SplitN(plain, " ", 2)[1], "no line names git.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := KnownHostsFor(tc.host, []byte(tc.data))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("KnownHostsFor = %v, want an error starting %q", err, tc.want)
			}
		})
	}
}

// TestParseProvider: the two kinds of a host live under different providers, and other
// credentials are not git credentials.
func TestParseProvider(t *testing.T) {
	for _, tc := range []struct {
		provider, host, kind string
		ok                   bool
	}{
		{ProviderOf(apiv1.CredentialKindSSH, "h:2222"), "h:2222", apiv1.CredentialKindSSH, true},
		{ProviderOf(apiv1.CredentialKindToken, "github.com"), "github.com", apiv1.CredentialKindToken, true},
		{"litellm", "", "", false},
	} {
		host, kind, ok := ParseProvider(tc.provider)
		if host != tc.host || kind != tc.kind || ok != tc.ok {
			t.Errorf("ParseProvider(%q) = %q %q %v", tc.provider, host, kind, ok)
		}
	}
	if SSHProvider("h") == Provider("h") {
		t.Error("a host's SSH key and token share a provider")
	}
}
