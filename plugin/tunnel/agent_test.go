package tunnel

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
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func agentPod(name string, created time.Time, ready bool, phase corev1.PodPhase) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "ops", CreationTimestamp: metav1.NewTime(created),
			Labels: map[string]string{apiv1.LabelName: apiv1.AgentAppName, apiv1.LabelComponent: apiv1.AgentComponent},
		},
		Status: corev1.PodStatus{Phase: phase, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
	}
}

func TestFindAgentPod(t *testing.T) {
	now := time.Now()
	session := agentPod("session-pod", now, true, corev1.PodRunning)
	session.Labels[apiv1.LabelName] = apiv1.SessionAppName
	old := agentPod("agent-old", now.Add(-time.Hour), true, corev1.PodRunning)
	newest := agentPod("agent-new", now, true, corev1.PodRunning)
	starting := agentPod("agent-starting", now.Add(time.Minute), false, corev1.PodPending)
	starting.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}}

	kube := fake.NewClientset(session, old, newest, starting)
	p, err := FindAgentPod(context.Background(), kube, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "agent-new" {
		t.Errorf("picked %s, want the newest Ready agent pod", p.Name)
	}

	_, err = FindAgentPod(context.Background(), fake.NewClientset(starting), "ops")
	want := `no Ready agent pod in namespace "ops": agent-starting (ImagePullBackOff); see ` +
		"`kubectl -n ops describe pods -l app.kubernetes.io/component=control-plane,app.kubernetes.io/name=cake-agents`"
	if err == nil || err.Error() != want {
		t.Errorf("not ready:\n got %v\nwant %s", err, want)
	}

	_, err = FindAgentPod(context.Background(), fake.NewClientset(session), "cake-agents")
	if !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), `in namespace "cake-agents"`) ||
		!strings.Contains(err.Error(), "helm upgrade --install cake-agents charts/cake-agents -n cake-agents") {
		t.Errorf("no agent: %v", err)
	}

	denied := fake.NewClientset()
	denied.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errForbidden("pods", "list")
	})
	_, err = FindAgentPod(context.Background(), denied, "ops")
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), `missing permission "list pods"`) {
		t.Errorf("forbidden: %v", err)
	}
}

func errForbidden(resource, verb string) error {
	return &apiStatusError{metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonForbidden, Code: 403,
		Message: fmt.Sprintf("%s is forbidden: User \"u\" cannot %s resource %q", resource, verb, resource)}}
}

type apiStatusError struct{ s metav1.Status }

func (e *apiStatusError) Error() string         { return e.s.Message }
func (e *apiStatusError) Status() metav1.Status { return e.s }

func TestClassifyNamesThePermission(t *testing.T) {
	err := classify(errors.New(`unable to upgrade connection: pods "agent-1" is forbidden: User "bob" cannot create resource "pods/portforward"`), "ops", "agent-1")
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), `missing permission "create pods/portforward" in namespace "ops"`) {
		t.Errorf("classify = %v", err)
	}
	if err := classify(errors.New("dial tcp: connection refused"), "ops", "p"); errors.Is(err, ErrForbidden) {
		t.Errorf("a network error classified as forbidden: %v", err)
	}
}

func pemCert(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func TestServingCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: apiv1.AgentCertMapName, Namespace: "ops"},
		Data:       map[string]string{"ca.crt": string(pemCert(t, srv.Certificate()))},
	}
	if _, err := ServingCA(context.Background(), fake.NewClientset(cm), "ops"); err != nil {
		t.Fatal(err)
	}
	_, err := ServingCA(context.Background(), fake.NewClientset(), "ops")
	if err == nil || !strings.Contains(err.Error(), "cake-agents-serving-ca does not exist") {
		t.Errorf("missing ConfigMap: %v", err)
	}
	cm.Data["ca.crt"] = "garbage"
	if _, err := ServingCA(context.Background(), fake.NewClientset(cm), "ops"); err == nil {
		t.Error("garbage CA accepted")
	}
}

// clientCert returns a self-signed client certificate and key in PEM.
func clientCert(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func TestHTTPClientPresentsKubeIdentityAndVerifiesTheAgentCA(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "auth=%q cert=%q host=%q", r.Header.Get("Authorization"), cn, r.Host)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", srv.Listener.Addr().String())
	}
	call := func(cfg *rest.Config, pool *x509.CertPool) (string, error) {
		hc, err := HTTPClient(cfg, pool, dial)
		if err != nil {
			return "", err
		}
		resp, err := hc.Get(AgentURL("ops") + "/api/v1/whoami")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, resp.Status+" ")
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return b.String(), nil
	}

	// The API server's CA in the kubeconfig must not get in the way.
	got, err := call(&rest.Config{Host: "https://kube.example", BearerToken: "kube-token",
		TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not used"), ServerName: "kube.example"}}, pool)
	if err != nil {
		t.Fatal(err)
	}
	if want := `200 OK auth="Bearer kube-token" cert="" host="cake-agents.ops.svc:8443"`; got != want {
		t.Errorf("token:\n got %s\nwant %s", got, want)
	}

	certPEM, keyPEM := clientCert(t, "alice")
	got, err = call(&rest.Config{Host: "https://kube.example", TLSClientConfig: rest.TLSClientConfig{CertData: certPEM, KeyData: keyPEM}}, pool)
	if err != nil {
		t.Fatal(err)
	}
	if want := `200 OK auth="" cert="alice" host="cake-agents.ops.svc:8443"`; got != want {
		t.Errorf("client cert:\n got %s\nwant %s", got, want)
	}

	otherCert, _ := clientCert(t, "someone else")
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(otherCert)
	_, err = call(&rest.Config{Host: "https://kube.example", BearerToken: "kube-token"}, otherPool)
	if err == nil || !strings.Contains(err.Error(), "not signed by the CA in ConfigMap cake-agents-serving-ca") {
		t.Errorf("wrong CA: %v", err)
	}
}
