package sessions

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/store"
)

func TestBuildPod(t *testing.T) {
	cfg := testConfig("sessions")
	// Sessions get LiteLLM keys: the pod references the Secret's key, never holds one.
	gw, err := litellm.New("http://litellm:4000/v1", "sk-master", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LiteLLM = gw
	c := newTestController(t, cfg, fake.NewClientset(), nil)
	c.cfg.NodeSelector = map[string]string{"pool": "agents"}
	c.cfg.Tolerations = []corev1.Toleration{{Key: "agents", Operator: corev1.TolerationOpExists}}
	c.cfg.ImagePullSecrets = []string{"regcred"}
	s := &store.Session{ID: "abc12345", OwnerID: "u1", Repo: "https://github.com/org/repo", Branch: "dev", Model: "gpt"}
	pod, err := c.buildPod(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"app.kubernetes.io/name": "cake-agents-session", "app.kubernetes.io/instance": "rel",
		"app.kubernetes.io/managed-by": "cake-agents", "agents.cake.ai/session-id": "abc12345", "agents.cake.ai/owner-id": "u1",
	}
	for k, v := range wantLabels {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	spec := pod.Spec
	if pod.Name != "cake-session-abc12345" || pod.Namespace != "sessions" {
		t.Errorf("pod %s/%s", pod.Namespace, pod.Name)
	}
	if *spec.AutomountServiceAccountToken || *spec.EnableServiceLinks {
		t.Error("service account token or service links enabled")
	}
	if sc := spec.SecurityContext; !*sc.RunAsNonRoot || *sc.RunAsUser != 1000 || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", sc)
	}
	if spec.NodeSelector["pool"] != "agents" || len(spec.Tolerations) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
		t.Error("scheduling settings from config missing")
	}
	if len(spec.InitContainers) != 1 || len(spec.Containers) != 1 {
		t.Fatalf("containers: %d init, %d main", len(spec.InitContainers), len(spec.Containers))
	}
	init, main := spec.InitContainers[0], spec.Containers[0]
	if init.Name != "data-plane-init" || init.Image != "example.invalid/data-plane-init:1" || strings.Join(init.Command, " ") != "agent session-init" {
		t.Errorf("init container %s %s %v", init.Name, init.Image, init.Command)
	}
	args := strings.Join(init.Args, " ")
	for _, want := range []string{"--repo=https://github.com/org/repo", "--branch=dev", "--workspace=/workspace", "--config=/etc/opencode/opencode.json", "--model=gpt", "--litellm-base-url=http://litellm:4000/v1"} {
		if !strings.Contains(args, want) {
			t.Errorf("init args %q lack %q", args, want)
		}
	}
	if main.Name != "opencode" || strings.Join(main.Command, " ") != "opencode serve --port 4096 --hostname 127.0.0.1 --print-logs" || main.WorkingDir != "/workspace" {
		t.Errorf("main container %s %v %s", main.Name, main.Command, main.WorkingDir)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range main.Env {
		env[e.Name] = e
	}
	for k, v := range map[string]string{"OPENCODE_CONFIG": "/etc/opencode/opencode.json", "OPENCODE_DISABLE_AUTOUPDATE": "1",
		"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1", "HOME": "/home/opencode", "TMPDIR": "/tmp"} {
		if env[k].Value != v {
			t.Errorf("env %s = %q, want %q", k, env[k].Value, v)
		}
	}
	for name, key := range map[string]string{"OPENCODE_SERVER_PASSWORD": "password", "LITELLM_API_KEY": "LITELLM_API_KEY"} {
		ref := env[name].ValueFrom
		if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "cake-session-abc12345" || ref.SecretKeyRef.Key != key {
			t.Errorf("env %s is not a reference to the session Secret: %+v", name, env[name])
		}
	}
	// No secret may appear anywhere in the pod spec.
	if strings.Contains(pod.String(), "sk-master") {
		t.Error("the LiteLLM key is in the pod spec")
	}
	for _, ct := range []corev1.Container{init, main} {
		sc := ct.SecurityContext
		if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !*sc.RunAsNonRoot || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("%s security context %+v", ct.Name, sc)
		}
		if ct.Resources.Limits.Memory().String() != "1Gi" || ct.Resources.Requests.Cpu().String() != "100m" {
			t.Errorf("%s resources %+v", ct.Name, ct.Resources)
		}
		mounts := map[string]string{}
		for _, m := range ct.VolumeMounts {
			mounts[m.MountPath] = m.Name
		}
		for _, p := range []string{"/workspace", "/etc/opencode", "/home/opencode", "/tmp"} {
			if mounts[p] == "" {
				t.Errorf("%s has no writable volume at %s", ct.Name, p)
			}
		}
	}
	probe := main.ReadinessProbe
	if probe == nil || probe.Exec == nil || !strings.Contains(strings.Join(probe.Exec.Command, " "), "http://127.0.0.1:4096/global/health") ||
		!strings.Contains(strings.Join(probe.Exec.Command, " "), "$") {
		t.Errorf("readiness probe %+v", probe)
	}
	if spec.Volumes[0].Name != "workspace" || spec.Volumes[0].EmptyDir == nil {
		t.Errorf("non-persistent workspace should be an emptyDir: %+v", spec.Volumes[0])
	}

	s.Persistent = true
	s.Image, s.InitImage = "override:1", "override-init:1"
	pod, err = c.buildPod(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := pod.Spec.Volumes[0]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "cake-session-abc12345-workspace" {
		t.Errorf("persistent workspace volume %+v", v)
	}
	if pod.Spec.Containers[0].Image != "override:1" || pod.Spec.InitContainers[0].Image != "override-init:1" {
		t.Error("image overrides ignored")
	}
}

// TestBuildPodSSHRepository: a session on an ssh repository (either form) mounts the
// SSH volume (0400, optional, the Secret's two SSH keys) read-only in both containers,
// gives the init container GIT_SSH_COMMAND with the mounted files and strict host key
// checking, and gets no HTTPS credentials; an https session gets no SSH volume.
func TestBuildPodSSHRepository(t *testing.T) {
	c := newTestController(t, testConfig("sessions"), fake.NewClientset(), nil)
	for _, repo := range []string{"git@git.example.com:org/repo.git", "ssh://git@git.example.com:2222/org/repo.git"} {
		t.Run(repo, func(t *testing.T) {
			pod, err := c.buildPod(&store.Session{ID: "abc12345", OwnerID: "u1", Private: true, Repo: repo}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var vol *corev1.Volume
			for i, v := range pod.Spec.Volumes {
				if v.Name == "git-ssh" {
					vol = &pod.Spec.Volumes[i]
				}
				if v.Name == "git-credentials" {
					t.Errorf("an ssh session mounts the HTTPS credentials")
				}
			}
			if vol == nil || vol.Secret == nil {
				t.Fatalf("no git-ssh Secret volume: %+v", pod.Spec.Volumes)
			}
			sv := vol.Secret
			if sv.SecretName != SecretName("abc12345") || *sv.DefaultMode != 0o400 || !*sv.Optional ||
				len(sv.Items) != 2 || sv.Items[0] != (corev1.KeyToPath{Key: SecretKeyGitSSHKey, Path: "id"}) || sv.Items[1] != (corev1.KeyToPath{Key: SecretKeyGitSSHKnownHost, Path: "known_hosts"}) {
				t.Errorf("git-ssh volume %+v", sv)
			}
			want := "ssh -i '/etc/cake-agents/ssh/id' -o IdentitiesOnly=yes -o UserKnownHostsFile='/etc/cake-agents/ssh/known_hosts' -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes"
			for _, ct := range []corev1.Container{pod.Spec.InitContainers[0], pod.Spec.Containers[0]} {
				mounted := false
				for _, m := range ct.VolumeMounts {
					mounted = mounted || (m.Name == "git-ssh" && m.MountPath == GitSSHDir && m.ReadOnly)
				}
				if !mounted {
					t.Errorf("%s does not mount %s read-only", ct.Name, GitSSHDir)
				}
				env := envOf(ct)
				if ct.Name == InitContainerName && env["GIT_SSH_COMMAND"] != want {
					t.Errorf("%s GIT_SSH_COMMAND = %q, want %q", ct.Name, env["GIT_SSH_COMMAND"], want)
				}
				// The session container's environment is every session's: the init
				// container hands the ssh command on in the session's $HOME/.gitconfig.
				if _, ok := env["GIT_SSH_COMMAND"]; ok && ct.Name != InitContainerName {
					t.Errorf("%s has GIT_SSH_COMMAND", ct.Name)
				}
			}
			if args := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--ssh-key="+GitSSHKeyFile) || strings.Contains(args, "--git-credentials") {
				t.Errorf("init args %q", args)
			}
		})
	}
	pod, err := c.buildPod(&store.Session{ID: "abc12345", OwnerID: "u1", Private: true, Repo: "https://git.example.com/org/repo.git"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == "git-ssh" {
			t.Error("an https session mounts the SSH volume")
		}
	}
	if _, ok := envOf(pod.Spec.Containers[0])["GIT_SSH_COMMAND"]; ok {
		t.Error("an https session has GIT_SSH_COMMAND")
	}
}

// TestSharedSessionCarriesNoCredentials: a session shared with every user (not private)
// mounts no one's git credentials, whatever its repository, and its init container is
// told so (a failed private clone then says why); its Secret gets none either.
func TestSharedSessionCarriesNoCredentials(t *testing.T) {
	c := newTestController(t, testConfig("sessions"), fake.NewClientset(), nil)
	for _, repo := range []string{"https://git.example.com/org/repo.git", "git@git.example.com:org/repo.git"} {
		s := &store.Session{ID: "abc12345", OwnerID: "u1", Repo: repo}
		pod, err := c.buildPod(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == "git-ssh" || v.Name == "git-credentials" {
				t.Errorf("%s: a shared session mounts %s", repo, v.Name)
			}
		}
		if args := strings.Join(pod.Spec.InitContainers[0].Args, " "); !strings.Contains(args, "--shared") ||
			strings.Contains(args, "--git-credentials") || strings.Contains(args, "--ssh-key") {
			t.Errorf("%s: init args %q", repo, args)
		}
		data, err := c.gitSecretData(context.Background(), s, nil)
		if err != nil || data != nil {
			t.Errorf("%s: a shared session's Secret gets git data %v (%v)", repo, data, err)
		}
	}
}
