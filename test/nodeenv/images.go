// Package nodeenv holds what the real-node tier (test/realnode) and the real-node demo (`make
// demo`) both set up on a cluster with a real kubelet: the images hack/build-images.sh built,
// plain restricted Deployments, and the infrastructure a session needs in an offline cluster —
// the fake model and an HTTPS git server as pods, reached by their Service names.
package nodeenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// Image keys of the index hack/build-images.sh writes.
const (
	ImgPause     = "pause"
	ImgWeb       = "control-plane"
	ImgData      = "data-plane"
	ImgInit      = "data-plane-init"
	ImgPostgres  = "postgres"
	ImgBusybox   = "busybox"
	ImgFakeModel = "fakemodel"
	ImgGitServer = "gitserver"
)

// The registry and tag hack/test.sh and hack/demo.sh build the images under: the install
// guide's placeholders filled in with names that cannot be pulled, so a pod only starts from an
// image that was imported into the node.
const (
	Registry = "registry.example.com/cake"
	ImageTag = "1.2.3"
)

// ImageValues are helm arguments pointing a values file without the guide's registry at the
// imported images.
var ImageValues = []string{
	"--set", "registry.default=" + Registry,
	"--set", "controlPlane.image.tag=" + ImageTag,
	"--set", "dataPlane.image.tag=" + ImageTag,
	"--set", "dataPlaneInit.image.tag=" + ImageTag,
}

// Image is one built image: its name and its docker-save archive.
type Image struct{ Name, Archive string }

// Images maps an image key to the built image.
type Images map[string]Image

// DefaultIndex is where hack/build-images.sh writes its index unless told otherwise:
// $CAKE_REALNODE_IMAGES, else $CACHE_DIR/images/index.tsv.
func DefaultIndex() string {
	if p := os.Getenv("CAKE_REALNODE_IMAGES"); p != "" {
		return p
	}
	return filepath.Join(testcluster.DefaultCacheDir(), "images", "index.tsv")
}

// LoadImages reads an index of built images, one `key<TAB>name<TAB>archive` per line, and
// requires every image the real node needs.
func LoadImages(path string) (Images, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the real-node images are not built (run hack/build-images.sh): %w", err)
	}
	defer f.Close()
	set := Images{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 3 {
			continue
		}
		set[fields[0]] = Image{Name: fields[1], Archive: fields[2]}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var missing []string
	for _, k := range []string{ImgPause, ImgWeb, ImgData, ImgInit, ImgPostgres, ImgBusybox, ImgFakeModel, ImgGitServer} {
		if _, ok := set[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s lacks images %s: run hack/build-images.sh", path, strings.Join(missing, ", "))
	}
	return set, nil
}

// Name is the image name of key.
func (s Images) Name(key string) string { return s[key].Name }

// Archives lists every archive, sorted, for testcluster.RealNodeOptions.Images.
func (s Images) Archives() []string {
	var out []string
	for _, v := range s {
		out = append(out, v.Archive)
	}
	sort.Strings(out)
	return out
}
