package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// baseRecipe synthesizes an official Debian image from Debian packages.
type baseRecipe struct {
	ref   string // the image it stands for
	suite string // Debian suite debootstrap installs
}

// baseRecipes are the images a FROM may name. The slim image is minbase plus the official
// image's dpkg and apt configuration (see slimRootfs).
var baseRecipes = map[string]*baseRecipe{
	"debian:bookworm-slim": {ref: "debian:bookworm-slim", suite: "bookworm"},
}

func recipeNames() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range baseRecipes {
			if !yield(k) {
				return
			}
		}
	})
}

// config is the official Debian image's config.
func (r *baseRecipe) config() imageConfig {
	return imageConfig{Env: []string{defaultPath}, Cmd: []string{"bash"}}
}

// baseVersion changes the base key when slimRootfs changes.
const baseVersion = "debootstrap-minbase-slim-v2"

// aptSource is one source from the host's apt configuration.
type aptSource struct {
	types, uris, suites, components []string
}

// readAptSources reads sources.list and sources.list.d (one-line and deb822 formats) under dir
// (normally /etc/apt). Disabled entries and files apt itself would ignore are skipped.
func readAptSources(dir string) ([]aptSource, error) {
	var out []aptSource
	files := []string{filepath.Join(dir, "sources.list")}
	more, _ := filepath.Glob(filepath.Join(dir, "sources.list.d", "*"))
	sort.Strings(more)
	files = append(files, more...)
	for _, f := range files {
		dt, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasSuffix(f, ".list"):
			out = append(out, parseOneLineSources(string(dt))...)
		case strings.HasSuffix(f, ".sources"):
			out = append(out, parseDeb822Sources(string(dt))...)
		}
	}
	return out, nil
}

func parseOneLineSources(dt string) []aptSource {
	var out []aptSource
	for _, line := range strings.Split(dt, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if strings.HasPrefix(f[1], "[") { // options: [arch=amd64 signed-by=...]
			i := 1
			for i < len(f) && !strings.HasSuffix(f[i], "]") {
				i++
			}
			f = append(f[:1], f[min(i+1, len(f)):]...)
			if len(f) < 3 {
				continue
			}
		}
		out = append(out, aptSource{types: f[:1], uris: f[1:2], suites: f[2:3], components: f[3:]})
	}
	return out
}

func parseDeb822Sources(dt string) []aptSource {
	var out []aptSource
	for _, stanza := range strings.Split(dt, "\n\n") {
		fields := map[string][]string{}
		last := ""
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
				continue
			}
			if line[0] == ' ' || line[0] == '\t' { // continuation
				if last != "" {
					fields[last] = append(fields[last], strings.Fields(line)...)
				}
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.Fields(v)
		}
		if e := fields["enabled"]; len(e) > 0 && strings.EqualFold(e[0], "no") {
			continue
		}
		if len(fields["uris"]) == 0 || len(fields["suites"]) == 0 {
			continue
		}
		out = append(out, aptSource{types: fields["types"], uris: fields["uris"], suites: fields["suites"], components: fields["components"]})
	}
	return out
}

// debianSources picks from the host's sources the Debian mirror for suite (the first deb
// source carrying suite/main) and writes the image's own sources: every host deb source of
// suite, suite-updates and suite-security, main only, signed by Debian's archive keyring —
// what the official image has, pointing where this machine's apt points.
func debianSources(srcs []aptSource, suite string) (mirror, sources string, err error) {
	var b strings.Builder
	for _, s := range srcs {
		if !slices.Contains(s.types, "deb") || !slices.Contains(s.components, "main") {
			continue
		}
		var suites []string
		for _, su := range s.suites {
			if su == suite || su == suite+"-updates" || su == suite+"-security" {
				suites = append(suites, su)
			}
		}
		if len(suites) == 0 {
			continue
		}
		if mirror == "" && slices.Contains(suites, suite) {
			mirror = s.uris[0]
		}
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
			strings.Join(s.uris, " "), strings.Join(suites, " "))
	}
	if mirror == "" {
		return "", "", fmt.Errorf("no Debian %s source with component main in the host's apt sources (/etc/apt/sources.list*): pass --mirror URL", suite)
	}
	return mirror, b.String(), nil
}

// baseSources returns the mirror and image sources for a recipe (--mirror wins over the host).
func (b *builder) baseSources(r *baseRecipe) (string, string, error) {
	if b.mirror != "" {
		return b.mirror, fmt.Sprintf("Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n", b.mirror, r.suite, r.suite), nil
	}
	srcs, err := readAptSources(b.aptDir)
	if err != nil {
		return "", "", err
	}
	return debianSources(srcs, r.suite)
}

func (b *builder) baseKey(r *baseRecipe) (string, error) {
	mirror, sources, err := b.baseSources(r)
	if err != nil {
		return "", err
	}
	return hashKey(baseVersion, r.ref, r.suite, mirror, sources), nil
}

// ensureBase returns the base tarball of a recipe, making it on first use:
// `debootstrap --variant=minbase` in a private mount namespace (debootstrap mounts /proc and
// /sys inside the target; those mounts must never appear on the host), then slimRootfs, then
// one tar with numeric ownership. Downloaded packages stay in the cache for the next time.
func (b *builder) ensureBase(ctx context.Context, r *baseRecipe) (string, error) {
	key, err := b.baseKey(r)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(b.cacheDir, "base", r.suite+"-"+key[:16]+".tar")
	if _, err := os.Stat(dst); err == nil {
		touch(dst)
		return dst, nil
	}
	mirror, sources, err := b.baseSources(r)
	if err != nil {
		return "", err
	}
	debootstrap, err := exec.LookPath("debootstrap")
	if err != nil {
		return "", fmt.Errorf("FROM %s needs debootstrap to make the base from Debian packages: apt-get install -y debootstrap", r.ref)
	}
	work, err := b.workDir("base")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	debs := filepath.Join(b.cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", err
	}
	b.progress("FROM %s: debootstrap --variant=minbase %s (from %s; minutes the first time)", r.ref, r.suite, mirror)
	cmd := execCommand(ctx, debootstrap, "--variant=minbase", "--cache-dir="+debs, r.suite, rootfs, mirror)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := b.runLogged(cmd, "debootstrap"); err != nil {
		return "", fmt.Errorf("debootstrap %s from %s: %w", r.suite, mirror, err)
	}
	if err := slimRootfs(rootfs, sources); err != nil {
		return "", err
	}
	if _, _, err := writeLayerFile(rootfs, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// slimFiles are the official slim image's configuration: dpkg skips documentation, man
// pages and translations; apt keeps no package cache and no translated indexes; no service
// starts inside a build (policy-rc.d), dpkg does not fsync.
var slimFiles = map[string]string{
	"etc/dpkg/dpkg.cfg.d/docker": `# This is the "slim" variant of the Debian base image.
path-exclude /usr/share/doc/*
# we need to keep copyright files for legal reasons
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
`,
	"etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
	"etc/apt/apt.conf.d/docker-clean": `DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
`,
	"etc/apt/apt.conf.d/docker-autoremove-suggests": "Apt::AutoRemove::SuggestsImportant \"false\";\n",
	"etc/apt/apt.conf.d/docker-no-languages":        "Acquire::Languages \"none\";\n",
	"etc/apt/apt.conf.d/docker-gzip-indexes":        "Acquire::GzipIndexes \"true\";\n",
}

// slimRootfs turns a fresh minbase tree into the slim image: the configuration above, the
// files it excludes removed, the image's apt sources, no package lists or caches, and none of
// the build machine's files (resolv.conf, hostname, logs) left behind.
func slimRootfs(root, sources string) error {
	for name, content := range slimFiles {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		return err
	}
	// What the dpkg excludes would have kept out, had they been there from the start.
	for _, dir := range []string{"usr/share/groff", "usr/share/info", "usr/share/linda", "usr/share/lintian", "usr/share/locale", "usr/share/man"} {
		if err := emptyDir(filepath.Join(root, dir)); err != nil {
			return err
		}
	}
	docs, _ := filepath.Glob(filepath.Join(root, "usr/share/doc/*"))
	for _, d := range docs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue // a symlink to another package's docs
		}
		for _, e := range entries {
			if e.Name() != "copyright" {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	if err := os.Remove(filepath.Join(root, "etc/apt/sources.list")); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/apt/sources.list.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "etc/apt/sources.list.d/debian.sources"), []byte(sources), 0o644); err != nil {
		return err
	}
	for _, dir := range []string{"var/lib/apt/lists", "var/cache/apt/archives", "var/cache/debconf", "tmp", "var/tmp", "debootstrap"} {
		if err := emptyDir(filepath.Join(root, dir)); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(root, "debootstrap"))
	if err := os.MkdirAll(filepath.Join(root, "var/lib/apt/lists/partial"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "var/cache/apt/archives/partial"), 0o700); err != nil {
		return err
	}
	bins, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/*.bin"))
	logs, _ := filepath.Glob(filepath.Join(root, "var/log/*.log"))
	aptLogs, _ := filepath.Glob(filepath.Join(root, "var/log/apt/*"))
	for _, f := range slices.Concat(bins, logs, aptLogs) {
		if err := os.RemoveAll(f); err != nil {
			return err
		}
	}
	// Runtimes bind-mount these; the build machine's values must not ship.
	for _, f := range []string{"etc/resolv.conf", "etc/hostname"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(root, f), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// emptyDir removes a directory's contents, keeping the directory.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
