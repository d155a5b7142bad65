package sessions

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testCAPEM returns a freshly generated self-signed CA certificate in PEM.
func testCAPEM(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test private CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// caBundleConfigMap creates the bundle ConfigMap the way a platform team (or
// trust-manager) would.
func caBundleConfigMap(t testing.TB, kube kubernetes.Interface, ns, name string, data map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: data}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ConfigMap %s/%s: %v", ns, name, err)
	}
}

func envOf(ct corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range ct.Env {
		out[e.Name] = e.Value
	}
	return out
}

// checkCABundleMounted fails t unless pod mounts ConfigMap cm's key at CAFile in both
// containers, read-only, with git, OpenSSL and (in OpenCode's container) Node pointed at it.
func checkCABundleMounted(t *testing.T, pod *corev1.Pod, cm, key string) {
	t.Helper()
	var vol *corev1.Volume
	for i, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			if vol != nil {
				t.Fatalf("two ConfigMap volumes: %+v", pod.Spec.Volumes)
			}
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil {
		t.Fatalf("no ConfigMap volume in %+v", pod.Spec.Volumes)
	}
	if vol.ConfigMap.Name != cm || len(vol.ConfigMap.Items) != 1 || vol.ConfigMap.Items[0].Key != key ||
		vol.ConfigMap.Items[0].Path != "ca-certificates.crt" || (vol.ConfigMap.Optional != nil && *vol.ConfigMap.Optional) {
		t.Errorf("CA volume %+v, want only key %q of ConfigMap %q as ca-certificates.crt, not optional", vol.ConfigMap, key, cm)
	}
	for _, ct := range []corev1.Container{pod.Spec.InitContainers[0], pod.Spec.Containers[0]} {
		var mount *corev1.VolumeMount
		for i, m := range ct.VolumeMounts {
			if m.Name == vol.Name {
				mount = &ct.VolumeMounts[i]
			}
		}
		if mount == nil || mount.MountPath != "/etc/cake-agents/ca" || !mount.ReadOnly || mount.SubPath != "" {
			t.Errorf("%s mounts the CA volume as %+v, want read-only at /etc/cake-agents/ca", ct.Name, mount)
		}
		env := envOf(ct)
		want := []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE"}
		if ct.Name == ContainerName {
			want = append(want, "NODE_EXTRA_CA_CERTS")
		} else if _, ok := env["NODE_EXTRA_CA_CERTS"]; ok {
			t.Errorf("%s sets NODE_EXTRA_CA_CERTS: only OpenCode runs Node-style code", ct.Name)
		}
		for _, name := range want {
			if env[name] != "/etc/cake-agents/ca/ca-certificates.crt" {
				t.Errorf("%s: %s = %q, want /etc/cake-agents/ca/ca-certificates.crt", ct.Name, name, env[name])
			}
		}
	}
}

func TestBuildPodCABundle(t *testing.T) {
	s := &store.Session{ID: "abc12345", OwnerID: "u1", Private: true, Repo: "https://git.internal/org/repo"}

	c := newTestController(t, testConfig("sessions"), fake.NewClientset(), nil)
	pod, err := c.buildPod(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			t.Errorf("a CA volume without a configured bundle: %+v", v)
		}
	}
	for _, ct := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		for _, name := range []string{"GIT_SSL_CAINFO", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"} {
			if _, ok := envOf(ct)[name]; ok {
				t.Errorf("%s sets %s without a configured bundle: the image's roots must stay in charge", ct.Name, name)
			}
		}
		for _, m := range ct.VolumeMounts {
			if m.MountPath == CADir {
				t.Errorf("%s mounts %s without a configured bundle", ct.Name, CADir)
			}
		}
	}

	cfg := testConfig("sessions")
	cfg.CABundleConfigMap = "corp-roots"
	c = newTestController(t, cfg, fake.NewClientset(), nil)
	if c.cfg.CABundleKey != "ca-certificates.crt" {
		t.Errorf("default key %q", c.cfg.CABundleKey)
	}
	pod, err = c.buildPod(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCABundleMounted(t, pod, "corp-roots", "ca-certificates.crt")
	// The writable volumes (and the git credentials of an https repository) are all
	// still there: the bundle is added, nothing replaced.
	if len(pod.Spec.Volumes) != 6 || len(pod.Spec.Containers[0].VolumeMounts) != 6 || len(pod.Spec.InitContainers[0].VolumeMounts) != 6 {
		t.Errorf("volumes %d, mounts %d/%d, want 6 each", len(pod.Spec.Volumes), len(pod.Spec.InitContainers[0].VolumeMounts), len(pod.Spec.Containers[0].VolumeMounts))
	}

	cfg.CABundleKey = "bundle.pem"
	cfg.Registerer = prometheus.NewRegistry()
	c = newTestController(t, cfg, fake.NewClientset(), nil)
	if pod, err = c.buildPod(s, nil); err != nil {
		t.Fatal(err)
	}
	checkCABundleMounted(t, pod, "corp-roots", "bundle.pem")
}

// TestCreateWithoutCABundleLeavesNothing: a configured bundle that is not usable fails
// the session at once, with a message naming the ConfigMap, the namespace and the chart
// value, and nothing created; once the ConfigMap is right, start brings the session up.
func TestCreateWithoutCABundleLeavesNothing(t *testing.T) {
	ca := testCAPEM(t)
	for name, tc := range map[string]struct {
		data map[string]string // nil: no ConfigMap
		want []string
	}{
		"no ConfigMap":   {nil, []string{`"corp-roots"`, `"ns"`, "does not exist", "sessions.caBundle.configMapName"}},
		"no such key":    {map[string]string{"ca.crt": ca}, []string{`"corp-roots"`, `"ns"`, `no key "ca-certificates.crt"`, "sessions.caBundle.key"}},
		"no certificate": {map[string]string{"ca-certificates.crt": "not a certificate\n"}, []string{`"corp-roots"`, `"ns"`, "no PEM certificate"}},
	} {
		t.Run(name, func(t *testing.T) {
			kube := fake.NewClientset()
			if tc.data != nil {
				caBundleConfigMap(t, kube, "ns", "corp-roots", tc.data)
			}
			st, owner := newStore(t)
			cfg := testConfig("ns")
			cfg.CABundleConfigMap = "corp-roots"
			c := newTestController(t, cfg, kube, st)
			ctx := context.Background()
			s := &store.Session{OwnerID: owner, Persistent: true}
			before := len(kube.Actions())
			if err := c.Create(ctx, s, 0); err != nil {
				t.Fatalf("Create: %v", err)
			}
			got, err := st.GetSession(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != apiv1.StateFailed || got.Reason != ReasonCABundleMissing || s.State != apiv1.StateFailed {
				t.Fatalf("session %s/%s (caller sees %s), want Failed/CABundleMissing", got.State, got.Reason, s.State)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Message, w) {
					t.Errorf("message %q does not contain %s", got.Message, w)
				}
			}
			t.Logf("failed with: %s", got.Message)
			for _, action := range kube.Actions()[before:] {
				if action.GetVerb() == "create" {
					t.Errorf("created %s although the bundle is missing", action.GetResource().Resource)
				}
			}

			// Fixed: start works and the pod mounts the bundle.
			_ = kube.CoreV1().ConfigMaps("ns").Delete(ctx, "corp-roots", metav1.DeleteOptions{})
			caBundleConfigMap(t, kube, "ns", "corp-roots", map[string]string{"ca-certificates.crt": ca})
			started, err := c.Start(ctx, s.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			if started.State != apiv1.StatePending || started.Reason != "" {
				t.Fatalf("after start: %s/%s %q", started.State, started.Reason, started.Message)
			}
			pod, err := kube.CoreV1().Pods("ns").Get(ctx, PodName(s.ID), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("no pod after start: %v", err)
			}
			checkCABundleMounted(t, pod, "corp-roots", "ca-certificates.crt")
		})
	}
}

// TestCABundleOnCluster, on the real test cluster: with the bundle ConfigMap missing from
// the (restricted) session namespace a session fails at once with the ConfigMap, the
// namespace and the chart value named, and leaves no Secret, PVC or pod; once the
// ConfigMap is there, start gives a pod the API server admits under restricted Pod
// Security, with the bundle mounted in both containers, and the session runs.
func TestCABundleOnCluster(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CABundleConfigMap = "corp-roots"
	c, _ := e.start(cfg)
	ctx := ctxT(t)

	s := &store.Session{OwnerID: e.owner, Repo: "https://git.internal.example/org/repo", Persistent: true}
	if err := c.Create(ctx, s, 0); err != nil {
		t.Fatal(err)
	}
	if s.State != apiv1.StateFailed || s.Reason != ReasonCABundleMissing {
		t.Fatalf("session %s/%s %q, want Failed/CABundleMissing", s.State, s.Reason, s.Message)
	}
	for _, want := range []string{`"corp-roots"`, `"` + e.ns + `"`, "sessions.caBundle.configMapName"} {
		if !strings.Contains(s.Message, want) {
			t.Errorf("message %q does not name %s", s.Message, want)
		}
	}
	t.Logf("create failed with: %s", s.Message)
	for what, get := range map[string]func(context.Context) error{
		"pod": func(ctx context.Context) error { _, err := e.pod(ctx, s.ID); return err },
		"secret": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().Secrets(e.ns).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
			return err
		},
		"pvc": func(ctx context.Context) error {
			_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, PVCName(s.ID), metav1.GetOptions{})
			return err
		},
	} {
		if err := get(ctx); !apierrors.IsNotFound(err) {
			t.Errorf("%s of the failed session: %v, want NotFound (nothing may be created)", what, err)
		}
	}

	caBundleConfigMap(t, e.kube, e.ns, "corp-roots", map[string]string{"ca-certificates.crt": testCAPEM(t)})
	e.preBoundPV(s.ID)
	if _, err := c.Start(ctx, s.ID, 0); err != nil {
		t.Fatal(err)
	}
	pod, err := e.pod(ctx, s.ID)
	if err != nil {
		t.Fatalf("no pod after start: %v", err)
	}
	checkCABundleMounted(t, pod, "corp-roots", "ca-certificates.crt")
	e.waitSession(s.ID, "Running", inState(apiv1.StateRunning))
}
