package release

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// ProjectImages are the chart's values keys of the images the project publishes, with the
// repository each is published as (under registry.project).
var ProjectImages = []struct{ Name, ValuesKey, Repository string }{
	{"web", "controlPlane.image", "cake-agents/web"},
	{"data-plane", "dataPlane.image", "cake-agents/data-plane"},
	{"data-plane-init", "dataPlaneInit.image", "cake-agents/data-plane-init"},
}

// ChartRelease says what PrepareChart writes into a copy of the chart.
type ChartRelease struct {
	// Version is the chart's version and appVersion (the images' tag): the release tag
	// without its "v".
	Version string
	// Registry is where the project's images are published (values registry.project);
	// empty leaves it unset.
	Registry string
	// Changes are the release's entries of CHANGELOG.md (see Changes), written as the
	// artifacthub.io/changes annotation.
	Changes []Change
}

// PrepareChart copies the chart in src to dst (which must not exist) as the release r:
// Chart.yaml's version and appVersion, values.yaml's registry.project, and the Artifact
// Hub annotations artifacthub.io/images (the project's images at the release's tag) and
// artifacthub.io/changes. Everything else is copied byte for byte.
func PrepareChart(src, dst string, r ChartRelease) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("%s exists: remove it first", dst)
	}
	if err := copyTree(src, dst); err != nil {
		return err
	}
	chartFile := filepath.Join(dst, "Chart.yaml")
	b, err := os.ReadFile(chartFile)
	if err != nil {
		return err
	}
	if b, err = releaseChartYAML(b, r); err != nil {
		return fmt.Errorf("%s: %w", chartFile, err)
	}
	if err := os.WriteFile(chartFile, b, 0o644); err != nil {
		return err
	}
	if r.Registry == "" {
		return nil
	}
	valuesFile := filepath.Join(dst, "values.yaml")
	v, err := os.ReadFile(valuesFile)
	if err != nil {
		return err
	}
	if v, err = setRegistryProject(v, r.Registry); err != nil {
		return fmt.Errorf("%s: %w", valuesFile, err)
	}
	return os.WriteFile(valuesFile, v, 0o644)
}

var (
	versionLine    = regexp.MustCompile(`(?m)^version: .*$`)
	appVersionLine = regexp.MustCompile(`(?m)^appVersion: .*$`)
)

// releaseChartYAML sets the versions of Chart.yaml b and appends the Artifact Hub
// annotations to its annotations, which must be its last top-level key.
func releaseChartYAML(b []byte, r ChartRelease) ([]byte, error) {
	if !versionLine.Match(b) || !appVersionLine.Match(b) {
		return nil, fmt.Errorf("no top-level version and appVersion lines")
	}
	b = versionLine.ReplaceAll(b, []byte("version: "+r.Version))
	b = appVersionLine.ReplaceAll(b, []byte(fmt.Sprintf("appVersion: %q", r.Version)))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	ann := -1
	for i, l := range lines {
		if l == "annotations:" {
			ann = i
		} else if ann >= 0 && l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "#") {
			return nil, fmt.Errorf("annotations must be the last top-level key (found %q after it)", l)
		}
	}
	if ann < 0 {
		return nil, fmt.Errorf("no annotations key")
	}
	var images []map[string]string
	for _, img := range ProjectImages {
		ref := img.Repository + ":" + r.Version
		if r.Registry != "" {
			ref = strings.TrimSuffix(r.Registry, "/") + "/" + ref
		}
		images = append(images, map[string]string{"name": img.Name, "image": ref})
	}
	var out bytes.Buffer
	out.WriteString(strings.Join(lines, "\n") + "\n")
	for _, a := range []struct {
		key string
		val any
	}{{"artifacthub.io/images", images}, {"artifacthub.io/changes", r.Changes}} {
		y, err := yaml.Marshal(a.val)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&out, "  %s: |\n", a.key)
		for _, l := range strings.Split(strings.TrimRight(string(y), "\n"), "\n") {
			fmt.Fprintf(&out, "    %s\n", l)
		}
	}
	var check map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &check); err != nil {
		return nil, fmt.Errorf("the annotated Chart.yaml does not parse: %w", err)
	}
	return out.Bytes(), nil
}

// setRegistryProject sets registry.project in values.yaml b, keeping every comment.
func setRegistryProject(b []byte, registry string) ([]byte, error) {
	lines := strings.Split(string(b), "\n")
	in := false
	for i, l := range lines {
		switch {
		case l == "registry:":
			in = true
		case in && !strings.HasPrefix(l, " ") && l != "" && !strings.HasPrefix(l, "#"):
			in = false
		case in && strings.HasPrefix(l, "  project:"):
			lines[i] = fmt.Sprintf("  project: %q", registry)
			return []byte(strings.Join(lines, "\n")), nil
		}
	}
	return nil, fmt.Errorf("no registry.project key to set")
}

// Change is one entry of artifacthub.io/changes.
type Change struct {
	Kind        string `json:"kind"`
	Description string `json:"description"`
}

// changeKinds maps Keep a Changelog's headings to Artifact Hub's kinds.
var changeKinds = map[string]string{
	"added": "added", "changed": "changed", "deprecated": "deprecated",
	"removed": "removed", "fixed": "fixed", "security": "security",
}

// Changes reads the section of version (e.g. "1.2.3", or "Unreleased") from a Keep a
// Changelog file: "## [1.2.3] - date" headings, "### Added" and the like below, one "- "
// entry per change (continued on indented lines). A missing or empty section is an error:
// every release says what changed.
func Changes(changelog []byte, version string) ([]Change, error) {
	var (
		out     []Change
		in      bool
		kind    string
		current *Change
	)
	sc := bufio.NewScanner(bytes.NewReader(changelog))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## "):
			if in {
				return finish(out, version)
			}
			in = strings.HasPrefix(l, "## ["+version+"]")
		case !in:
		case strings.HasPrefix(l, "### "):
			k, ok := changeKinds[strings.ToLower(strings.TrimSpace(l[4:]))]
			if !ok {
				return nil, fmt.Errorf("CHANGELOG.md %s: unknown heading %q (use Added, Changed, Deprecated, Removed, Fixed or Security)", version, l)
			}
			kind, current = k, nil
		case strings.HasPrefix(l, "- "):
			if kind == "" {
				return nil, fmt.Errorf("CHANGELOG.md %s: entry %q under no ### heading", version, l)
			}
			out = append(out, Change{Kind: kind, Description: strings.TrimSpace(l[2:])})
			current = &out[len(out)-1]
		case current != nil && strings.HasPrefix(l, "  ") && strings.TrimSpace(l) != "":
			current.Description += " " + strings.TrimSpace(l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !in {
		return nil, fmt.Errorf("CHANGELOG.md has no section \"## [%s]\": add one saying what the release changes", version)
	}
	return finish(out, version)
}

func finish(out []Change, version string) ([]Change, error) {
	if len(out) == 0 {
		return nil, fmt.Errorf("CHANGELOG.md's section %s lists no changes", version)
	}
	return out, nil
}

// copyTree copies the regular files and directories under src to dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
