package dockerfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestImagesLintClean lints the real-node tier's own images (test/images/*/Dockerfile,
// built by hack/imagebuild) with the same BuildKit rules as the product's Dockerfile, and
// keeps registry hosts out of them too.
func TestTestImagesLintClean(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "test", "images", "*", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Dockerfile under test/images")
	}
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f))
		t.Run(name, func(t *testing.T) {
			dt, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if findings := lint(t, dt, platforms[0]); len(findings) > 0 {
				t.Errorf("BuildKit lint findings in test/images/%s/Dockerfile:\n  %s", name, strings.Join(findings, "\n  "))
			}
			for n, line := range strings.Split(string(dt), "\n") {
				if m := registryHosts.FindString(line); m != "" {
					t.Errorf("test/images/%s/Dockerfile line %d names the registry host %q", name, n+1, m)
				}
			}
		})
	}
}
