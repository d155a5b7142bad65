package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// Placeholders of the install guide's values file and what the tests put in their place.
var seedSubstitutions = []struct{ placeholder, value string }{
	{"<registry>", "registry.example.com/cake"},
	{"<image-tag>", "1.2.3"},
}

const releaseName = "cake-agents"

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := testcluster.RepoRoot()
	if err != nil {
		t.Fatalf("repo root: %v", err)
	}
	return root
}

func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "cake-agents") }

var tools sync.Map // name -> path

// tool returns the path of a pinned tool from hack/tools.sh. Under -short it only uses an
// already built binary and skips otherwise (building helm takes minutes); in the full tier a
// tool that cannot be built fails the test.
func tool(t testing.TB, name string) string {
	t.Helper()
	if p, ok := tools.Load(name); ok {
		return p.(string)
	}
	args := []string{name}
	if testing.Short() {
		args = []string{"--check", name}
	}
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "tools.sh"), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if testing.Short() {
			t.Skipf("%s is not built (skipped with -short; `hack/tools.sh %s` builds it): %s", name, name, strings.TrimSpace(stderr.String()))
		}
		t.Fatalf("hack/tools.sh %s: %v\n%s", name, err, stderr.String())
	}
	p := strings.TrimSpace(string(out))
	tools.Store(name, p)
	return p
}

// helmEnv keeps helm's caches and config inside the test's temp dir and points it at kubeconfig
// (empty: none, for rendering only).
func helmEnv(t testing.TB, kubeconfig string) []string {
	t.Helper()
	home := t.TempDir()
	env := append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	if kubeconfig != "" {
		env = append(env, "KUBECONFIG="+kubeconfig)
	} else {
		env = append(env, "KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	}
	return env
}

// run runs a command in dir with env and returns its stdout; a failure fails the test with the
// command's output.
func run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(dir, env, name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

func runErr(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// valuesFile is one values file the chart must accept: the guide's seed or a ci file.
type valuesFile struct {
	name string // short name for subtests
	path string
}

// valuesFiles returns the install guide's seed (placeholders substituted, written to a temp
// file) and every ci/*-values.yaml.
func valuesFiles(t testing.TB) []valuesFile {
	t.Helper()
	files := []valuesFile{{name: "guide-seed", path: seedValues(t)}}
	ci, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*-values.yaml"))
	if err != nil || len(ci) == 0 {
		t.Fatalf("no ci values files (%v)", err)
	}
	sort.Strings(ci)
	for _, f := range ci {
		files = append(files, valuesFile{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), path: f})
	}
	return files
}

// seedValues writes the install guide's values file, unchanged but for its placeholders, to a
// temp file and returns its path.
func seedValues(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "seed-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for _, sub := range seedSubstitutions {
		if !strings.Contains(s, sub.placeholder) {
			t.Fatalf("testdata/seed-values.yaml lost its placeholder %s", sub.placeholder)
		}
		s = strings.ReplaceAll(s, sub.placeholder, sub.value)
	}
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// render runs `helm template` and returns the objects.
func render(t testing.TB, namespace string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	helm := tool(t, "helm")
	full := append([]string{"template", releaseName, chartDir(t), "--namespace", namespace}, args...)
	out := run(t, repoRoot(t), helmEnv(t, ""), helm, full...)
	objs, err := decodeObjects(strings.NewReader(out))
	if err != nil {
		t.Fatalf("decode helm template output: %v", err)
	}
	if len(objs) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return objs
}

func decodeObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		if m["kind"] == "List" {
			items, _ := m["items"].([]any)
			for _, it := range items {
				if im, ok := it.(map[string]any); ok {
					objs = append(objs, &unstructured.Unstructured{Object: im})
				}
			}
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// agentEnv returns the env var names of the agent container in the rendered Deployment.
func agentEnv(t testing.TB, objs []*unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			cm, _ := c.(map[string]any)
			if cm["name"] != "agent" {
				continue
			}
			env := map[string]map[string]any{}
			list, _ := cm["env"].([]any)
			for _, e := range list {
				em, _ := e.(map[string]any)
				name, _ := em["name"].(string)
				if _, dup := env[name]; dup {
					t.Errorf("env %s set twice", name)
				}
				env[name] = em
			}
			return env
		}
	}
	t.Fatal("no Deployment with an agent container rendered")
	return nil
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
