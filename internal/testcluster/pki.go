package testcluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certValidity is long enough for a cluster left running by `testcluster up` over a holiday,
// short enough that nobody mistakes these certificates for anything but throwaway ones.
const certValidity = 90 * 24 * time.Hour

// authority is a certificate authority whose key is at hand, so it can sign new certificates.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// certKey is a signed certificate and its private key, both PEM-encoded.
type certKey struct {
	CertPEM []byte
	KeyPEM  []byte
}

// certRequest describes a leaf certificate: a client certificate when both IPs and DNSNames are
// empty, else a serving certificate.
type certRequest struct {
	CommonName   string
	Organization []string
	IPs          []net.IP
	DNSNames     []string
	Client       bool
	Server       bool
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newAuthority creates a self-signed CA.
func newAuthority(commonName string) (*authority, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

// certPEM returns the CA certificate in PEM.
func (a *authority) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw})
}

// keyPEM returns the CA's private key in PEM.
func (a *authority) keyPEM() ([]byte, error) {
	return encodeKey(a.key)
}

// sign issues a leaf certificate with a fresh key.
func (a *authority) sign(req certRequest) (*certKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		IPAddresses:  req.IPs,
		DNSNames:     req.DNSNames,
	}
	if req.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if req.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", req.CommonName, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &certKey{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  keyPEM,
	}, nil
}

// clientCert issues a client certificate for a Kubernetes user: the CN is the user name and
// each organization a group.
func (a *authority) clientCert(user string, groups ...string) (*certKey, error) {
	return a.sign(certRequest{CommonName: user, Organization: groups, Client: true})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodePublicKey(key crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// loadAuthority reads a CA written by writeAuthority.
func loadAuthority(certFile, keyFile string) (*authority, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s: no PEM key", keyFile)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, errors.New(keyFile + ": key cannot sign")
	}
	return &authority{cert: cert, key: signer}, nil
}

// pkiFiles names every file of the cluster's PKI inside the state dir.
type pkiFiles struct {
	dir string
}

func (p pkiFiles) path(name string) string { return filepath.Join(p.dir, name) }

// CA and its key: signs serving and client certificates and is the apiserver's client CA.
func (p pkiFiles) caCert() string { return p.path("ca.crt") }
func (p pkiFiles) caKey() string  { return p.path("ca.key") }

// writePKI generates every certificate and key the control plane needs.
func writePKI(dir string, extraIPs ...net.IP) (*authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := pkiFiles{dir: dir}
	ca, err := newAuthority("cake-testcluster-ca")
	if err != nil {
		return nil, err
	}
	caKey, err := ca.keyPEM()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt": ca.certPEM(),
		"ca.key": caKey,
	}

	serving, err := ca.sign(certRequest{
		CommonName: "kube-apiserver",
		IPs:        append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP(kubernetesServiceIP)}, extraIPs...),
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		Server: true,
	})
	if err != nil {
		return nil, err
	}
	files["apiserver.crt"], files["apiserver.key"] = serving.CertPEM, serving.KeyPEM

	kubeletClient, err := ca.clientCert("kube-apiserver-kubelet-client", "system:masters")
	if err != nil {
		return nil, err
	}
	files["apiserver-kubelet-client.crt"], files["apiserver-kubelet-client.key"] = kubeletClient.CertPEM, kubeletClient.KeyPEM

	kwokServing, err := ca.sign(certRequest{
		CommonName: "kwok",
		IPs:        []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:   []string{"localhost", NodeName},
		Server:     true,
	})
	if err != nil {
		return nil, err
	}
	files["kwok.crt"], files["kwok.key"] = kwokServing.CertPEM, kwokServing.KeyPEM

	// The requestheader client CA, as kubeadm sets it up for aggregated APIs.
	frontProxyCA, err := newAuthority("cake-testcluster-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	frontProxyClient, err := frontProxyCA.clientCert("front-proxy-client")
	if err != nil {
		return nil, err
	}
	files["front-proxy-ca.crt"] = frontProxyCA.certPEM()
	files["front-proxy-client.crt"], files["front-proxy-client.key"] = frontProxyClient.CertPEM, frontProxyClient.KeyPEM

	saKey, err := newKey()
	if err != nil {
		return nil, err
	}
	saPriv, err := encodeKey(saKey)
	if err != nil {
		return nil, err
	}
	saPub, err := encodePublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	files["sa.key"], files["sa.pub"] = saPriv, saPub

	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return ca, nil
}
