// Package figures records what a test measured that a reader should see — reliability, scans,
// the real-node scenarios — as one line `area: scenario: figure` in test/artifacts/figures.txt.
// hack/test.sh prints that file just before go test's summary.
package figures

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// File is the figures file, relative to the repository root.
const File = "test/artifacts/figures.txt"

// Record appends one line `area: scenario: figure` to the figures file of the repository that
// holds the working directory. It returns the line. Test binaries of several packages append
// at once: each line is one write on an O_APPEND descriptor, which the kernel keeps whole.
func Record(area, scenario, format string, args ...any) (string, error) {
	line := fmt.Sprintf("%s: %s: %s", area, scenario, fmt.Sprintf(format, args...))
	line = strings.ReplaceAll(line, "\n", " ")
	root, err := repoRoot()
	if err != nil {
		return line, err
	}
	path := filepath.Join(root, File)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return line, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return line, err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		_ = f.Close()
		return line, err
	}
	return line, f.Close()
}

// repoRoot walks up from the working directory to the folder holding go.mod with hack/.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "versions.env")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root (with hack/versions.env) not found above the working directory")
		}
		dir = parent
	}
}
