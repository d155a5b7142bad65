package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary serve as the RUN helper, as the command does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == chrootHelperArg {
		os.Exit(chrootHelper(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := findRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: the builder chowns files and makes namespaces (run the tests as root, as CI does)")
	}
}

// dryBuilder plans against the repository without running any host build.
func dryBuilder(t testing.TB, buildArgs map[string]string) *builder {
	t.Helper()
	b, err := newBuilder(repoRoot(t), t.TempDir(), buildArgs, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	b.hostDryRun = true
	b.aptDir = writeAptDir(t, "http://mirror.invalid/debian")
	return b
}

// writeAptDir makes an apt configuration naming mirror for bookworm, so plans do not depend on
// the machine's sources.
func writeAptDir(t testing.TB, mirror string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := "Types: deb\nURIs: " + mirror + "\nSuites: bookworm bookworm-updates\nComponents: main\n"
	if err := os.WriteFile(filepath.Join(dir, "sources.list.d", "debian.sources"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// planText plans every stage of a Dockerfile given as text (as if it were at rel).
func planText(t testing.TB, b *builder, rel, text string) (*dockerfile, error) {
	t.Helper()
	df, err := parseDockerfile(rel, []byte(text), b.buildArgs)
	if err != nil {
		return nil, err
	}
	b.dockerfiles[rel] = df
	for i := range df.stages {
		if _, err := b.planStage(context.Background(), df, i); err != nil {
			return df, err
		}
	}
	return df, nil
}

// archive is a docker-save archive read back.
type archive struct {
	manifest []manifestEntry
	config   imageFile
	layer    map[string]*tar.Header
	content  map[string][]byte // regular files up to 1 MiB
}

func readArchive(t testing.TB, path string) archive {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if files[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	var a archive
	if err := json.Unmarshal(files["manifest.json"], &a.manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(a.manifest) != 1 || len(a.manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json: want one image with one layer, got %+v", a.manifest)
	}
	if err := json.Unmarshal(files[a.manifest[0].Config], &a.config); err != nil {
		t.Fatalf("config: %v", err)
	}
	layer := files[a.manifest[0].Layers[0]]
	if len(a.config.RootFS.DiffIDs) != 1 || a.config.RootFS.DiffIDs[0] != "sha256:"+sha256hex(layer) {
		t.Errorf("config diff_ids %v do not match the layer's sha256 %s", a.config.RootFS.DiffIDs, sha256hex(layer))
	}
	a.layer, a.content = readLayer(t, bytes.NewReader(layer))
	return a
}

func readLayer(t testing.TB, r io.Reader) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	headers, content := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return headers, content
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		headers[name] = h
		if h.Typeflag == tar.TypeReg && h.Size <= 1<<20 {
			if content[name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// buildProbe compiles testdata/probe as a static binary.
func buildProbe(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, b)
	}
	return out
}
