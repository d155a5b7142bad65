package release

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// ValueDoc is one row of the chart README's values table.
type ValueDoc struct {
	// Key is the dotted path of the value ("controlPlane.image.tag").
	Key string
	// Default is the value in values.yaml as JSON; empty for a section.
	Default string
	// Description is the comment right above the key in values.yaml.
	Description string
}

var keyLine = regexp.MustCompile(`^( *)([A-Za-z0-9_.\-/]+|"[^"]+"):(?:\s+(.*))?$`)

// ValuesDoc reads values.yaml's keys and the comments above them, in file order: every
// leaf value, and every section that has a comment of its own. A comment separated from
// its key by a blank line describes no key. Defaults come from the parsed file, so they
// are what helm sees.
func ValuesDoc(values []byte) ([]ValueDoc, error) {
	var parsed map[string]any
	if err := yaml.Unmarshal(values, &parsed); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	lines := strings.Split(string(values), "\n")
	type frame struct {
		indent int
		key    string
	}
	var (
		stack   []frame
		comment []string
		out     []ValueDoc
		skipTo  = -1 // inside a block scalar or list: lines more indented than this are content
	)
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		indent := len(l) - len(strings.TrimLeft(l, " "))
		if skipTo >= 0 {
			if trimmed == "" || indent > skipTo {
				continue
			}
			skipTo = -1
		}
		switch {
		case trimmed == "":
			comment = nil
			continue
		case strings.HasPrefix(trimmed, "#"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(trimmed, "#")))
			continue
		}
		m := keyLine.FindStringSubmatch(l)
		if m == nil {
			comment = nil
			continue
		}
		key := strings.Trim(m[2], `"`)
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		path := make([]string, 0, len(stack)+1)
		for _, f := range stack {
			path = append(path, f.key)
		}
		path = append(path, key)
		rest := strings.TrimSpace(stripComment(m[3]))
		desc := strings.Join(comment, " ")
		comment = nil
		section := rest == "" && nextIsKey(lines[i+1:], indent)
		switch {
		case section:
			stack = append(stack, frame{indent, key})
			if desc != "" {
				out = append(out, ValueDoc{Key: dotted(path), Description: desc})
			}
			continue
		case strings.HasPrefix(rest, "|") || strings.HasPrefix(rest, ">") || rest == "":
			skipTo = indent // a block scalar or a block list follows
		}
		def, err := lookup(parsed, path)
		if err != nil {
			return nil, fmt.Errorf("values.yaml line %d: %w", i+1, err)
		}
		out = append(out, ValueDoc{Key: dotted(path), Default: def, Description: desc})
	}
	return out, nil
}

// nextIsKey reports whether the next line with content is a key more indented than indent
// (the current key opens a section), not a list item or a less indented key.
func nextIsKey(lines []string, indent int) bool {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		in := len(l) - len(strings.TrimLeft(l, " "))
		return in > indent && !strings.HasPrefix(t, "- ") && t != "-" && keyLine.MatchString(l)
	}
	return false
}

// stripComment drops a trailing " # comment" outside quotes.
func stripComment(s string) string {
	inS, inD := false, false
	for i, r := range s {
		switch {
		case r == '\'' && !inD:
			inS = !inS
		case r == '"' && !inS:
			inD = !inD
		case r == '#' && !inS && !inD && (i == 0 || s[i-1] == ' '):
			return s[:i]
		}
	}
	return s
}

func dotted(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if strings.ContainsAny(p, "./") {
			fmt.Fprintf(&b, "[%q]", p)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func lookup(v map[string]any, path []string) (string, error) {
	var cur any = v
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", fmt.Errorf("%s: not found in the parsed values", strings.Join(path, "."))
		}
		if cur, ok = m[p]; !ok {
			return "", fmt.Errorf("%s: not found in the parsed values", strings.Join(path, "."))
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cur); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

// Values table markers in the chart's README.
const (
	ValuesTableBegin = "<!-- values-table:begin (releasetool values-table writes this part) -->"
	ValuesTableEnd   = "<!-- values-table:end -->"
)

// maxDefault is the longest default shown in the table; longer ones point to values.yaml.
const maxDefault = 60

// ValuesTable is the markdown table of docs.
func ValuesTable(docs []ValueDoc) string {
	var b strings.Builder
	b.WriteString("| Key | Default | Description |\n|---|---|---|\n")
	for _, d := range docs {
		def := d.Default
		switch {
		case def == "":
		case len(def) > maxDefault:
			def = "see values.yaml"
		default:
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", d.Key, cell(def), cell(d.Description))
	}
	return b.String()
}

// cell escapes what would end a table cell or start an HTML tag ("https://<host>").
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

// ReplaceValuesTable puts table between the markers of readme.
func ReplaceValuesTable(readme []byte, table string) ([]byte, error) {
	s := string(readme)
	i, j := strings.Index(s, ValuesTableBegin), strings.Index(s, ValuesTableEnd)
	if i < 0 || j < i {
		return nil, fmt.Errorf("the chart README has no %q ... %q markers", ValuesTableBegin, ValuesTableEnd)
	}
	return []byte(s[:i+len(ValuesTableBegin)] + "\n" + table + s[j:]), nil
}
