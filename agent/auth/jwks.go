package auth

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key refresh policy: keys are re-read when older than jwksMaxAge, and when a token
// names an unknown key id (the identity provider rotated), but never more often than
// jwksMinRefresh so a stream of tokens with made-up key ids can't turn into a stream
// of fetches.
const (
	jwksMaxAge     = time.Hour
	jwksMinRefresh = 30 * time.Second
	jwksMaxBytes   = 1 << 20
)

// jwtAlgorithms are the asymmetric algorithms accepted from the proxy. "none" and the
// HMAC family are never accepted: a public JWKS must not become a shared secret.
var jwtAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// keySet is a JSON Web Key Set read from a URL or a file and refreshed on demand.
type keySet struct {
	source string
	client *http.Client
	now    func() time.Time
	// issuer and audiences, when set, are required of every token (iss equal, one
	// of audiences in aud).
	issuer    string
	audiences []string

	mu          sync.Mutex
	keys        []jwk
	fetchedAt   time.Time
	lastAttempt time.Time
	lastErr     error
}

type jwk struct {
	kid string
	key crypto.PublicKey
}

func newKeySet(source string, client *http.Client) *keySet {
	return &keySet{source: source, client: client, now: time.Now}
}

// verify checks token's signature against the set, its time claims (exp required) and,
// when configured, its issuer and audience, and returns its claims.
func (k *keySet) verify(ctx context.Context, token string) (jwt.MapClaims, error) {
	if len(token) > maxJWTLen {
		return nil, fmt.Errorf("token is longer than %d bytes", maxJWTLen)
	}
	claims := jwt.MapClaims{}
	opts := []jwt.ParserOption{jwt.WithValidMethods(jwtAlgorithms), jwt.WithLeeway(time.Minute), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(k.now)}
	if k.issuer != "" {
		opts = append(opts, jwt.WithIssuer(k.issuer))
	}
	if len(k.audiences) > 0 {
		opts = append(opts, jwt.WithAudience(k.audiences...))
	}
	p := jwt.NewParser(opts...)
	_, err := p.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		keys, err := k.lookup(ctx, kid)
		if err != nil {
			return nil, err
		}
		set := jwt.VerificationKeySet{}
		for _, key := range keys {
			set.Keys = append(set.Keys, key)
		}
		return set, nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, fmt.Errorf("issuer (iss) %s is not the configured %q", claimString(claims["iss"]), k.issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, fmt.Errorf("audience (aud) %s names none of the configured %q", claimString(claims["aud"]), k.audiences)
	case err != nil:
		return nil, err
	}
	return claims, nil
}

// claimString shows a claim's value in a message, bounded: it comes from the caller.
func claimString(v any) string {
	if v == nil {
		return "(missing)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "(unreadable)"
	}
	if len(b) > 200 {
		b = append(b[:200], "..."...)
	}
	return string(b)
}

// lookup returns the keys a token with key id kid may be signed with: the key with
// that id, or every key when the token names none.
func (k *keySet) lookup(ctx context.Context, kid string) ([]crypto.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	found := k.match(kid)
	stale := now.Sub(k.fetchedAt) > jwksMaxAge
	if (len(found) == 0 || stale) && now.Sub(k.lastAttempt) >= jwksMinRefresh {
		k.lastAttempt = now
		keys, err := k.fetch(ctx)
		k.lastErr = err
		if err == nil {
			k.keys, k.fetchedAt = keys, now
			found = k.match(kid)
		}
	}
	if len(found) == 0 {
		if k.lastErr != nil {
			return nil, fmt.Errorf("no usable key (reading the JWKS failed: %v)", k.lastErr)
		}
		if kid != "" {
			return nil, fmt.Errorf("no key with id %q in the JWKS", kid)
		}
		return nil, errors.New("the JWKS holds no usable key")
	}
	return found, nil
}

func (k *keySet) match(kid string) []crypto.PublicKey {
	var out []crypto.PublicKey
	for _, key := range k.keys {
		if kid == "" || key.kid == kid {
			out = append(out, key.key)
		}
	}
	return out
}

func (k *keySet) fetch(ctx context.Context) ([]jwk, error) {
	var data []byte
	if strings.HasPrefix(k.source, "https://") || strings.HasPrefix(k.source, "http://") {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.source, nil)
		if err != nil {
			return nil, fmt.Errorf("build JWKS request: %w", err)
		}
		resp, err := k.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetch JWKS: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetch JWKS: HTTP status %s", resp.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1)); err != nil {
			return nil, fmt.Errorf("read JWKS: %w", err)
		}
	} else {
		var err error
		if data, err = os.ReadFile(strings.TrimPrefix(k.source, "file://")); err != nil {
			return nil, fmt.Errorf("read JWKS file: %w", err)
		}
	}
	if len(data) > jwksMaxBytes {
		return nil, fmt.Errorf("JWKS is larger than %d bytes", jwksMaxBytes)
	}
	return parseJWKS(data)
}

// parseJWKS decodes the public signing keys of a JWKS (RFC 7517): RSA (2048 bits or
// more), EC P-256/384/521 and Ed25519. Encryption keys and unknown key types are
// skipped so one odd key does not disable the rest.
func parseJWKS(data []byte) ([]jwk, error) {
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Crv string `json:"crv"`
			N   string `json:"n"`
			E   string `json:"e"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not valid JSON: %w", err)
	}
	var out []jwk
	var errs []error
	for i, raw := range doc.Keys {
		if raw.Use != "" && raw.Use != "sig" {
			continue
		}
		key, err := decodeJWK(raw.Kty, raw.Crv, raw.N, raw.E, raw.X, raw.Y)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %d (kid %q): %w", i, raw.Kid, err))
			continue
		}
		out = append(out, jwk{kid: raw.Kid, key: key})
	}
	if len(out) == 0 {
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return nil, errors.New("JWKS holds no signing key")
	}
	return out, nil
}

func decodeJWK(kty, crv, n, e, x, y string) (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding
	switch kty {
	case "RSA":
		nb, err := b64.DecodeString(n)
		if err != nil {
			return nil, fmt.Errorf("bad modulus: %w", err)
		}
		eb, err := b64.DecodeString(e)
		if err != nil || len(eb) == 0 || len(eb) > 4 {
			return nil, errors.New("bad exponent")
		}
		mod := new(big.Int).SetBytes(nb)
		if mod.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits is too small (2048 minimum)", mod.BitLen())
		}
		exp := int(new(big.Int).SetBytes(eb).Int64())
		if exp < 3 || exp%2 == 0 {
			return nil, errors.New("bad exponent")
		}
		return &rsa.PublicKey{N: mod, E: exp}, nil
	case "EC":
		var curve elliptic.Curve
		var dh ecdh.Curve
		switch crv {
		case "P-256":
			curve, dh = elliptic.P256(), ecdh.P256()
		case "P-384":
			curve, dh = elliptic.P384(), ecdh.P384()
		case "P-521":
			curve, dh = elliptic.P521(), ecdh.P521()
		default:
			return nil, fmt.Errorf("unsupported curve %q", crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		xb, err1 := b64.DecodeString(x)
		yb, err2 := b64.DecodeString(y)
		if err1 != nil || err2 != nil || len(xb) != size || len(yb) != size {
			return nil, errors.New("bad EC coordinates")
		}
		// crypto/ecdh rejects points that are not on the curve.
		if _, err := dh.NewPublicKey(append(append([]byte{4}, xb...), yb...)); err != nil {
			return nil, fmt.Errorf("bad EC point: %w", err)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, xb...), yb...))
		if err != nil {
			return nil, fmt.Errorf("bad EC point: %w", err)
		}
		return pub, nil
	case "OKP":
		if crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported curve %q", crv)
		}
		xb, err := b64.DecodeString(x)
		if err != nil || len(xb) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(xb), nil
	default:
		return nil, fmt.Errorf("unsupported key type %q", kty)
	}
}
