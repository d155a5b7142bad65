package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/yaml"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Sessions and tokens print as objects of a virtual kind (apiVersion agents.cake.ai/v1) so
// kubectl's printers, jsonpath and custom-columns work on them the way users expect from
// kubectl.
const wireAPIVersion = apiv1.Group + "/v1"

// wireObject wraps a wire value the way kubectl shows objects: apiVersion agents.cake.ai/v1,
// kind, metadata.name and creationTimestamp, and the value's JSON fields at the top level.
func wireObject(v any, kind, name string, created time.Time) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["apiVersion"] = wireAPIVersion
	m["kind"] = kind
	m["metadata"] = map[string]any{
		"name":              name,
		"creationTimestamp": created.UTC().Format(time.RFC3339),
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// PrintFlags are the -o flags of commands that print sessions: kubectl's own printers
// for json, yaml, name, jsonpath and go-template, plus the table (default), wide and
// custom-columns which kubectl keeps in k8s.io/kubectl.
type PrintFlags struct {
	*genericclioptions.PrintFlags
	NoHeaders bool
	// now is the clock for the AGE column (tests pin it).
	now func() time.Time
	// single adds the SPEND and PULL REQUEST columns to the wide table: only `session
	// get` has them, since the agent asks LiteLLM and GitHub for GET of one session only.
	single bool
}

// NewPrintFlags returns print flags with the table as default.
func NewPrintFlags() *PrintFlags {
	return &PrintFlags{PrintFlags: genericclioptions.NewPrintFlags(""), now: time.Now}
}

// AddFlags registers -o and friends.
func (f *PrintFlags) AddFlags(cmd *cobra.Command) {
	f.PrintFlags.AddFlags(cmd)
	// Sessions have no managed fields; the flag would only be noise in --help.
	_ = cmd.Flags().MarkHidden("show-managed-fields")
	if fl := cmd.Flags().Lookup("output"); fl != nil {
		fl.Usage = "Output format: one of (" + strings.Join(f.allowed(), ", ") + ")"
	}
	cmd.Flags().BoolVar(&f.NoHeaders, "no-headers", false, "Omit the header line of the table output")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return f.allowed(), cobra.ShellCompDirectiveNoFileComp
	})
}

func (f *PrintFlags) allowed() []string {
	return append([]string{"wide", "custom-columns="}, f.AllowedFormats()...)
}

func (f *PrintFlags) format() string {
	if f.OutputFormat == nil {
		return ""
	}
	return *f.OutputFormat
}

// Validate rejects unknown formats before anything is sent to the agent.
func (f *PrintFlags) Validate() error {
	switch o := f.format(); {
	case o == "" || o == "wide":
		return nil
	case strings.HasPrefix(o, "custom-columns="):
		_, err := parseCustomColumns(strings.TrimPrefix(o, "custom-columns="))
		return err
	default:
		if _, err := f.ToPrinter(); err != nil {
			return fmt.Errorf("--output: %w", err)
		}
		return nil
	}
}

// IsName reports whether -o name was asked for (commands that act on sessions then
// print "session.agents.cake.ai/ID verb" like kubectl).
func (f *PrintFlags) IsName() bool { return f.format() == "name" }

// IsDefault reports whether no -o was given.
func (f *PrintFlags) IsDefault() bool { return f.format() == "" }

// wireObjects wraps each item with object, for printObjects.
func wireObjects[T any](items []T, object func(T) (*unstructured.Unstructured, error)) ([]*unstructured.Unstructured, error) {
	objs := make([]*unstructured.Unstructured, 0, len(items))
	for _, it := range items {
		u, err := object(it)
		if err != nil {
			return nil, err
		}
		objs = append(objs, u)
	}
	return objs, nil
}

// printObjects prints objects of one virtual kind (apiVersion agents.cake.ai/v1): as the
// kind's own table (the default and wide), as custom-columns, or with kubectl's printers;
// list selects the list form (kind listKind) for json, yaml and jsonpath.
func (f *PrintFlags) printObjects(out io.Writer, objs []*unstructured.Unstructured, listKind string, list bool, table func(w io.Writer, wide bool) error) error {
	switch o := f.format(); {
	case o == "" || o == "wide":
		return table(out, o == "wide")
	case strings.HasPrefix(o, "custom-columns="):
		cols, err := parseCustomColumns(strings.TrimPrefix(o, "custom-columns="))
		if err != nil {
			return err
		}
		return f.printCustom(out, objs, cols)
	}
	p, err := f.ToPrinter()
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	if !list || f.IsName() {
		for _, o := range objs {
			if err := p.PrintObj(o, out); err != nil {
				return err
			}
		}
		return nil
	}
	items := make([]unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		items = append(items, *o)
	}
	l := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": wireAPIVersion, "kind": listKind, "metadata": map[string]any{}}}
	l.Items = items
	return p.PrintObj(l, out)
}

func (f *PrintFlags) age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(f.now().Sub(t))
}

func dash(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func truncateCell(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

type column struct {
	header string
	path   *jsonpath.JSONPath
}

// parseCustomColumns reads "HEADER:.path,HEADER2:.other" like kubectl does.
func parseCustomColumns(spec string) ([]column, error) {
	if spec == "" {
		return nil, fmt.Errorf("custom-columns format specified but no custom columns given: use e.g. -o custom-columns=NAME:.id,STATE:.state")
	}
	var cols []column
	for _, part := range strings.Split(spec, ",") {
		header, expr, ok := strings.Cut(part, ":")
		if !ok || header == "" || expr == "" {
			return nil, fmt.Errorf("unexpected custom-columns spec %q: expected HEADER:.field, e.g. STATE:.state", part)
		}
		if !strings.HasPrefix(expr, "{") {
			expr = "{" + expr + "}"
		}
		jp := jsonpath.New(header).AllowMissingKeys(true)
		if err := jp.Parse(expr); err != nil {
			return nil, fmt.Errorf("custom-columns: parse %q: %w", part, err)
		}
		cols = append(cols, column{header: header, path: jp})
	}
	return cols, nil
}

func (f *PrintFlags) printCustom(out io.Writer, objs []*unstructured.Unstructured, cols []column) error {
	w := printers.GetNewTabWriter(out)
	if !f.NoHeaders {
		hs := make([]string, len(cols))
		for i, c := range cols {
			hs[i] = c.header
		}
		fmt.Fprintln(w, strings.Join(hs, "\t"))
	}
	for _, u := range objs {
		cells := make([]string, len(cols))
		for i, c := range cols {
			results, err := c.path.FindResults(u.Object)
			if err != nil {
				return err
			}
			var vals []string
			for _, r := range results {
				for _, v := range r {
					if !v.IsValid() || (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) && v.IsNil() {
						continue
					}
					var buf bytes.Buffer
					if err := c.path.PrintResults(&buf, []reflect.Value{v}); err != nil {
						return err
					}
					vals = append(vals, buf.String())
				}
			}
			cells[i] = "<none>"
			if len(vals) > 0 {
				cells[i] = strings.Join(vals, ",")
			}
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	return w.Flush()
}

// printStructured prints v as json or yaml, or calls text for the default format.
func printStructured(out interface{ Write([]byte) (int, error) }, format string, v any, text func() error) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = out.Write(b)
		return err
	}
	return text()
}

// addStructuredOutputFlag adds -o for a command printing one value as text by default, or
// as JSON or YAML (printStructured); usage names what is printed.
func addStructuredOutputFlag(cmd *cobra.Command, output *string, usage string) {
	cmd.Flags().StringVarP(output, "output", "o", "", usage)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
}

// validateStructuredOutput accepts the -o of addStructuredOutputFlag: json, yaml or none.
func validateStructuredOutput(format string) error {
	if format != "" && format != "json" && format != "yaml" {
		return fmt.Errorf("--output %q is not supported: use json or yaml", format)
	}
	return nil
}

// displayUser is the first of candidates that is set: how a user is named in messages.
func displayUser(candidates ...string) string {
	for _, c := range candidates {
		if c != "" {
			return c
		}
	}
	return "<unknown>"
}
