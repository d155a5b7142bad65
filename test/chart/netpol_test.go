package chart

import (
	"net/netip"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/cakeai/cake-agents/internal/figures"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/netpol"
)

// TestNetworkPolicyMatrix evaluates the chart's rendered NetworkPolicies (test/netpol, the
// documented semantics, no CNI needed) for every path the trust boundary is about, under every
// values file and the shapes that change the policies: the agent's identity-header port only
// from the authenticating proxy (and the Istio gateway with istio.enabled, and helm test);
// session pods reached only by the agent, on 4096; sessions reaching DNS and the outside but
// never the agent, the Kubernetes API, other sessions, nodes or cloud metadata.
func TestNetworkPolicyMatrix(t *testing.T) {
	type variant struct {
		name string
		args []string
	}
	variants := []variant{{"defaults", nil}}
	for _, f := range valuesFiles(t) {
		variants = append(variants, variant{f.name, []string{"-f", f.path}})
	}
	variants = append(variants,
		variant{"istio with header auth", []string{"--set", "istio.enabled=true", "--set", "controlPlane.host=agents.example.com",
			"--set", "headerAuth.enabled=true"}},
		variant{"in-cluster model gateway", []string{"--set", "litellm.baseURL=http://litellm.litellm.svc.cluster.local:4000/v1",
			"--set", "sessionNamespace.name=agent-sessions", "--set", "sessionNamespace.create=true"}},
	)
	paths, wrong := 0, 0
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			objs := render(t, "cake-agents", v.args...)
			w := world(t, objs)
			for _, p := range w.paths {
				paths++
				got, why, err := w.cluster.Allowed(p.conn)
				if err != nil {
					t.Fatalf("%s: %v", p.what, err)
				}
				if got != p.allow {
					wrong++
					t.Errorf("%s (%s): allowed=%v, want %v (refused by %s)", p.what, p.conn, got, p.allow, why)
				}
			}
		})
	}
	line, err := figures.Record("security", "network policy matrix", "%d paths over %d installs, %d wrong", paths, len(variants), wrong)
	if err != nil {
		t.Errorf("record figure: %v", err)
	}
	t.Log(line)
}

type path struct {
	what  string
	conn  netpol.Connection
	allow bool
}

type policyWorld struct {
	cluster *netpol.Cluster
	paths   []path
}

// world builds a cluster around one rendered install: the agent and helm test pods as the
// chart renders them, two session pods labelled as the agent labels them, the proxy, the Istio
// gateway, cluster DNS, an in-cluster model gateway, unrelated pods, and outside addresses;
// then lists the paths and what each must be.
func world(t *testing.T, objs []*unstructured.Unstructured) *policyWorld {
	t.Helper()
	releaseNS := "cake-agents"
	var agentLabels, testLabels map[string]string
	var policies []networkingv1.NetworkPolicy
	sessionNS := releaseNS
	istio, ingress := false, false
	litellmNS := ""
	for _, o := range objs {
		switch o.GetKind() {
		case "NetworkPolicy":
			var np networkingv1.NetworkPolicy
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &np); err != nil {
				t.Fatal(err)
			}
			if np.Namespace == "" {
				np.Namespace = releaseNS
			}
			policies = append(policies, np)
		case "Deployment":
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				t.Fatal(err)
			}
			if d.Spec.Template.Labels["app.kubernetes.io/component"] != "control-plane" {
				continue
			}
			agentLabels = d.Spec.Template.Labels
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					switch e.Name {
					case "AGENT_SESSION_NAMESPACE":
						if e.Value != "" {
							sessionNS = e.Value
						}
					case "LITELLM_BASE_URL":
						if strings.Contains(e.Value, ".litellm.svc") {
							litellmNS = "litellm"
						}
					}
				}
			}
		case "Pod":
			var p corev1.Pod
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &p); err != nil {
				t.Fatal(err)
			}
			if p.Annotations["helm.sh/hook"] == "test" {
				testLabels = p.Labels
			}
		case "VirtualService", "Gateway":
			istio = true
		case "Ingress":
			ingress = true
		}
	}
	if agentLabels == nil || testLabels == nil {
		t.Fatalf("the render has no agent Deployment or helm test pod (agent %v, test %v)", agentLabels, testLabels)
	}
	if len(policies) == 0 {
		t.Fatal("the chart rendered no NetworkPolicy (networkPolicy.enabled is on by default)")
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range []string{releaseNS, sessionNS, "kube-system", "oauth2-proxy", "istio-system", "ingress-nginx", "litellm", "other"} {
		nsLabels[ns] = map[string]string{}
	}
	ip := 10
	mk := func(ns, name string, labels map[string]string, ports map[string]int32) netpol.Endpoint {
		ip++
		return netpol.Endpoint{Pod: &netpol.Pod{Namespace: ns, Name: name, Labels: labels, IP: netip.AddrFrom4([4]byte{10, 244, 0, byte(ip)}), Ports: ports}}
	}
	session := func(name string) netpol.Endpoint {
		return mk(sessionNS, name, map[string]string{
			apiv1.LabelName: apiv1.SessionAppName, apiv1.LabelInstance: releaseName, apiv1.LabelSessionID: name,
		}, map[string]int32{"opencode": 4096})
	}
	agent := mk(releaseNS, "agent", agentLabels, map[string]int32{"http": apiv1.AgentHTTPPort, "https": apiv1.AgentHTTPSPort})
	helmTest := mk(releaseNS, "helm-test", testLabels, nil)
	sessA, sessB := session("session-a"), session("session-b")
	proxy := mk("oauth2-proxy", "oauth2-proxy", map[string]string{"app.kubernetes.io/name": "oauth2-proxy"}, nil)
	gateway := mk("istio-system", "istio-ingressgateway", map[string]string{"istio": "ingressgateway"}, nil)
	ingressController := mk("ingress-nginx", "ingress-nginx-controller", map[string]string{"app.kubernetes.io/name": "ingress-nginx"}, nil)
	dns := mk("kube-system", "coredns", map[string]string{"k8s-app": "kube-dns"}, nil)
	model := mk("litellm", "litellm", map[string]string{"app": "litellm"}, map[string]int32{"http": 4000})
	stranger := mk(releaseNS, "stranger", map[string]string{"app": "something-else"}, nil)
	otherNS := mk("other", "other", map[string]string{"app": "other"}, nil)
	ext := func(s string) netpol.Endpoint { return netpol.Endpoint{IP: netip.MustParseAddr(s)} }
	apiServer := ext("10.0.0.1") // a node's or control plane's private address
	metadata := ext("169.254.169.254")
	gitHost := ext("140.82.112.3")
	publicModel := ext("104.18.6.192")

	udp := corev1.ProtocolUDP
	var ps []path
	add := func(what string, from, to netpol.Endpoint, port int32, allow bool) {
		ps = append(ps, path{what: what, conn: netpol.Connection{From: from, To: to, Port: port}, allow: allow})
	}
	// The agent's identity-header port.
	add("the proxy reaches the agent's HTTP port", proxy, agent, apiv1.AgentHTTPPort, true)
	add("helm test reaches the agent's HTTP port", helmTest, agent, apiv1.AgentHTTPPort, true)
	add("the Istio gateway reaches the agent's HTTP port", gateway, agent, apiv1.AgentHTTPPort, istio)
	add("the ingress controller reaches the agent's HTTP port (with the chart's Ingress)", ingressController, agent, apiv1.AgentHTTPPort, ingress)
	add("the ingress controller cannot reach a session", ingressController, sessA, 4096, false)
	add("a session cannot reach the agent's HTTP port (forged identity headers)", sessA, agent, apiv1.AgentHTTPPort, false)
	add("a session cannot reach the agent's HTTPS port", sessA, agent, apiv1.AgentHTTPSPort, false)
	add("another pod of the namespace cannot reach the agent's HTTP port", stranger, agent, apiv1.AgentHTTPPort, false)
	add("a pod of another namespace cannot reach the agent's HTTP port", otherNS, agent, apiv1.AgentHTTPPort, false)
	add("a pod of another namespace cannot reach the agent's HTTPS port", otherNS, agent, apiv1.AgentHTTPSPort, false)
	add("the outside cannot reach the agent directly", publicModel, agent, apiv1.AgentHTTPPort, false)
	// Session pods, in.
	add("the agent reaches a session's OpenCode", agent, sessA, 4096, true)
	add("a session cannot reach another session's OpenCode", sessB, sessA, 4096, false)
	add("a session cannot reach another session on any port", sessB, sessA, 22, false)
	add("another pod cannot reach a session's OpenCode", stranger, sessA, 4096, false)
	add("a pod of another namespace cannot reach a session's OpenCode", otherNS, sessA, 4096, false)
	add("the proxy cannot reach a session's OpenCode", proxy, sessA, 4096, false)
	add("the agent cannot reach a session's other ports", agent, sessA, 22, false)
	// Session pods, out.
	ps = append(ps, path{"a session resolves names (UDP)", netpol.Connection{From: sessA, To: dns, Port: 53, Protocol: udp}, true})
	add("a session resolves names (TCP)", sessA, dns, 53, true)
	add("a session cannot reach DNS pods on other ports", sessA, dns, 8080, false)
	add("a session clones from a git host", sessA, gitHost, 443, true)
	add("a session reaches a public model gateway", sessA, publicModel, 443, true)
	add("a session cannot reach the Kubernetes API", sessA, apiServer, 6443, false)
	add("a session cannot reach the Kubernetes API's Service address", sessA, ext("10.96.0.1"), 443, false)
	add("a session cannot reach cloud metadata", sessA, metadata, 80, false)
	add("a session cannot reach cloud metadata over IPv6", sessA, ext("fd00:ec2::254"), 80, false)
	add("a session cannot reach a private IPv6 address", sessA, ext("fd12:3456::10"), 443, false)
	add("a session reaches a public IPv6 host", sessA, ext("2606:4700::1111"), 443, true)
	add("a session cannot reach a node's kubelet", sessA, ext("192.168.1.10"), 10250, false)
	add("a session cannot reach another namespace's pods", sessA, otherNS, 80, false)
	add("a session reaches the in-cluster model gateway litellm.baseURL names", sessA, model, 4000, litellmNS != "")
	return &policyWorld{cluster: &netpol.Cluster{Namespaces: nsLabels, Policies: policies}, paths: ps}
}
