// Package agentpod runs a container of a pod as a local process, the way the kubelet would
// start it, for tiers where kwok stands in for the kubelet and runs nothing: the container's
// environment resolved as the kubelet resolves it (values with $(VAR) references, Secret and
// ConfigMap keys, the downward API), its volumes as local directories, its listen ports on
// loopback, the Services it reaches mapped to the local processes that play them, and the pod's
// ServiceAccount identity as a kubeconfig holding a token of that ServiceAccount.
//
// Everything it does not understand (an env source, a volume type, a command) is an error, so
// a new chart feature fails the tests that use it instead of being silently left out. make demo,
// the end-to-end tests and the chart's boot test run the real agent through it.
package agentpod

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Var is one resolved environment variable.
type Var struct {
	Name, Value string
	// From says where the value came from ("value", "secret NAME/KEY", "fieldRef PATH", ...).
	From string
}

// Env is a container's environment as the kubelet would give it to the process.
type Env struct {
	// Vars in the order the container lists them (a later entry of the same name wins, as
	// with the kubelet).
	Vars []Var
	// Skipped names the variables the kubelet leaves unset: optional references to a
	// missing Secret, ConfigMap or key.
	Skipped []string
}

// Map returns the variables by name.
func (e Env) Map() map[string]string {
	m := make(map[string]string, len(e.Vars))
	for _, v := range e.Vars {
		m[v.Name] = v.Value
	}
	return m
}

// ResolveEnv resolves the environment of container c of pod as the kubelet does: envFrom
// first, then env in order, each value with $(VAR) references to earlier variables
// expanded; Secret and ConfigMap keys are read from the pod's namespace with kube. A missing
// non-optional reference is an error (the kubelet would refuse to start the container,
// CreateContainerConfigError), and so is any source this resolver does not implement.
func ResolveEnv(ctx context.Context, kube kubernetes.Interface, pod *corev1.Pod, c *corev1.Container) (Env, error) {
	var env Env
	defined := map[string]string{}
	set := func(name, value, from string) {
		env.Vars = append(env.Vars, Var{Name: name, Value: value, From: from})
		defined[name] = value
	}
	secrets := map[string]*corev1.Secret{}
	getSecret := func(name string) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s, err := kube.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		secrets[name] = s
		return s, nil
	}
	configMaps := map[string]*corev1.ConfigMap{}
	getConfigMap := func(name string) (*corev1.ConfigMap, error) {
		if cm, ok := configMaps[name]; ok {
			return cm, nil
		}
		cm, err := kube.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		configMaps[name] = cm
		return cm, nil
	}

	for _, from := range c.EnvFrom {
		switch {
		case from.SecretRef != nil:
			s, err := getSecret(from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.SecretRef.Optional) {
					env.Skipped = append(env.Skipped, "envFrom secret "+from.SecretRef.Name)
					continue
				}
				return env, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(s.Data) {
				set(from.Prefix+k, string(s.Data[k]), "envFrom secret "+s.Name)
			}
		case from.ConfigMapRef != nil:
			cm, err := getConfigMap(from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.ConfigMapRef.Optional) {
					env.Skipped = append(env.Skipped, "envFrom configMap "+from.ConfigMapRef.Name)
					continue
				}
				return env, fmt.Errorf("envFrom configMap %s: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k], "envFrom configMap "+cm.Name)
			}
		default:
			return env, fmt.Errorf("envFrom entry %+v: a source agentpod does not resolve; teach ResolveEnv about it", from)
		}
	}

	for _, v := range c.Env {
		if v.ValueFrom == nil {
			set(v.Name, Expand(v.Value, defined), "value")
			continue
		}
		src := v.ValueFrom
		switch {
		case src.FieldRef != nil:
			val, err := fieldValue(pod, src.FieldRef.FieldPath)
			if err != nil {
				return env, fmt.Errorf("env %s: %w", v.Name, err)
			}
			set(v.Name, val, "fieldRef "+src.FieldRef.FieldPath)
		case src.SecretKeyRef != nil:
			ref := src.SecretKeyRef
			s, err := getSecret(ref.Name)
			if err != nil && !apierrors.IsNotFound(err) {
				return env, fmt.Errorf("env %s: secret %s: %w", v.Name, ref.Name, err)
			}
			var val []byte
			ok := false
			if s != nil {
				val, ok = s.Data[ref.Key]
			}
			if !ok {
				if isTrue(ref.Optional) {
					env.Skipped = append(env.Skipped, v.Name)
					continue
				}
				return env, fmt.Errorf("env %s: secret %s/%s has no key %q (the kubelet would not start the container: CreateContainerConfigError)", v.Name, pod.Namespace, ref.Name, ref.Key)
			}
			set(v.Name, string(val), "secret "+ref.Name+"/"+ref.Key)
		case src.ConfigMapKeyRef != nil:
			ref := src.ConfigMapKeyRef
			cm, err := getConfigMap(ref.Name)
			if err != nil && !apierrors.IsNotFound(err) {
				return env, fmt.Errorf("env %s: configMap %s: %w", v.Name, ref.Name, err)
			}
			var val string
			ok := false
			if cm != nil {
				val, ok = cm.Data[ref.Key]
			}
			if !ok {
				if isTrue(ref.Optional) {
					env.Skipped = append(env.Skipped, v.Name)
					continue
				}
				return env, fmt.Errorf("env %s: configMap %s/%s has no key %q (the kubelet would not start the container: CreateContainerConfigError)", v.Name, pod.Namespace, ref.Name, ref.Key)
			}
			set(v.Name, val, "configMap "+ref.Name+"/"+ref.Key)
		default:
			// resourceFieldRef, fileKeyRef and whatever comes next: refuse rather than skip.
			return env, fmt.Errorf("env %s: valueFrom %+v is a source agentpod does not resolve; teach ResolveEnv about it", v.Name, *src)
		}
	}
	return env, nil
}

var labelPath = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

// fieldValue is the downward API for env: the field paths the kubelet supports.
func fieldValue(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIPs":
		ips := make([]string, 0, len(pod.Status.HostIPs))
		for _, ip := range pod.Status.HostIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	case "status.podIPs":
		ips := make([]string, 0, len(pod.Status.PodIPs))
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	if m := labelPath.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("fieldRef %s is a field path agentpod does not resolve; teach fieldValue about it", path)
}

// Expand replaces $(NAME) with the value of an earlier variable NAME, as the kubelet
// does for env values, command and args: $$ is a literal $, and a reference to an
// undefined variable stays as written.
func Expand(s string, defined map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := defined[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func isTrue(b *bool) bool { return b != nil && *b }
