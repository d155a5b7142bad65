package ui_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cakeai/cake-agents/agent/store"
)

// TestBrowserProvidersAndModelPicker: an admin edits the providers in Settings ›
// Providers (the key shown as %%SECRET%%, a bad field named, a good save kept), a user
// is refused the page, and the create form offers the providers' models.
func TestBrowserProvidersAndModelPicker(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	root := s.proxy("root@example.com").URL

	b.navigate("open Settings › Providers", chromedp.Navigate(root+"/settings/providers"))
	b.wait("the editor", `!document.querySelector('#providers-json').disabled`, 10*time.Second)
	if got := b.eval(`document.querySelector('#providers-json').value`); got != "{}" {
		t.Fatalf("editor starts with %q", got)
	}
	const key = "sk-UIKEY-0123456789"
	set := func(json string) {
		b.do("type providers", chromedp.SetValue(css("#providers-json"), json), chromedp.Click(css("#save")))
	}
	// A bad field: the error names it and nothing is stored.
	set(`{"acme": {"options": {"baseURL": "ftp://x", "apiKey": "` + key + `"}, "models": {"big": {"name": "Acme Big"}}}}`)
	b.wait("the error", `!document.querySelector('#error').hidden`, 10*time.Second)
	b.shot("providers-01-error")
	if got := b.text("#error"); !strings.Contains(got, "providers.acme.options.baseURL: must be an http(s) URL") {
		t.Errorf("error shown: %q", got)
	}
	if ps, _ := s.st.ListProviders(context.Background()); len(ps) != 0 {
		t.Fatalf("a refused save stored %d providers", len(ps))
	}
	// Not JSON at all: said before anything is sent.
	set(`{"acme": `)
	b.wait("the JSON error", `document.querySelector('#error').textContent.startsWith('Not valid JSON')`, 5*time.Second)

	set(`{"acme": {"name": "Acme", "options": {"baseURL": "https://models.acme.example/v1", "apiKey": "` + key + `"}, "models": {"big": {"name": "Acme Big"}, "small": {}}}}`)
	b.wait("the saved providers", `document.querySelector('#error').hidden && document.querySelector('#providers-json').value.includes('%%SECRET%%')`, 10*time.Second)
	b.shot("providers-02-saved")
	if v := b.eval(`document.querySelector('#providers-json').value`); strings.Contains(v, key) {
		t.Errorf("the editor shows the key after saving: %s", v)
	}
	// Saved again as shown: the stored key stays.
	b.do("save again", chromedp.Click(css("#save")))
	b.wait("the toast", `!document.querySelector('#toast').hidden`, 10*time.Second)
	ps, err := s.st.ListProviders(context.Background())
	if err != nil || len(ps) != 1 || ps[0].Secrets["options.apiKey"] != key {
		t.Fatalf("stored after two saves: %+v, %v", ps, err)
	}
	// The page as the browser got it never held the key.
	if html := b.eval(`document.documentElement.outerHTML`); strings.Contains(html, key) {
		t.Error("the page holds the key")
	}

	// A user: no Settings link, and the page is refused.
	alice := s.proxy("alice@example.com").URL
	res := b.navigate("user opens settings", chromedp.Navigate(alice+"/settings/providers"))
	if res.Status != 403 {
		t.Errorf("user on Settings › Providers: %d", res.Status)
	}
	b.navigate("user opens the form", chromedp.Navigate(alice+"/new"))
	if got := b.eval(`String(!!document.querySelector('a[href="/settings/providers"]'))`); got != "false" {
		t.Error("a user sees the Settings link")
	}
	b.wait("the models", `!document.querySelector('#model').disabled`, 10*time.Second)
	if got := b.eval(`[...document.querySelectorAll('#model option')].map(o => o.value + '=' + o.textContent).join('|')`); got != "=Default (litellm/gpt-4o-mini)|acme/big=acme/big — Acme Big|acme/small=acme/small — small" {
		t.Errorf("model options: %q", got)
	}
	b.do("create with a model",
		chromedp.SendKeys(css("#prompt"), "Use the small model."),
		chromedp.SetValue(css("#model"), "acme/small"),
	)
	b.shot("providers-03-model-picker")
	b.navigate("submit", chromedp.Click(css("#submit")))
	id := strings.TrimPrefix(b.eval(`location.pathname`), "/sessions/")
	sess, err := s.st.GetSession(context.Background(), id)
	if err != nil || sess.Model != "acme/small" {
		t.Fatalf("created session: %+v, %v", sess, err)
	}
	if page, _ := s.st.ListSessions(context.Background(), store.SessionFilter{}); len(page.Items) != 1 {
		t.Errorf("%d sessions", len(page.Items))
	}
}
