package ui_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// TestBrowserSSHKey: an SSH key saved in its form (host from a git@ address) shows its
// public key to paste at the host and is listed as a kind of its own, by fingerprint,
// next to the same host's token; the private key leaves the page; a key with a
// passphrase is refused with the fix; Remove on the key's row keeps the token.
func TestBrowserSSHKey(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	alice := s.proxy("alice@example.com").URL

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(block))
	keyBody := strings.Split(keyPEM, "\n")[1]
	signer, _ := ssh.NewSignerFromKey(priv)
	publicKey := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	hostPub, _, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewPublicKey(hostPub)
	known := knownhosts.Line([]string{"git.example.com"}, hk)
	encrypted, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("pw"))

	b.navigate("git credentials", chromedp.Navigate(alice+"/credentials"))
	b.wait("the empty state", `!document.querySelector('#empty').hidden`, 10*time.Second)
	b.do("save a token for the host",
		chromedp.SendKeys(css("#host"), "git.example.com"),
		chromedp.SendKeys(css("#token"), "glpat-next-to-the-key"),
		chromedp.Click(css(`#add-credential button[type=submit]`)),
	)
	b.wait("the token", `document.querySelector('#credentials tbody tr[data-host="git.example.com"][data-kind="token"]') !== null`, 10*time.Second)

	b.do("a key with a passphrase",
		chromedp.SendKeys(css("#ssh-host"), "git@git.example.com:org/repo.git"),
		chromedp.SetValue(css("#ssh-private-key"), string(pem.EncodeToMemory(encrypted))),
		chromedp.SetValue(css("#ssh-known-hosts"), known),
		chromedp.Click(css(`#add-ssh-key button[type=submit]`)),
	)
	b.wait("the refusal", `!document.querySelector('#error').hidden`, 10*time.Second)
	if msg := b.text("#error"); !strings.Contains(msg, "passphrase") || !strings.Contains(msg, "ssh-keygen -p") {
		t.Errorf("error = %q, want the passphrase and the fix", msg)
	}

	b.do("the deploy key", chromedp.SetValue(css("#ssh-private-key"), keyPEM), chromedp.Click(css(`#add-ssh-key button[type=submit]`)))
	b.wait("the listed key", `document.querySelector('#credentials tbody tr[data-host="git.example.com"][data-kind="ssh"]') !== null`, 10*time.Second)
	if got := b.text("#ssh-public-key"); got != publicKey {
		t.Errorf("public key shown = %q, want %q", got, publicKey)
	}
	if row := b.text(`#credentials tbody tr[data-kind="ssh"]`); !strings.Contains(row, ssh.FingerprintSHA256(signer.PublicKey())) || !strings.Contains(row, "SSH key") {
		t.Errorf("row = %q, want the kind and fingerprint", row)
	}
	if html := b.eval(`document.documentElement.outerHTML + document.querySelector('#ssh-private-key').value`); strings.Contains(html, keyBody) {
		t.Error("the private key is still on the page after saving")
	}
	b.shot("42-ssh-key")

	b.do("remove the key", chromedp.Click(css(`#credentials tbody tr[data-kind="ssh"] [data-remove]`)))
	b.wait("the key removed", `document.querySelector('#credentials tbody tr[data-kind="ssh"]') === null`, 10*time.Second)
	if b.eval(`String(document.querySelector('#credentials tbody tr[data-host="git.example.com"][data-kind="token"]') !== null)`) != "true" {
		t.Error("removing the SSH key removed the host's token too")
	}
}
