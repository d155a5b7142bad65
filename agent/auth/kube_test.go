package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
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
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t testing.TB, cn string, orgs []string, usage x509.ExtKeyUsage, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// tlsServer serves whoami behind the middleware on a TLS listener configured the way
// the agent's must be: client certificates requested, not verified by crypto/tls.
func tlsServer(t *testing.T, k *KubernetesAuthenticator) *httptest.Server {
	t.Helper()
	st, _ := newStore(t)
	return httptestTLS(t, NewMiddleware([]Authenticator{k, NewTokenAuthenticator(st, nil)}, st, nil, nil).Wrap(whoami))
}

func httptestTLS(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func getWithCert(t *testing.T, srv *httptest.Server, cert *tls.Certificate, bearer string) (int, string) {
	t.Helper()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/whoami", nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestClientCertificates(t *testing.T) {
	ca, otherCA := newTestCA(t), newTestCA(t)
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: fake.NewClientset()})
	srv := tlsServer(t, k)
	jane := ca.issue(t, "jane", []string{"devs", "ops"}, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))

	// Before the CA is known every certificate is refused, with a reason.
	if code, body := getWithCert(t, srv, &jane, ""); code != http.StatusUnauthorized || !strings.Contains(body, ClientCAConfigMap) {
		t.Fatalf("no CA loaded: %d %s", code, body)
	}
	if err := k.setClientCA(ca.pem); err != nil {
		t.Fatal(err)
	}
	code, body := getWithCert(t, srv, &jane, "")
	if code != http.StatusOK {
		t.Fatalf("valid certificate: %d %s", code, body)
	}
	var id Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatal(err)
	}
	slices.Sort(id.Groups) // DER sorts the organisations of one RDN set
	if id.Username != "jane" || !slices.Equal(id.Groups, []string{"devs", "ops", "system:authenticated"}) || id.Source != SourceKubernetes {
		t.Fatalf("identity = %+v", id)
	}

	for name, cert := range map[string]tls.Certificate{
		"other CA":           otherCA.issue(t, "jane", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour)),
		"server certificate": ca.issue(t, "jane", nil, x509.ExtKeyUsageServerAuth, time.Now().Add(time.Hour)),
		"expired":            ca.issue(t, "jane", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Hour)),
		"no common name":     ca.issue(t, "", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour)),
	} {
		if code, body := getWithCert(t, srv, &cert, ""); code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401", name, code, body)
		}
	}
	if code, _ := getWithCert(t, srv, nil, ""); code != http.StatusUnauthorized {
		t.Errorf("no certificate: %d, want 401", code)
	}
	// A personal access token next to a certificate is left to the token authenticator
	// (which rejects this made-up one) rather than silently using the certificate.
	if code, body := getWithCert(t, srv, &jane, TokenPrefix+"madeup"); code != http.StatusUnauthorized || !strings.Contains(body, "personal access token") {
		t.Errorf("certificate plus PAT: %d %s", code, body)
	}
	if err := k.setClientCA([]byte("garbage")); err == nil {
		t.Error("garbage CA accepted")
	}
	if code, _ := getWithCert(t, srv, &jane, ""); code != http.StatusOK {
		t.Error("a bad CA update replaced the good pool")
	}
}

// TestTokenReviewCacheAndAudiences checks the authenticator's own logic around
// TokenReview (caching, audiences, reading the status); the API round trip itself is
// tested against the real cluster in TestKubernetesIntegration.
func TestTokenReviewCacheAndAudiences(t *testing.T) {
	client := fake.NewClientset()
	var reviews int
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews++
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		switch tr.Spec.Token {
		case "good":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"agents"},
				User: authnv1.UserInfo{Username: "system:serviceaccount:ns:sa", UID: "u1", Groups: []string{"system:serviceaccounts"}, Extra: map[string]authnv1.ExtraValue{"k": {"v"}}}}
		case "wrong-audience":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"other"}, User: authnv1.UserInfo{Username: "x"}}
		case "broken":
			return true, nil, errors.New("etcdserver: request timed out")
		default:
			tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, tr, nil
	})
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: client, Audiences: []string{"agents"}})
	now := time.Now()
	k.reviews.now = func() time.Time { return now }

	for range 3 {
		id, ok, err := k.Authenticate(bearerRequest("good"))
		if err != nil || !ok || id.Username != "system:serviceaccount:ns:sa" || id.UID != "u1" || id.Extra["k"][0] != "v" {
			t.Fatalf("good token: id=%+v ok=%v err=%v", id, ok, err)
		}
		id.Groups[0] = "mutated" // must not leak into the cached answer
	}
	if reviews != 1 {
		t.Fatalf("reviews = %d for a burst, want 1", reviews)
	}
	if id, _, _ := k.Authenticate(bearerRequest("good")); id.Groups[0] != "system:serviceaccounts" {
		t.Fatal("cached identity was shared with a caller that mutated it")
	}
	now = now.Add(11 * time.Second)
	if _, _, err := k.Authenticate(bearerRequest("good")); err != nil || reviews != 2 {
		t.Fatalf("after the TTL: err=%v reviews=%d, want a fresh review", err, reviews)
	}
	for tok, want := range map[string]string{"wrong-audience": "not meant for this agent", "bad": "invalid bearer token"} {
		_, _, err := k.Authenticate(bearerRequest(tok))
		if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want ErrUnauthenticated mentioning %q", tok, err, want)
		}
	}
	if _, _, err := k.Authenticate(bearerRequest("broken")); err == nil || errors.Is(err, ErrUnauthenticated) {
		t.Errorf("API failure: err = %v, want an error that is not ErrUnauthenticated (503, not 401)", err)
	}
	if _, ok, err := k.Authenticate(bearerRequest(TokenPrefix + "x")); ok || err != nil {
		t.Errorf("PAT: ok=%v err=%v, want not recognised", ok, err)
	}
}

func TestSARKeyDistinguishesIdentities(t *testing.T) {
	base := &Identity{Username: "jane", Groups: []string{"a", "b"}}
	same := &Identity{Username: "jane", Groups: []string{"b", "a"}}
	if sarKey(base, "get") != sarKey(same, "get") {
		t.Error("group order changed the key")
	}
	for name, other := range map[string]*Identity{
		"user":        {Username: "jane2", Groups: []string{"a", "b"}},
		"groups":      {Username: "jane", Groups: []string{"a"}},
		"group split": {Username: "jane", Groups: []string{"a;b"}},
		"uid":         {Username: "jane", UID: "1", Groups: []string{"a", "b"}},
		"extra":       {Username: "jane", Groups: []string{"a", "b"}, Extra: map[string][]string{"scopes": {"x"}}},
		"user/group":  {Username: "janea", Groups: []string{"b"}},
	} {
		if sarKey(base, "get") == sarKey(other, "get") {
			t.Errorf("%s: same key as the base identity", name)
		}
	}
	if sarKey(base, "get") == sarKey(base, "delete") {
		t.Error("verb not in the key")
	}
}

// TestClientCAFollowsConfigMap checks the informer handlers: a rotated CA replaces the
// old one, a deleted ConfigMap disables certificates. (The real API server's copy is
// read in TestClientCertificateFromClusterCA; it can't be edited on a shared cluster.)
func TestClientCAFollowsConfigMap(t *testing.T) {
	oldCA, newCA := newTestCA(t), newTestCA(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ClientCANamespace, Name: ClientCAConfigMap},
		Data:       map[string]string{ClientCAKey: string(oldCA.pem)},
	}
	client := fake.NewClientset(cm)
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: client})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	oldCert := oldCA.issue(t, "jane", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	newCert := newCA.issue(t, "jane", nil, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	verifies := func(c tls.Certificate) bool {
		_, err := k.verifyCertificate([]*x509.Certificate{c.Leaf})
		return err == nil
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting until %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !verifies(oldCert) || verifies(newCert) {
		t.Fatal("initial CA not loaded")
	}
	cm = cm.DeepCopy()
	cm.Data[ClientCAKey] = string(newCA.pem)
	if _, err := client.CoreV1().ConfigMaps(ClientCANamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the rotated CA is used", func() bool { return verifies(newCert) && !verifies(oldCert) })

	cm = cm.DeepCopy()
	cm.Data[ClientCAKey] = "not a certificate"
	if _, err := client.CoreV1().ConfigMaps(ClientCANamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if !verifies(newCert) {
		t.Fatal("a broken update discarded the working CA")
	}

	if err := client.CoreV1().ConfigMaps(ClientCANamespace).Delete(ctx, ClientCAConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("certificates are refused without the ConfigMap", func() bool { return !verifies(newCert) })
}

// TestStartReportsUnreadableConfigMap: without RBAC to read the ConfigMap the informer
// never syncs; Start must say so rather than block.
func TestStartReportsUnreadableConfigMap(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New(`configmaps "extension-apiserver-authentication" is forbidden`)
	})
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: client})
	k.syncTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := k.Start(ctx)
	if err == nil || !strings.Contains(err.Error(), "extension-apiserver-authentication-reader") {
		t.Fatalf("err = %v, want one naming the Role to bind", err)
	}
}

// A verified chain is remembered (a client's many requests pay for one check), but never
// past the certificate's expiry.
func TestVerifiedCertificateCachedUntilExpiry(t *testing.T) {
	ca := newTestCA(t)
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: fake.NewClientset()})
	if err := k.setClientCA(ca.pem); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k.now = func() time.Time { return now }
	k.certs.now = k.now
	cert := ca.issue(t, "jane", []string{"devs"}, x509.ExtKeyUsageClientAuth, now.Add(3*time.Second))
	for range 2 {
		id, err := k.verifyCertificate([]*x509.Certificate{cert.Leaf})
		if err != nil || id.Username != "jane" || !slices.Contains(id.Groups, "devs") {
			t.Fatalf("verify: %v %+v", err, id)
		}
		id.Groups[0] = "changed by a request" // a copy: the cached identity stays intact
	}
	if len(k.certs.m) != 1 {
		t.Fatalf("%d cached chains, want 1", len(k.certs.m))
	}
	now = now.Add(5 * time.Second)
	if _, err := k.verifyCertificate([]*x509.Certificate{cert.Leaf}); err == nil {
		t.Fatal("an expired certificate was accepted from the cache")
	}
}
