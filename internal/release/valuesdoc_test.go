package release

import (
	"reflect"
	"strings"
	"testing"
)

func TestValuesDoc(t *testing.T) {
	values := []byte(`# The file's header: no key.

# A section.
section:
  # A leaf, said on
  # two lines.
  leaf: "x" # trailing comment
  undocumented: 3
  # A block scalar: its content is no key.
  script: |
    not: a key
  # A block list.
  list:
    - a: 1
    - b
  nested:
    "app.kubernetes.io/name": web
# Far from its key.

top: {}
`)
	docs, err := ValuesDoc(values)
	if err != nil {
		t.Fatal(err)
	}
	want := []ValueDoc{
		{"section", "", "A section."},
		{"section.leaf", `"x"`, "A leaf, said on two lines."},
		{"section.undocumented", "3", ""},
		{"section.script", `"not: a key\n"`, "A block scalar: its content is no key."},
		{"section.list", `[{"a":1},"b"]`, "A block list."},
		{`section.nested["app.kubernetes.io/name"]`, `"web"`, ""},
		{"top", "{}", ""},
	}
	if !reflect.DeepEqual(docs, want) {
		t.Errorf("docs:\n%+v\nwant:\n%+v", docs, want)
	}
	table := ValuesTable([]ValueDoc{{"a", `"x|y"`, "see https://<host>"}})
	if !strings.Contains(table, "| `a` | `\"x\\|y\"` | see https://&lt;host&gt; |") {
		t.Errorf("table:\n%s", table)
	}
	readme := []byte("# x\n" + ValuesTableBegin + "\nold\n" + ValuesTableEnd + "\ntail\n")
	got, err := ReplaceValuesTable(readme, "new\n")
	if err != nil || string(got) != "# x\n"+ValuesTableBegin+"\nnew\n"+ValuesTableEnd+"\ntail\n" {
		t.Errorf("replaced: %q, %v", got, err)
	}
	if _, err := ReplaceValuesTable([]byte("no markers"), "t"); err == nil {
		t.Error("no markers: no error")
	}
}
