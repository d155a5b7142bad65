package release

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestChanges(t *testing.T) {
	cl := []byte(`# Changelog

## [Unreleased]

### Added

- a new thing,
  said on two lines
- another

### Fixed

- a bug

## [1.0.0] - 2026-01-01

### Security

- a hole
`)
	got, err := Changes(cl, "Unreleased")
	if err != nil {
		t.Fatal(err)
	}
	want := []Change{{"added", "a new thing, said on two lines"}, {"added", "another"}, {"fixed", "a bug"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Unreleased: %+v, want %+v", got, want)
	}
	if got, err := Changes(cl, "1.0.0"); err != nil || !reflect.DeepEqual(got, []Change{{"security", "a hole"}}) {
		t.Errorf("1.0.0: %+v, %v", got, err)
	}
	if _, err := Changes(cl, "2.0.0"); err == nil || !strings.Contains(err.Error(), `"## [2.0.0]"`) {
		t.Errorf("a missing section: %v", err)
	}
	if _, err := Changes([]byte("## [1.0.0]\n### Tweaked\n- x\n"), "1.0.0"); err == nil || !strings.Contains(err.Error(), "Tweaked") {
		t.Errorf("an unknown heading: %v", err)
	}
	if _, err := Changes([]byte("## [1.0.0]\n\n## [0.9.0]\n### Added\n- x\n"), "1.0.0"); err == nil {
		t.Error("an empty section: no error")
	}
}

func TestPrepareChart(t *testing.T) {
	src := t.TempDir()
	write := func(name, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Chart.yaml", "apiVersion: v2\nname: c\n# bumped per release\nversion: 0.1.0\nappVersion: \"0.1.0\"\nannotations:\n  artifacthub.io/license: Apache-2.0\n")
	write("values.yaml", "# top\nregistry:\n  # the mirror\n  default: \"\"\n  # ours\n  project: \"\"\nother:\n  project: keep\n")
	write("templates/x.yaml", "kind: X\n")
	dst := filepath.Join(t.TempDir(), "c")
	err := PrepareChart(src, dst, ChartRelease{Version: "1.2.3", Registry: "registry.example.com/cakeai", Changes: []Change{{"added", "a: thing"}}})
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		Version     string            `json:"version"`
		AppVersion  string            `json:"appVersion"`
		Annotations map[string]string `json:"annotations"`
	}
	b, _ := os.ReadFile(filepath.Join(dst, "Chart.yaml"))
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.Version != "1.2.3" || chart.AppVersion != "1.2.3" || chart.Annotations["artifacthub.io/license"] != "Apache-2.0" {
		t.Errorf("Chart.yaml:\n%s", b)
	}
	var images []map[string]string
	if err := yaml.Unmarshal([]byte(chart.Annotations["artifacthub.io/images"]), &images); err != nil || len(images) != 3 ||
		images[0]["image"] != "registry.example.com/cakeai/cake-agents/web:1.2.3" || images[2]["name"] != "data-plane-init" {
		t.Errorf("artifacthub.io/images %v (%v):\n%s", images, err, b)
	}
	var changes []Change
	if err := yaml.Unmarshal([]byte(chart.Annotations["artifacthub.io/changes"]), &changes); err != nil || !reflect.DeepEqual(changes, []Change{{"added", "a: thing"}}) {
		t.Errorf("artifacthub.io/changes %v (%v)", changes, err)
	}
	v, _ := os.ReadFile(filepath.Join(dst, "values.yaml"))
	if want := "# top\nregistry:\n  # the mirror\n  default: \"\"\n  # ours\n  project: \"registry.example.com/cakeai\"\nother:\n  project: keep\n"; string(v) != want {
		t.Errorf("values.yaml:\n%s\nwant:\n%s", v, want)
	}
	if x, _ := os.ReadFile(filepath.Join(dst, "templates/x.yaml")); string(x) != "kind: X\n" {
		t.Errorf("templates/x.yaml copied as %q", x)
	}
	if err := PrepareChart(src, dst, ChartRelease{Version: "1.2.3"}); err == nil {
		t.Error("an existing destination: no error")
	}
	write("Chart.yaml", "apiVersion: v2\nversion: 0.1.0\nappVersion: \"0.1.0\"\nannotations:\n  a: b\nkeywords: [x]\n")
	if err := PrepareChart(src, filepath.Join(t.TempDir(), "d"), ChartRelease{Version: "1.2.3"}); err == nil || !strings.Contains(err.Error(), "last top-level key") {
		t.Errorf("annotations not last: %v", err)
	}
}
