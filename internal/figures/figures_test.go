package figures

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordAppendsOneLine(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "hack"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hack", "versions.env"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "test", "x")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	if _, err := Record("real-node", "guide values", "Ready in %ds", 41); err != nil {
		t.Fatal(err)
	}
	line, err := Record("a", "b", "two\nlines")
	if err != nil {
		t.Fatal(err)
	}
	if line != "a: b: two lines" {
		t.Errorf("line %q", line)
	}
	data, err := os.ReadFile(filepath.Join(root, File))
	if err != nil {
		t.Fatal(err)
	}
	want := "real-node: guide values: Ready in 41s\na: b: two lines\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	if strings.Count(string(data), "\n") != 2 {
		t.Error("want two lines")
	}
}
