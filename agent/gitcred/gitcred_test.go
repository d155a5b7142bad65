package gitcred

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelperAnswersGit runs git's own credential machinery with Env: git gets the token
// for the host from the file, nothing for another host, and the read-only file is never
// rewritten when git approves the credential.
func TestHelperAnswersGit(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "it's", "credentials") // a quote in the path survives
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	tok := "tok:with/odd@chars%"
	content := StoreFile(map[string]Secret{
		"git.example.com:8443": {Kind: "token", Username: "x-access-token", Token: tok},
		"github.com":           {Kind: "token", Username: "u", Token: "gho_x"},
	})
	if err := os.WriteFile(file, content, 0o400); err != nil {
		t.Fatal(err)
	}
	if !HasHost(content, "git.example.com:8443") || HasHost(content, "git.example.com") {
		t.Errorf("HasHost on %q", content)
	}
	git := func(stdin string, args ...string) string {
		cmd := exec.Command("git", args...)
		// The helper as the session's $HOME/.gitconfig configures it (sessioninit): after an
		// empty value that clears any helper before it.
		cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_COUNT=2", "GIT_CONFIG_KEY_0=credential.helper", "GIT_CONFIG_VALUE_0=",
			"GIT_CONFIG_KEY_1=credential.helper", "GIT_CONFIG_VALUE_1="+Helper(file))
		cmd.Stdin = strings.NewReader(stdin)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	out := git("protocol=https\nhost=git.example.com:8443\n\n", "credential", "fill")
	if !strings.Contains(out, "username=x-access-token\n") || !strings.Contains(out, "password="+tok+"\n") {
		t.Errorf("credential fill = %q", out)
	}
	if out := git("protocol=https\nhost=other.example.com\n\n", "credential", "fill"); strings.Contains(out, "password=") {
		t.Errorf("another host got a credential: %q", out)
	}
	if out := git("protocol=https\nhost=new.example.com\nusername=a\npassword=b\n\n", "credential", "approve"); out != "" {
		t.Errorf("approve printed %q", out)
	}
	if got, _ := os.ReadFile(file); string(got) != string(content) {
		t.Errorf("the file was rewritten: %q", got)
	}
}

func TestGHHostsFile(t *testing.T) {
	got := string(GHHostsFile("github.com", Secret{Token: `gho_"x`}))
	want := "\"github.com\":\n    oauth_token: \"gho_\\\"x\"\n    git_protocol: https\n"
	if got != want {
		t.Errorf("GHHostsFile = %q, want %q", got, want)
	}
}

// TestTokenFor: the token of a host comes back as it went in, whatever bytes it holds.
func TestTokenFor(t *testing.T) {
	file := StoreFile(map[string]Secret{"github.com": {Username: "x-access-token", Token: "ghs_a/b:c@d%e"}, "git.example.com:8443": {Username: "u", Token: "other"}})
	if tok, ok := TokenFor(file, "GitHub.com"); !ok || tok != "ghs_a/b:c@d%e" {
		t.Errorf("TokenFor(github.com) = %q, %v", tok, ok)
	}
	if tok, ok := TokenFor(file, "gitlab.com"); ok || tok != "" {
		t.Errorf("TokenFor(gitlab.com) = %q, %v", tok, ok)
	}
}
