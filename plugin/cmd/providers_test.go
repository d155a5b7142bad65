package cmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestModels(t *testing.T) {
	a := newFakeAgent(t)
	a.models = apiv1.ModelList{Items: []apiv1.Model{
		{ID: "acme/big", Name: "Acme Big", Provider: "acme", ProviderName: "Acme", Default: true},
		{ID: "acme/small", Name: "small", Provider: "acme"},
		{ID: "litellm/gpt-4o-mini", Name: "gpt-4o-mini", Provider: "litellm", ProviderName: "LiteLLM", AnyModel: true},
	}}
	f, _ := a.start()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	if err := (&ModelsOptions{IOStreams: streams, Factory: f}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := "MODEL           NAME          PROVIDER   DEFAULT\n" +
		"acme/big        Acme Big      Acme       *\n" +
		"acme/small      small         <none>     \n" +
		"litellm/<any>   gpt-4o-mini   LiteLLM    \n"
	if out.String() != want {
		t.Errorf("models:\n%q\nwant:\n%q", out.String(), want)
	}

	// None configured: say who can fix it.
	a.models = apiv1.ModelList{Items: []apiv1.Model{}}
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	if err := (&ModelsOptions{IOStreams: streams, Factory: f}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || !strings.Contains(errOut.String(), "An admin adds one with `kubectl agents providers set -f FILE`") {
		t.Errorf("no models: out %q, err %q", out, errOut)
	}
	if err := (&ModelsOptions{Output: "wide"}).Validate(); err == nil {
		t.Error("-o wide accepted")
	}
}

func TestProvidersGetAndSet(t *testing.T) {
	a := newFakeAgent(t)
	a.providers = `{"acme":{"options":{"apiKey":"%%SECRET%%"},"models":{"big":{}}}}`
	a.models = apiv1.ModelList{Items: []apiv1.Model{{ID: "acme/big"}}}
	f, _ := a.start()

	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	if err := (&ProvidersGetOptions{IOStreams: streams, Factory: f}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\"apiKey\": \"%%SECRET%%\"") {
		t.Errorf("get:\n%s", out)
	}

	file := filepath.Join(t.TempDir(), "providers.json")
	if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	streams, _, _, errOut := genericiooptions.NewTestIOStreams()
	root := NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"providers", "set", "-f", file})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if len(a.providerPuts) != 1 || !strings.Contains(a.providerPuts[0], `"apiKey":"%%SECRET%%"`) {
		t.Errorf("puts %q", a.providerPuts)
	}
	if errOut.String() != "model providers updated; 1 models available (kubectl agents models)\n" {
		t.Errorf("status %q", errOut)
	}

	// From stdin; the agent's field error comes through.
	streams, in, _, _ := genericiooptions.NewTestIOStreams()
	in.WriteString(`{"acme":{"options":{"baseURL":"ftp://x"},"models":{"m":{}}}}`)
	root = NewCmdRootWithFactory(f, streams)
	root.SetArgs([]string{"providers", "set", "-f", "-"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "set the model providers: ") || !strings.Contains(err.Error(), "providers.acme.options.baseURL: must be an http(s) URL") {
		t.Errorf("bad providers: %v", err)
	}

	// Checked before anything is sent.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"providers", "set"}, "--filename (-f) is required"},
		{[]string{"providers", "set", "-f", filepath.Join(t.TempDir(), "missing.json")}, "read --filename"},
	} {
		streams, _, _, _ := genericiooptions.NewTestIOStreams()
		root = NewCmdRootWithFactory(f, streams)
		root.SetArgs(tc.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", tc.args, err, tc.want)
		}
	}
	o := &ProvidersSetOptions{File: "x.json", body: []byte("[1]")}
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "x.json is not a JSON object of providers") {
		t.Errorf("array: %v", err)
	}
	if len(a.providerPuts) != 1 {
		t.Errorf("a refused set reached the agent: %q", a.providerPuts)
	}
}

func TestSessionCreateCompletesModels(t *testing.T) {
	a := newFakeAgent(t)
	a.models = apiv1.ModelList{Items: []apiv1.Model{{ID: "acme/big", Name: "Acme Big"}, {ID: "other/x", Name: "X"}}}
	f, _ := a.start()
	var out bytes.Buffer
	root := NewCmdRootWithFactory(f, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &bytes.Buffer{}})
	root.SetOut(&out)
	root.SetArgs([]string{"__complete", "session", "create", "--model", "acme"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "acme/big\tAcme Big\n:4\n") {
		t.Errorf("completion:\n%s", out.String())
	}
}
