package cmd

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// Every command checks its flags and arguments before it reaches for the agent: here it
// could not reach one (the kubeconfig does not exist), so any error other than the input
// mistake means the command connected first.
func TestEveryCommandChecksItsInputBeforeConnecting(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
		want  string
	}{
		{args: []string{"session", "create", "--branch", "main"}, want: "--branch needs --repo"},
		{args: []string{"session", "create", "--repo", "github.com/org/repo"}, want: `--repo: "github.com/org/repo" is not a repository URL`},
		{args: []string{"session", "create", "--wait", "--timeout", "0s"}, want: "--timeout must be positive with --wait"},
		{args: []string{"session", "list", "--state", "running"}, want: `--state "running" is not a session state`},
		{args: []string{"session", "list", "-o", "bogus"}, want: "--output:"},
		{args: []string{"session", "get", "x", "-o", "custom-columns="}, want: "custom-columns format specified but no custom columns given"},
		{args: []string{"session", "delete", "x", "--all"}, want: "name sessions or pass --all, not both"},
		{args: []string{"session", "delete"}, want: "name the sessions to delete, or pass --all"},
		{args: []string{"session", "send", "x"}, stdin: " \n", want: "the prompt is empty"},
		{args: []string{"attach", "x", "--address", "0.0.0.0"}, want: `--address "0.0.0.0" must be a loopback address`},
		{args: []string{"attach", "x", "--port", "70000"}, want: "local port 70000 is not a port number"},
		{args: []string{"port-forward", "x", "http"}, want: `LOCAL_PORT "http" is not a port number`},
		{args: []string{"port-forward", "x", "70000"}, want: "local port 70000 is not a port number"},
		{args: []string{"token", "create", " "}, want: "the token needs a name"},
		{args: []string{"token", "create", "ci", "--expires-in", "10s"}, want: "--expires-in 10s is shorter than the minimum of 1m"},
		{args: []string{"token", "list", "-o", "bogus"}, want: "--output:"},
		{args: []string{"token", "revoke"}, want: "name the tokens to revoke"},
		{args: []string{"token", "revoke", "x", "--all-of", "me"}, want: "name token ids or pass --all-of USER, not both"},
		{args: []string{"whoami", "-o", "xml"}, want: `--output "xml" is not supported`},
		{args: []string{"version", "-o", "xml"}, want: `--output "xml" is not supported`},
		{args: []string{"login"}, want: "--server is required"},
	} {
		streams, in, _, _ := genericiooptions.NewTestIOStreams()
		in.WriteString(tc.stdin)
		root := NewCmdRootWithFactory(NewFactory(), streams)
		root.SetArgs(append(tc.args, "--kubeconfig", filepath.Join(t.TempDir(), "missing")))
		err := root.Execute()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want prefix %q", tc.args, err, tc.want)
		}
	}
}

// Every command that names a session says the same thing when the agent does not know it,
// and how to see the sessions there are.
func TestSessionNotFoundIsOneErrorEverywhere(t *testing.T) {
	const want = `session "nope" not found: list sessions with ` + "`kubectl agents session list`"
	f, _ := seeded(t).start()
	for _, args := range [][]string{
		{"session", "get", "nope"},
		{"session", "delete", "nope"},
		{"session", "stop", "nope"},
		{"session", "start", "nope"},
		{"session", "why", "nope"},
		{"session", "logs", "nope"},
		{"session", "send", "nope", "hello"},
		{"attach", "nope"},
		{"port-forward", "nope"},
	} {
		streams, _, _, _ := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(args)
		if err := root.Execute(); err == nil || err.Error() != want {
			t.Errorf("%v: err = %v, want %s", args, err, want)
		}
	}
}

// runOptions calls Complete and Validate only when they have its signatures: one written
// another way would be skipped without a word, so every command's options are checked.
func TestOptionsHaveTheRunnerSignatures(t *testing.T) {
	for _, o := range []any{
		&SessionCreateOptions{}, &SessionListOptions{}, &SessionGetOptions{}, &SessionDeleteOptions{},
		&SessionLifecycleOptions{}, &SessionLogsOptions{}, &SessionSendOptions{}, &SessionWhyOptions{},
		&AttachOptions{}, &PortForwardOptions{}, &TokenCreateOptions{}, &TokenListOptions{}, &TokenRevokeOptions{},
		&LoginOptions{}, &LogoutOptions{}, &WhoAmIOptions{}, &DoctorOptions{}, &VersionOptions{},
	} {
		typ := reflect.TypeOf(o)
		if _, ok := o.(runner); !ok {
			t.Errorf("%s has no Run(context.Context) error", typ)
		}
		if _, has := typ.MethodByName("Complete"); has {
			if _, ok := o.(completer); !ok {
				t.Errorf("%s.Complete is not Complete(*cobra.Command, []string) error", typ)
			}
		}
		if _, has := typ.MethodByName("Validate"); has {
			if _, ok := o.(validator); !ok {
				t.Errorf("%s.Validate is not Validate() error", typ)
			}
		}
	}
}

// Complete is where a command learns which flags were given: --private is sent only when
// given, so the agent's default applies otherwise.
func TestSessionCreateSendsPrivateOnlyWhenGiven(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	for _, args := range [][]string{
		{"session", "create", "--repo", "https://github.com/org/repo"},
		{"session", "create", "--repo", "https://github.com/org/repo", "--private=false"},
	} {
		streams, _, _, _ := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if len(a.created) != 2 || a.created[0].Private != nil || a.created[1].Private == nil || *a.created[1].Private {
		t.Errorf("private sent: %v, %v", a.created[0].Private, a.created[1].Private)
	}
}

// --idle-timeout 0 and --ttl 0, given, ask for never; not given, the agent's default.
func TestSessionCreateZeroTimeoutsMeanNever(t *testing.T) {
	a := newFakeAgent(t)
	f, _ := a.start()
	for _, args := range [][]string{
		{"session", "create"},
		{"session", "create", "--idle-timeout", "0", "--ttl", "0"},
		{"session", "create", "--idle-timeout", "2h"},
	} {
		streams, _, _, _ := genericiooptions.NewTestIOStreams()
		root := NewCmdRootWithFactory(f, streams)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if len(a.created) != 3 {
		t.Fatalf("%d creates", len(a.created))
	}
	if c := a.created[0]; c.IdleTimeout != nil || c.TTL != nil {
		t.Errorf("no flags sent %v, %v", c.IdleTimeout, c.TTL)
	}
	if c := a.created[1]; c.IdleTimeout == nil || c.IdleTimeout.Duration != 0 || c.TTL == nil || c.TTL.Duration != 0 {
		t.Errorf("0 given sent %v, %v", c.IdleTimeout, c.TTL)
	}
	if c := a.created[2]; c.IdleTimeout == nil || c.IdleTimeout.Duration != 2*time.Hour || c.TTL != nil {
		t.Errorf("--idle-timeout 2h sent %v, %v", c.IdleTimeout, c.TTL)
	}
}
