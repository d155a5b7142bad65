package v1

import (
	"strings"
	"testing"
)

// TestValidateRepoURL is the one table of the repository rule that the plugin, the API,
// the web UI (through the API) and the session init container share. want is a part of
// the error that names the problem or the fix; empty means accepted.
func TestValidateRepoURL(t *testing.T) {
	for _, tc := range []struct {
		repo, want string
	}{
		{"https://github.com/org/repo.git", ""},
		{"https://github.com/org/repo", ""},
		{"https://gitlab.example.com:8443/group/sub/repo.git", ""},
		{"ssh://git@github.com/org/repo.git", ""},
		{"ssh://git@github.com:2222/org/repo.git", ""},
		{"ssh://git@[2001:db8::1]:22/org/repo.git", ""},
		{"ssh://git@github.com/srv/abs/repo", ""},
		{"git@github.com:org/repo.git", ""},
		{"git@github.com:org/repo", ""},
		{"deploy.user@git.example.com:team/repo.git", ""},

		// The two the API accepted with 201 and the init container then refused.
		{"-x@github.com:org/repo", "must not start with '-'"},
		{"git@github.com:/abs/repo", "write git@github.com:abs/repo for a path under the login's home, or ssh://git@github.com/abs/repo"},

		// Option injection into git or ssh.
		{"--upload-pack=touch /tmp/x", "must not start with '-', which git would read as an option"},
		{"-oProxyCommand=x", "must not start with '-'"},
		{"git@-oProxyCommand:repo", "the host must not start with '-'"},
		{"git@github.com:-repo", "the path must not start with '-'"},
		{"ssh://-oProxyCommand=x/org/repo", "the host must not start with '-'"},
		{"ssh://-x@github.com/org/repo", "the user name must not start with '-'"},

		// Transports that run commands, send in clear text or read the local disk.
		{"ext::sh -c touch% /tmp/pwned", `scheme "ext" is not allowed`},
		{"ext::sh", `scheme "ext" is not allowed`},
		{"fd::17", `scheme "fd" is not allowed`},
		{"http://github.com/org/repo.git", `scheme "http" is not allowed: use an https:// or ssh:// URL`},
		{"git://github.com/org/repo.git", `scheme "git" is not allowed`},
		{"file:///etc", `scheme "file" is not allowed`},
		{"/srv/git/repo", "is not a repository URL: use an https:// or ssh:// URL"},
		{"./repo", "is not a repository URL"},
		{"../repo", "is not a repository URL"},
		{"C:/repo", `scheme "c" is not allowed`},

		// Credentials in a URL that is stored and shown.
		{"https://u:p@github.com/org/repo", "contains a password"},
		{"ssh://git:secret@github.com/org/repo.git", "contains a password"},
		{"https://x-access-token@github.com/org/r", "contains a user name"},
		{"https://oauth2:glpat-abc@gitlab.com/org/r", "contains a password"},

		// Not a repository at all.
		{"", "is empty"},
		{"hello world", "is not a repository URL"},
		{"github.com/org/repo", "is not a repository URL"},
		{"github.com:org/repo", `scheme "github.com" is not allowed`},
		{"https://", "has no host"},
		{"https:///org/repo", "has no host"},
		{"https://github.com", "has no repository path: add it, as in https://github.com/org/repo.git"},
		{"https://github.com/", "has no repository path"},
		{"git@github.com:org/repo\n", "is not a repository URL"},
		{"https://github.com/" + strings.Repeat("a", MaxRepoURLLen), "longer than 2048 characters"},
	} {
		err := ValidateRepoURL(tc.repo)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ValidateRepoURL(%q) = %v, want nil", tc.repo, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ValidateRepoURL(%q) = %v, want an error containing %q", tc.repo, err, tc.want)
		}
		if err != nil && strings.Contains(tc.repo, "secret") && strings.Contains(err.Error(), "secret") {
			t.Errorf("ValidateRepoURL(%q) echoes the password: %v", tc.repo, err)
		}
	}
}

// TestValidateSessionID pins the session-id rule the API, the web UI, the plugin and the
// sessions controller share: what the agent generates, and nothing whose derived object
// names would not be DNS labels.
func TestValidateSessionID(t *testing.T) {
	for id, ok := range map[string]bool{
		"abcd1234":              true, // the shape the agent generates
		"a":                     true,
		"s001":                  true,
		"s12345-6":              true,
		"a-b-c":                 true,
		strings.Repeat("a", 40): true,
		"":                      false,
		"1abc":                  false, // the API and UI accepted a leading digit
		"-abc":                  false,
		"abc-":                  false,
		"Abc":                   false,
		"a_b":                   false,
		"a.b":                   false,
		"a/b":                   false,
		"a b":                   false,
		"abcé":                  false,
		strings.Repeat("a", 41): false, // the API and UI accepted up to 63
		strings.Repeat("a", 63): false,
		"session/abc":           false,
		"abc\n":                 false,
	} {
		err := ValidateSessionID(id)
		if (err == nil) != ok {
			t.Errorf("ValidateSessionID(%q) = %v, want ok=%v", id, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "starting with a letter and not ending with '-'") {
			t.Errorf("ValidateSessionID(%q) = %v: the error does not state the rule", id, err)
		}
	}
	// Derived object names stay DNS labels at the longest id.
	if n := len("cake-session-" + strings.Repeat("a", MaxSessionIDLen) + "-workspace"); n != 63 {
		t.Errorf("longest claim name is %d characters, want 63", n)
	}
	if err := ValidateSessionID(strings.Repeat("x", 10000)); err == nil || len(err.Error()) > 300 {
		t.Errorf("a huge id is echoed whole: %d characters", len(err.Error()))
	}
}

func TestValidateCredentialHost(t *testing.T) {
	for _, ok := range []string{"github.com", "git.example.com:8443", "127.0.0.1:40001", "a"} {
		if err := ValidateCredentialHost(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "GitHub.com", "https://github.com", "github.com/org", "user@github.com", "-h", ".x", "h:", "h:port", "h:123456", "h:1:2", strings.Repeat("a", MaxCredentialHostLen+1)} {
		if err := ValidateCredentialHost(bad); err == nil || !strings.Contains(err.Error(), "give the host of the repository URL") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// Slack channel ids and Linear team keys: the plugin and the API refuse the same values,
// naming the id people confuse them with.
func TestValidateIntegrationIDs(t *testing.T) {
	for _, ok := range []string{"C0123ABCD", "G01", "D0ABC"} {
		if err := ValidateSlackChannelID(ok); err != nil {
			t.Errorf("channel %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "general", "#general", "c0123abcd", "C0", "X0123", "C0123/../x", "C" + strings.Repeat("A", 31)} {
		if err := ValidateSlackChannelID(bad); err == nil || !strings.Contains(err.Error(), "not its name") {
			t.Errorf("channel %q: %v", bad, err)
		}
	}
	for _, ok := range []string{"ENG", "eng", "A1", "ABCDEFGHIJ"} {
		if err := ValidateLinearTeamKey(ok); err != nil {
			t.Errorf("team %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "ENG-123", "EN G", "ABCDEFGHIJK", "ENG/.."} {
		if err := ValidateLinearTeamKey(bad); err == nil || !strings.Contains(err.Error(), "ENG for ENG-123") {
			t.Errorf("team %q: %v", bad, err)
		}
	}
	if err := ValidateLinearTeamKey(strings.Repeat("x", 100)); err == nil || len(err.Error()) > 200 {
		t.Errorf("a long key is echoed whole: %v", err)
	}
}

func TestRepoCredentialHost(t *testing.T) {
	for repo, want := range map[string]string{
		"https://GitHub.com/org/repo.git":    "github.com",
		"https://127.0.0.1:8443/project.git": "127.0.0.1:8443",
		"ssh://git@github.com/org/repo.git":  "",
		"git@github.com:org/repo.git":        "",
		"":                                   "",
	} {
		if got := RepoCredentialHost(repo); got != want {
			t.Errorf("RepoCredentialHost(%q) = %q, want %q", repo, got, want)
		}
	}
}

// TestRepoSSHHost: the host (with a port other than 22) of ssh:// and scp-like
// repositories, lowercased; nothing for https://, which a token serves.
func TestRepoSSHHost(t *testing.T) {
	for repo, want := range map[string]string{
		"git@Git.Example.com:org/repo.git":            "git.example.com",
		"ssh://git@git.example.com/org/repo.git":      "git.example.com",
		"ssh://git@git.example.com:22/org/repo.git":   "git.example.com",
		"ssh://git@git.example.com:2222/org/repo.git": "git.example.com:2222",
		"ssh://127.0.0.1:2222/repo.git":               "127.0.0.1:2222",
		"https://git.example.com/org/repo.git":        "",
		"file:///srv/repo.git":                        "",
	} {
		if got := RepoSSHHost(repo); got != want {
			t.Errorf("RepoSSHHost(%q) = %q, want %q", repo, got, want)
		}
	}
}
