package agentpod

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Mounts maps the mount paths of a container to the local directories that stand in for
// its volumes.
type Mounts map[string]string

// PrepareVolumes gives every volume mount of c a local directory under root, filled as the
// kubelet would fill the volume: emptyDir starts empty; a persistentVolumeClaim starts as
// the directory claimDir returns for the claim (the caller's stand-in for the disk, e.g. the
// hostPath of the PersistentVolume it bound to the claim; nil: a fresh empty directory);
// secret and configMap volumes hold one file per key (or per listed item). Other volume
// types, subPath mounts and missing non-optional sources are errors.
func PrepareVolumes(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, root string, claimDir func(claim string) string) (Mounts, error) {
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := Mounts{}
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			return nil, fmt.Errorf("volume mount %s uses subPath, which agentpod does not map; teach PrepareVolumes about it", m.Name)
		}
		v, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %s names no volume of the pod", m.Name)
		}
		dir := filepath.Join(root, "volumes", m.Name)
		switch {
		case serviceAccountTokenVolume(v, m):
			// The API server's admission adds this volume for the in-cluster config; client-go
			// reads it from its fixed path only, so Prepare hands the process the same
			// identity through KUBECONFIG instead.
			continue
		case v.EmptyDir != nil:
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		case v.PersistentVolumeClaim != nil:
			if claimDir != nil {
				dir = claimDir(v.PersistentVolumeClaim.ClaimName)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
		case v.Secret != nil:
			s, err := kube.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(v.Secret.Optional) {
					s = &corev1.Secret{}
				} else {
					return nil, fmt.Errorf("volume %s: secret %s/%s: %w (the kubelet would not start the pod)", v.Name, pod.Namespace, v.Secret.SecretName, err)
				}
			}
			if err := project(dir, s.Data, v.Secret.Items); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		case v.ConfigMap != nil:
			cm, err := kube.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(v.ConfigMap.Optional) {
					cm = &corev1.ConfigMap{}
				} else {
					return nil, fmt.Errorf("volume %s: configMap %s/%s: %w (the kubelet would not start the pod)", v.Name, pod.Namespace, v.ConfigMap.Name, err)
				}
			}
			data := map[string][]byte{}
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			for k, val := range cm.BinaryData {
				data[k] = val
			}
			if err := project(dir, data, v.ConfigMap.Items); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		default:
			return nil, fmt.Errorf("volume %s: a volume type agentpod does not map; teach PrepareVolumes about it", v.Name)
		}
		mounts[filepath.Clean(m.MountPath)] = dir
	}
	return mounts, nil
}

// serviceAccountTokenVolume reports whether v is the volume ServiceAccount admission adds
// (kube-api-access-*): a projected ServiceAccount token at the in-cluster config's path.
func serviceAccountTokenVolume(v corev1.Volume, m corev1.VolumeMount) bool {
	if v.Projected == nil || filepath.Clean(m.MountPath) != "/var/run/secrets/kubernetes.io/serviceaccount" {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

// project writes data as files into dir: every key, or only the listed items under their paths.
func project(dir string, data map[string][]byte, items []corev1.KeyToPath) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("no key %q to project to %s", it.Key, it.Path)
		}
		files[it.Path] = v
	}
	for p, v := range files {
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, v, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// Local maps a path inside the container to the local path, or returns ok=false when it is
// under no mount (then it is a path of the image's own file system).
func (m Mounts) Local(p string) (string, bool) {
	p = filepath.Clean(p)
	for _, mp := range m.byLength() {
		if p == mp {
			return m[mp], true
		}
		if rel, ok := strings.CutPrefix(p, mp+"/"); ok {
			return filepath.Join(m[mp], rel), true
		}
	}
	return "", false
}

// Rewrite replaces every container path in s that lies under a mount (whole path elements:
// "sqlite:///data/agents.db", "/etc/app/tls/tls.crt", not "/database") with its local path.
// One pass, longest mount first at each position, so a local path that happens to contain a
// mount path (a temp dir under /tmp) is never rewritten twice.
func (m Mounts) Rewrite(s string) string {
	paths := m.byLength()
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		if i == 0 || !isPathChar(s[i-1]) {
			for _, mp := range paths {
				end := i + len(mp)
				if strings.HasPrefix(s[i:], mp) && (end == len(s) || !isPathChar(s[end])) {
					b.WriteString(m[mp])
					i, matched = end, true
					break
				}
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// isPathChar reports whether c can continue a path element, so "/database" is not taken for
// the mount "/data".
func isPathChar(c byte) bool {
	return c == '.' || c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// byLength lists the mount paths longest first, so nested mounts win over their parents.
func (m Mounts) byLength() []string {
	paths := make([]string, 0, len(m))
	for p := range m {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool {
		if len(paths[i]) != len(paths[j]) {
			return len(paths[i]) > len(paths[j])
		}
		return paths[i] < paths[j]
	})
	return paths
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
