package cmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestCredentialCommands(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	run := func(stdin string, args ...string) (string, string, error) {
		t.Helper()
		streams, in, out, errOut := genericiooptions.NewTestIOStreams()
		in.WriteString(stdin)
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		return out.String(), errOut.String(), err
	}

	// The token from standard input; a repository URL names its host.
	_, errOut, err := run("ghp_from_stdin\n", "credential", "add", "https://GitHub.com/org/repo.git")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Token for https://GitHub.com/org/repo.git: Stored a token for github.com (user x-access-token). Sessions on https://github.com/... use it from their next start.\n"; errOut != want {
		t.Errorf("stderr = %q, want %q", errOut, want)
	}
	if got := a.credentials["github.com"]; got.Token != "ghp_from_stdin" || got.Username != "" {
		t.Errorf("sent %+v", got)
	}
	// From a file, with a user name.
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("glpat-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run("", "credential", "add", "git.example.com:8443", "--username", "jane", "--token-file", file); err != nil {
		t.Fatal(err)
	}
	if got := a.credentials["git.example.com:8443"]; got.Token != "glpat-file" || got.Username != "jane" {
		t.Errorf("sent %+v", got)
	}

	streams, _, listOut, _ := genericiooptions.NewTestIOStreams()
	lo := &CredentialListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	lo.PrintFlags.now = func() time.Time { return a.now }
	if err := lo.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := listOut.String()
	want := "HOST                   KIND    USERNAME         UPDATED   AGE\n" +
		"git.example.com:8443   token   jane             60m ago   60m\n" +
		"github.com             token   x-access-token   60m ago   60m\n"
	if out != want {
		t.Errorf("list =\n%s\nwant\n%s", out, want)
	}
	out, _, err = run("", "credential", "list", "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil || out != "git.example.com:8443 github.com" {
		t.Errorf("list -o jsonpath = %q, %v", out, err)
	}

	// Mistakes are refused before anything is sent or read.
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"x\n", []string{"credential", "add", "http://example.com/repo"}, "credentials serve https:// repositories"},
		{"x\n", []string{"credential", "add", "example.com/org"}, `host "example.com/org" is not valid`},
		{"\n", []string{"credential", "add", "example.com"}, "the token is empty"},
		{"", []string{"credential", "add", "example.com", "--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file: open"},
		{"", []string{"credential", "remove", "nope.example.com"}, "remove credential for nope.example.com: credential for nope.example.com not found"},
	} {
		if _, _, err := run(tc.stdin, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if len(a.credentials) != 2 {
		t.Errorf("credentials after refusals: %v", a.credentials)
	}

	out, _, err = run("", "credential", "rm", "github.com", "git.example.com:8443")
	if err != nil || out != "credential for github.com removed\ncredential for git.example.com:8443 removed\n" {
		t.Errorf("remove = %q, %v", out, err)
	}
	if _, errOut, err := run("", "credential", "list"); err != nil || !strings.Contains(errOut, "No credentials found") {
		t.Errorf("empty list: %q %v", errOut, err)
	}
}
