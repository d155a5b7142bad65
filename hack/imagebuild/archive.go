package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/distribution/reference"
)

// imageFile is the image configuration JSON of the archive.
type imageFile struct {
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Created      time.Time   `json:"created"`
	Config       imageConfig `json:"config"`
	RootFS       struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []historyEntry `json:"history"`
}

type historyEntry struct {
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	Comment   string    `json:"comment,omitempty"`
}

// manifestEntry is one image in a docker-save manifest.json.
type manifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// checkName validates an image name and adds ":latest" when it has no tag, as docker does.
// The name is written as given: containerd's importer normalizes short names itself, the
// same way the kubelet normalizes the pod's image, so both meet.
func checkName(name string) (string, error) {
	ref, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w", name, err)
	}
	if _, ok := ref.(reference.Digested); ok {
		return "", fmt.Errorf("image name %q: a digest cannot be chosen, name the image with a tag", name)
	}
	if _, ok := ref.(reference.Tagged); !ok {
		name += ":latest"
	}
	return name, nil
}

// writeArchive writes a docker-save archive (what `docker save` writes and
// `ctr images import` and `docker load` read): manifest.json, the config JSON named after its
// sha256, and the single layer as <diffID>/layer.tar.
func writeArchive(dst, name string, cfg imageConfig, layerPath, diffID, createdBy string) error {
	now := time.Now().UTC().Truncate(time.Second)
	img := imageFile{Architecture: runtime.GOARCH, OS: "linux", Created: now, Config: cfg}
	img.RootFS.Type = "layers"
	img.RootFS.DiffIDs = []string{"sha256:" + diffID}
	img.History = []historyEntry{{Created: now, CreatedBy: createdBy, Comment: "hack/imagebuild: one layer"}}
	cfgJSON, err := json.Marshal(img)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(cfgJSON)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	layerName := diffID + "/layer.tar"
	manifest, err := json.Marshal([]manifestEntry{{Config: cfgName, RepoTags: []string{name}, Layers: []string{layerName}}})
	if err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	layer, err := os.Open(layerPath)
	if err != nil {
		f.Close()
		return err
	}
	defer layer.Close()
	info, err := layer.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: diffID + "/", Mode: 0o755, ModTime: now, Typeflag: tar.TypeDir}); err != nil {
		f.Close()
		return err
	}
	for _, e := range []struct {
		name string
		size int64
		r    io.Reader
	}{
		{layerName, info.Size(), layer},
		{cfgName, int64(len(cfgJSON)), bytes.NewReader(cfgJSON)},
		{"manifest.json", int64(len(manifest)), bytes.NewReader(manifest)},
	} {
		if err := add(e.name, e.size, e.r); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
