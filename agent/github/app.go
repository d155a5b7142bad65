package github

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// App speaks the GitHub App endpoints the agent uses to give sessions on an
// organisation's repositories a token of their own without anyone linking an account:
// it signs a short JWT with the App's private key (RS256, as GitHub documents under
// "Generating a JSON Web Token (JWT) for a GitHub App"), finds the installation that
// covers a repository (GET /repos/{owner}/{repo}/installation) unless one is
// configured, and asks for an installation access token limited to that one repository
// (POST /app/installations/{id}/access_tokens). Installation tokens live one hour; the
// caller replaces them before they expire.
type App struct {
	// APIURL is the REST API root: https://api.github.com, or GitHub Enterprise's
	// https://HOST/api/v3.
	APIURL string
	// ID is the App's id (its settings page shows it), the JWT's issuer.
	ID int64
	// Key is the App's private key.
	Key *rsa.PrivateKey
	// InstallationID, when not 0, is the one installation every token comes from;
	// otherwise the installation is looked up by the repository.
	InstallationID int64
	HTTP           *http.Client
	// Now is the clock of the JWT's times (default time.Now).
	Now func() time.Time
}

// InstallationToken is a token GitHub issued for an installation.
type InstallationToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// ErrNotInstalled means the App is not installed on the repository's owner (or the
// repository is not among those the installation may reach).
var ErrNotInstalled = errors.New("the GitHub App is not installed for this repository")

// APIURL is the REST API root of the GitHub whose web host is webURL: api.github.com
// for github.com, WEBURL/api/v3 for GitHub Enterprise Server (and the local fake).
func APIURL(webURL string) string {
	base := strings.TrimRight(webURL, "/")
	if u, err := url.Parse(base); err == nil && strings.EqualFold(u.Host, "github.com") {
		return "https://api.github.com"
	}
	return base + "/api/v3"
}

// ParsePrivateKey reads an App's private key: the PEM file GitHub hands out (PKCS#1,
// "RSA PRIVATE KEY") or the same key as PKCS#8.
func ParsePrivateKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM private key (want the .pem file GitHub generated for the App)")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not an RSA private key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the private key is %T; GitHub Apps sign with RSA", k)
	}
	return rk, nil
}

// JWT is the App's credential for the /app endpoints: issued 60 seconds in the past
// (GitHub's advice against clock drift) and valid for 9 minutes (GitHub allows 10).
func (a *App) JWT() (string, error) {
	if a.Key == nil {
		return "", errors.New("the GitHub App has no private key")
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	t := now()
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(a.ID, 10),
		IssuedAt:  jwt.NewNumericDate(t.Add(-60 * time.Second)),
		ExpiresAt: jwt.NewNumericDate(t.Add(9 * time.Minute)),
	}
	return jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(a.Key)
}

// Token returns a token for the repository owner/repo, limited to it: from the
// configured installation, or from the one installed on the repository.
func (a *App) Token(ctx context.Context, owner, repo string) (*InstallationToken, error) {
	id := a.InstallationID
	if id == 0 {
		var err error
		if id, err = a.Installation(ctx, owner, repo); err != nil {
			return nil, err
		}
	}
	return a.AccessToken(ctx, id, repo)
}

// Installation returns the id of the App's installation that covers owner/repo.
func (a *App) Installation(ctx context.Context, owner, repo string) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	status, err := a.call(ctx, http.MethodGet, "/repos/"+url.PathEscape(owner)+"/"+url.PathEscape(repo)+"/installation", nil, &out)
	if status == http.StatusNotFound {
		return 0, fmt.Errorf("%w: %s/%s (install it on %s, or set the installation id)", ErrNotInstalled, owner, repo, owner)
	}
	if err != nil {
		return 0, err
	}
	if out.ID == 0 {
		return 0, errors.New("GitHub's installation answer has no id")
	}
	return out.ID, nil
}

// AccessToken asks for a token of installation id, limited to repository repo (a name
// without its owner) when repo is not empty.
func (a *App) AccessToken(ctx context.Context, id int64, repo string) (*InstallationToken, error) {
	body := map[string]any{}
	if repo != "" {
		body["repositories"] = []string{repo}
	}
	var tok InstallationToken
	status, err := a.call(ctx, http.MethodPost, "/app/installations/"+strconv.FormatInt(id, 10)+"/access_tokens", body, &tok)
	if status == http.StatusNotFound || status == http.StatusUnprocessableEntity {
		// 404: no such installation; 422: the repository is not one it may reach.
		return nil, fmt.Errorf("%w: installation %d, repository %q: %v", ErrNotInstalled, id, repo, err)
	}
	if err != nil {
		return nil, err
	}
	if tok.Token == "" || tok.ExpiresAt.IsZero() {
		return nil, errors.New("GitHub's installation token answer lacks token or expires_at")
	}
	return &tok, nil
}

// call sends one request authenticated with the App's JWT and decodes a 2xx answer into
// out; it returns the status, and an error naming GitHub's message for any other.
func (a *App) call(ctx context.Context, method, path string, in, out any) (int, error) {
	token, err := a.JWT()
	if err != nil {
		return 0, err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	base := strings.TrimRight(a.APIURL, "/")
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := a.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reach the GitHub API at %s: %w", base, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read GitHub's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = ": check the App id and that the private key is the App's current one"
		}
		return resp.StatusCode, fmt.Errorf("GitHub answered %s to %s %s: %s%s", resp.Status, method, path, e.Message, hint)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("GitHub's answer to %s %s is not JSON: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

// Repository returns the owner and name of a repository URL on host
// (https://HOST/OWNER/NAME, with or without .git); ok is false for any other URL.
func Repository(repoURL, host string) (owner, name string, ok bool) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, host) {
		return "", "", false
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || strings.TrimSuffix(parts[1], ".git") == "" {
		return "", "", false
	}
	return parts[0], strings.TrimSuffix(parts[1], ".git"), true
}
