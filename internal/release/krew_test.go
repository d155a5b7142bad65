package release

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestKrewManifest(t *testing.T) {
	dist := t.TempDir()
	archive := []byte("an archive")
	if err := os.WriteFile(filepath.Join(dist, "kubectl-x_v1.2.3_linux_amd64.tar.gz"), archive, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	tmpl := `spec:
  version: {{ .TagName }}
  platforms:
  - selector:
      matchLabels:
        os: linux
    {{addURIAndSha "https://example.com/releases/download/{{ .TagName }}/kubectl-x_{{ .TagName }}_linux_amd64.tar.gz" .TagName }}
    bin: kubectl-x
  nested:
      {{addURIAndSha "https://example.com/releases/download/{{ .TagName }}/kubectl-x_{{ .TagName }}_linux_amd64.tar.gz" .TagName | indent 6 }}
`
	out, err := KrewManifest("t.yaml", []byte(tmpl), "v1.2.3", dist)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Spec struct {
			Version   string `json:"version"`
			Platforms []struct {
				URI    string `json:"uri"`
				Sha256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
			Nested struct {
				URI    string `json:"uri"`
				Sha256 string `json:"sha256"`
			} `json:"nested"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatalf("rendered manifest is not YAML: %v\n%s", err, out)
	}
	want := "https://example.com/releases/download/v1.2.3/kubectl-x_v1.2.3_linux_amd64.tar.gz"
	if m.Spec.Version != "v1.2.3" || len(m.Spec.Platforms) != 1 || m.Spec.Platforms[0].URI != want ||
		m.Spec.Platforms[0].Sha256 != hex.EncodeToString(sum[:]) || m.Spec.Platforms[0].Bin != "kubectl-x" {
		t.Errorf("rendered:\n%s", out)
	}
	if m.Spec.Nested.URI != want || m.Spec.Nested.Sha256 != hex.EncodeToString(sum[:]) {
		t.Errorf("indent 6 rendered:\n%s", out)
	}

	// An archive that is not there is an error naming the fix, never a manifest.
	_, err = KrewManifest("t.yaml", []byte(tmpl), "v9.9.9", dist)
	if err == nil || !strings.Contains(err.Error(), "kubectl-x_v9.9.9_linux_amd64.tar.gz") || !strings.Contains(err.Error(), "make release-snapshot") {
		t.Errorf("missing archive: %v", err)
	}
	if _, err := KrewManifest("t.yaml", []byte("{{ .Nope }}"), "v1", dist); err == nil {
		t.Error("unknown template field: no error")
	}
}
