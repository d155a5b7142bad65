// Command imagebuild builds the project's container images without Docker, BuildKit or a
// registry, by interpreting the Dockerfiles themselves with BuildKit's own parser — so the
// Dockerfile stays the one recipe and nothing can drift from it. Each image becomes a
// docker-save archive (manifest.json, config JSON, one layer tar) that
// `ctr -n k8s.io images import <archive>` loads into containerd.
//
// Usage (from the repository root; the module is nested, hence -C):
//
//	go run -C hack/imagebuild . \
//	    --target control-plane=cake-agents/web:dev \
//	    --target data-plane=cake-agents/data-plane:dev \
//	    --target data-plane-init=cake-agents/data-plane-init:dev \
//	    --dockerfile test/images/postgres=postgres:15 \
//	    --build-arg VERSION=v1.2.3
//
// It prints one line per image on stdout, "<name>\t<archive path>", in the order asked;
// progress and failures go to stderr. hack/build-images.sh builds every image with the names
// the chart renders by default.
//
// How each Dockerfile instruction is carried out, as root on a Debian-like host:
//
//   - FROM debian:<suite>-slim: a base root filesystem made once with
//     `debootstrap --variant=minbase <suite>` from the Debian mirror the host's own apt sources
//     name (or --mirror), trimmed like the official slim image, and cached as a tarball.
//     FROM scratch and FROM <an earlier stage> work as in Docker. No other image can be made.
//   - A stage FROM a Go image (golang:...) runs on the host: each of its RUNs must be a
//     `go build`, `go mod download` or the cross-toolchain setup; the `go build` command line
//     (flags, ldflags, environment) is taken word for word from the Dockerfile and run in the
//     repository with its `-o /out/...` redirected to the cache. The OpenCode stage (FROM a
//     node image, `npm pack opencode-linux-...`) is hack/install-opencode.sh, whose pinned
//     version must equal the Dockerfile's. Any other stage is refused.
//   - RUN runs in a chroot of the stage's root filesystem, inside private mount and PID
//     namespaces (fresh /proc, read-only /sys, the host's /dev and resolv.conf bound in), so
//     nothing leaks onto the host and nothing the command starts outlives it. apt-get inside
//     reaches the mirror as the host does.
//   - COPY (from the context = the repository root, or --from a stage), WORKDIR, ENV, ARG,
//     USER, EXPOSE, LABEL, ENTRYPOINT, CMD and STOPSIGNAL behave as in BuildKit. Any other
//     instruction or flag (ADD, VOLUME, HEALTHCHECK, SHELL, ONBUILD, RUN --mount, ...) fails
//     the build naming the line, rather than being skipped.
//
// The final root filesystem becomes a single layer with numeric ownership and modes kept.
// Everything lives under --cache (default $CACHE_DIR/images): the base tarball, a snapshot
// after every RUN keyed by a hash of everything before it (so changing the agent only redoes
// the COPY), the host-built artifacts, and the archives, <name>-<hash>.tar with the hash over
// all their inputs — a warm run that finds its archive builds nothing but the Go binaries (to
// hash them). A new archive replaces older ones of the same name; base images, snapshots and
// archives unused for two weeks are pruned. Builds sharing a cache take turns (a lock file).
//
// The name is written into the archive as given (":latest" added when it has no tag);
// containerd's importer normalizes it as the kubelet normalizes a pod's image, so
// "postgres:15" is found as docker.io/library/postgres:15 by both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == chrootHelperArg {
		os.Exit(chrootHelper(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var targets, dockerfiles, buildArgs listFlag
	fs.Var(&targets, "target", "TARGET=NAME: build a target of the repository's Dockerfile as image NAME (repeatable)")
	fs.Var(&dockerfiles, "dockerfile", "DIR=NAME or DIR#TARGET=NAME: build the Dockerfile in DIR (relative to the repository root; its last stage unless #TARGET) as image NAME (repeatable)")
	fs.Var(&buildArgs, "build-arg", "KEY=VALUE: set a build argument (repeatable)")
	root := fs.String("root", "", "repository root, the build context (default: found above the working directory)")
	cache := fs.String("cache", "", "cache directory for base images, snapshots, artifacts and archives (default $CACHE_DIR/images, or .cache/images in the repository)")
	mirror := fs.String("mirror", "", "Debian mirror URL for the base image (default: the one the host's apt sources use)")
	verbose := fs.Bool("v", false, "stream the output of every RUN and go build to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: images are named with --target or --dockerfile", fs.Arg(0))
	}
	if len(targets)+len(dockerfiles) == 0 {
		return errors.New("nothing to build: name an image with --target TARGET=NAME or --dockerfile DIR=NAME")
	}

	if os.Geteuid() != 0 {
		return errors.New("hack/imagebuild needs root (it chroots, mounts in private namespaces and chowns files): run it with sudo")
	}
	var err error
	if *root == "" {
		if *root, err = findRoot(); err != nil {
			return err
		}
	}
	if *cache == "" {
		if c := os.Getenv("CACHE_DIR"); c != "" {
			*cache = filepath.Join(c, "images")
		} else {
			*cache = filepath.Join(*root, ".cache", "images")
		}
	}
	var reqs []request
	for _, t := range targets {
		target, name, ok := strings.Cut(t, "=")
		if !ok || target == "" || name == "" {
			return fmt.Errorf("--target %q: want TARGET=NAME, e.g. control-plane=cake-agents/web:dev", t)
		}
		reqs = append(reqs, request{dockerfile: "Dockerfile", target: target, name: name})
	}
	for _, d := range dockerfiles {
		spec, name, ok := strings.Cut(d, "=")
		if !ok || spec == "" || name == "" {
			return fmt.Errorf("--dockerfile %q: want DIR=NAME, e.g. test/images/postgres=postgres:15", d)
		}
		dir, target, _ := strings.Cut(spec, "#")
		reqs = append(reqs, request{dockerfile: filepath.Join(dir, "Dockerfile"), target: target, name: name})
	}
	args2 := map[string]string{}
	for _, a := range buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("--build-arg %q: want KEY=VALUE", a)
		}
		args2[k] = v
	}

	b, err := newBuilder(*root, *cache, args2, stderr)
	if err != nil {
		return err
	}
	b.mirror = *mirror
	b.verbose = *verbose
	defer b.close()
	for _, r := range reqs {
		path, err := b.build(ctx, r)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", r.name, r.describe(), err)
		}
		fmt.Fprintf(stdout, "%s\t%s\n", r.name, path)
	}
	return nil
}

// findRoot walks up from the working directory to the repository root (the directory holding
// hack/versions.env), so the command works from the root and from hack/imagebuild alike.
func findRoot() (string, error) {
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
			return "", errors.New("repository root (with hack/versions.env) not found above the working directory: run from the repository or pass --root")
		}
		dir = parent
	}
}
