package netpol

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

func policies(t *testing.T, docs ...string) []networkingv1.NetworkPolicy {
	t.Helper()
	var out []networkingv1.NetworkPolicy
	for _, d := range docs {
		var np networkingv1.NetworkPolicy
		if err := yaml.UnmarshalStrict([]byte(d), &np); err != nil {
			t.Fatal(err)
		}
		out = append(out, np)
	}
	return out
}

func pod(ns, name, ip string, lbl ...string) Endpoint {
	l := map[string]string{}
	for i := 0; i+1 < len(lbl); i += 2 {
		l[lbl[i]] = lbl[i+1]
	}
	return Endpoint{Pod: &Pod{Namespace: ns, Name: name, Labels: l, IP: netip.MustParseAddr(ip), Ports: map[string]int32{"http": 8080}}}
}

func ext(ip string) Endpoint { return Endpoint{IP: netip.MustParseAddr(ip)} }

type tcase struct {
	c    Connection
	want bool
}

func check(t *testing.T, cl *Cluster, cases []tcase) {
	t.Helper()
	for _, tc := range cases {
		got, why, err := cl.Allowed(tc.c)
		if err != nil {
			t.Fatalf("%s: %v", tc.c, err)
		}
		if got != tc.want {
			t.Errorf("%s: allowed %v, want %v (%s)", tc.c, got, tc.want, why)
		}
	}
}

// The documentation's example policy "test-network-policy".
const docExample = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
`

func TestDocumentedExample(t *testing.T) {
	cl := &Cluster{
		Namespaces: map[string]map[string]string{"default": nil, "myproject": {"project": "myproject"}, "other": nil},
		Policies:   policies(t, docExample),
	}
	db := pod("default", "db", "10.1.0.2", "role", "db")
	check(t, cl, []tcase{
		{Connection{From: pod("default", "fe", "10.1.0.3", "role", "frontend"), To: db, Port: 6379}, true},
		{Connection{From: pod("other", "fe", "10.1.0.4", "role", "frontend"), To: db, Port: 6379}, false}, // podSelector alone: own namespace
		{Connection{From: pod("myproject", "any", "10.1.0.5"), To: db, Port: 6379}, true},
		{Connection{From: ext("172.17.0.5"), To: db, Port: 6379}, true},
		{Connection{From: ext("172.17.1.5"), To: db, Port: 6379}, false}, // except
		{Connection{From: pod("default", "fe", "10.1.0.3", "role", "frontend"), To: db, Port: 6380}, false},
		{Connection{From: pod("default", "fe", "10.1.0.3", "role", "frontend"), To: db, Port: 6379, Protocol: corev1.ProtocolUDP}, false},
		{Connection{From: db, To: ext("10.0.0.5"), Port: 5978}, true},
		{Connection{From: db, To: ext("10.0.0.5"), Port: 80}, false},
		{Connection{From: db, To: ext("10.0.1.5"), Port: 5978}, false},
		// Pods no policy selects are not isolated.
		{Connection{From: pod("other", "x", "10.1.0.6"), To: pod("default", "web", "10.1.0.7"), Port: 80}, true},
	})
}

// "default deny all ingress", "allow all ingress" and "default deny all egress" from the docs.
func TestDefaultPolicies(t *testing.T) {
	denyIngress := `
metadata: {name: default-deny-ingress, namespace: a}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`
	allowIngress := `
metadata: {name: allow-all-ingress, namespace: b}
spec:
  podSelector: {}
  ingress: [{}]
  policyTypes: [Ingress]
`
	denyEgress := `
metadata: {name: default-deny-egress, namespace: c}
spec:
  podSelector: {}
  policyTypes: [Egress]
`
	cl := &Cluster{Namespaces: map[string]map[string]string{"a": nil, "b": nil, "c": nil}, Policies: policies(t, denyIngress, allowIngress, denyEgress)}
	check(t, cl, []tcase{
		{Connection{From: pod("b", "x", "10.0.0.1"), To: pod("a", "y", "10.0.0.2"), Port: 80}, false},
		{Connection{From: pod("a", "y", "10.0.0.2"), To: pod("b", "x", "10.0.0.1"), Port: 80}, true}, // egress of a is open
		{Connection{From: ext("8.8.8.8"), To: pod("b", "x", "10.0.0.1"), Port: 1}, true},
		{Connection{From: pod("c", "z", "10.0.0.3"), To: pod("b", "x", "10.0.0.1"), Port: 80}, false},
		{Connection{From: pod("c", "z", "10.0.0.3"), To: ext("8.8.8.8"), Port: 53, Protocol: corev1.ProtocolUDP}, false},
		{Connection{From: pod("b", "x", "10.0.0.1"), To: pod("c", "z", "10.0.0.3"), Port: 80}, true}, // ingress of c is open
	})
}

// The docs' "namespaceSelector and podSelector" distinction: one peer with both selectors is
// an AND, two peers an OR.
func TestSelectorAndVersusOr(t *testing.T) {
	and := `
metadata: {name: and, namespace: and}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {user: alice}}
      podSelector: {matchLabels: {role: client}}
`
	or := `
metadata: {name: or, namespace: or}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {user: alice}}
    - podSelector: {matchLabels: {role: client}}
`
	cl := &Cluster{
		Namespaces: map[string]map[string]string{"and": nil, "or": nil, "alice": {"user": "alice"}, "bob": {"user": "bob"}},
		Policies:   policies(t, and, or),
	}
	check(t, cl, []tcase{
		{Connection{From: pod("alice", "c", "10.0.0.1", "role", "client"), To: pod("and", "s", "10.0.0.9"), Port: 80}, true},
		{Connection{From: pod("alice", "o", "10.0.0.2", "role", "other"), To: pod("and", "s", "10.0.0.9"), Port: 80}, false},
		{Connection{From: pod("bob", "c", "10.0.0.3", "role", "client"), To: pod("and", "s", "10.0.0.9"), Port: 80}, false},
		{Connection{From: pod("alice", "o", "10.0.0.2", "role", "other"), To: pod("or", "s", "10.0.0.8"), Port: 80}, true},
		{Connection{From: pod("bob", "c", "10.0.0.3", "role", "client"), To: pod("or", "s", "10.0.0.8"), Port: 80}, false}, // podSelector alone: namespace "or" only
		{Connection{From: pod("or", "c", "10.0.0.4", "role", "client"), To: pod("or", "s", "10.0.0.8"), Port: 80}, true},
	})
}

// Port ranges (endPort) and named ports, as documented.
func TestPorts(t *testing.T) {
	rng := `
metadata: {name: range, namespace: r}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
    ports: [{protocol: TCP, port: 32000, endPort: 32768}]
`
	named := `
metadata: {name: named, namespace: web}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: http}]
`
	cl := &Cluster{Namespaces: map[string]map[string]string{"r": nil, "web": nil}, Policies: policies(t, rng, named)}
	check(t, cl, []tcase{
		{Connection{From: pod("r", "a", "10.1.0.1"), To: ext("10.0.0.1"), Port: 32000}, true},
		{Connection{From: pod("r", "a", "10.1.0.1"), To: ext("10.0.0.1"), Port: 32768}, true},
		{Connection{From: pod("r", "a", "10.1.0.1"), To: ext("10.0.0.1"), Port: 32769}, false},
		{Connection{From: pod("r", "a", "10.1.0.1"), To: ext("10.0.0.1"), Port: 31999}, false},
		{Connection{From: ext("1.2.3.4"), To: pod("web", "w", "10.1.0.2"), Port: 8080}, true}, // "http" is 8080 on the pod
		{Connection{From: ext("1.2.3.4"), To: pod("web", "w", "10.1.0.2"), Port: 8443}, false},
	})
}
