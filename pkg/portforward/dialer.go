package portforward

import (
	"errors"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// Dialer opens upgraded port-forward connections to pods through one API server, the
// way kubectl does: the WebSocket protocol first, SPDY when the API server (before
// 1.31) or a proxy in between refuses the WebSocket upgrade. The protocols themselves
// are client-go's; Dialer only builds the pods/portforward URL and insists on
// port-forward protocol v1, which Open speaks. It is safe for concurrent use.
type Dialer struct {
	cfg        *rest.Config
	rest       *rest.RESTClient
	upgrader   spdy.Upgrader
	spdyClient *http.Client
}

// NewDialer returns a Dialer that uses the API server and credentials of cfg.
func NewDialer(cfg *rest.Config) (*Dialer, error) {
	if cfg == nil {
		return nil, errors.New("a Kubernetes REST config is required")
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("build a REST client from the kube config: %w", err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the port-forward SPDY transport from the kube config: %w", err)
	}
	return &Dialer{cfg: cfg, rest: rc, upgrader: upgrader, spdyClient: &http.Client{Transport: rt}}, nil
}

// Dial opens one upgraded connection to namespace/pod; Open forwards ports over it.
// Like client-go's dialers it takes no context: it returns when the upgrade is answered
// or the transport gives up.
func (d *Dialer) Dial(namespace, pod string) (httpstream.Connection, error) {
	u := d.rest.Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("portforward").URL()
	ws, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, d.cfg)
	if err != nil {
		return nil, fmt.Errorf("build the port-forward WebSocket dialer: %w", err)
	}
	dialer := portforward.NewFallbackDialerForStreaming(ws,
		spdy.NewDialerForStreaming(d.upgrader, d.spdyClient, http.MethodPost, u),
		func(err error) bool { return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err) })
	conn, protocol, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, err
	}
	if protocol != portforward.PortForwardProtocolV1Name {
		_ = conn.Close()
		return nil, fmt.Errorf("the API server chose port-forward protocol %q, not %q", protocol, portforward.PortForwardProtocolV1Name)
	}
	return conn, nil
}
