package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// A session on an https:// repository gets its owner's credential for the repository's
// host (if they added one) in its Secret, which both containers mount read-only at
// GitCredentialsDir: git asks a credential helper that reads GitCredentialsFile, and the
// GitHub CLI finds the same token in $HOME/.config/gh/hosts.yml, linked there by the init
// container. The keys are optional, so the pod spec does not depend on whether the owner
// has a credential, and they are removed from the Secret when the session stops (the
// Secret itself goes with the session).
const (
	GitCredentialsDir       = "/etc/cake-agents/git"
	GitCredentialsFile      = GitCredentialsDir + "/credentials"
	GHHostsFile             = GitCredentialsDir + "/gh-hosts.yml"
	SecretKeyGitCredentials = "git-credentials"
	SecretKeyGHHosts        = "gh-hosts.yml"
	gitCredentialsVolume    = "git-credentials"
)

// A session on an ssh:// or git@host:path repository gets its owner's SSH key for the
// host and the host's known_hosts lines the same way, in a volume of their own at
// GitSSHDir: mode 0400, because ssh refuses a key file others may read when it is the
// owner's (the kubelet's fsGroup handling still lets the session's group read the
// root-owned copy). GIT_SSH_COMMAND points the init container's ssh at both files, and it
// hands that command on to the session's $HOME/.gitconfig.
//
// A session shared with every user (not private) carries no one's credentials, not even
// a GitHub App token: whoever may drive it could read them through OpenCode's shell.
const (
	GitSSHDir                = "/etc/cake-agents/ssh"
	GitSSHKeyFile            = GitSSHDir + "/id"
	GitSSHKnownHostsFile     = GitSSHDir + "/known_hosts"
	SecretKeyGitSSHKey       = "git-ssh-key"
	SecretKeyGitSSHKnownHost = "git-ssh-known-hosts"
	gitSSHVolume             = "git-ssh"
)

// gitSecretKeys are the Secret keys this file (and githubapp.go) owns.
var gitSecretKeys = []string{SecretKeyGitCredentials, SecretKeyGHHosts, SecretKeyGitTokenExpiry, SecretKeyGitSSHKey, SecretKeyGitSSHKnownHost}

// gitSecretData is what the Secret of s carries for git: the owner's credential for the
// host of the repository (a token for https://, an SSH key for ssh), else a GitHub App
// token for the repository (cur, the Secret's current data, may hold one still good), or
// nothing.
//
// The owner's own credential comes first. A platform team installs the App so sessions
// work for people who linked nothing, not to override people who did: a linked token
// acts with the person's own permissions (repositories they may not push to stay
// closed), and commits pushed and pull requests opened with it are attributed on GitHub
// to the person, which is what reviews, CODEOWNERS and audit logs expect. The App's
// token, limited to the session's repository, is the fallback.
func (c *Controller) gitSecretData(ctx context.Context, s *store.Session, cur map[string][]byte) (map[string][]byte, error) {
	if !s.Private {
		return nil, nil
	}
	if host := apiv1.RepoSSHHost(s.Repo); host != "" {
		return c.sshSecretData(ctx, s.OwnerID, host)
	}
	host := apiv1.RepoCredentialHost(s.Repo)
	if host == "" {
		return nil, nil
	}
	cred, err := c.st.GetCredential(ctx, s.OwnerID, gitcred.Provider(host))
	if errors.Is(err, store.ErrNotFound) {
		return c.appSecretData(ctx, s, cur)
	}
	if err != nil {
		return nil, fmt.Errorf("read the owner's git credential for %s: %w", host, err)
	}
	sec, err := gitcred.Decode(cred.Secret)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{SecretKeyGitCredentials: gitcred.StoreFile(map[string]gitcred.Secret{host: sec})}
	if host == c.githubHost() {
		data[SecretKeyGHHosts] = gitcred.GHHostsFile(host, sec)
	}
	return data, nil
}

// sshSecretData is the owner's SSH key for host and the host's known_hosts lines, or
// nothing.
func (c *Controller) sshSecretData(ctx context.Context, owner, host string) (map[string][]byte, error) {
	cred, err := c.st.GetCredential(ctx, owner, gitcred.SSHProvider(host))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the owner's SSH key for %s: %w", host, err)
	}
	sec, err := gitcred.Decode(cred.Secret)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{SecretKeyGitSSHKey: []byte(sec.PrivateKey), SecretKeyGitSSHKnownHost: []byte(sec.KnownHosts)}, nil
}

// gitDataCurrent reports whether data already holds exactly want's git keys.
func gitDataCurrent(data, want map[string][]byte) bool {
	for _, k := range gitSecretKeys {
		cur, ok := data[k]
		w, wok := want[k]
		if ok != wok || !bytes.Equal(cur, w) {
			return false
		}
	}
	return true
}

// setGitData makes data's git keys those of want.
func setGitData(data, want map[string][]byte) {
	for _, k := range gitSecretKeys {
		if v, ok := want[k]; ok {
			data[k] = v
		} else {
			delete(data, k)
		}
	}
}

// gitPodParts are the volume and mount that give git in a session on an https://
// repository its owner's credential (the init container configures the helper in the
// session's $HOME); ok is false for other sessions.
func gitPodParts(s *store.Session) (vol corev1.Volume, mount corev1.VolumeMount, ok bool) {
	if !s.Private || apiv1.RepoCredentialHost(s.Repo) == "" {
		return vol, mount, false
	}
	vol = corev1.Volume{Name: gitCredentialsVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: SecretName(s.ID),
		Items: []corev1.KeyToPath{
			{Key: SecretKeyGitCredentials, Path: "credentials"},
			{Key: SecretKeyGHHosts, Path: SecretKeyGHHosts},
		},
		// Readable by the session's group (fsGroup) only.
		DefaultMode: ptr.To[int32](0o440),
		// Missing keys (no credential) are left out rather than failing the mount.
		Optional: ptr.To(true),
	}}}
	mount = corev1.VolumeMount{Name: gitCredentialsVolume, MountPath: GitCredentialsDir, ReadOnly: true}
	return vol, mount, true
}

// sshPodParts are the volume, mount and init container environment that give ssh in a
// session on an ssh repository its owner's key and the host's key (the init container
// hands its GIT_SSH_COMMAND on to the session's $HOME/.gitconfig); ok is false for other
// sessions.
func sshPodParts(s *store.Session) (vol corev1.Volume, mount corev1.VolumeMount, env []corev1.EnvVar, ok bool) {
	if !s.Private || apiv1.RepoSSHHost(s.Repo) == "" {
		return vol, mount, nil, false
	}
	vol = corev1.Volume{Name: gitSSHVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: SecretName(s.ID),
		Items: []corev1.KeyToPath{
			{Key: SecretKeyGitSSHKey, Path: "id"},
			{Key: SecretKeyGitSSHKnownHost, Path: "known_hosts"},
		},
		DefaultMode: ptr.To[int32](0o400),
		// No key for the host: the files are missing and ssh fails at the host key,
		// which the init container explains.
		Optional: ptr.To(true),
	}}}
	mount = corev1.VolumeMount{Name: gitSSHVolume, MountPath: GitSSHDir, ReadOnly: true}
	env = []corev1.EnvVar{{Name: "GIT_SSH_COMMAND", Value: gitcred.SSHCommand(GitSSHKeyFile, GitSSHKnownHostsFile)}}
	return vol, mount, env, true
}

// dropGitCredentials removes the git keys from the Secret of a stopped or failed
// session, so a token or SSH key is in the cluster only while a session runs; the next start writes
// the owner's current one. The informer's copy answers the common case (nothing to
// drop) without an API call, so reconcile passes may call it freely.
func (c *Controller) dropGitCredentials(ctx context.Context, id string) error {
	if cur, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(id)); (err == nil && gitDataCurrent(cur.Data, nil)) || apierrors.IsNotFound(err) {
		return nil
	}
	secrets := c.kube.CoreV1().Secrets(c.cfg.Namespace)
	cur, err := secrets.Get(ctx, SecretName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read secret %s: %w", SecretName(id), err)
	}
	if gitDataCurrent(cur.Data, nil) {
		return nil
	}
	want := cur.DeepCopy()
	setGitData(want.Data, nil)
	if _, err := secrets.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("remove the git credential from secret %s: %w", SecretName(id), err)
	}
	return nil
}

// GitToken returns the git token session s has for its repository's host, as its Secret
// holds it now (its owner's or a GitHub App's), or "" when it has none: what looking at
// the session's repository on its behalf may use.
func (c *Controller) GitToken(ctx context.Context, s *store.Session) (string, error) {
	host := apiv1.RepoCredentialHost(s.Repo)
	if host == "" {
		return "", nil
	}
	sec, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID))
	if err != nil {
		sec, err = c.kube.CoreV1().Secrets(c.cfg.Namespace).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the git credential of session %s: %w", s.ID, err)
	}
	tok, _ := gitcred.TokenFor(sec.Data[SecretKeyGitCredentials], host)
	return tok, nil
}

// githubHost is the GitHub host of the configuration, github.com when none is set.
func (c *Controller) githubHost() string {
	if c.cfg.GitHubHost != "" {
		return c.cfg.GitHubHost
	}
	return "github.com"
}
