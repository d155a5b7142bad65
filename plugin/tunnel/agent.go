package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// DefaultAgentNamespace is where the chart's documented install puts the agent.
const DefaultAgentNamespace = "cake-agents"

// AgentSelector selects the agent's pods (never session pods, which carry another name).
var AgentSelector = labels.SelectorFromSet(labels.Set{
	apiv1.LabelName:      apiv1.AgentAppName,
	apiv1.LabelComponent: apiv1.AgentComponent,
})

// ErrNoAgent is returned (wrapped, with the namespace and an install hint) when no agent
// pod exists in the namespace searched.
var ErrNoAgent = errors.New("no agent found")

// FindAgentPod returns a Ready, not-terminating agent pod in namespace, preferring the
// newest so a rollout moves users to the new version.
func FindAgentPod(ctx context.Context, kube kubernetes.Interface, namespace string) (*corev1.Pod, error) {
	pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: AgentSelector.String()})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("%w: you may not list pods in namespace %q to find the agent: missing permission \"list pods\" there "+
				"(the chart's cake-agents-user ClusterRole grants it), or use --server URL with a token from `kubectl agents login`",
				ErrForbidden, namespace)
		}
		return nil, fmt.Errorf("find the agent in namespace %q: %w", namespace, err)
	}
	if len(pods.Items) == 0 {
		return nil, fmt.Errorf("%w in namespace %q (no pods labelled %s): install it with "+
			"`helm upgrade --install cake-agents charts/cake-agents -n %s --create-namespace`, "+
			"or point at the namespace it runs in with --agent-namespace",
			ErrNoAgent, namespace, AgentSelector.String(), namespace)
	}
	var ready []corev1.Pod
	var notReady []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && podReady(&p) {
			ready = append(ready, p)
			continue
		}
		notReady = append(notReady, fmt.Sprintf("%s (%s)", p.Name, podStatus(&p)))
	}
	if len(ready) == 0 {
		return nil, fmt.Errorf("no Ready agent pod in namespace %q: %s; see `kubectl -n %s describe pods -l %s`",
			namespace, strings.Join(notReady, ", "), namespace, AgentSelector.String())
	}
	sort.Slice(ready, func(i, j int) bool {
		return ready[j].CreationTimestamp.Before(&ready[i].CreationTimestamp)
	})
	return &ready[0], nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
	}
	if p.Status.Phase != corev1.PodRunning {
		return string(p.Status.Phase)
	}
	return "not ready"
}

// ServingCA reads the CA that signs the agent's serving certificate from the ConfigMap
// the agent publishes beside itself.
func ServingCA(ctx context.Context, kube kubernetes.Interface, namespace string) (*x509.CertPool, error) {
	cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, apiv1.AgentCertMapName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("the agent's CA ConfigMap %s/%s does not exist yet: the agent publishes it at start; "+
			"check the agent's logs (`kubectl -n %s logs -l %s`)", namespace, apiv1.AgentCertMapName, namespace, AgentSelector.String())
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("%w: you may not read ConfigMap %s/%s, which holds the CA to verify the agent: missing permission \"get configmaps\" there "+
			"(the chart's cake-agents-user ClusterRole grants it)", ErrForbidden, namespace, apiv1.AgentCertMapName)
	case err != nil:
		return nil, fmt.Errorf("read the agent's CA ConfigMap %s/%s: %w", namespace, apiv1.AgentCertMapName, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.crt"])) {
		return nil, fmt.Errorf("ConfigMap %s/%s has no PEM certificate under key ca.crt", namespace, apiv1.AgentCertMapName)
	}
	return pool, nil
}

// VerifyWithPool returns a tls.Config VerifyConnection hook that accepts a server
// certificate chaining to pool, whatever names it carries. Over a port-forward the
// API server has already pinned which pod we reach; the CA (specific to the agent
// install) proves the pod holds the agent's key, and the agent need not know every
// host name a user may call it by.
func VerifyWithPool(pool *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the agent presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("the agent's certificate is not signed by the CA in ConfigMap %s: %w", apiv1.AgentCertMapName, err)
		}
		return nil
	}
}

// AgentTunnel reaches the agent's HTTPS port through a port-forward. It finds the agent
// pod lazily and finds it again when the pod it used stops answering (a rollout, an
// eviction): the dial that notices fails, the next one reaches the new pod. That is how
// a long `attach` survives the agent being replaced.
type AgentTunnel struct {
	Namespace  string
	kube       kubernetes.Interface
	restConfig *rest.Config

	mu  sync.Mutex
	fwd *Forwarder
}

// NewAgentTunnel returns a tunnel to the agent in namespace.
func NewAgentTunnel(kube kubernetes.Interface, restConfig *rest.Config, namespace string) *AgentTunnel {
	return &AgentTunnel{Namespace: namespace, kube: kube, restConfig: restConfig}
}

// Pod returns the agent pod in use ("" before the first dial).
func (a *AgentTunnel) Pod() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fwd == nil {
		return ""
	}
	return a.fwd.Pod
}

func (a *AgentTunnel) forwarder(ctx context.Context) (*Forwarder, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fwd != nil {
		return a.fwd, nil
	}
	pod, err := FindAgentPod(ctx, a.kube, a.Namespace)
	if err != nil {
		return nil, err
	}
	fwd, err := NewForwarder(a.restConfig, a.Namespace, pod.Name)
	if err != nil {
		return nil, err
	}
	// A pod that refuses forwarded connections is going away (rollout) or broken:
	// the next dial looks for the agent again instead of insisting on it.
	fwd.onRemoteError = func(error) { a.forget(fwd) }
	a.fwd = fwd
	return fwd, nil
}

func (a *AgentTunnel) forget(fwd *Forwarder) {
	a.mu.Lock()
	if a.fwd == fwd {
		a.fwd = nil
	}
	a.mu.Unlock()
	_ = fwd.Close()
}

// DialContext opens a connection to the agent's HTTPS port; network and address are
// ignored (the destination is the agent pod).
func (a *AgentTunnel) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		fwd, err := a.forwarder(ctx)
		if err != nil {
			return nil, err
		}
		c, err := fwd.DialContext(ctx, apiv1.AgentHTTPSPort)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrForbidden) || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
		// The pod may be gone (rollout, eviction): look for the agent again.
		a.forget(fwd)
	}
}

// Close closes the port-forward connection.
func (a *AgentTunnel) Close() error {
	a.mu.Lock()
	fwd := a.fwd
	a.fwd = nil
	a.mu.Unlock()
	if fwd != nil {
		return fwd.Close()
	}
	return nil
}

// AgentURL is the base URL the plugin uses over the tunnel. The host is never resolved
// (every connection is a port-forward stream); it names the Service for readable errors.
func AgentURL(namespace string) string {
	return fmt.Sprintf("https://%s.%s.svc:%d", apiv1.AgentAppName, namespace, apiv1.AgentHTTPSPort)
}

// HTTPClient returns an http.Client whose connections are TLS over dial, verified with
// caPool, carrying the user's kube identity from restConfig: the client certificate
// (also from exec plugins) in the TLS handshake, bearer tokens (static, token file,
// exec or auth-provider plugins) in the Authorization header.
func HTTPClient(restConfig *rest.Config, caPool *x509.CertPool, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*http.Client, error) {
	tc, err := restConfig.TransportConfig()
	if err != nil {
		return nil, fmt.Errorf("read credentials from the kubeconfig: %w", err)
	}
	// The API server's CA and name do not apply to the agent.
	tc.TLS.CAData, tc.TLS.CAFile, tc.TLS.ServerName, tc.TLS.Insecure = nil, "", "", false
	tlsConfig, err := transport.TLSConfigFor(tc)
	if err != nil {
		return nil, fmt.Errorf("read the client certificate from the kubeconfig: %w", err)
	}
	if tlsConfig == nil {
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tlsConfig.RootCAs = nil
	// Verification happens in VerifyConnection, against the agent's CA (see VerifyWithPool).
	tlsConfig.InsecureSkipVerify = true //nolint:gosec // replaced by VerifyConnection below
	tlsConfig.VerifyConnection = VerifyWithPool(caPool)
	base := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 30 * time.Second,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
		Proxy:               nil,
	}
	rt, err := transport.HTTPWrappersForConfig(tc, base)
	if err != nil {
		return nil, fmt.Errorf("read credentials from the kubeconfig: %w", err)
	}
	return &http.Client{Transport: rt}, nil
}
