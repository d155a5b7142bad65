package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// servingCert is the TLS identity of the HTTPS listener and the CA the plugin must
// trust to verify it.
type servingCert struct {
	cert  tls.Certificate
	caPEM []byte
}

// loadOrGenerateServingCert reads the configured certificate, or makes a fresh CA and
// a serving certificate for the agent's Service names. A generated pair lives only as
// long as the process; the CA is republished at every start, so the plugin always
// verifies against the current one.
func loadOrGenerateServingCert(ctx context.Context, cfg *Config, kube kubernetes.Interface, log hclog.Logger) (*servingCert, error) {
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert-file/--tls-key-file: %w", err)
		}
		pemBytes, err := os.ReadFile(cfg.TLSCertFile)
		if err != nil {
			return nil, fmt.Errorf("read --tls-cert-file: %w", err)
		}
		// Publish the last certificate of the chain: the issuing CA when the file holds
		// a chain, or the certificate itself when it is self-signed.
		var last []byte
		for rest := pemBytes; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			last = pem.EncodeToMemory(b)
		}
		return &servingCert{cert: cert, caPEM: last}, nil
	}
	ca, err := sharedServingCA(ctx, kube, cfg.Namespace, cfg.ServingCAConfigMap)
	if err != nil {
		log.Warn("shared serving CA unavailable, using one of this replica's own: other replicas will not verify", "secret", cfg.ServingCAConfigMap, "error", err)
		if ca, err = newServingCA(); err != nil {
			return nil, err
		}
	}
	return generateServingCert(cfg.Release, cfg.Namespace, ca)
}

// servingCA is the CA that signs every replica's serving certificate. It is kept in a
// Secret (named like the ConfigMap) so all replicas share it and the one published CA
// verifies whichever pod the plugin's port-forward lands on.
type servingCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newServingCA() (*servingCA, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "cake-agents serving CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	return &servingCA{cert: caCert, key: caKey, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}, nil
}

func parseServingCA(certPEM, keyPEM []byte) (*servingCA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("serving CA secret holds no PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	return &servingCA{cert: cert, key: key, pem: certPEM}, nil
}

// sharedServingCA loads the CA from its Secret, creating it on first start. When the
// Secret cannot be used (no RBAC, API down) it falls back to a CA of this process's
// own, which works for one replica.
func sharedServingCA(ctx context.Context, kube kubernetes.Interface, namespace, name string) (*servingCA, error) {
	if name == "" {
		return newServingCA()
	}
	secrets := kube.CoreV1().Secrets(namespace)
	for attempt := 0; attempt < 3; attempt++ {
		sec, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(sec.Data["tls.crt"]) > 0 {
			return parseServingCA(sec.Data["tls.crt"], sec.Data["tls.key"])
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		ca, err2 := newServingCA()
		if err2 != nil {
			return nil, err2
		}
		keyDER, err2 := x509.MarshalECPrivateKey(ca.key)
		if err2 != nil {
			return nil, err2
		}
		data := map[string][]byte{"tls.crt": ca.pem, "tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}
		if err == nil {
			// The chart created it empty (so it belongs to the release): fill it. A
			// conflict means another replica filled it first; read theirs.
			sec.Data = data
			if _, err = secrets.Update(ctx, sec, metav1.UpdateOptions{}); err == nil {
				return ca, nil
			}
			if !apierrors.IsConflict(err) {
				return nil, err
			}
			continue
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
				apiv1.LabelName: apiv1.AgentAppName, apiv1.LabelComponent: apiv1.AgentComponent,
			}},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}, metav1.CreateOptions{})
		if err == nil {
			return ca, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		// Another replica created it first: read theirs.
	}
	return nil, fmt.Errorf("secret %s/%s keeps changing", namespace, name)
}

func generateServingCert(release, namespace string, ca *servingCA) (*servingCert, error) {
	caCert, caKey, now := ca.cert, ca.key, time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	svc := release
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: svc},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", svc, svc + "." + namespace, svc + "." + namespace + ".svc",
			svc + "." + namespace + ".svc.cluster.local",
		},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	)
	if err != nil {
		return nil, err
	}
	return &servingCert{cert: cert, caPEM: ca.pem}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126)) // crypto/rand does not fail on supported platforms
	return n
}

// publishServingCA writes the serving CA to the ConfigMap the plugin reads, so a
// port-forwarded connection can be verified without trusting anything blindly.
func publishServingCA(ctx context.Context, kube kubernetes.Interface, namespace, name, release string, caPEM []byte) error {
	if name == "" {
		return nil
	}
	cms := kube.CoreV1().ConfigMaps(namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{
					apiv1.LabelName: apiv1.AgentAppName, apiv1.LabelInstance: release, apiv1.LabelComponent: apiv1.AgentComponent,
				}},
				Data: map[string]string{"ca.crt": string(caPEM)},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data["ca.crt"] == string(caPEM) {
			return nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["ca.crt"] = string(caPEM)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}
