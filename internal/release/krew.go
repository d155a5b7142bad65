// Package release renders what a release publishes besides the binaries: the krew manifest
// from krew/agents.yaml.tmpl, in the template language of krew-index's release bot (so the
// manifest attached to a GitHub release and the one the bot proposes to krew-index come from
// one file), with each archive's checksum read from the archive itself in goreleaser's dist/.
package release

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"
)

// KrewManifest renders the krew-release-bot template tmpl (named name in errors) for the
// release tag. The template sees .TagName and the bot's functions: addURIAndSha URL TAG,
// whose URL is itself a template of .TagName, writes the "uri:" and "sha256:" lines (the
// second indented by four spaces, as the bot does), and indent N S re-indents them. The
// checksum is that of the archive named like the URL's last element in dist, which must
// exist: a manifest is never rendered against an archive it does not describe.
func KrewManifest(name string, tmpl []byte, tag, dist string) ([]byte, error) {
	var ferr error
	addURIAndSha := func(rawURL, tag string) string {
		u, err := expandTag(rawURL, tag)
		if err != nil {
			ferr = err
			return ""
		}
		sum, err := archiveSum(u, dist)
		if err != nil {
			ferr = err
			return ""
		}
		return fmt.Sprintf("uri: %s\n    sha256: %s", u, sum)
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"addURIAndSha": addURIAndSha,
		"indent":       indent,
	}).Parse(string(tmpl))
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", name, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, struct{ TagName string }{tag}); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	if ferr != nil {
		return nil, fmt.Errorf("render %s: %w", name, ferr)
	}
	return out.Bytes(), nil
}

// expandTag fills .TagName into an archive URL template.
func expandTag(rawURL, tag string) (string, error) {
	t, err := template.New("url").Option("missingkey=error").Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("archive URL %q: %w", rawURL, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, struct{ TagName string }{tag}); err != nil {
		return "", fmt.Errorf("archive URL %q: %w", rawURL, err)
	}
	return b.String(), nil
}

// archiveSum is the sha256 of the archive in dist that URL u names.
func archiveSum(u, dist string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" {
		return "", fmt.Errorf("archive URL %q: want an https URL", u)
	}
	file := filepath.Join(dist, path.Base(pu.Path))
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("the archive for %s: %w (build it first: make release-snapshot, or goreleaser release)", u, err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// indent is the bot's: the lines of v at spaces of indentation, the first one's left to
// the template, and the sha256 line's four spaces of addURIAndSha's default dropped first.
func indent(spaces int, v string) string {
	v = strings.ReplaceAll(v, "    sha256:", "sha256:")
	pad := strings.Repeat(" ", spaces)
	return strings.TrimSpace(pad + strings.ReplaceAll(v, "\n", "\n"+pad))
}
