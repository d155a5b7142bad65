// Package chart tests the Helm chart charts/cake-agents against the agent it deploys and against
// a real API server: every environment variable it sets is one the agent understands (and the
// important ones are set), the install guide's values file and every ci/ values file render to
// objects the API server accepts (Istio and External Secrets CRDs installed from their Go
// modules), a real install, upgrade and uninstall work as the guide describes, and every
// values file starts the real agent binary with the environment and identity the rendered
// Deployment gives it (boot_test.go).
package chart

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/cakeai/cake-agents/agent/app"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testcluster.Shutdown()
	_ = testpg.Shutdown()
	os.Exit(code)
}

// notSetByChart lists the agent's environment variables the chart deliberately never sets, with
// the reason. Everything else in app.EnvVars() must be set by at least one ci values file.
var notSetByChart = map[string]string{
	"KUBECONFIG": "the agent runs in-cluster with its ServiceAccount",
}

// TestEnvVarsMatchAgentConfig renders every supported shape and checks the agent container's
// environment against app.EnvVars(): nothing unknown (a renamed setting would silently be
// ignored), and nothing the agent understands left unreachable from the chart.
func TestEnvVarsMatchAgentConfig(t *testing.T) {
	known := map[string]bool{}
	for _, e := range app.EnvVars() {
		known[e] = true
	}
	for e := range notSetByChart {
		if !known[e] {
			t.Errorf("notSetByChart lists %s, which the agent no longer reads", e)
		}
	}
	setSomewhere := map[string]bool{}
	for _, vf := range valuesFiles(t) {
		env := agentEnv(t, render(t, "cake-agents", "-f", vf.path))
		checkAgentParses(t, vf.name, env)
		for name := range env {
			if !known[name] {
				t.Errorf("%s: the chart sets %s, which the agent does not read (agent/app/config.go)", vf.name, name)
			}
			if _, ok := notSetByChart[name]; ok {
				t.Errorf("%s: the chart sets %s, listed as not set by the chart", vf.name, name)
			}
			setSomewhere[name] = true
		}
		// Always set, whatever the shape.
		for _, must := range []string{"DATABASE_URL", "AGENT_NAMESPACE", "AGENT_POD_NAME", "AGENT_RELEASE",
			"AGENT_SESSION_NAMESPACE", "AGENT_DATA_PLANE_IMAGE", "AGENT_DATA_PLANE_INIT_IMAGE",
			"AGENT_HTTP_ADDR", "AGENT_HTTPS_ADDR", "AGENT_SERVING_CA_CONFIGMAP", "AGENT_HEADER_AUTH_ENABLED"} {
			if _, ok := env[must]; !ok {
				t.Errorf("%s: the chart does not set %s", vf.name, must)
			}
		}
	}
	var missing []string
	for name := range known {
		if _, skip := notSetByChart[name]; !skip && !setSomewhere[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the agent reads %s but no ci values file makes the chart set it: add a value (and a ci file using it) or list it in notSetByChart with the reason",
			strings.Join(missing, ", "))
	}
}

// checkAgentParses gives the agent's flags the rendered environment and checks every value
// parses as its setting's type (bool, int, duration, quantity, ...) and the whole is a valid
// configuration. Values from Secrets and the downward API are strings the test fills in;
// typed settings must be literal values so their rendering is checked here.
func checkAgentParses(t *testing.T, name string, env map[string]map[string]any) {
	t.Helper()
	kinds := map[string]app.Kind{}
	for _, o := range app.Options() {
		kinds[o.Env] = o.Kind
	}
	vals := map[string]string{}
	for k, e := range env {
		if v, ok := e["value"].(string); ok {
			vals[k] = v
			continue
		}
		if kinds[k] != app.KindString {
			t.Errorf("%s: %s comes from %s, not a literal value: a typed setting must be rendered so this test can parse it", name, k, toJSON(e["valueFrom"]))
		}
		vals[k] = "from-" + strings.ToLower(k)
		if k == "DATABASE_URL" {
			vals[k] = "postgres://"
		}
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	load := app.BindFlags(fs, func(k string) string { return vals[k] })
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := load(); err != nil {
		t.Errorf("%s: the agent refuses the environment the chart renders: %v", name, err)
	}
}

// TestSeedValues checks the guide's file renders the way the guide means it: the images come
// from its registry with its tag, the database from its Secret, header auth on with its headers.
func TestSeedValues(t *testing.T) {
	objs := render(t, "cake-agents", "-f", seedValues(t))
	env := agentEnv(t, objs)
	want := map[string]string{
		"AGENT_DATA_PLANE_IMAGE":         "registry.example.com/cake/cake-agents/data-plane:1.2.3",
		"AGENT_DATA_PLANE_INIT_IMAGE":    "registry.example.com/cake/cake-agents/data-plane-init:1.2.3",
		"AGENT_EXTERNAL_URL":             "https://agents.example.com",
		"AGENT_HEADER_AUTH_ENABLED":      "true",
		"AGENT_HEADER_AUTH_EMAIL_HEADER": "x-auth-request-email",
		"AGENT_HEADER_AUTH_JWT_HEADER":   "x-auth-request-access-token",
		"AGENT_HEADER_AUTH_USER_HEADER":  "x-auth-request-user",
	}
	for k, v := range want {
		if got := env[k]["value"]; got != v {
			t.Errorf("%s = %v, want %q", k, got, v)
		}
	}
	if got, want := toJSON(env["DATABASE_URL"]["valueFrom"]), `{"secretKeyRef":{"key":"DATABASE_URL","name":"cake-agents-db"}}`; got != want {
		t.Errorf("DATABASE_URL from %s, want %s", got, want)
	}
	var sawDeployment, sawPVC, sawPostgres bool
	for _, o := range objs {
		switch o.GetKind() {
		case "Deployment":
			sawDeployment = true
			img, _, _ := unstructuredString(o.Object, "spec", "template", "spec", "containers", "0", "image")
			if img != "registry.example.com/cake/cake-agents/web:1.2.3" {
				t.Errorf("agent image %q", img)
			}
		case "PersistentVolumeClaim":
			sawPVC = true
		case "StatefulSet":
			sawPostgres = true
		}
	}
	if !sawDeployment || sawPVC || sawPostgres {
		t.Errorf("deployment=%v pvc=%v postgres=%v; want a Deployment and neither SQLite's PVC nor the dev Postgres", sawDeployment, sawPVC, sawPostgres)
	}
}

// TestSeedCopyInChart keeps ci/seed-values.yaml (what `helm lint` checks) equal to the guide's
// file with its placeholders substituted.
func TestSeedCopyInChart(t *testing.T) {
	read := func(p string) any {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return v
	}
	guide := read(seedValues(t))
	ci := read(filepath.Join(chartDir(t), "ci", "seed-values.yaml"))
	if !reflect.DeepEqual(guide, ci) {
		t.Errorf("ci/seed-values.yaml differs from testdata/seed-values.yaml with placeholders substituted:\n%s\nvs\n%s", toJSON(ci), toJSON(guide))
	}
}

// TestSchemaRejectsTypos checks values.schema.json catches misspelt keys: the chart contract is
// its keys, and a typo must not be silently ignored.
func TestSchemaRejectsTypos(t *testing.T) {
	helm := tool(t, "helm")
	for _, set := range []string{"controlPlane.hots=x", "headerAuth.emial.header=x", "postgresql.enable=true", "registry.defualt=x"} {
		_, err := runErr(repoRoot(t), helmEnv(t, ""), helm, "lint", "--strict", chartDir(t), "--set", set)
		if err == nil {
			t.Errorf("helm lint accepted --set %s", set)
		}
	}
	// The guide's placeholders must be substituted: the raw file fails.
	_, err := runErr(repoRoot(t), helmEnv(t, ""), helm, "lint", "--strict", chartDir(t), "-f", filepath.Join("testdata", "seed-values.yaml"))
	if err == nil {
		t.Error("helm lint accepted the guide's file with its <registry> placeholder")
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	var cur any = obj
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i := 0
			for _, ch := range p {
				i = i*10 + int(ch-'0')
			}
			if i >= len(c) {
				return "", false, nil
			}
			cur = c[i]
		default:
			return "", false, nil
		}
	}
	s, ok := cur.(string)
	return s, ok, nil
}
