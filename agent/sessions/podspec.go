package sessions

import (
	"fmt"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Paths and names inside a session pod. The OpenCode image only needs these to be
// writable; the root filesystem stays read-only.
const (
	InitContainerName = "data-plane-init"
	ContainerName     = "opencode"
	WorkspaceDir      = "/workspace"
	ConfigDir         = "/etc/opencode"
	ConfigPath        = ConfigDir + "/opencode.json"
	HomeDir           = "/home/opencode"
	TmpDir            = "/tmp"

	// CADir holds the sessions' CA bundle (CAFile) when one is configured: a ConfigMap
	// volume of its own, so the kubelet refreshes the file when the bundle is rotated.
	CADir      = "/etc/cake-agents/ca"
	caFileName = "ca-certificates.crt"
	CAFile     = CADir + "/" + caFileName
	// DefaultCABundleKey is the ConfigMap key read when none is configured (the name
	// Debian gives its PEM bundle of roots).
	DefaultCABundleKey = "ca-certificates.crt"

	// SecretKeyPassword holds OPENCODE_SERVER_PASSWORD; SecretKeyLiteLLM the session's
	// own LiteLLM virtual key (never the master key).
	SecretKeyPassword = "password"
	SecretKeyLiteLLM  = "LITELLM_API_KEY"

	// runAsID is the uid/gid of the data-plane images' non-root user.
	runAsID = 1000
)

// healthProbe checks OpenCode's health route from inside the container: OpenCode
// listens on loopback only, so an httpGet probe from the kubelet cannot reach it, and
// the password is read from the environment so it never appears in the pod spec.
var healthProbe = fmt.Sprintf(`curl -fsS -o /dev/null --max-time 2 -u "opencode:${OPENCODE_SERVER_PASSWORD}" http://127.0.0.1:%d/global/health`, apiv1.OpenCodePort)

// Labels returns the labels of every object belonging to session s.
func (c *Controller) labels(s *store.Session) map[string]string {
	return map[string]string{
		apiv1.LabelName:      apiv1.SessionAppName,
		apiv1.LabelInstance:  c.cfg.Release,
		apiv1.LabelManagedBy: apiv1.ManagedByAgent,
		apiv1.LabelSessionID: s.ID,
		apiv1.LabelOwnerID:   s.OwnerID,
	}
}

// selector selects every session object of this release.
func (c *Controller) selector() string {
	return fmt.Sprintf("%s=%s,%s=%s", apiv1.LabelName, apiv1.SessionAppName, apiv1.LabelInstance, c.cfg.Release)
}

// buildSecret renders the session's Secret: the OpenCode password, the key files of
// the providers sp and modelKey ("" = none), its LiteLLM key.
func (c *Controller) buildSecret(s *store.Session, password string, sp *sessionProviders, modelKey string) *corev1.Secret {
	data := map[string][]byte{SecretKeyPassword: []byte(password)}
	if sp != nil {
		maps.Copy(data, sp.files)
	}
	if modelKey != "" {
		data[SecretKeyLiteLLM] = []byte(modelKey)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName(s.ID), Namespace: c.cfg.Namespace, Labels: c.labels(s)},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
}

func (c *Controller) buildPVC(s *store.Session) (*corev1.PersistentVolumeClaim, error) {
	size, err := resource.ParseQuantity(c.cfg.StorageSize)
	if err != nil {
		return nil, fmt.Errorf("invalid session storage size %q: use a quantity such as 10Gi: %w", c.cfg.StorageSize, err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: PVCName(s.ID), Namespace: c.cfg.Namespace, Labels: c.labels(s)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if c.cfg.StorageClass != "" {
		pvc.Spec.StorageClassName = ptr.To(c.cfg.StorageClass)
	}
	return pvc, nil
}

func (c *Controller) resources() (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	add := func(list *corev1.ResourceList, name corev1.ResourceName, v, what string) error {
		if v == "" {
			return nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return fmt.Errorf("invalid session %s %q: use a quantity such as 500m or 2Gi: %w", what, v, err)
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
		return nil
	}
	for _, e := range []error{
		add(&r.Requests, corev1.ResourceCPU, c.cfg.CPURequest, "CPU request"),
		add(&r.Limits, corev1.ResourceCPU, c.cfg.CPULimit, "CPU limit"),
		add(&r.Requests, corev1.ResourceMemory, c.cfg.MemoryRequest, "memory request"),
		add(&r.Limits, corev1.ResourceMemory, c.cfg.MemoryLimit, "memory limit"),
	} {
		if e != nil {
			return r, e
		}
	}
	return r, nil
}

// buildPod renders the session pod of DESIGN §4; sp (nil: none stored) are the model
// providers at this start.
func (c *Controller) buildPod(s *store.Session, sp *sessionProviders) (*corev1.Pod, error) {
	res, err := c.resources()
	if err != nil {
		return nil, err
	}
	image, initImage := imageOf(s, c.cfg), orText(s.InitImage, c.cfg.DataPlaneInitImage)
	initOpts := sessioninit.Options{
		Repo:           s.Repo,
		Branch:         s.Branch,
		Workspace:      WorkspaceDir,
		ConfigPath:     ConfigPath,
		Model:          s.Model,
		LiteLLMBaseURL: c.cfg.LiteLLMBaseURL,
		ProviderJSON:   c.cfg.ProviderJSON,
	}
	if sp != nil {
		// The admin-managed providers replace the gateway-only config; their keys are
		// files of the Secret, referenced from the config, never in it.
		initOpts.LiteLLMBaseURL, initOpts.ProviderJSON = "", sp.json
	}
	secretRef := func(key string, optional bool) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: SecretName(s.ID)},
			Key:                  key,
			Optional:             ptr.To(optional),
		}}
	}
	env := []corev1.EnvVar{
		{Name: "OPENCODE_SERVER_PASSWORD", ValueFrom: secretRef(SecretKeyPassword, false)},
		{Name: "OPENCODE_CONFIG", Value: ConfigPath},
		{Name: "OPENCODE_DISABLE_AUTOUPDATE", Value: "1"},
		{Name: "OPENCODE_DISABLE_MODELS_FETCH", Value: "1"},
		{Name: "OPENCODE_DISABLE_SHARE", Value: "1"},
		{Name: "HOME", Value: HomeDir},
		{Name: "TMPDIR", Value: TmpDir},
	}
	if s.Persistent {
		// OpenCode's conversations live on the session's volume, so a start after a
		// stop resumes the same conversation; the init container keeps the directory
		// out of git.
		state := WorkspaceDir + "/" + sessioninit.StateDir
		env = append(env,
			corev1.EnvVar{Name: "XDG_DATA_HOME", Value: state + "/data"},
			corev1.EnvVar{Name: "XDG_STATE_HOME", Value: state + "/state"})
	}
	if c.cfg.LiteLLM != nil {
		// Optional so a Secret written before keys were configured does not block the
		// pod; ensureSecret adds the key on the next start.
		env = append(env, corev1.EnvVar{Name: SecretKeyLiteLLM, ValueFrom: secretRef(SecretKeyLiteLLM, true)})
	}
	mounts := []corev1.VolumeMount{
		{Name: "workspace", MountPath: WorkspaceDir},
		{Name: "opencode-config", MountPath: ConfigDir},
		{Name: "home", MountPath: HomeDir},
		{Name: "tmp", MountPath: TmpDir},
	}
	initEnv := []corev1.EnvVar{
		{Name: "HOME", Value: HomeDir},
		{Name: "TMPDIR", Value: TmpDir},
		// Never prompt for credentials: a private repo without them must fail fast.
		{Name: "GIT_TERMINAL_PROMPT", Value: "0"},
	}
	var extraVolumes []corev1.Volume
	initOpts.Shared = !s.Private
	if vol, mount, ok := gitPodParts(s); ok {
		mounts = append(mounts, mount)
		extraVolumes = append(extraVolumes, vol)
		initOpts.GitCredentials, initOpts.GHHosts = GitCredentialsFile, GHHostsFile
	}
	if vol, mount, sshEnv, ok := sshPodParts(s); ok {
		mounts = append(mounts, mount)
		initEnv = append(initEnv, sshEnv...)
		extraVolumes = append(extraVolumes, vol)
		initOpts.SSHKey = GitSSHKeyFile
	}
	if c.cfg.CABundleConfigMap != "" {
		// git and curl/OpenSSL take the file instead of the image's roots, which is why
		// the bundle must be complete; Node-style runtimes (OpenCode's HTTP client for
		// the model gateway) add it to their built-in roots.
		mounts = append(mounts, corev1.VolumeMount{Name: "ca-bundle", MountPath: CADir, ReadOnly: true})
		caEnv := []corev1.EnvVar{
			{Name: "GIT_SSL_CAINFO", Value: CAFile},
			{Name: "SSL_CERT_FILE", Value: CAFile},
		}
		initEnv = append(initEnv, caEnv...)
		env = append(env, caEnv...)
		env = append(env, corev1.EnvVar{Name: "NODE_EXTRA_CA_CERTS", Value: CAFile})
		extraVolumes = append(extraVolumes, corev1.Volume{Name: "ca-bundle", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: c.cfg.CABundleConfigMap},
			Items:                []corev1.KeyToPath{{Key: c.cfg.CABundleKey, Path: caFileName}},
			DefaultMode:          ptr.To[int32](0o444),
		}}})
	}
	mainMounts := mounts
	var keyVolumes []corev1.Volume
	if keys := sp.keys(); len(keys) > 0 {
		// Only OpenCode reads the keys; the password stays out of the files.
		sort.Strings(keys)
		items := make([]corev1.KeyToPath, 0, len(keys))
		for _, k := range keys {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
		mainMounts = append(slices.Clone(mounts), corev1.VolumeMount{Name: "provider-keys", MountPath: ProviderKeysDir, ReadOnly: true})
		keyVolumes = append(keyVolumes, corev1.Volume{Name: "provider-keys", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: SecretName(s.ID), Items: items, DefaultMode: ptr.To[int32](0o440),
		}}})
	}
	workspace := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	if s.Persistent {
		workspace = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: PVCName(s.ID)}}
	}
	secCtx := &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To[int64](runAsID),
		RunAsGroup:               ptr.To[int64](runAsID),
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	var pullSecrets []corev1.LocalObjectReference
	for _, n := range c.cfg.ImagePullSecrets {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: n})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: PodName(s.ID), Namespace: c.cfg.Namespace, Labels: c.labels(s)},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyAlways,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](15),
			NodeSelector:                  c.cfg.NodeSelector,
			Tolerations:                   c.cfg.Tolerations,
			ImagePullSecrets:              pullSecrets,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](runAsID),
				RunAsGroup:     ptr.To[int64](runAsID),
				FSGroup:        ptr.To[int64](runAsID),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			InitContainers: []corev1.Container{{
				Name:                     InitContainerName,
				Image:                    initImage,
				ImagePullPolicy:          corev1.PullPolicy(c.cfg.ImagePullPolicy),
				Command:                  []string{"agent", "session-init"},
				Args:                     initOpts.Args(),
				Env:                      initEnv,
				Resources:                res,
				VolumeMounts:             mounts,
				SecurityContext:          secCtx,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           image,
				ImagePullPolicy: corev1.PullPolicy(c.cfg.ImagePullPolicy),
				Command:         []string{"opencode", "serve", "--port", fmt.Sprint(apiv1.OpenCodePort), "--hostname", "127.0.0.1", "--print-logs"},
				WorkingDir:      WorkspaceDir,
				Env:             env,
				Ports:           []corev1.ContainerPort{{Name: "opencode", ContainerPort: apiv1.OpenCodePort, Protocol: corev1.ProtocolTCP}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:        corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", healthProbe}}},
					InitialDelaySeconds: 2,
					PeriodSeconds:       3,
					TimeoutSeconds:      3,
					FailureThreshold:    3,
				},
				Resources:                res,
				VolumeMounts:             mainMounts,
				SecurityContext:          secCtx,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: append([]corev1.Volume{
				{Name: "workspace", VolumeSource: workspace},
				{Name: "opencode-config", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("1Mi"))}}},
				{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			}, append(extraVolumes, keyVolumes...)...),
		},
	}
	return pod, nil
}

// imageOf is the image OpenCode runs in for s: its admin-set override, or the
// configured one.
func imageOf(s *store.Session, cfg Config) string { return orText(s.Image, cfg.DataPlaneImage) }
