// Package krew tests the release the way users receive it: `make release-snapshot` builds
// offline what the release workflow publishes (archives, checksums, the krew manifest rendered
// from krew/agents.yaml.tmpl, the chart package), the manifest passes krew's own validator,
// every platform's archive installs with the real `kubectl krew install` into a throwaway
// KREW_ROOT, on linux/amd64 the installed plugin runs through kubectl's plugin lookup, and the
// chart package installs with helm into the test cluster with the release's images. A
// committed krew/agents.yaml (the last released manifest) must validate and be no snapshot.
package krew

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// pluginName is the krew plugin name: `kubectl agents`, manifest krew/agents.yaml.
const pluginName = "agents"

// wantPlatforms are the os/arch pairs the manifest must cover.
var wantPlatforms = []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64", "windows/amd64", "windows/arm64"}

// manifest is the part of krew's Plugin object the tests read.
type manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Platforms        []struct {
			URI      string `json:"uri"`
			Sha256   string `json:"sha256"`
			Bin      string `json:"bin"`
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		} `json:"platforms"`
	} `json:"spec"`
}

func (m *manifest) platform(osArch string) (uri, sum, bin string, ok bool) {
	for _, p := range m.Spec.Platforms {
		if p.Selector.MatchLabels["os"]+"/"+p.Selector.MatchLabels["arch"] == osArch {
			return p.URI, p.Sha256, p.Bin, true
		}
	}
	return "", "", "", false
}

func (m *manifest) platforms() []string {
	var out []string
	for _, p := range m.Spec.Platforms {
		out = append(out, p.Selector.MatchLabels["os"]+"/"+p.Selector.MatchLabels["arch"])
	}
	slices.Sort(out)
	return out
}

func readManifest(t *testing.T, path string) *manifest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &m
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// tool builds (once, cached) and returns a pinned tool from hack/tools.sh.
func tool(t *testing.T, root, name string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s: %v\n%s", name, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// releaseInputs are what the snapshot is built from; dist/ is reused only when it is newer
// than all of them and was built from the current commit.
var releaseInputs = []string{"cmd/kubectl-agents", "plugin", "pkg", "go.mod", "go.sum", "LICENSE", "hack/kubectl_complete-agents", ".goreleaser.yaml",
	"Makefile", "krew/agents.yaml.tmpl", "internal/release", "charts/cake-agents", "CHANGELOG.md"}

// snapshotRegistry is where the snapshot's chart says the project's images are
// (registry.project), as the release workflow's IMAGE_REGISTRY does.
const snapshotRegistry = "registry.example.com/cakeai"

func distIsFresh(t *testing.T, root string) bool {
	t.Helper()
	dist := filepath.Join(root, "dist")
	meta, err := os.ReadFile(filepath.Join(dist, "metadata.json"))
	if err != nil {
		return false
	}
	st, err := os.Stat(filepath.Join(dist, "metadata.json"))
	if err != nil || !fileExists(filepath.Join(dist, "agents.yaml")) {
		return false
	}
	if charts, _ := filepath.Glob(filepath.Join(dist, "chart", "*.tgz")); len(charts) != 1 {
		return false
	}
	var md struct {
		Commit string `json:"commit"`
	}
	if json.Unmarshal(meta, &md) != nil {
		return false
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil || strings.TrimSpace(string(head)) != md.Commit {
		return false
	}
	fresh := true
	for _, in := range releaseInputs {
		_ = filepath.WalkDir(filepath.Join(root, in), func(_ string, d fs.DirEntry, err error) error {
			if err != nil {
				return err // unreadable input: WalkDir stops, fresh stays as found so far
			}
			if d.IsDir() {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().After(st.ModTime()) {
				fresh = false
				return fs.SkipAll
			}
			return nil
		})
	}
	return fresh
}

// snapshot returns dist/ holding a current release snapshot, running `make release-snapshot`
// when needed.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	dist := filepath.Join(root, "dist")
	if distIsFresh(t, root) {
		t.Logf("using fresh snapshot in dist/")
		return dist
	}
	start := time.Now()
	run(t, root, os.Environ(), "make", "--no-print-directory", "release-snapshot", "RELEASE_REGISTRY="+snapshotRegistry)
	t.Logf("make release-snapshot built in %s", time.Since(start).Round(time.Second))
	return dist
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// kubectl returns the test cluster's kubectl when built (hack/build-cluster.sh), else the one
// on PATH.
func kubectl(t *testing.T, root string) string {
	t.Helper()
	cacheDir := os.Getenv("CACHE_DIR")
	if cacheDir == "" {
		cacheDir = filepath.Join(root, ".cache")
	}
	if p := filepath.Join(cacheDir, "cluster", "bin", "kubectl"); fileExists(p) {
		return p
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("no kubectl: run hack/build-cluster.sh or install kubectl")
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// pluginEnv is a minimal environment whose PATH finds kubectl-krew (from binDir) and the
// plugins krew installs, and nothing of the user's own krew or kubeconfig.
func pluginEnv(home, krewRoot, binDir string, extra ...string) []string {
	env := []string{
		"HOME=" + home,
		"KREW_ROOT=" + krewRoot,
		"KREW_NO_UPGRADE_CHECK=1",
		"KUBECONFIG=" + filepath.Join(home, "no-kubeconfig"),
		"PATH=" + binDir + string(os.PathListSeparator) + filepath.Join(krewRoot, "bin") + string(os.PathListSeparator) + "/usr/bin:/bin",
	}
	return append(env, extra...)
}

func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the goreleaser snapshot and installs it with krew (minutes); skipped with -short")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skipf("runs on linux/amd64 (the plugin is executed after install), not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	root := repoRoot(t)
	validate := tool(t, root, "validate-krew-manifest")
	krewBin := tool(t, root, "krew")
	dist := snapshot(t, root)
	fresh := filepath.Join(dist, pluginName+".yaml")
	m := readManifest(t, fresh)

	t.Run("manifest", func(t *testing.T) {
		if m.Kind != "Plugin" || m.Metadata.Name != pluginName {
			t.Errorf("manifest is %s %q, want Plugin %q", m.Kind, m.Metadata.Name, pluginName)
		}
		if got := m.platforms(); !slices.Equal(got, wantPlatforms) {
			t.Errorf("manifest platforms %v, want %v", got, wantPlatforms)
		}
		if len(m.Spec.ShortDescription) == 0 || len(m.Spec.ShortDescription) > 50 {
			t.Errorf("shortDescription %q: krew wants a short phrase (≤ 50 characters)", m.Spec.ShortDescription)
		}
		for _, p := range m.Spec.Platforms {
			archive := filepath.Join(dist, filepath.Base(p.URI))
			if got := sha256File(t, archive); got != p.Sha256 {
				t.Errorf("%s: manifest sha256 %s, archive has %s", filepath.Base(archive), p.Sha256, got)
			}
		}
		// validate-krew-manifest checks the schema, the name and the platform selectors; it
		// cannot download the archives here, hence -skip-install (the installs below do that).
		run(t, root, os.Environ(), validate, "-manifest", fresh, "-skip-install")
	})

	t.Run("committed manifest", func(t *testing.T) {
		committed := filepath.Join(root, "krew", pluginName+".yaml")
		if !fileExists(committed) {
			t.Skipf("no krew/%s.yaml: nothing released yet (the release workflow proposes it)", pluginName)
		}
		run(t, root, os.Environ(), validate, "-manifest", committed, "-skip-install")
		c := readManifest(t, committed)
		if strings.Contains(c.Spec.Version, "snapshot") {
			t.Errorf("krew/%s.yaml is snapshot %s: it must hold the last released manifest", pluginName, c.Spec.Version)
		}
		if got, want := c.platforms(), m.platforms(); !slices.Equal(got, want) {
			t.Errorf("krew/%s.yaml platforms %v, the template renders %v", pluginName, got, want)
		}
		for _, osArch := range wantPlatforms {
			uri, _, _, _ := c.platform(osArch)
			goos, goarch, _ := strings.Cut(osArch, "/")
			ext := ".tar.gz"
			if goos == "windows" {
				ext = ".zip"
			}
			if want := fmt.Sprintf("https://github.com/cakeai/cake-agents/releases/download/%s/kubectl-agents_%s_%s_%s%s", c.Spec.Version, c.Spec.Version, goos, goarch, ext); uri != want {
				t.Errorf("krew/%s.yaml %s uri %s, want the release's %s", pluginName, osArch, uri, want)
			}
		}
	})

	t.Run("chart package", func(t *testing.T) { testChartPackage(t, root, dist, strings.TrimPrefix(m.Spec.Version, "v")) })

	binDir := t.TempDir()
	if err := os.Symlink(krewBin, filepath.Join(binDir, "kubectl-krew")); err != nil {
		t.Fatal(err)
	}
	kc := kubectl(t, root)

	for _, osArch := range wantPlatforms {
		t.Run("install "+osArch, func(t *testing.T) {
			uri, _, bin, ok := m.platform(osArch)
			if !ok {
				t.Fatalf("no platform %s in the manifest", osArch)
			}
			goos, goarch, _ := strings.Cut(osArch, "/")
			home, krewRoot := t.TempDir(), t.TempDir()
			env := pluginEnv(home, krewRoot, binDir, "KREW_OS="+goos, "KREW_ARCH="+goarch)
			archive := filepath.Join(dist, filepath.Base(uri))
			out := run(t, root, env, kc, "krew", "install", "--manifest="+fresh, "--archive="+archive)
			t.Logf("kubectl krew install (%s):\n%s", osArch, out)

			// The archive's files land in the store: the binary, LICENSE and the completion shim.
			store := filepath.Join(krewRoot, "store", pluginName, m.Spec.Version)
			for _, f := range []string{bin, "LICENSE", "kubectl_complete-agents"} {
				if !fileExists(filepath.Join(store, f)) {
					t.Errorf("installed plugin lacks %s (in %s)", f, store)
				}
			}
			link := filepath.Join(krewRoot, "bin", "kubectl-"+pluginName)
			if goos == "windows" {
				link += ".exe"
			}
			if !fileExists(link) {
				t.Fatalf("krew did not link %s", link)
			}
			// What `kubectl krew list/upgrade/uninstall` go by (list itself wants a
			// downloaded index, which a --manifest install does not need).
			if !fileExists(filepath.Join(krewRoot, "receipts", pluginName+".yaml")) {
				t.Errorf("krew wrote no receipt for %s", pluginName)
			}
			if osArch != "linux/amd64" {
				return
			}
			// kubectl finds kubectl-agents on PATH ($KREW_ROOT/bin) and runs it.
			plugins := run(t, root, env, kc, "plugin", "list", "--name-only")
			if !strings.Contains(plugins, "kubectl-"+pluginName) {
				t.Errorf("kubectl plugin list does not show kubectl-%s:\n%s", pluginName, plugins)
			}
			got := run(t, root, env, kc, pluginName, "version", "--client")
			t.Logf("kubectl %s version --client: %s", pluginName, strings.TrimSpace(got))
			version := strings.TrimPrefix(m.Spec.Version, "v")
			if want := fmt.Sprintf("Client Version: %s (commit ", version); !strings.Contains(got, want) || !strings.Contains(got, "linux/amd64") {
				t.Errorf("kubectl %s version --client printed %q, want a line starting %q for linux/amd64", pluginName, got, want)
			}
		})
	}
}
