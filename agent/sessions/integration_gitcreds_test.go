package sessions

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TestGitCredentialFollowsTheSession: the owner's token for the repository's host is in
// the session's Secret while it runs (never in the pod spec), leaves the Secret when the
// session stops, comes back as the owner's current one on start, and goes with the Secret
// on delete. A session whose owner has no credential for its host gets none, and its pod
// is the same (the volume's keys are optional).
func TestGitCredentialFollowsTheSession(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	put := func(token string) {
		t.Helper()
		sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: "x-access-token", Token: token}
		if err := e.st.PutCredential(ctx, &store.Credential{OwnerID: e.owner, Provider: gitcred.Provider("git.example.com:8443"), Secret: gitcred.Encode(sec)}); err != nil {
			t.Fatal(err)
		}
	}
	put("tok-first")
	secretData := func(id string) map[string][]byte {
		t.Helper()
		sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Data
	}

	s := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://git.example.com:8443/org/private.git"}
	if err := c.Create(ctx, s, 0); err != nil || s.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, s.Reason, s.Message)
	}
	if got, want := string(secretData(s.ID)[SecretKeyGitCredentials]), "https://x-access-token:tok-first@git.example.com:8443\n"; got != want {
		t.Errorf("secret git-credentials = %q, want %q", got, want)
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(pod.Spec)
	if strings.Contains(string(spec), "tok-first") {
		t.Errorf("the token is in the pod spec: %s", spec)
	}
	for _, ct := range []corev1.Container{pod.Spec.InitContainers[0], pod.Spec.Containers[0]} {
		mounted := false
		for _, m := range ct.VolumeMounts {
			mounted = mounted || (m.MountPath == GitCredentialsDir && m.ReadOnly)
		}
		if !mounted {
			t.Errorf("%s does not mount %s read-only", ct.Name, GitCredentialsDir)
		}
	}
	// The session container's environment is every session's (the init container writes
	// the helper into the session's $HOME): no credential settings in it.
	for k := range envOf(pod.Spec.Containers[0]) {
		if strings.HasPrefix(k, "GIT_") {
			t.Errorf("opencode's environment has %s", k)
		}
	}
	if args := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--git-credentials="+GitCredentialsFile) || !strings.Contains(args, "--gh-hosts="+GHHostsFile) {
		t.Errorf("init args %q", args)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))

	if _, err := c.Stop(ctx, s.ID, "", "user asked"); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Stopped", inState(apiv1.StateStopped))
	data := secretData(s.ID)
	if _, ok := data[SecretKeyGitCredentials]; ok || len(data[SecretKeyPassword]) == 0 {
		t.Errorf("stopped session's secret keys: %v; want the password and no credential", keysOf(data))
	}

	put("tok-second")
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	if got := string(secretData(s.ID)[SecretKeyGitCredentials]); !strings.Contains(got, "tok-second") {
		t.Errorf("restarted session's credential = %q, want the owner's current token", got)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))

	// Another host: no credential, same pod shape.
	other := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://other.example.com/org/repo.git"}
	if err := c.Create(ctx, other, 0); err != nil || other.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, other.Reason, other.Message)
	}
	if data := secretData(other.ID); len(data[SecretKeyGitCredentials]) != 0 || len(data[SecretKeyGHHosts]) != 0 {
		t.Errorf("a session on another host got a credential: %v", keysOf(data))
	}
	e.waitSession(other.ID, "Running", inState(apiv1.StateRunning))

	// A session that fails (its clone refused) gives the token up too.
	failing := &store.Session{OwnerID: e.owner, Private: true, Repo: "https://git.example.com:8443/org/other.git"}
	if err := c.Create(ctx, failing, 0); err != nil || failing.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, failing.Reason, failing.Message)
	}
	if len(secretData(failing.ID)[SecretKeyGitCredentials]) == 0 {
		t.Fatal("the failing session got no credential")
	}
	e.waitSession(failing.ID, "Running", inState(apiv1.StateRunning))
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := e.pod(ctx, failing.ID)
		if err != nil {
			return err
		}
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: InitContainerName, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "error: clone refused"}}}}
		_, err = e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.waitSession(failing.ID, "Failed", inState(apiv1.StateFailed))
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, ok := secretData(failing.ID)[SecretKeyGitCredentials]
		return !ok, nil
	}); err != nil {
		t.Errorf("the failed session's secret still holds the credential: %v", keysOf(secretData(failing.ID)))
	}

	if err := c.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	e.waitGone("secret", func(ctx context.Context) error {
		_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
		return err
	})
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestSSHKeyFollowsTheSession: a session on an ssh repository gets its owner's SSH key
// for the host (never the host's token) and the host's known_hosts lines in its Secret
// while it runs, never in the pod spec, and gives them up when it stops.
func TestSSHKeyFollowsTheSession(t *testing.T) {
	e := newEnv(t)
	c, _ := e.start(e.config())
	ctx := ctxT(t)
	const host = "git.example.com:2222"
	const keyPEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-stands-for-a-key\n-----END OPENSSH PRIVATE KEY-----\n"
	const known = "[git.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyStandIn\n"
	for _, cred := range []*store.Credential{
		{OwnerID: e.owner, Provider: gitcred.SSHProvider(host), Secret: gitcred.Encode(gitcred.Secret{Kind: apiv1.CredentialKindSSH, PrivateKey: keyPEM, KnownHosts: known})},
		{OwnerID: e.owner, Provider: gitcred.Provider(host), Secret: gitcred.Encode(gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: "u", Token: "tok-https-only"})},
	} {
		if err := e.st.PutCredential(ctx, cred); err != nil {
			t.Fatal(err)
		}
	}
	secretData := func(id string) map[string][]byte {
		t.Helper()
		sec, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(id), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Data
	}
	s := &store.Session{OwnerID: e.owner, Private: true, Repo: "ssh://git@" + host + "/org/private.git"}
	if err := c.Create(ctx, s, 0); err != nil || s.State == apiv1.StateFailed {
		t.Fatalf("create: %v %s %s", err, s.Reason, s.Message)
	}
	data := secretData(s.ID)
	if string(data[SecretKeyGitSSHKey]) != keyPEM || string(data[SecretKeyGitSSHKnownHost]) != known {
		t.Errorf("secret ssh keys = %q / %q", data[SecretKeyGitSSHKey], data[SecretKeyGitSSHKnownHost])
	}
	if _, ok := data[SecretKeyGitCredentials]; ok {
		t.Error("an ssh session got the host's HTTPS token")
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if spec, _ := json.Marshal(pod.Spec); strings.Contains(string(spec), "stands-for-a-key") {
		t.Errorf("the key is in the pod spec: %s", spec)
	}
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
	if _, err := c.Stop(ctx, s.ID, "", "user asked"); err != nil {
		t.Fatal(err)
	}
	e.waitSession(s.ID, "Stopped", inState(apiv1.StateStopped))
	data = secretData(s.ID)
	if _, ok := data[SecretKeyGitSSHKey]; ok || len(data[SecretKeyPassword]) == 0 {
		t.Errorf("stopped session's secret keys: %v; want the password and no SSH key", keysOf(data))
	}
	if _, ok := data[SecretKeyGitSSHKnownHost]; ok {
		t.Errorf("stopped session's secret keeps the known hosts: %v", keysOf(data))
	}
}
