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

// IssueToken creates a personal access token for ownerID and returns its secret,
// which is shown to the user once and never stored. ttl 0 means no expiry.
func IssueToken(ctx context.Context, st store.Store, ownerID, name string, ttl time.Duration) (string, *store.Token, error) {
	name = strings.TrimSpace(name)
	switch {
	case ownerID == "":
		return "", nil, errors.New("issue token: no owner")
	case name == "":
		return "", nil, errors.New("token name is empty: give the token a name that says where it is used")
	case len(name) > MaxTokenNameLen || strings.ContainsFunc(name, unicode.IsControl):
		return "", nil, fmt.Errorf("token name must be plain text of at most %d bytes", MaxTokenNameLen)
	case ttl < 0:
		return "", nil, errors.New("token lifetime is negative: use a positive duration such as 720h, or 0 for no expiry")
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
	now := time.Now().UTC()
	t := &store.Token{
		ID:        hex.EncodeToString(idb[:]),
		OwnerID:   ownerID,
		Name:      name,
		Hash:      HashToken(secret),
		CreatedAt: now,
	}
	if ttl > 0 {
		exp := now.Add(ttl)
		t.ExpiresAt = &exp
	}
	if err := st.CreateToken(ctx, t); err != nil {
		return "", nil, fmt.Errorf("store token: %w", err)
	}
	return secret, t, nil
}

// TokenAuthenticator authenticates personal access tokens (Authorization: Bearer cka_...).
type TokenAuthenticator struct {
	st      store.Store
	log     hclog.Logger
	now     func() time.Time
	touched *ttlCache[struct{}]
}

// NewTokenAuthenticator returns an authenticator looking tokens up in st.
func NewTokenAuthenticator(st store.Store, log hclog.Logger) *TokenAuthenticator {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &TokenAuthenticator{st: st, log: log, now: time.Now, touched: newTTLCache[struct{}](10000)}
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
	if t.ExpiresAt != nil && !now.Before(*t.ExpiresAt) {
		return nil, false, fmt.Errorf("%w: personal access token %q expired at %s: create a new one", ErrUnauthenticated, t.Name, t.ExpiresAt.UTC().Format(time.RFC3339))
	}
	u, err := a.st.GetUser(ctx, t.OwnerID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, fmt.Errorf("%w: the owner of personal access token %q no longer exists", ErrUnauthenticated, t.Name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("look up owner of personal access token: %w", err)
	}
	a.touch(ctx, t, now)
	return &Identity{
		UserID:      u.ID,
		Username:    u.Subject,
		Groups:      append([]string(nil), u.Groups...),
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Source:      SourceToken,
	}, true, nil
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
