package gitcred

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// sshProviderPrefix keeps a host's SSH key apart from its HTTPS token: a user may hold
// both for one host (a token from linking GitHub, a deploy key for one repository).
const sshProviderPrefix = "git-ssh:"

// Limits of an SSH credential's parts: far above real keys (a 16384-bit RSA key is under
// 13 KiB) and a host's few known_hosts lines, far below the request limit.
const (
	MaxSSHKey     = 16 << 10
	MaxKnownHosts = 64 << 10
)

// SSHProvider is the store provider of host's SSH key.
func SSHProvider(host string) string { return sshProviderPrefix + host }

// ProviderOf is the store provider of host's credential of kind (apiv1.CredentialKind*).
func ProviderOf(kind, host string) string {
	if kind == apiv1.CredentialKindSSH {
		return SSHProvider(host)
	}
	return Provider(host)
}

// ParseProvider returns the host and kind of a stored git credential, and false for
// other credentials.
func ParseProvider(provider string) (host, kind string, ok bool) {
	if h, ok := strings.CutPrefix(provider, sshProviderPrefix); ok {
		return h, apiv1.CredentialKindSSH, true
	}
	if h, ok := HostOf(provider); ok {
		return h, apiv1.CredentialKindToken, true
	}
	return "", "", false
}

// NewSSHSecret checks an SSH credential for host and returns it as stored: the private
// key re-encoded in OpenSSH's own format (which every OpenSSH reads, whatever PEM flavour
// was given), the known_hosts lines that name host, and the public half to show. Errors
// name the request field and the fix, and never quote the key.
func NewSSHSecret(host string, privateKey, knownHostsData []byte) (Secret, error) {
	key, signer, err := parseSSHKey(privateKey)
	if err != nil {
		return Secret{}, fmt.Errorf("privateKey: %w", err)
	}
	lines, err := KnownHostsFor(host, knownHostsData)
	if err != nil {
		return Secret{}, fmt.Errorf("knownHosts: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		return Secret{}, fmt.Errorf("privateKey: %s keys cannot be used here: give an ed25519, ECDSA or RSA key", signer.PublicKey().Type())
	}
	return Secret{
		Kind:        apiv1.CredentialKindSSH,
		PrivateKey:  string(pem.EncodeToMemory(block)),
		KnownHosts:  string(lines),
		Fingerprint: ssh.FingerprintSHA256(signer.PublicKey()),
		PublicKey:   strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))),
	}, nil
}

// sshKeyFix is how key errors end: what a session can use.
const sshKeyFix = "give an unencrypted private key in OpenSSH or PEM format, such as a deploy key made for the purpose with `ssh-keygen -t ed25519 -N '' -f deploy_key` (pass deploy_key, and add deploy_key.pub at the host)"

func parseSSHKey(b []byte) (any, ssh.Signer, error) {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return nil, nil, errors.New("the private key is empty: " + sshKeyFix)
	case len(b) > MaxSSHKey:
		return nil, nil, fmt.Errorf("the private key is larger than %d bytes: %s", MaxSSHKey, sshKeyFix)
	}
	key, err := ssh.ParseRawPrivateKey(b)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		// A session has nobody to type the passphrase, and ssh-agent is not there.
		return nil, nil, errors.New("the private key is protected by a passphrase, which a session cannot type: remove it from a copy with `ssh-keygen -p -N '' -f COPY`, or " + sshKeyFix)
	case err != nil:
		if _, _, _, _, perr := ssh.ParseAuthorizedKey(b); perr == nil {
			return nil, nil, errors.New("this is a public key (a .pub file): give the private half, the file without .pub")
		}
		if strings.Contains(err.Error(), "unhandled key type") || strings.Contains(err.Error(), "DSA") {
			// A key in a known format of a type OpenSSH no longer takes (DSA).
			return nil, nil, errors.New("this type of key is not supported (DSA keys are refused by current OpenSSH): " + sshKeyFix)
		}
		return nil, nil, errors.New("not a private key: " + sshKeyFix)
	}
	if p, ok := key.(*ed25519.PrivateKey); ok {
		key = *p // MarshalPrivateKey takes the value
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, nil, errors.New("this kind of private key is not supported: " + sshKeyFix)
	}
	// "ssh-dss" (x/crypto's KeyAlgoDSA, deprecated with DSA itself).
	if signer.PublicKey().Type() == "ssh-dss" {
		return nil, nil, errors.New("DSA keys are refused by current OpenSSH: " + sshKeyFix)
	}
	return key, signer, nil
}

// KnownHostsFor returns the lines of a known_hosts file that name host (as in a
// credential: name[:port]), in plain or hashed form, and an error naming the fix when
// there is none or a line is not a known_hosts entry. Lines for other hosts are dropped,
// so a user's whole ~/.ssh/known_hosts does not end up in every session.
func KnownHostsFor(host string, data []byte) ([]byte, error) {
	addr := knownhosts.Normalize(host)
	scan := "ssh-keyscan " + host
	if name, port, ok := strings.Cut(host, ":"); ok {
		scan = "ssh-keyscan -p " + port + " " + name
	}
	fix := fmt.Sprintf("give the host key line of %s, as `%s` prints it, after checking its fingerprint (`ssh-keygen -lf FILE`) against the one the host publishes", addr, scan)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("the host's key is required (a session's ssh accepts no host key it was not given): " + fix)
	}
	if len(data) > MaxKnownHosts {
		return nil, fmt.Errorf("larger than %d bytes: %s", MaxKnownHosts, fix)
	}
	var out bytes.Buffer
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		_, hosts, _, _, _, err := ssh.ParseKnownHosts([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("line %d is not a known_hosts entry (%v): %s", i+1, err, fix)
		}
		if knownHostsMatch(hosts, addr) {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	if out.Len() == 0 {
		return nil, errors.New("no line names " + addr + ": " + fix)
	}
	return out.Bytes(), nil
}

// knownHostsMatch reports whether one of a known_hosts line's host patterns is addr,
// in clear or hashed (|1|salt|hash, ssh-keygen -H). Wildcard patterns are not taken: a
// credential serves one host.
func knownHostsMatch(patterns []string, addr string) bool {
	for _, p := range patterns {
		if strings.EqualFold(p, addr) {
			return true
		}
		parts := strings.Split(p, "|")
		if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
			continue
		}
		salt, err1 := base64.StdEncoding.DecodeString(parts[2])
		sum, err2 := base64.StdEncoding.DecodeString(parts[3])
		if err1 != nil || err2 != nil {
			continue
		}
		mac := hmac.New(sha1.New, salt)
		mac.Write([]byte(addr))
		if hmac.Equal(mac.Sum(nil), sum) {
			return true
		}
	}
	return false
}

// SSHCommand is GIT_SSH_COMMAND for a session: ssh with only the key file, trusting
// only the host keys in knownHostsFile (never a key it was not given: no
// StrictHostKeyChecking=no, no accept-new), and never prompting. Without the files
// (the owner has no key for the host) ssh fails at the host key, which is the answer.
func SSHCommand(keyFile, knownHostsFile string) string {
	return strings.Join([]string{
		"ssh", "-i", shellQuote(keyFile),
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + shellQuote(knownHostsFile),
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
	}, " ")
}

// sshToAPI is ToAPI's part for an SSH key: its fingerprint and public half.
func sshToAPI(c *store.Credential, s Secret) apiv1.Credential {
	host, _, _ := ParseProvider(c.Provider)
	return apiv1.Credential{Host: host, Kind: apiv1.CredentialKindSSH, Fingerprint: s.Fingerprint, PublicKey: s.PublicKey, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}
