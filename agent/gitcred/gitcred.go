// Package gitcred is how a user's git credentials travel from the store to a session's
// git: the stored form (one store.Credential per host, under provider "git:HOST"), the
// file a session's Secret carries (git's credential-store format) and the credential
// helper that reads it. A token never appears in a URL, an argument or an environment
// variable: git asks the helper, which reads the file from the Secret volume. SSH keys
// (ssh.go) are stored the same way under "git-ssh:HOST" and reach git as a key file and
// a known_hosts file that GIT_SSH_COMMAND names.
package gitcred

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// providerPrefix keeps git credentials apart from other credentials a user may link
// (model keys) in the store's per-user namespace.
const providerPrefix = "git:"

// Provider is the store provider of host's credential.
func Provider(host string) string { return providerPrefix + host }

// HostOf returns the host of a stored git credential, and false for other credentials.
func HostOf(provider string) (string, bool) { return strings.CutPrefix(provider, providerPrefix) }

// Secret is what a stored git credential's encrypted secret holds: a token with its
// user name, or an SSH key with its host's known_hosts lines (and the key's public half
// and fingerprint, kept to list it without parsing the key).
type Secret struct {
	Kind        string `json:"kind"`
	Username    string `json:"username"`
	Token       string `json:"token"`
	PrivateKey  string `json:"privateKey,omitempty"`
	KnownHosts  string `json:"knownHosts,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	PublicKey   string `json:"publicKey,omitempty"`
}

// Encode renders s for store.Credential.Secret.
func Encode(s Secret) []byte {
	b, _ := json.Marshal(s) // strings only: cannot fail
	return b
}

// Decode reads a stored git credential's secret.
func Decode(b []byte) (Secret, error) {
	var s Secret
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("stored git credential is not readable: %w", err)
	}
	return s, nil
}

// ToAPI shows c (a git credential) without its secret.
func ToAPI(c *store.Credential, s Secret) apiv1.Credential {
	if s.Kind == apiv1.CredentialKindSSH {
		return sshToAPI(c, s)
	}
	host, _ := HostOf(c.Provider)
	return apiv1.Credential{Host: host, Kind: s.Kind, Username: s.Username, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// StoreFile renders git credential-store's file for the given credentials (host →
// secret): one https://USER:TOKEN@HOST line each, escaped so any byte survives.
func StoreFile(creds map[string]Secret) []byte {
	hosts := make([]string, 0, len(creds))
	for h := range creds {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	var b strings.Builder
	for _, h := range hosts {
		s := creds[h]
		u := url.URL{Scheme: "https", Host: h, User: url.UserPassword(s.Username, s.Token)}
		b.WriteString(u.String())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// GHHostsFile renders the GitHub CLI's hosts.yml for a github.com token, so `gh pr
// create` in a session authenticates as the user. It is YAML written by hand: tokens
// are quoted as JSON strings, which YAML reads the same.
func GHHostsFile(host string, s Secret) []byte {
	q := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	return fmt.Appendf(nil, "%s:\n    oauth_token: %s\n    git_protocol: https\n", q(host), q(s.Token))
}

// Helper is the value of git's credential.helper that answers from file (a
// credential-store file) and never writes: the file is on a read-only Secret volume,
// and git's own "store" helper would try to save every credential it was given.
func Helper(file string) string {
	return fmt.Sprintf(`!f() { test "$1" = get && exec git credential-store --file=%s get; }; f`, shellQuote(file))
}

// HasHost reports whether a credential-store file holds a credential for host.
func HasHost(file []byte, host string) bool {
	_, ok := TokenFor(file, host)
	return ok
}

// TokenFor returns the token a credential-store file holds for host.
func TokenFor(file []byte, host string) (string, bool) {
	for _, line := range strings.Split(string(file), "\n") {
		u, err := url.Parse(strings.TrimSpace(line))
		if err == nil && u.Scheme == "https" && strings.EqualFold(u.Host, host) {
			tok, _ := u.User.Password()
			return tok, true
		}
	}
	return "", false
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
