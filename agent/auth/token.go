package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// TokenPrefix starts every personal access token, so authenticators tell them from
// Kubernetes bearer tokens without a lookup and secret scanners can recognise a leaked one.
const TokenPrefix = "cka_"

// tokenTouchInterval bounds how often a token's LastUsedAt is written: a busy CLI
// must not turn every request into a database write.
const tokenTouchInterval = time.Minute

// MaxTokenNameLen bounds a token's name.
const MaxTokenNameLen = 100

// HashToken returns the SHA-256 of a token secret, the only form in which the store
// ever sees it. A fast hash is right here: the secret has 256 bits of entropy, so
// there is nothing for a slow hash to protect against.
func HashToken(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Token lifetimes when the agent is not told otherwise (--token-default-ttl,
// --token-max-ttl). Every token expires: a leaked one stops working by itself.
const (
	DefaultTokenTTL = 30 * 24 * time.Hour
	DefaultTokenMax = 90 * 24 * time.Hour
)

// OwnerAccessVerb is the verb on sessions.agents.cake.ai a token's owner must still hold
// for the token to work: the least any user of the agent has.
const OwnerAccessVerb = apiv1.VerbGet

// IssueToken creates a personal access token for ownerID that expires after ttl and
// returns its secret, which is shown to the user once and never stored.
func IssueToken(ctx context.Context, st store.Store, ownerID, name string, ttl time.Duration) (string, *store.Token, error) {
	if ttl <= 0 {
		return "", nil, errors.New("token lifetime must be positive: every token expires; use a duration such as 720h")
	}
	now := time.Now().UTC()
	return IssueTokenUntil(ctx, st, ownerID, name, now, now.Add(ttl))
}

// IssueTokenUntil is IssueToken with the creation and expiry times given (the server's
// clock decides them).
func IssueTokenUntil(ctx context.Context, st store.Store, ownerID, name string, createdAt, expiresAt time.Time) (string, *store.Token, error) {
	name = strings.TrimSpace(name)
	switch {
	case ownerID == "":
		return "", nil, errors.New("issue token: no owner")
	case name == "":
		return "", nil, errors.New("token name is empty: give the token a name that says where it is used")
	case len(name) > MaxTokenNameLen || strings.ContainsFunc(name, unicode.IsControl):
		return "", nil, fmt.Errorf("token name must be plain text of at most %d bytes", MaxTokenNameLen)
	case !expiresAt.After(createdAt):
		return "", nil, errors.New("token lifetime must be positive: every token expires; use a duration such as 720h")
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", nil, fmt.Errorf("generate token id: %w", err)
	}
	exp := expiresAt.UTC()
	t := &store.Token{
		ID:        hex.EncodeToString(idb[:]),
		OwnerID:   ownerID,
		Name:      name,
		Hash:      HashToken(secret),
		CreatedAt: createdAt.UTC(),
		ExpiresAt: &exp,
	}
	if err := st.CreateToken(ctx, t); err != nil {
		return "", nil, fmt.Errorf("store token: %w", err)
	}
	return secret, t, nil
}

// EffectiveExpiry is when t stops working: its ExpiresAt, or, for a token stored
// without one (issued before every token had to expire), maxTTL after its creation.
func EffectiveExpiry(t *store.Token, maxTTL time.Duration) time.Time {
	if t.ExpiresAt != nil {
		return *t.ExpiresAt
	}
	if maxTTL <= 0 {
		maxTTL = DefaultTokenMax
	}
	return t.CreatedAt.Add(maxTTL)
}

// TokenAuthenticator authenticates personal access tokens (Authorization: Bearer cka_...).
//
// A token acts as its owner with the owner's stored identity: the user name and the
// groups Kubernetes (TokenReview, the client certificate) or the proxy reported at the
// owner's latest sign-in, which every such request refreshes. Kubernetes keeps no
// directory of users, so the agent cannot learn an owner's groups without the owner's
// own credential; instead, with WithOwnerAccess, every use asks SubjectAccessReview
// whether the owner may still get sessions, and the token stops working (401) as soon as
// RBAC no longer lets the owner in. A group the owner left in the identity provider is
// not seen until the owner signs in again or the token expires; expiry is mandatory and
// bounded for that reason, and an admin can revoke every token of a user at once.
type TokenAuthenticator struct {
	st      store.Store
	log     hclog.Logger
	now     func() time.Time
	touched *ttlCache[struct{}]
	maxTTL  time.Duration
	owners  Authorizer
}

// TokenOption changes NewTokenAuthenticator's behaviour.
type TokenOption func(*TokenAuthenticator)

// WithMaxTokenTTL sets the longest lifetime of a token; tokens stored without an expiry
// expire this long after their creation (default DefaultTokenMax).
func WithMaxTokenTTL(d time.Duration) TokenOption {
	return func(a *TokenAuthenticator) {
		if d > 0 {
			a.maxTTL = d
		}
	}
}

// WithOwnerAccess makes every use of a token ask authz whether its owner may still
// OwnerAccessVerb sessions, or, when authz is also an AdminResolver (SARAuthorizer
// is), is still an admin (a member of an admin group needs no RBAC grant); when
// neither, the token is refused. An error asking it means the token cannot be checked:
// the request fails with 503, never passes.
func WithOwnerAccess(authz Authorizer) TokenOption {
	return func(a *TokenAuthenticator) { a.owners = authz }
}

// NewTokenAuthenticator returns an authenticator looking tokens up in st.
func NewTokenAuthenticator(st store.Store, log hclog.Logger, opts ...TokenOption) *TokenAuthenticator {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	a := &TokenAuthenticator{st: st, log: log, now: time.Now, touched: newTTLCache[struct{}](10000), maxTTL: DefaultTokenMax}
	for _, o := range opts {
		o(a)
	}
	return a
}

// Name implements Authenticator.
func (a *TokenAuthenticator) Name() string {
	return "a personal access token (Authorization: Bearer " + TokenPrefix + "...)"
}

// Authenticate implements Authenticator.
func (a *TokenAuthenticator) Authenticate(r *http.Request) (*Identity, bool, error) {
	secret, ok := bearerToken(r)
	if !ok || !strings.HasPrefix(secret, TokenPrefix) {
		return nil, false, nil
	}
	ctx := r.Context()
	t, err := a.st.GetTokenByHash(ctx, HashToken(secret))
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, fmt.Errorf("%w: personal access token not recognised (revoked, or never issued by this agent): create a new one", ErrUnauthenticated)
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up personal access token: %w", err)
	}
	now := a.now()
	expires := EffectiveExpiry(t, a.maxTTL)
	if !now.Before(expires) {
		return nil, false, fmt.Errorf("%w: personal access token %q expired at %s: create a new one", ErrUnauthenticated, t.Name, expires.UTC().Format(time.RFC3339))
	}
	u, err := a.st.GetUser(ctx, t.OwnerID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, fmt.Errorf("%w: the owner of personal access token %q no longer exists", ErrUnauthenticated, t.Name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up owner of personal access token: %w", err)
	}
	id := &Identity{
		UserID:         u.ID,
		Username:       u.Subject,
		Groups:         append([]string(nil), u.Groups...),
		Email:          u.Email,
		DisplayName:    u.DisplayName,
		Source:         SourceToken,
		TokenExpiresAt: expires,
	}
	if a.owners != nil {
		allowed, reason, err := a.owners.Authorize(ctx, id, OwnerAccessVerb)
		if ar, ok := a.owners.(AdminResolver); ok && err == nil && !allowed {
			allowed, err = ar.Admin(ctx, id)
		}
		if err != nil {
			return nil, false, fmt.Errorf("check that the owner of personal access token %q may still use the agent: %w", t.Name, err)
		}
		if !allowed {
			why := ""
			if reason != "" {
				why = " (" + reason + ")"
			}
			return nil, false, fmt.Errorf("%w: personal access token %q no longer works: its owner %s may not %s %s.%s any more%s", ErrUnauthenticated,
				t.Name, id.Display(), OwnerAccessVerb, apiv1.Resource, apiv1.Group, why)
		}
	}
	a.touch(ctx, t, now)
	return id, true, nil
}

// touch records the token's last use at most once per tokenTouchInterval per token.
// A failure only costs an out-of-date LastUsedAt, so it is logged, not returned.
func (a *TokenAuthenticator) touch(ctx context.Context, t *store.Token, now time.Time) {
	if t.LastUsedAt != nil && now.Sub(*t.LastUsedAt) < tokenTouchInterval {
		return
	}
	if _, recent := a.touched.get(t.ID); recent {
		return
	}
	a.touched.put(t.ID, struct{}{}, tokenTouchInterval)
	if err := a.st.TouchToken(ctx, t.ID, now.UTC()); err != nil {
		a.log.Warn("record token use failed", "token_id", t.ID, "error", err)
	}
}

// bearerToken returns the credential of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
