// Package sessioninit is the work of a session pod's init container (`agent
// session-init`): clone the session's repository into the workspace and write the
// OpenCode configuration file. It runs before OpenCode starts, so everything OpenCode
// needs on disk is ready. Nothing secret goes into the workspace or the config: provider
// keys are referenced as {env:NAME} and resolved by OpenCode from the container
// environment, and a private repository is cloned through a credential helper reading
// the owner's token from the Secret volume (--git-credentials). The GitHub CLI's
// hosts.yml in $HOME (the pod's own emptyDir), where gh reads it, is a link to the
// Secret volume's file, so gh sees the token the agent last put there.
package sessioninit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/providers"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Options says what to prepare. The zero value of every field but Workspace and
// ConfigPath is valid and means "none".
type Options struct {
	// Repo is the repository to clone: https://, ssh:// or scp-like git@host:path.
	Repo string
	// Branch is the branch or tag to check out; empty means the remote's default.
	Branch string
	// Workspace is the directory the repository is cloned into (it may exist, empty or
	// holding an earlier checkout of a persistent session).
	Workspace string
	// ConfigPath is where the OpenCode configuration JSON is written.
	ConfigPath string
	// Model is the model to use, "provider/model" or a bare model name of the provider.
	Model string
	// LiteLLMBaseURL is an OpenAI-compatible gateway; its key comes from the
	// LITELLM_API_KEY environment variable of the OpenCode container.
	LiteLLMBaseURL string
	// ProviderJSON, when set, replaces the LiteLLM provider: the JSON object OpenCode
	// takes as "provider" (provider id → settings). Keys must be {env:...} or {file:...}
	// references.
	ProviderJSON string
	// GitCredentials, when set, is a git credential-store file (on the Secret volume) the
	// clone takes its credentials from, through a helper that only reads it. The file may
	// be missing: the owner has no credential for the host.
	GitCredentials string
	// GHHosts, when set and present, is the GitHub CLI's hosts.yml, linked from
	// $HOME/.config/gh/hosts.yml so gh in the session is signed in as the owner.
	GHHosts string
	// SSHKey, when set, is where the owner's SSH key for the repository's host is
	// mounted (the file may be missing: they have none). git's ssh takes it from
	// GIT_SSH_COMMAND in this container's environment, which installGitConfig hands on to
	// the session as core.sshCommand; it also tells a failed clone's message whether a
	// key was there.
	SSHKey string
	// KeyAtClaim leaves the LiteLLM key out of the config: the pod is a warm pool pod,
	// whose OpenCode starts before its session has a key, and gets it at claim through
	// OpenCode's PUT /auth/litellm. (An {env:...} reference would win over that key even
	// with the variable unset: measured with opencode-ai 1.18.33.)
	KeyAtClaim bool
	// Shared says the session is shared with every user (not private), so it carries
	// no one's git credentials; a failed clone's message says so.
	Shared bool
	// AllowLocalRepo permits file:// URLs and local paths; only tests need it.
	AllowLocalRepo bool
	// Git is the git binary; "git" from PATH when empty.
	Git string
	// Stderr receives progress; io.Discard when nil.
	Stderr io.Writer
}

// Flag names shared by BindFlags and Args, so the pod spec and the command agree.
const (
	flagRepo       = "repo"
	flagBranch     = "branch"
	flagWorkspace  = "workspace"
	flagConfig     = "config"
	flagModel      = "model"
	flagLiteLLM    = "litellm-base-url"
	flagProvider   = "provider-json"
	flagAllowLocal = "allow-local-repo"
	flagGitCreds   = "git-credentials"
	flagGHHosts    = "gh-hosts"
	flagSSHKey     = "ssh-key"
	flagShared     = "shared"
	flagKeyAtClaim = "key-at-claim"
)

// BindFlags registers the options on fs.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Repo, flagRepo, o.Repo, "repository to clone (https://, ssh:// or git@host:path); empty: start with an empty workspace")
	fs.StringVar(&o.Branch, flagBranch, o.Branch, "branch or tag to check out (default: the remote's default branch)")
	fs.StringVar(&o.Workspace, flagWorkspace, orDefault(o.Workspace, "/workspace"), "directory to clone into")
	fs.StringVar(&o.ConfigPath, flagConfig, orDefault(o.ConfigPath, "/etc/opencode/opencode.json"), "where to write the OpenCode configuration")
	fs.StringVar(&o.Model, flagModel, o.Model, "model, as provider/model or a model name of the configured provider")
	fs.StringVar(&o.LiteLLMBaseURL, flagLiteLLM, o.LiteLLMBaseURL, "OpenAI-compatible gateway URL; its key is read by OpenCode from $LITELLM_API_KEY")
	fs.StringVar(&o.ProviderJSON, flagProvider, o.ProviderJSON, "OpenCode provider object (JSON) replacing the LiteLLM provider; keys by {env:NAME} or {file:PATH} only")
	fs.StringVar(&o.GitCredentials, flagGitCreds, o.GitCredentials, "git credential-store file to clone with (read-only; may be missing)")
	fs.StringVar(&o.GHHosts, flagGHHosts, o.GHHosts, "GitHub CLI hosts.yml to install in $HOME/.config/gh (may be missing)")
	fs.StringVar(&o.SSHKey, flagSSHKey, o.SSHKey, "where the owner's SSH key for an ssh repository is mounted (may be missing; git's ssh takes it from GIT_SSH_COMMAND, and the session's from $HOME/.gitconfig)")
	fs.BoolVar(&o.Shared, flagShared, o.Shared, "the session is shared with every user, so it has no one's git credentials")
	fs.BoolVar(&o.KeyAtClaim, flagKeyAtClaim, o.KeyAtClaim, "leave the LiteLLM key out of the config: a warm pool pod's OpenCode gets it at claim (PUT /auth/litellm)")
	fs.BoolVar(&o.AllowLocalRepo, flagAllowLocal, o.AllowLocalRepo, "allow file:// and local repository paths (tests)")
	_ = fs.MarkHidden(flagAllowLocal)
}

// Args renders o as command-line arguments for BindFlags (the pod spec uses it).
func (o Options) Args() []string {
	var a []string
	add := func(name, v string) {
		if v != "" {
			a = append(a, "--"+name+"="+v)
		}
	}
	add(flagRepo, o.Repo)
	add(flagBranch, o.Branch)
	add(flagWorkspace, o.Workspace)
	add(flagConfig, o.ConfigPath)
	add(flagModel, o.Model)
	add(flagLiteLLM, o.LiteLLMBaseURL)
	add(flagProvider, o.ProviderJSON)
	add(flagGitCreds, o.GitCredentials)
	add(flagGHHosts, o.GHHosts)
	add(flagSSHKey, o.SSHKey)
	if o.Shared {
		a = append(a, "--"+flagShared)
	}
	if o.KeyAtClaim {
		a = append(a, "--"+flagKeyAtClaim)
	}
	if o.AllowLocalRepo {
		a = append(a, "--"+flagAllowLocal)
	}
	return a
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// Run prepares the workspace and writes the OpenCode configuration.
func Run(ctx context.Context, o Options) error {
	if o.Workspace == "" || o.ConfigPath == "" {
		return errors.New("--workspace and --config must be set")
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	cfg, err := BuildConfig(o)
	if err != nil {
		return err
	}
	if o.Repo != "" {
		if err := clone(ctx, o); err != nil {
			return err
		}
	}
	if err := excludeStateDir(o.Workspace); err != nil {
		return err
	}
	if err := installGHHosts(o); err != nil {
		return err
	}
	if err := installGitConfig(ctx, o); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.ConfigPath), 0o755); err != nil {
		return fmt.Errorf("create the OpenCode config directory: %w", err)
	}
	// Write then rename so OpenCode never reads half a file.
	tmp := o.ConfigPath + ".tmp"
	if err := os.WriteFile(tmp, cfg, 0o644); err != nil {
		return fmt.Errorf("write the OpenCode config %s: %w", o.ConfigPath, err)
	}
	if err := os.Rename(tmp, o.ConfigPath); err != nil {
		return fmt.Errorf("write the OpenCode config %s: %w", o.ConfigPath, err)
	}
	fmt.Fprintf(o.Stderr, "wrote OpenCode config %s\n", o.ConfigPath)
	return nil
}

// StateDir is the directory of a persistent workspace where OpenCode keeps its own
// state (its conversations: XDG_DATA_HOME and XDG_STATE_HOME point under it), so a
// session started again resumes the same conversation. It is kept out of git.
const StateDir = ".cake"

// excludeStateDir keeps StateDir out of the checkout's git status (.git/info/exclude,
// which is never committed or pushed). Without a checkout there is nothing to do.
func excludeStateDir(workspace string) error {
	info := filepath.Join(workspace, ".git", "info")
	if _, err := os.Stat(filepath.Join(workspace, ".git")); err != nil {
		return nil //nolint:nilerr // no checkout: nothing to keep the directory out of
	}
	line := "/" + StateDir + "/"
	path := filepath.Join(info, "exclude")
	cur, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for _, l := range strings.Split(string(cur), "\n") {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	if err := os.MkdirAll(info, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", info, err)
	}
	if len(cur) > 0 && !strings.HasSuffix(string(cur), "\n") {
		cur = append(cur, '\n')
	}
	cur = append(cur, []byte("# OpenCode's state in a persistent workspace (cake-agents)\n"+line+"\n")...)
	if err := os.WriteFile(path, cur, 0o644); err != nil {
		return fmt.Errorf("keep %s out of git: %w", StateDir, err)
	}
	return nil
}

// CheckRepo applies the repository rule the API checked before it stored the session
// (apiv1.ValidateRepoURL: https://, ssh:// and scp-like git@host:org/repo; never git's
// other transports, options or credentials), so a repository refused here was refused at
// create too. allowLocal lets tests clone file:// URLs and local paths as well.
func CheckRepo(repo string, allowLocal bool) error {
	if allowLocal && !strings.HasPrefix(repo, "-") {
		if u, err := url.Parse(repo); err == nil && u.Scheme == "file" {
			return nil
		}
		if filepath.IsAbs(repo) || strings.HasPrefix(repo, ".") {
			return nil
		}
	}
	if err := apiv1.ValidateRepoURL(repo); err != nil {
		return fmt.Errorf("invalid repository: %w", err)
	}
	return nil
}

// redact removes user:password@ from a URL so it never reaches a log.
func redact(repo string) string {
	u, err := url.Parse(repo)
	if err != nil || u.User == nil {
		return repo
	}
	u.User = nil
	return u.String()
}

func clone(ctx context.Context, o Options) error {
	if err := CheckRepo(o.Repo, o.AllowLocalRepo); err != nil {
		return err
	}
	if o.Branch != "" && (strings.HasPrefix(o.Branch, "-") || strings.ContainsAny(o.Branch, " \t\n~^:?*[\\")) {
		return fmt.Errorf("invalid branch %q", o.Branch)
	}
	git := o.Git
	if git == "" {
		git = "git"
	}
	if _, err := os.Stat(filepath.Join(o.Workspace, ".git")); err == nil {
		// A persistent session restarting: the workspace holds the user's work.
		fmt.Fprintf(o.Stderr, "workspace %s already has a checkout; not cloning\n", o.Workspace)
		return nil
	}
	if err := os.MkdirAll(o.Workspace, 0o755); err != nil {
		return fmt.Errorf("create workspace %s: %w", o.Workspace, err)
	}
	entries, err := os.ReadDir(o.Workspace)
	if err != nil {
		return fmt.Errorf("read workspace %s: %w", o.Workspace, err)
	}
	for _, e := range entries {
		// An empty volume may carry lost+found; anything else is not ours to overwrite.
		if e.Name() != "lost+found" {
			return fmt.Errorf("workspace %s is not empty and has no git checkout: clear it or use a new session", o.Workspace)
		}
	}
	var helper string
	if o.GitCredentials != "" {
		helper = gitcred.Helper(o.GitCredentials)
	}
	args := CloneArgs(o.Repo, o.Branch, helper, o.AllowLocalRepo)
	cmd := exec.CommandContext(ctx, git, args...)
	cmd.Dir = o.Workspace
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	fmt.Fprintf(o.Stderr, "cloning %s into %s\n", redact(o.Repo), o.Workspace)
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(strings.ReplaceAll(out.String(), o.Repo, redact(o.Repo)))
		if o.Branch != "" && strings.Contains(msg, "Remote branch") {
			return fmt.Errorf("clone %s: branch %q does not exist: %s", redact(o.Repo), o.Branch, lastLine(msg))
		}
		if hint := credentialHint(o, msg); hint != "" {
			return fmt.Errorf("clone %s: %s: %s: %w", redact(o.Repo), hint, lastLine(msg), err)
		}
		return fmt.Errorf("clone %s (branch %q): check the repository URL, branch and access: %s: %w", redact(o.Repo), o.Branch, lastLine(msg), err)
	}
	return nil
}

// CloneArgs are git's arguments to clone repo (on branch, "" the default one) shallowly
// into the current directory, which must be empty. helper ("" none) is the only credential
// helper git may ask; allowLocal lets tests clone local paths. Both the init container and
// a warm pool claim (which clones into a running session) use them.
func CloneArgs(repo, branch, helper string, allowLocal bool) []string {
	args := []string{"-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never"}
	if helper != "" {
		// Only our helper is asked (the empty value clears any other), and it names the
		// file, never the token.
		args = append(args, "-c", "credential.helper=", "-c", "credential.helper="+helper)
	}
	args = append(args, "clone", "--depth=1", "--no-tags")
	if allowLocal {
		// --depth is ignored for local paths unless git is told to use the transport.
		args = append(args, "--no-local")
	}
	if branch != "" {
		args = append(args, "--branch", branch)
	}
	// Clone into the existing (empty) directory: "." keeps a mounted volume in place.
	return append(args, "--", repo, ".")
}

// credentialHint says what to do about access when a clone failed with output msg: add
// a token (an SSH key for an ssh repository) when the owner has none for the host,
// replace it when they have one (it may have been refused). Empty for other
// repositories.
func credentialHint(o Options, msg string) string {
	if o.Shared && (apiv1.RepoSSHHost(o.Repo) != "" || apiv1.RepoCredentialHost(o.Repo) != "") {
		return "this session is shared with every user (created with --private=false), so it carries no one's git credentials; if the repository is private, create a private session for it"
	}
	if host := apiv1.RepoSSHHost(o.Repo); host != "" {
		return sshHint(o, host, msg)
	}
	host := apiv1.RepoCredentialHost(o.Repo)
	if host == "" {
		return ""
	}
	var file []byte
	if o.GitCredentials != "" {
		file, _ = os.ReadFile(o.GitCredentials) // missing: no credential
	}
	if !gitcred.HasHost(file, host) {
		return fmt.Sprintf("you have no credential for %s; if the repository is private, add an access token with `kubectl agents credential add %s` and start the session again", host, host)
	}
	return fmt.Sprintf("your credential for %s was used; if it was refused, replace it with `kubectl agents credential add %s`, check it can read the repository, and start the session again", host, host)
}

// sshHint is credentialHint for an ssh repository.
func sshHint(o Options, host, msg string) string {
	add := fmt.Sprintf("`kubectl agents credential add %s --ssh-key-file KEY --known-hosts FILE`", host)
	if o.SSHKey == "" {
		return ""
	}
	if _, err := os.Stat(o.SSHKey); err != nil {
		return fmt.Sprintf("you have no SSH key for %s; add one (a deploy key of the repository, with the host's key) with %s and start the session again", host, add)
	}
	if strings.Contains(msg, "Host key verification failed") || strings.Contains(msg, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		return fmt.Sprintf("the host did not present the host key stored with your SSH key for %s; if its key really changed, check the new fingerprint and store it with %s, then start the session again", host, add)
	}
	return fmt.Sprintf("your SSH key for %s was used; if it was refused, check that its public key (`kubectl agents credential list -o wide`) is a deploy key of the repository (with write access to push), or replace it with %s, and start the session again", host, add)
}

// installGitConfig makes git in the session (OpenCode's shell, a terminal) use what the
// clone used, through $HOME/.gitconfig on the pod's home volume: the read-only helper for
// the credential-store file, and the ssh command naming the owner's key and the host's key
// (this container's GIT_SSH_COMMAND). So the session image and its container's environment
// are the same for every session; only the init container is told about credentials.
func installGitConfig(ctx context.Context, o Options) error {
	var settings [][]string
	if o.GitCredentials != "" {
		// The empty value clears helpers configured before it (a system gitconfig), so
		// only ours is asked.
		settings = append(settings, []string{"--replace-all", "credential.helper", ""},
			[]string{"--add", "credential.helper", gitcred.Helper(o.GitCredentials)})
	}
	if sshCmd := os.Getenv("GIT_SSH_COMMAND"); o.SSHKey != "" && sshCmd != "" {
		settings = append(settings, []string{"core.sshCommand", sshCmd})
	}
	if len(settings) == 0 {
		return nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return fmt.Errorf("configure git's credentials for the session: %w", err)
	}
	file := filepath.Join(home, ".gitconfig")
	git := o.Git
	if git == "" {
		git = "git"
	}
	for _, kv := range settings {
		out, err := exec.CommandContext(ctx, git, append([]string{"config", "--file", file}, kv...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("configure git's credentials for the session in %s: %s: %w", file, strings.TrimSpace(string(out)), err)
		}
	}
	return nil
}

// installGHHosts links the GitHub CLI's hosts.yml in $HOME, where gh looks, to the
// file on the Secret volume. A link, not a copy: the agent replaces a GitHub App token
// in the Secret before it expires, the kubelet updates the volume's file, and gh reads
// the current token through the link.
func installGHHosts(o Options) error {
	if o.GHHosts == "" {
		return nil
	}
	_, err := os.Stat(o.GHHosts)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no GitHub credential
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", o.GHHosts, err)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return fmt.Errorf("install the GitHub CLI credential: %w", err)
	}
	dir := filepath.Join(home, ".config", "gh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("install the GitHub CLI credential: %w", err)
	}
	link := filepath.Join(dir, "hosts.yml")
	// A restarted init container finds its own link from the last run.
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install the GitHub CLI credential: %w", err)
	}
	if err := os.Symlink(o.GHHosts, link); err != nil {
		return fmt.Errorf("install the GitHub CLI credential: %w", err)
	}
	fmt.Fprintf(o.Stderr, "installed the GitHub CLI credential in %s\n", filepath.Join(dir, "hosts.yml"))
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return "no output"
}

// BuildConfig renders the OpenCode configuration JSON for o.
func BuildConfig(o Options) ([]byte, error) {
	cfg := map[string]any{
		"autoupdate": false,
		"share":      "disabled",
	}
	var provs map[string]any
	model := o.Model
	switch {
	case o.ProviderJSON != "":
		if err := json.Unmarshal([]byte(o.ProviderJSON), &provs); err != nil {
			return nil, fmt.Errorf("--provider-json is not a JSON object of providers: %w", err)
		}
		if len(provs) == 0 {
			return nil, errors.New("--provider-json names no provider")
		}
		if err := checkNoKeys(provs, "provider"); err != nil {
			return nil, err
		}
		if model != "" && !strings.Contains(model, "/") {
			ids := make([]string, 0, len(provs))
			for id := range provs {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			model = ids[0] + "/" + model
		}
	case o.LiteLLMBaseURL != "":
		u, err := url.Parse(o.LiteLLMBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--litellm-base-url %q is not an http(s) URL", o.LiteLLMBaseURL)
		}
		if name := strings.TrimPrefix(model, providers.LiteLLM+"/"); name != "" {
			model = providers.LiteLLM + "/" + name
		}
		keyEnv := "LITELLM_API_KEY"
		if o.KeyAtClaim {
			keyEnv = ""
		}
		provs = map[string]any{providers.LiteLLM: providers.Gateway(o.LiteLLMBaseURL, model, keyEnv)}
	}
	if provs != nil {
		cfg["provider"] = provs
		ids := make([]string, 0, len(provs))
		for id := range provs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		cfg["enabled_providers"] = ids
	}
	if model != "" {
		cfg["model"] = model
		cfg["small_model"] = model
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the OpenCode config: %w", err)
	}
	return append(b, '\n'), nil
}

// checkNoKeys refuses literal secrets in provider settings: the file is readable by
// anything in the pod and OpenCode's /config route prints it.
func checkNoKeys(v any, path string) error {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			p := path + "." + k
			if s, ok := val.(string); ok && providers.SecretField(k) && s != "" &&
				!strings.HasPrefix(s, "{env:") && !strings.HasPrefix(s, "{file:") {
				return fmt.Errorf("--provider-json sets %s to a literal value: reference it as {env:NAME} or {file:PATH}", p)
			}
			if err := checkNoKeys(val, p); err != nil {
				return err
			}
		}
	case []any:
		for i, val := range t {
			if err := checkNoKeys(val, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}
