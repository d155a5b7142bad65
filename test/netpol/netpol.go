// Package netpol evaluates Kubernetes NetworkPolicies without a CNI: given the policies, the
// pods and their namespaces, it answers whether a connection is allowed, following the
// semantics of networking.k8s.io/v1 as documented (kubernetes.io/docs/concepts/services-
// networking/network-policies). The chart tests use it to prove the trust boundary the
// chart's policies draw, path by path.
//
// The model is the one the documentation gives: a pod is isolated for ingress (egress) when
// some policy selecting it lists Ingress (Egress) in its policyTypes; an isolated pod accepts
// (sends) only what the union of those policies' rules allows; a connection needs both the
// source's egress and the destination's ingress. ipBlock peers match addresses; whether an
// ipBlock also matches pod addresses differs between CNIs, so pods match an ipBlock here too
// (the stricter reading for a deny: a policy must not rely on ipBlock missing pod IPs).
package netpol

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Pod is an endpoint inside the cluster.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr
	// Ports are the pod's named container ports (name → number), for policies naming ports.
	Ports map[string]int32
}

// Endpoint is one side of a connection: a pod, or an address outside the cluster.
type Endpoint struct {
	Pod *Pod
	IP  netip.Addr // when Pod is nil
}

func (e Endpoint) String() string {
	if e.Pod != nil {
		return e.Pod.Namespace + "/" + e.Pod.Name
	}
	return e.IP.String()
}

func (e Endpoint) addr() netip.Addr {
	if e.Pod != nil {
		return e.Pod.IP
	}
	return e.IP
}

// Cluster is the world the policies apply to.
type Cluster struct {
	// Namespaces maps each namespace to its labels (kubernetes.io/metadata.name is added).
	Namespaces map[string]map[string]string
	Policies   []networkingv1.NetworkPolicy
}

// Connection is one attempt: From opens a connection to To's Port over Protocol.
type Connection struct {
	From, To Endpoint
	Port     int32
	Protocol corev1.Protocol // default TCP
}

func (c Connection) String() string {
	p := c.Protocol
	if p == "" {
		p = corev1.ProtocolTCP
	}
	return fmt.Sprintf("%s -> %s:%d/%s", c.From, c.To, c.Port, p)
}

// Allowed reports whether the policies let the connection through, and, when they do not,
// which side refused it.
func (cl *Cluster) Allowed(c Connection) (bool, string, error) {
	if c.Protocol == "" {
		c.Protocol = corev1.ProtocolTCP
	}
	if c.From.Pod != nil {
		ok, err := cl.side(c.From.Pod, c.To, c, networkingv1.PolicyTypeEgress)
		if err != nil || !ok {
			return false, "egress of " + c.From.String(), err
		}
	}
	if c.To.Pod != nil {
		ok, err := cl.side(c.To.Pod, c.From, c, networkingv1.PolicyTypeIngress)
		if err != nil || !ok {
			return false, "ingress of " + c.To.String(), err
		}
	}
	return true, "", nil
}

// side decides one direction for pod: isolated or not, and if so whether a rule of a
// policy selecting it admits the peer on the connection's port.
func (cl *Cluster) side(pod *Pod, peer Endpoint, c Connection, dir networkingv1.PolicyType) (bool, error) {
	isolated := false
	for i := range cl.Policies {
		np := &cl.Policies[i]
		if np.Namespace != pod.Namespace {
			continue
		}
		sel, err := selector(&np.Spec.PodSelector)
		if err != nil {
			return false, fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
		}
		if !sel.Matches(labels.Set(pod.Labels)) || !hasType(np, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				ok, err := cl.rule(np, r.From, r.Ports, peer, c, pod)
				if err != nil || ok {
					return ok, err
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				// Named ports of an egress rule name the destination's ports.
				var dst *Pod
				if c.To.Pod != nil {
					dst = c.To.Pod
				}
				ok, err := cl.rule(np, r.To, r.Ports, peer, c, dst)
				if err != nil || ok {
					return ok, err
				}
			}
		}
	}
	return !isolated, nil
}

// hasType applies the documented default: Ingress always, Egress when egress rules exist.
func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, pt := range np.Spec.PolicyTypes {
		if pt == t {
			return true
		}
	}
	return false
}

// rule: an empty peer list admits every peer, an empty port list every port; otherwise both
// must match.
func (cl *Cluster) rule(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peer Endpoint, c Connection, portOwner *Pod) (bool, error) {
	if len(ports) > 0 {
		ok, err := portMatch(ports, c, portOwner)
		if err != nil || !ok {
			return false, err
		}
	}
	if len(peers) == 0 {
		return true, nil
	}
	for _, p := range peers {
		ok, err := cl.peerMatch(np, p, peer)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func portMatch(ports []networkingv1.NetworkPolicyPort, c Connection, owner *Pod) (bool, error) {
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != c.Protocol {
			continue
		}
		if p.Port == nil {
			return true, nil
		}
		if p.Port.Type == intstr.String { // a named port: resolved against the destination pod
			if owner == nil {
				continue // an address outside the cluster has no named ports
			}
			if n, ok := owner.Ports[p.Port.StrVal]; ok && n == c.Port {
				return true, nil
			}
			continue
		}
		lo := p.Port.IntVal
		hi := lo
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if c.Port >= lo && c.Port <= hi {
			return true, nil
		}
	}
	return false, nil
}

// peerMatch: podSelector alone selects pods of the policy's namespace; namespaceSelector
// alone, every pod of the matching namespaces; both, the matching pods of the matching
// namespaces; ipBlock, addresses in cidr and not in except.
func (cl *Cluster) peerMatch(np *networkingv1.NetworkPolicy, p networkingv1.NetworkPolicyPeer, peer Endpoint) (bool, error) {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return false, fmt.Errorf("policy %s/%s: a peer with ipBlock and a selector is invalid", np.Namespace, np.Name)
		}
		return inBlock(p.IPBlock, peer.addr())
	}
	if peer.Pod == nil {
		return false, nil // selectors select pods only
	}
	if p.NamespaceSelector == nil {
		if peer.Pod.Namespace != np.Namespace {
			return false, nil
		}
	} else {
		sel, err := selector(p.NamespaceSelector)
		if err != nil {
			return false, err
		}
		nsLabels, ok := cl.namespaceLabels(peer.Pod.Namespace)
		if !ok {
			return false, fmt.Errorf("pod %s: namespace %s is not in the cluster", peer, peer.Pod.Namespace)
		}
		if !sel.Matches(labels.Set(nsLabels)) {
			return false, nil
		}
	}
	if p.PodSelector == nil {
		return true, nil
	}
	sel, err := selector(p.PodSelector)
	if err != nil {
		return false, err
	}
	return sel.Matches(labels.Set(peer.Pod.Labels)), nil
}

func (cl *Cluster) namespaceLabels(ns string) (map[string]string, bool) {
	l, ok := cl.Namespaces[ns]
	if !ok {
		return nil, false
	}
	out := map[string]string{"kubernetes.io/metadata.name": ns}
	for k, v := range l {
		out[k] = v
	}
	return out, true
}

func inBlock(b *networkingv1.IPBlock, a netip.Addr) (bool, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock cidr %q: %w", b.CIDR, err)
	}
	if !a.IsValid() || !cidr.Contains(a.Unmap()) {
		return false, nil
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(strings.TrimSpace(e))
		if err != nil {
			return false, fmt.Errorf("ipBlock except %q: %w", e, err)
		}
		if ex.Contains(a.Unmap()) {
			return false, nil
		}
	}
	return true, nil
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}
