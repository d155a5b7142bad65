// Package auth decides who is calling the agent and whether they may do what they ask.
//
// Authenticators are tried in order (trusted-proxy headers, the caller's Kubernetes
// identity, personal access tokens); the first that recognises a request decides.
// Authorization asks the Kubernetes API with SubjectAccessReview about the virtual
// resource sessions.agents.cake.ai, then applies ownership and visibility rules.
//
// Trust boundaries, in order of the chain:
//   - Identity headers are believed only from the TCP peers in the trusted proxy CIDRs;
//     from anywhere else, loopback included (port-forwarded connections arrive there),
//     they are rejected, never ignored. Behind an Istio sidecar every request arrives
//     from the sidecar's 127.0.0.6 (::6), which the chart then lists; 127.0.0.1 is never
//     listed. Without a JWKS the proxy's JWT is decoded but not verified: the proxy,
//     and the network policy that lets only it reach the plain-HTTP port, are the
//     trust boundary. With a JWKS the JWT must be validly signed, unexpired, of the
//     configured issuer and audience, and agree with the email header.
//   - Bearer tokens other than personal access tokens go to TokenReview. Client
//     certificates are verified here against the cluster's client CA, so the TLS
//     listener must set tls.Config.ClientAuth to tls.RequestClientCert.
//   - Personal access tokens are looked up by their SHA-256; the secret is never stored.
//     Every token expires, and one works only while SubjectAccessReview still lets its
//     owner get sessions (see TokenAuthenticator).
//
// The agent's ServiceAccount therefore needs: create tokenreviews and
// subjectaccessreviews (ClusterRole system:auth-delegator), and get/list/watch on the
// ConfigMap kube-system/extension-apiserver-authentication (Role
// extension-apiserver-authentication-reader in kube-system).
package auth

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Identity is an authenticated caller.
type Identity struct {
	// UserID is the store's id of the user (upserted on first sight).
	UserID string
	// Username and Groups are what SubjectAccessReview is asked about.
	Username string
	Groups   []string
	// UID and Extra come from TokenReview and are passed on to SubjectAccessReview,
	// so authorization sees exactly what the API server saw (webhook authorizers and
	// scoped tokens depend on them).
	UID   string
	Extra map[string][]string
	Email string
	// DisplayName is a human name when the authenticator knows one (the proxy's user
	// header); it is only shown, never used for decisions.
	DisplayName string
	// Source names the authenticator: "header", "kubernetes" or "token".
	Source string
	// TokenExpiresAt is when the personal access token that authenticated the request
	// expires (zero for other credentials): a token created with a token may not
	// outlive it, or mandatory expiry could be renewed forever without the owner ever
	// proving their identity again.
	TokenExpiresAt time.Time
	// Admin is true when the caller may act on every session: SAR allows verb "*" on
	// sessions.agents.cake.ai, or the caller is in one of the configured admin groups.
	// The middleware resolves it on every request (cached briefly) and records it on
	// the stored user, so revoking the RBAC grant revokes admin rights.
	Admin bool
}

// subject is the stable key of the user in the store for this identity's source:
// the email for header users, the user name otherwise.
func (i *Identity) subject() string {
	if i.Source == SourceHeader {
		return i.Email
	}
	return i.Username
}

// Sources of an identity, as stored in store.User.Source.
const (
	SourceHeader     = "header"
	SourceKubernetes = "kubernetes"
	SourceToken      = "token"
)

// Display is how the identity is shown to people (email when known).
func (i *Identity) Display() string {
	if i.Email != "" {
		return i.Email
	}
	return i.Username
}

// ErrUnauthenticated is returned by an authenticator that recognised the request's
// credentials but rejected them (bad token, untrusted identity headers, ...). The
// message of the wrapping error is shown to the caller.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticator recognises one kind of credential.
type Authenticator interface {
	// Authenticate returns (identity, true, nil) when the request carries valid
	// credentials of its kind, (nil, false, nil) when it carries none of its kind, and
	// an error wrapping ErrUnauthenticated when it carries invalid ones.
	Authenticate(r *http.Request) (*Identity, bool, error)
	// Name is shown in the 401 message that lists the ways to authenticate.
	Name() string
}

// Authorizer answers whether an identity may perform a verb on sessions.agents.cake.ai.
type Authorizer interface {
	// Authorize asks about sessions in general.
	Authorize(ctx context.Context, id *Identity, verb string) (allowed bool, reason string, err error)
	// AuthorizeSession asks about one session (the review names it), so RBAC can grant a
	// verb on one session with resourceNames.
	AuthorizeSession(ctx context.Context, id *Identity, verb, sessionID string) (allowed bool, reason string, err error)
}

type ctxKey struct{}

// WithIdentity returns a context carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity stored by the authentication middleware, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(ctxKey{}).(*Identity)
	return id
}
