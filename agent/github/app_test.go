package github

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/test/fakegithub"
)

// newFake is a fake GitHub with App 42 (key) installed on acme.
func newFake(t *testing.T, key *rsa.PrivateKey) *fakegithub.Server {
	t.Helper()
	gh := fakegithub.New("unused")
	gh.AddApp(42, &key.PublicKey)
	gh.Install(42, "acme")
	return gh
}

func newKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAppTokenFromLookedUpInstallation: without a configured installation the App finds
// the one on the repository's owner and gets a token limited to that repository, which
// the fake (checking the JWT's signature against the App's public key) says reaches it
// and no other repository.
func TestAppTokenFromLookedUpInstallation(t *testing.T) {
	key := newKey(t)
	gh := fakegithub.New("unused")
	gh.AddApp(42, &key.PublicKey)
	inst := gh.Install(42, "acme")
	gh.Install(42, "other", "only-this")
	srv := httptest.NewServer(gh)
	defer srv.Close()
	app := &App{APIURL: APIURL(srv.URL), ID: 42, Key: key, HTTP: srv.Client()}

	tok, err := app.Token(t.Context(), "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}
	issued := gh.Issued()
	if len(issued) != 1 || issued[0].Token != tok.Token || issued[0].Installation != inst ||
		len(issued[0].Repositories) != 1 || issued[0].Repositories[0] != "widgets" {
		t.Fatalf("issued %+v, got %+v", issued, tok)
	}
	if d := time.Until(tok.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("token expires in %s, want about an hour", d)
	}
	if !gh.TokenGrants(tok.Token, "acme", "widgets") || gh.TokenGrants(tok.Token, "acme", "gadgets") {
		t.Error("the token is not limited to acme/widgets")
	}

	// An owner the App is not installed on, and a repository its installation excludes.
	for _, repo := range [][2]string{{"nobody", "x"}, {"other", "not-this"}} {
		if _, err := app.Token(t.Context(), repo[0], repo[1]); !errors.Is(err, ErrNotInstalled) {
			t.Errorf("%s/%s: %v, want ErrNotInstalled", repo[0], repo[1], err)
		}
	}
}

// TestAppTokenFromConfiguredInstallation: with an installation id no look-up happens,
// and a repository outside the installation is refused with ErrNotInstalled.
func TestAppTokenFromConfiguredInstallation(t *testing.T) {
	key := newKey(t)
	gh := fakegithub.New("unused")
	gh.AddApp(7, &key.PublicKey)
	inst := gh.Install(7, "acme", "widgets")
	srv := httptest.NewServer(gh)
	defer srv.Close()
	app := &App{APIURL: APIURL(srv.URL), ID: 7, Key: key, InstallationID: inst, HTTP: srv.Client()}
	tok, err := app.Token(t.Context(), "acme", "widgets")
	if err != nil || !gh.TokenGrants(tok.Token, "acme", "widgets") {
		t.Fatalf("token %+v, %v", tok, err)
	}
	if _, err := app.Token(t.Context(), "acme", "gadgets"); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("repository outside the installation: %v", err)
	}
	app.InstallationID = inst + 100
	if _, err := app.Token(t.Context(), "acme", "widgets"); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("unknown installation: %v", err)
	}
}

// TestAppJWTRefused: a JWT signed with another key, for another App id, or from a clock
// far off is refused (401), and the error tells the admin what to check.
func TestAppJWTRefused(t *testing.T) {
	key := newKey(t)
	gh := fakegithub.New("unused")
	gh.AddApp(42, &key.PublicKey)
	gh.Install(42, "acme")
	srv := httptest.NewServer(gh)
	defer srv.Close()
	for name, app := range map[string]*App{
		"other key":    {ID: 42, Key: newKey(t)},
		"other app id": {ID: 43, Key: key},
		"stale clock":  {ID: 42, Key: key, Now: func() time.Time { return time.Now().Add(-time.Hour) }},
	} {
		app.APIURL, app.HTTP = APIURL(srv.URL), srv.Client()
		_, err := app.Token(t.Context(), "acme", "widgets")
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "private key") {
			t.Errorf("%s: %v, want a 401 naming the private key", name, err)
		}
	}
	if len(gh.Issued()) != 0 {
		t.Errorf("tokens issued to bad JWTs: %+v", gh.Issued())
	}
}

// TestAppJWTClaims: issued a minute back against clock drift, valid 9 minutes (GitHub
// allows at most 10), the App id as issuer, RS256.
func TestAppJWTClaims(t *testing.T) {
	key := newKey(t)
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	app := &App{ID: 42, Key: key, Now: func() time.Time { return now }}
	tok, err := app.JWT()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	for _, want := range []string{`"alg":"RS256"`} {
		if h := decodeSegment(t, parts[0]); !strings.Contains(h, want) {
			t.Errorf("header %s lacks %s", h, want)
		}
	}
	claims := decodeSegment(t, parts[1])
	for _, want := range []string{`"iss":"42"`, `"iat":` + itoa(now.Add(-time.Minute).Unix()), `"exp":` + itoa(now.Add(9*time.Minute).Unix())} {
		if !strings.Contains(claims, want) {
			t.Errorf("claims %s lack %s", claims, want)
		}
	}
}

func TestParsePrivateKey(t *testing.T) {
	key := newKey(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for name, b := range map[string][]byte{"pkcs1": pkcs1, "pkcs8": pkcs8} {
		got, err := ParsePrivateKey(b)
		if err != nil || !got.Equal(key) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := ParsePrivateKey([]byte("ghp_not a key")); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Errorf("garbage: %v", err)
	}
}

func TestAPIURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com":      "https://api.github.com",
		"https://github.com/":     "https://api.github.com",
		"https://ghe.example.com": "https://ghe.example.com/api/v3",
		"http://127.0.0.1:8080/":  "http://127.0.0.1:8080/api/v3",
	} {
		if got := APIURL(in); got != want {
			t.Errorf("APIURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func decodeSegment(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"https://github.com/acme/widgets.git":  "acme/widgets",
		"https://GitHub.com/acme/widgets":      "acme/widgets",
		"https://github.com/acme/widgets/":     "acme/widgets",
		"https://github.com/acme":              "",
		"https://github.com/acme/widgets/tree": "",
		"https://gitlab.com/acme/widgets":      "",
		"http://github.com/acme/widgets":       "",
		"git@github.com:acme/widgets.git":      "",
	} {
		o, n, ok := Repository(in, "github.com")
		if got := o + "/" + n; (want == "" && ok) || (want != "" && got != want) {
			t.Errorf("Repository(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}
