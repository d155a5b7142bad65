package github

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFindPullRequest: the pull request opened from a branch is found with a token that
// may read the repository (an App installation token limited to it, or a user's), the
// newest when there are several; another branch has none; a token that may not read the
// repository gets GitHub's 404 as an error.
func TestFindPullRequest(t *testing.T) {
	key := newKey(t)
	gh := newFake(t, key)
	srv := httptest.NewServer(gh)
	defer srv.Close()
	app := &App{APIURL: APIURL(srv.URL), ID: 42, Key: key, HTTP: srv.Client()}
	tok, err := app.Token(t.Context(), "acme", "widgets")
	if err != nil {
		t.Fatal(err)
	}
	gh.OpenPullRequest("acme", "widgets", "cake/other")
	gh.OpenPullRequest("acme", "widgets", "cake/fix")
	newest := gh.OpenPullRequest("acme", "widgets", "cake/fix")
	api := APIURL(srv.URL)

	pr, err := FindPullRequest(t.Context(), srv.Client(), api, tok.Token, "acme", "widgets", "cake/fix")
	if err != nil || pr == nil || pr.HTMLURL != newest || pr.Number != 3 {
		t.Fatalf("FindPullRequest = %+v, %v; want %s", pr, err, newest)
	}
	if pr, err := FindPullRequest(t.Context(), srv.Client(), api, tok.Token, "acme", "widgets", "cake/none"); err != nil || pr != nil {
		t.Errorf("a branch without a pull request: %+v, %v", pr, err)
	}
	gh.AddUserToken("gho_user")
	if pr, err := FindPullRequest(t.Context(), srv.Client(), api, "gho_user", "acme", "widgets", "cake/fix"); err != nil || pr == nil || pr.HTMLURL != newest {
		t.Errorf("with a user's token: %+v, %v", pr, err)
	}
	// The App's token is limited to widgets.
	if _, err := FindPullRequest(t.Context(), srv.Client(), api, tok.Token, "acme", "gadgets", "cake/fix"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("another repository with the limited token: %v, want a 404", err)
	}
}
