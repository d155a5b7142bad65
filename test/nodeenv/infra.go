package nodeenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// InfraNamespace holds the fake model and the git server.
const InfraNamespace = "infra"

const gitHost = "gitserver." + InfraNamespace + ".svc.cluster.local"

// Infra is what StartInfra started.
type Infra struct {
	// ModelURL is the fake model's OpenAI-compatible base URL (for litellm.baseURL).
	ModelURL string
	// RepoURL is the HTTPS URL of the repository StartInfra served.
	RepoURL string
	// CAPEM signed the git server's certificate: sessions trust it through a CA bundle
	// ConfigMap (sessions.caBundle).
	CAPEM []byte
}

// StartInfra starts the fake model and an HTTPS git server as restricted pods in
// InfraNamespace (created if missing), reached by Service names (cluster DNS and kube-proxy).
// The server serves one repository, name.git, whose one commit on main holds files; its
// bare repository lives under dir, a folder of the node's host, mounted into the pod.
func StartInfra(ctx context.Context, kube kubernetes.Interface, imgs Images, dir, name string, files map[string]string) (*Infra, error) {
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: InfraNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	model, err := Deployment(ctx, kube, InfraNamespace, "fakemodel", 8080, 65532, corev1.Container{
		Image: imgs.Name(ImgFakeModel),
		Args:  []string{"-listen", "0.0.0.0:8080"},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1,
		},
	})
	if err != nil {
		return nil, err
	}
	caPEM, certPEM, keyPEM, err := tlsPair()
	if err != nil {
		return nil, err
	}
	if _, err := kube.CoreV1().Secrets(InfraNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gitserver-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	repos := filepath.Join(dir, "repos")
	if err := os.MkdirAll(repos, 0o755); err != nil {
		return nil, err
	}
	// The server runs as uid 65532 and reaches the host path through these folders.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := bareRepo(repos, name, files); err != nil {
		return nil, err
	}
	if _, err := Deployment(ctx, kube, InfraNamespace, "gitserver", 8443, 65532, corev1.Container{
		Image: imgs.Name(ImgGitServer),
		Env: []corev1.EnvVar{
			{Name: "GITSERVER_TLS_CERT", Value: "/tls/tls.crt"},
			{Name: "GITSERVER_TLS_KEY", Value: "/tls/tls.key"},
			{Name: "GITSERVER_ROOT", Value: "/srv/git"},
			{Name: "GITSERVER_LISTEN", Value: ":8443"},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8443), Scheme: corev1.URISchemeHTTPS}},
			PeriodSeconds: 1,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "repos", MountPath: "/srv/git", ReadOnly: true},
			{Name: "tls", MountPath: "/tls", ReadOnly: true},
			{Name: "tmp", MountPath: "/tmp"},
		},
	},
		corev1.Volume{Name: "repos", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: repos}}},
		corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "gitserver-tls"}}},
		corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	); err != nil {
		return nil, err
	}
	return &Infra{
		ModelURL: "http://" + model + ":8080/v1",
		RepoURL:  "https://" + gitHost + ":8443/" + name + ".git",
		CAPEM:    caPEM,
	}, nil
}

// CABundle is the ConfigMap a session namespace needs for sessions to trust the git server,
// named for sessions.caBundle.configMapName.
func (i *Infra) CABundle(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       map[string]string{"ca-certificates.crt": string(i.CAPEM)},
	}
}

// tlsPair is a CA and a server certificate it signed for the git server's Service names.
func tlsPair() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "real-node git server CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: gitHost},
		DNSNames:  []string{gitHost, "gitserver." + InfraNamespace + ".svc", "gitserver." + InfraNamespace},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// bareRepo makes dir/name.git with one commit holding files on main, readable by anyone (the
// server runs as another user and only reads).
func bareRepo(dir, name string, files map[string]string) error {
	work, err := os.MkdirTemp("", "cake-repo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	git := func(dir string, args ...string) error {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=demo", "GIT_AUTHOR_EMAIL=demo@example.com",
			"GIT_COMMITTER_NAME=demo", "GIT_COMMITTER_EMAIL=demo@example.com", "HOME="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	src := filepath.Join(work, name)
	for path, content := range files {
		p := filepath.Join(src, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "initial"}} {
		if err := git(src, args...); err != nil {
			return err
		}
	}
	if err := git(dir, "clone", "-q", "--bare", src, filepath.Join(dir, name+".git")); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
}
