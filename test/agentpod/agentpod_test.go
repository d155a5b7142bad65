package agentpod

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestExpandFollowsTheKubelet(t *testing.T) {
	defined := map[string]string{"A": "x", "EMPTY": ""}
	for in, want := range map[string]string{
		"plain":           "plain",
		"$(A)/y":          "x/y",
		"$$(A)":           "$(A)",
		"$(UNDEFINED)":    "$(UNDEFINED)",
		"a$(EMPTY)b":      "ab",
		"$(A":             "$(A",
		"cost $5":         "cost $5",
		"end$":            "end$",
		"$(A)$(A)":        "xx",
		"$$$(A)":          "$x",
		"pre-$(A)-post$$": "pre-x-post$",
	} {
		if got := Expand(in, defined); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountsRewriteWholePathElementsOnce(t *testing.T) {
	m := Mounts{"/data": "/tmp/x/volumes/data", "/tmp": "/tmp/x/volumes/tmp", "/etc/app/tls": "/tmp/x/volumes/tls"}
	for in, want := range map[string]string{
		"sqlite:///data/agents.db": "sqlite:///tmp/x/volumes/data/agents.db",
		"/data":                    "/tmp/x/volumes/data",
		"/database":                "/database",
		"/srv/data/x":              "/srv/data/x",
		"/etc/app/tls/tls.crt":     "/tmp/x/volumes/tls/tls.crt",
		"/tmp/a:/data/b":           "/tmp/x/volumes/tmp/a:/tmp/x/volumes/data/b",
		"postgres://h/db":          "postgres://h/db",
	} {
		if got := m.Rewrite(in); got != want {
			t.Errorf("Rewrite(%q) = %q, want %q", in, got, want)
		}
	}
	if got, ok := m.Local("/data/agents.db"); !ok || got != "/tmp/x/volumes/data/agents.db" {
		t.Errorf("Local(/data/agents.db) = %q, %v", got, ok)
	}
	if _, ok := m.Local("/usr/bin"); ok {
		t.Error("Local(/usr/bin) claims a mount")
	}
}

func TestAddressRewrites(t *testing.T) {
	addrs := map[string]string{}
	for _, a := range ServiceAddresses("db", "ns", "ns", 5432) {
		addrs[a] = "127.0.0.1:40000"
	}
	for in, want := range map[string]string{
		"postgres://u:p@db.ns.svc:5432/x?sslmode=disable": "postgres://u:p@127.0.0.1:40000/x?sslmode=disable",
		"postgres://u:p@db:5432/x":                        "postgres://u:p@127.0.0.1:40000/x",
		"postgres://u:p@db.ns.svc.cluster.local:5432/x":   "postgres://u:p@127.0.0.1:40000/x",
		"postgres://u:p@otherdb:5432/x":                   "postgres://u:p@otherdb:5432/x",
		"postgres://u:p@db:54321/x":                       "postgres://u:p@db:54321/x",
	} {
		if got := replaceAddresses(in, addrs); got != want {
			t.Errorf("replaceAddresses(%q) = %q, want %q", in, got, want)
		}
	}
	ports := map[string]int{"8080": 41000}
	for in, want := range map[string]string{":8080": "127.0.0.1:41000", "0.0.0.0:8080": "127.0.0.1:41000", "[::]:8080": "127.0.0.1:41000"} {
		if got, ok := listenAddress(in, ports); !ok || got != want {
			t.Errorf("listenAddress(%q) = %q, %v", in, got, ok)
		}
	}
	for _, in := range []string{":9090", "10.0.0.1:8080", "8080", "http://x:8080"} {
		if got, ok := listenAddress(in, ports); ok {
			t.Errorf("listenAddress(%q) rewrote to %q", in, got)
		}
	}
}

// The resolver is the tests' promise that the agent ran with the chart's environment: every
// source it cannot resolve must be an error, never a variable quietly left out.
func TestResolveEnvRefusesWhatItCannotResolve(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"},
		Data:       map[string][]byte{"k": []byte("secret-value")},
	})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "a"}}, Spec: corev1.PodSpec{NodeName: "n"}}
	no := false
	yes := true
	ok := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "A", Value: "1"},
		{Name: "B", Value: "$(A)-$(POD)"},
		{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "C", Value: "$(POD)"},
		{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
		{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}},
		{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k", Optional: &yes}}},
	}}
	env, err := ResolveEnv(ctx, kube, pod, ok)
	if err != nil {
		t.Fatal(err)
	}
	got := env.Map()
	// B refers to POD before POD is defined: the kubelet leaves that reference as written.
	for k, want := range map[string]string{"A": "1", "B": "1-$(POD)", "POD": "p", "C": "p", "APP": "a", "S": "secret-value"} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if len(env.Skipped) != 1 || env.Skipped[0] != "OPT" {
		t.Errorf("skipped %v, want [OPT]", env.Skipped)
	}

	for name, src := range map[string]corev1.EnvVarSource{
		"resourceFieldRef": {ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1")}},
		"unknown field":    {FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.schedulerName"}},
		"missing secret":   {SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "k", Optional: &no}},
		"missing key":      {SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "other"}},
		"empty source":     {},
	} {
		c := &corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &src}}}
		if _, err := ResolveEnv(ctx, kube, pod, c); err == nil || !strings.Contains(err.Error(), "X") {
			t.Errorf("%s: err = %v, want an error naming the variable", name, err)
		}
	}
}
