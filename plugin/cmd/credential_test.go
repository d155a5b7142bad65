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
	want := "HOST                   KIND    USERNAME         FINGERPRINT   UPDATED   AGE\n" +
		"git.example.com:8443   token   jane             <none>        60m ago   60m\n" +
		"github.com             token   x-access-token   <none>        60m ago   60m\n"
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
		{"x\n", []string{"credential", "add", "http://example.com/repo"}, "credentials serve https://, ssh:// and git@host:path repositories"},
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

// TestCredentialSSHKey: --ssh-key-file and --known-hosts send an SSH key (the files as
// they are, for the agent to check) for the host of an ssh URL too; the public key goes
// to stdout to paste at the host; the list shows kind and fingerprint (wide: the public
// key); remove --kind ssh leaves the host's token. Mistakes are refused before anything
// is sent.
func TestCredentialSSHKey(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	run := func(args ...string) (string, string, error) {
		t.Helper()
		streams, _, out, errOut := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		return out.String(), errOut.String(), err
	}
	dir := t.TempDir()
	key, known := filepath.Join(dir, "deploy_key"), filepath.Join(dir, "known_hosts")
	const keyPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n"
	const knownLine = "[git.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKey\n"
	for file, content := range map[string]string{key: keyPEM, known: knownLine} {
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := run("credential", "add", "git.example.com:2222", "--token-file", writeTemp(t, "tok")); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run("credential", "add", "ssh://git@git.example.com:2222/org/repo.git", "--ssh-key-file", key, "--known-hosts", known)
	if err != nil {
		t.Fatal(err)
	}
	if out != "ssh-ed25519 AAAAfake\n" {
		t.Errorf("stdout = %q, want the public key", out)
	}
	if want := "Stored an SSH key for git.example.com:2222 (SHA256:fakeFingerprint). Sessions on ssh://git.example.com:2222/... and git@git.example.com:... use it from their next start. Add its public key at the host as a deploy key of the repositories (with write access to push):\n"; errOut != want {
		t.Errorf("stderr = %q, want %q", errOut, want)
	}
	if got := a.credentials["git.example.com:2222#ssh"]; got.Kind != "ssh" || got.PrivateKey != keyPEM || got.KnownHosts != knownLine || got.Token != "" {
		t.Errorf("sent %+v", got)
	}

	streams, _, listOut, _ := genericiooptions.NewTestIOStreams()
	lo := &CredentialListOptions{IOStreams: streams, Factory: f, PrintFlags: NewPrintFlags()}
	lo.PrintFlags.now = func() time.Time { return a.now }
	err = lo.Run(context.Background())
	out = listOut.String()
	want := "HOST                   KIND    USERNAME         FINGERPRINT              UPDATED   AGE\n" +
		"git.example.com:2222   ssh     <none>           SHA256:fakeFingerprint   60m ago   60m\n" +
		"git.example.com:2222   token   x-access-token   <none>                   60m ago   60m\n"
	if err != nil || out != want {
		t.Errorf("list =\n%s\nwant\n%s", out, want)
	}
	if out, _, err = run("credential", "list", "-o", "wide"); err != nil || !strings.Contains(out, "PUBLIC KEY") || !strings.Contains(out, "ssh-ed25519 AAAAfake") {
		t.Errorf("list -o wide =\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"credential", "add", "git.example.com", "--ssh-key-file", key}, "--known-hosts is required with --ssh-key-file"},
		{[]string{"credential", "add", "git.example.com", "--known-hosts", known}, "--known-hosts goes with --ssh-key-file"},
		{[]string{"credential", "add", "git.example.com", "--ssh-key-file", key, "--known-hosts", known, "--username", "git"}, "an SSH key takes --ssh-key-file and --known-hosts only"},
		{[]string{"credential", "add", "git.example.com", "--ssh-key-file", filepath.Join(dir, "missing"), "--known-hosts", known}, "--ssh-key-file: open"},
		{[]string{"credential", "add", "git.example.com", "--ssh-key-file", known, "--known-hosts", known}, "privateKey: not a private key"},
		{[]string{"credential", "remove", "git.example.com:2222", "--kind", "gpg"}, `--kind "gpg": use token or ssh`},
	} {
		if _, _, err := run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}

	out, _, err = run("credential", "remove", "git@git.example.com:org/repo.git", "--kind", "ssh")
	if err == nil || !strings.Contains(err.Error(), "credential for git.example.com not found") {
		// git@host:path is port 22: another host than git.example.com:2222.
		t.Errorf("remove of the port-22 host = %q, %v", out, err)
	}
	out, _, err = run("credential", "remove", "git.example.com:2222", "--kind", "ssh")
	if err != nil || out != "SSH key for git.example.com:2222 removed\n" {
		t.Errorf("remove --kind ssh = %q, %v", out, err)
	}
	if _, ok := a.credentials["git.example.com:2222"]; !ok || len(a.credentials) != 1 {
		t.Errorf("after removing the SSH key: %v", a.credentials)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
