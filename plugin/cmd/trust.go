package cmd

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Where an agent believes identity headers from, judged from its trusted proxy networks.
// The worst network decides: one loopback range undoes any number of narrow ones.
type trustScope int

const (
	// trustProxyOnly: only narrow ranges (at most wideTrustAddresses addresses each),
	// such as the proxy's pods or a dedicated subnet, and the Istio sidecar's address.
	trustProxyOnly trustScope = iota
	// trustPodNetwork: a range wide enough to hold other pods (a pod or node CIDR, an
	// RFC 1918 block, everything): any of them, session pods included, may forge.
	trustPodNetwork
	// trustLoopback: a range holding 127.0.0.1 or ::1, where port-forwarded connections
	// arrive: anyone allowed to port-forward to the agent may forge.
	trustLoopback
)

// wideTrustAddresses is the size above which a trusted range counts as a network of pods
// rather than the proxy's own addresses: wider than an IPv4 /24 (a typical node's pod range).
const wideTrustAddresses = 256

// istioSidecarPrefixes are the addresses an Istio sidecar delivers inbound requests from
// (Envoy's inbound passthrough bind addresses), which the chart trusts with istio.enabled.
var istioSidecarPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.6/32"), netip.MustParsePrefix("::6/128")}

var portForwardAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}

// trustJudgement is what doctor says about an agent's trusted proxy networks.
type trustJudgement struct {
	scope trustScope
	// loopback, wide, narrow and sidecar list the networks of each kind.
	loopback, wide, narrow []string
	sidecar                bool
}

// judgeTrust classifies the trusted proxy networks an agent publishes. Unparsable
// entries (the agent validates them, so only a newer agent could send one) count as wide.
func judgeTrust(cidrs []string) trustJudgement {
	var j trustJudgement
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			j.wide = append(j.wide, c)
			continue
		}
		p = p.Masked()
		switch {
		case containsAny(p, portForwardAddrs):
			j.loopback = append(j.loopback, p.String())
		case isSidecar(p):
			j.sidecar = true
		case prefixSize(p).Cmp(big.NewInt(wideTrustAddresses)) > 0:
			j.wide = append(j.wide, p.String())
		default:
			j.narrow = append(j.narrow, p.String())
		}
	}
	switch {
	case len(j.loopback) > 0:
		j.scope = trustLoopback
	case len(j.wide) > 0:
		j.scope = trustPodNetwork
	default:
		j.scope = trustProxyOnly
	}
	return j
}

func containsAny(p netip.Prefix, addrs []netip.Addr) bool {
	for _, a := range addrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func isSidecar(p netip.Prefix) bool {
	for _, s := range istioSidecarPrefixes {
		if p == s {
			return true
		}
	}
	return false
}

// prefixSize is the number of addresses in p.
func prefixSize(p netip.Prefix) *big.Int {
	return new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
}

// report turns the judgement into doctor's status and line. jwt says what a forger needs
// besides the network (a token signed by the identity provider, when verified).
func (j trustJudgement) report(info *apiv1.HeaderAuthInfo) (status, line string) {
	jwt := ""
	if info.JWTVerified {
		jwt = "; the proxy's JWT is verified against the JWKS"
		if len(info.JWTAudiences) == 0 {
			jwt += " (its audience is not checked: set headerAuth.jwt.audience)"
		}
	}
	switch j.scope {
	case trustLoopback:
		who := "can claim any identity"
		if info.JWTVerified {
			who = "can speak as the proxy (a JWT signed by the identity provider is still required)"
		}
		return "FAIL", fmt.Sprintf("header auth: identity headers are trusted from loopback (%s), where port-forwarded connections arrive: "+
			"anyone allowed to port-forward to the agent %s. Remove it from headerAuth.trustedProxyCIDRs "+
			"(behind Istio the chart trusts the sidecar's 127.0.0.6 by itself)", strings.Join(j.loopback, ", "), who)
	case trustPodNetwork:
		if info.JWTVerified {
			return "ok", fmt.Sprintf("header auth: identity headers are trusted from the pod network (%s), but a forged header also needs a JWT "+
				"signed by the identity provider%s", strings.Join(j.wide, ", "), jwt)
		}
		return "warn", fmt.Sprintf("header auth: identity headers are trusted from the pod network (%s): any pod there, session pods included, "+
			"can claim any identity unless a NetworkPolicy keeps it off the agent's HTTP port (the chart's networkPolicy.enabled). "+
			"Narrow headerAuth.trustedProxyCIDRs to the proxy's addresses, or set headerAuth.jwksURL", strings.Join(j.wide, ", "))
	}
	var from []string
	if j.sidecar {
		from = append(from, "the Istio sidecar (127.0.0.6)")
	}
	from = append(from, j.narrow...)
	line = "header auth: identity headers are trusted only from the proxy: " + strings.Join(from, ", ")
	if j.sidecar {
		line += "; the sidecar hides the client's address, so the NetworkPolicy on the agent's HTTP port is what keeps other pods out"
	}
	return "ok", line + jwt
}
