package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// HeaderConfig configures authentication by identity headers that an authenticating
// proxy (oauth2-proxy and the like) sets after signing the user in.
type HeaderConfig struct {
	// EmailHeader, UserHeader and JWTHeader name the headers the proxy sets; an empty
	// name disables that header.
	EmailHeader string
	UserHeader  string
	JWTHeader   string
	// EmailClaim is the JWT claim holding the email, used when the email header is
	// absent (and checked against it when JWKS verification is on).
	EmailClaim string
	// TrustedProxyCIDRs are the networks the proxy connects from. Identity headers
	// from any other peer are rejected. Loopback is trusted only when listed, because
	// port-forwarded connections arrive on the pod's loopback and anyone with
	// pods/portforward could otherwise claim any identity. With none, header
	// authentication is inert (apiv1.HeaderAuthNoTrustedProxy): every request carrying
	// identity headers is refused, naming this setting.
	TrustedProxyCIDRs []string
	// Groups are given to every header-authenticated user for SubjectAccessReview.
	Groups []string
	// JWKS, when set, is an http(s) URL or a file path of a JSON Web Key Set: the JWT
	// header then becomes mandatory and its signature, expiry and email are verified.
	// Without it the JWT is decoded without verification and the proxy (together
	// with TrustedProxyCIDRs) is the trust boundary.
	JWKS string
	// Issuer, when set, must equal the verified JWT's "iss" claim; Audiences, when
	// set, must include one of the JWT's "aud" values. Both need JWKS: the claims of
	// an unverified token prove nothing. Without Audiences, a token the identity
	// provider issued for any other application it serves is accepted too.
	Issuer    string
	Audiences []string
	// HTTPClient fetches a JWKS URL (default: a client with a 10s timeout).
	HTTPClient *http.Client
	// Disabled turns header authentication off without ignoring the headers: every
	// request that carries one is refused, so a forged identity never passes silently.
	// The header names are then only what to look for; all may be empty.
	Disabled bool
}

// TrustedProxySetting names the setting that lists the proxy networks as the chart, the
// agent's flag and its environment call it, so every message points at the one its
// reader uses.
const TrustedProxySetting = "headerAuth.trustedProxyCIDRs (agent flag --trusted-proxy-cidrs, env AGENT_TRUSTED_PROXY_CIDRS)"

// HeaderAuthenticator authenticates requests by the identity headers of a trusted
// authenticating proxy. See HeaderConfig for the trust model.
type HeaderAuthenticator struct {
	emailHeader, userHeader, jwtHeader string
	emailClaim                         string
	trusted                            []netip.Prefix
	groups                             []string
	keys                               *keySet
	state                              apiv1.HeaderAuthState
	info                               apiv1.HeaderAuthInfo
}

// Limits on header values: real ones are far smaller; bigger ones are hostile.
const (
	maxEmailLen = 254
	maxUserLen  = 256
	maxJWTLen   = 16 << 10
)

// NewHeaderAuthenticator validates cfg and returns the authenticator. With no trusted
// CIDR it is inert rather than an error: the install guide's minimal values enable
// header auth without naming the proxy's network, and an agent that refused to start
// would crash-loop, taking kubeconfig and token users down with it. Inert stays closed:
// identity headers are refused with a message naming TrustedProxySetting, and State
// reports it so the agent's log, whoami and `kubectl agents doctor` can say so.
func NewHeaderAuthenticator(cfg HeaderConfig) (*HeaderAuthenticator, error) {
	h := &HeaderAuthenticator{
		emailHeader: canonicalHeader(cfg.EmailHeader),
		userHeader:  canonicalHeader(cfg.UserHeader),
		jwtHeader:   canonicalHeader(cfg.JWTHeader),
		emailClaim:  cfg.EmailClaim,
		groups:      slices.Clone(cfg.Groups),
	}
	if h.emailClaim == "" {
		h.emailClaim = "email"
	}
	for _, c := range cfg.TrustedProxyCIDRs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("trusted proxy CIDR %q is not a CIDR such as 10.0.0.0/8: %w", c, err)
		}
		h.trusted = append(h.trusted, p.Masked())
	}
	if cfg.Disabled {
		// Nothing is believed, so nothing else needs to be configured.
		h.trusted, h.state = nil, apiv1.HeaderAuthDisabled
		return h, nil
	}
	if h.emailHeader == "" && h.jwtHeader == "" {
		return nil, errors.New("header auth needs an email header or a JWT header name: set --header-auth-email-header or --header-auth-jwt-header")
	}
	h.state = apiv1.HeaderAuthEnabled
	if len(h.trusted) == 0 {
		h.state = apiv1.HeaderAuthNoTrustedProxy
	}
	issuer := strings.TrimSpace(cfg.Issuer)
	var audiences []string
	for _, a := range cfg.Audiences {
		if a = strings.TrimSpace(a); a != "" {
			audiences = append(audiences, a)
		}
	}
	if cfg.JWKS == "" && (issuer != "" || len(audiences) > 0) {
		return nil, errors.New("a JWT issuer or audience is configured but no JWKS: the claims of an unverified token prove nothing; set --jwks-url (headerAuth.jwksURL) or drop --header-auth-jwt-issuer and --header-auth-jwt-audience")
	}
	if cfg.JWKS != "" {
		if h.jwtHeader == "" {
			return nil, errors.New("a JWKS is configured but no JWT header: set --header-auth-jwt-header")
		}
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		if h.state == apiv1.HeaderAuthEnabled {
			h.keys = newKeySet(cfg.JWKS, client)
			h.keys.issuer, h.keys.audiences = issuer, audiences
		}
	}
	h.info = apiv1.HeaderAuthInfo{
		State:             h.state,
		EmailHeader:       h.emailHeader,
		UserHeader:        h.userHeader,
		JWTHeader:         h.jwtHeader,
		TrustedProxyCIDRs: prefixStrings(h.trusted),
		JWTVerified:       cfg.JWKS != "" && h.state == apiv1.HeaderAuthEnabled,
		JWTIssuer:         issuer,
		JWTAudiences:      audiences,
	}
	return h, nil
}

// Info describes the configuration for clients: the header names to probe with, the
// networks believed and whether the JWT is verified (whoami publishes it so
// `kubectl agents doctor` can test the real names and judge the networks).
func (h *HeaderAuthenticator) Info() apiv1.HeaderAuthInfo {
	info := h.info
	info.TrustedProxyCIDRs = slices.Clone(info.TrustedProxyCIDRs)
	info.JWTAudiences = slices.Clone(info.JWTAudiences)
	return info
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

// State says whether identity headers are believed: apiv1.HeaderAuthEnabled,
// apiv1.HeaderAuthDisabled, or apiv1.HeaderAuthNoTrustedProxy when enabled without a
// trusted proxy network (inert: every identity header is refused).
func (h *HeaderAuthenticator) State() apiv1.HeaderAuthState { return h.state }

// Offered reports whether signing in through the proxy can work at all; the
// middleware leaves the proxy out of the ways to authenticate it lists when not.
func (h *HeaderAuthenticator) Offered() bool { return h.state == apiv1.HeaderAuthEnabled }

func canonicalHeader(name string) string {
	name = strings.TrimSpace(name)
	if name == "" {
		return ""
	}
	return http.CanonicalHeaderKey(name)
}

// Name implements Authenticator.
func (h *HeaderAuthenticator) Name() string { return "sign in through the proxy" }

// Authenticate implements Authenticator. A request without identity headers is not
// recognised; one with identity headers is either accepted or rejected, never passed
// on to the next authenticator, so a forged header can't be ignored into anonymity.
func (h *HeaderAuthenticator) Authenticate(r *http.Request) (*Identity, bool, error) {
	var present []string
	for _, name := range []string{h.emailHeader, h.userHeader, h.jwtHeader} {
		if name != "" && len(r.Header.Values(name)) > 0 {
			present = append(present, strings.ToLower(name))
		}
	}
	if len(present) == 0 {
		return nil, false, nil
	}
	switch h.state {
	case apiv1.HeaderAuthDisabled:
		return nil, false, fmt.Errorf("%w: identity headers (%s) are refused: header authentication is disabled on this agent; use your kubeconfig identity or a personal access token",
			ErrUnauthenticated, strings.Join(present, ", "))
	case apiv1.HeaderAuthNoTrustedProxy:
		return nil, false, fmt.Errorf("%w: identity headers (%s) are refused: header authentication is enabled but no trusted proxy network is set, so no proxy is believed; an admin must set %s to the authenticating proxy's network. Until then use your kubeconfig identity or a personal access token",
			ErrUnauthenticated, strings.Join(present, ", "), TrustedProxySetting)
	}
	peer, ok := peerAddr(r.RemoteAddr)
	if !ok || !h.isTrusted(peer) {
		return nil, false, fmt.Errorf("%w: identity headers (%s) from %s, which is not a trusted proxy: sign in through the proxy, or add its network to %s",
			ErrUnauthenticated, strings.Join(present, ", "), peerString(r.RemoteAddr), TrustedProxySetting)
	}
	email, err := h.single(r, h.emailHeader)
	if err != nil {
		return nil, false, err
	}
	user, err := h.single(r, h.userHeader)
	if err != nil {
		return nil, false, err
	}
	token, err := h.single(r, h.jwtHeader)
	if err != nil {
		return nil, false, err
	}
	var claims jwt.MapClaims
	if h.keys != nil {
		if token == "" {
			return nil, false, fmt.Errorf("%w: the proxy sent no JWT in %s, which is required because JWKS verification is configured", ErrUnauthenticated, strings.ToLower(h.jwtHeader))
		}
		if claims, err = h.keys.verify(r.Context(), token); err != nil {
			return nil, false, fmt.Errorf("%w: the proxy's JWT failed verification: %v", ErrUnauthenticated, err)
		}
	}
	id, err := h.identity(email, user, token, claims)
	if err != nil {
		return nil, false, err
	}
	return id, true, nil
}

func (h *HeaderAuthenticator) single(r *http.Request, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	vs := r.Header.Values(name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return strings.TrimSpace(vs[0]), nil
	default:
		// Two values mean a client header got past the proxy next to the proxy's own.
		return "", fmt.Errorf("%w: header %s appears %d times; the proxy must set it exactly once", ErrUnauthenticated, strings.ToLower(name), len(vs))
	}
}

// identity turns header values into an Identity. claims are the verified JWT claims
// (JWKS configured) or nil, in which case the JWT is decoded without verification and
// only when the email header is absent. It is separate from Authenticate so the fuzz
// test can drive it directly.
func (h *HeaderAuthenticator) identity(email, user, token string, claims jwt.MapClaims) (*Identity, error) {
	var claimEmail string
	if claims == nil && email == "" && token != "" {
		var err error
		if claims, err = decodeUnverified(token); err != nil {
			return nil, fmt.Errorf("%w: cannot read the proxy's JWT: %v", ErrUnauthenticated, err)
		}
	}
	if claims != nil {
		v, ok := claims[h.emailClaim]
		if ok {
			s, isString := v.(string)
			if !isString {
				return nil, fmt.Errorf("%w: JWT claim %q is not a string", ErrUnauthenticated, h.emailClaim)
			}
			claimEmail = strings.TrimSpace(s)
		}
		if verified, ok := claims["email_verified"].(bool); ok && !verified && claimEmail != "" {
			return nil, fmt.Errorf("%w: the identity provider has not verified email %q", ErrUnauthenticated, claimEmail)
		}
	}
	switch {
	case email == "":
		email = claimEmail
	case claimEmail != "" && !strings.EqualFold(email, claimEmail):
		return nil, fmt.Errorf("%w: email header %q does not match JWT claim %q=%q", ErrUnauthenticated, email, h.emailClaim, claimEmail)
	}
	if email == "" {
		return nil, fmt.Errorf("%w: the proxy sent identity headers without an email: configure it to set %s or a JWT with claim %q",
			ErrUnauthenticated, strings.ToLower(h.emailHeader), h.emailClaim)
	}
	norm, err := normalizeEmail(email)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if len(user) > maxUserLen || strings.ContainsFunc(user, unicode.IsControl) || !utf8.ValidString(user) {
		return nil, fmt.Errorf("%w: user header is not a plain name of at most %d bytes", ErrUnauthenticated, maxUserLen)
	}
	groups := slices.Clone(h.groups)
	// As for every authenticated Kubernetes user (and for `kubectl auth can-i --as`),
	// so a binding to system:authenticated means the same for header users.
	if !slices.Contains(groups, groupAuthenticated) {
		groups = append(groups, groupAuthenticated)
	}
	return &Identity{
		Username:    norm,
		Email:       norm,
		DisplayName: user,
		Groups:      groups,
		Source:      SourceHeader,
	}, nil
}

// normalizeEmail accepts a bare address and lower-cases it, so "Jane@Example.com" and
// "jane@example.com" are one user; RBAC bindings for header users must therefore name
// the lower-case email.
func normalizeEmail(s string) (string, error) {
	if len(s) > maxEmailLen {
		return "", fmt.Errorf("email is longer than %d bytes", maxEmailLen)
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s || !strings.Contains(s, "@") {
		return "", fmt.Errorf("%q is not a plain email address", s)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", fmt.Errorf("%q is not a plain email address", s)
	}
	return strings.ToLower(s), nil
}

// decodeUnverified reads a JWT's claims without checking its signature: the caller
// has established that the proxy is trusted and the proxy vouches for the token.
func decodeUnverified(token string) (jwt.MapClaims, error) {
	if len(token) > maxJWTLen {
		return nil, fmt.Errorf("token is longer than %d bytes", maxJWTLen)
	}
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		return nil, err
	}
	return claims, nil
}

func (h *HeaderAuthenticator) isTrusted(a netip.Addr) bool {
	for _, p := range h.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr parses http.Request.RemoteAddr, the TCP peer. Forwarded-for headers are
// deliberately ignored: they are set by whoever connects.
func peerAddr(remote string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// peerString shows the peer's address for messages and audit rows without echoing an
// arbitrarily long or odd RemoteAddr.
func peerString(remote string) string {
	if a, ok := peerAddr(remote); ok {
		return a.String()
	}
	if len(remote) > 64 {
		remote = remote[:64]
	}
	return fmt.Sprintf("%q", remote)
}
