// Command releasetool prepares what a release publishes besides goreleaser's archives. The
// release workflow and `make release-snapshot` run it:
//
//	releasetool check -version 1.2.3
//	    the tag agrees with charts/cake-agents/Chart.yaml (version and appVersion) and
//	    CHANGELOG.md has the release's section
//	releasetool krew-manifest -tag v1.2.3 [-template krew/agents.yaml.tmpl] [-dist dist] [-o FILE]
//	    the krew manifest, rendered from the krew-index release bot's template with the
//	    checksums of the archives in -dist
//	releasetool package-chart -version 1.2.3 [-registry REG] [-changes 1.2.3|Unreleased] [-o dist/chart]
//	    the chart package: versions, registry.project and the Artifact Hub annotations set,
//	    packaged with helm ($HELM, else hack/tools.sh helm)
//	releasetool values-table [-check]
//	    the values table of charts/cake-agents/README.md, from values.yaml's comments
//	    (-check: fail when the README's is not current; make lint runs it)
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/cakeai/cake-agents/internal/release"
)

const usage = "usage: releasetool check|krew-manifest|package-chart|values-table [flags] (releasetool CMD -h lists the flags)"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "check":
		err = check(args)
	case "krew-manifest":
		err = krewManifest(args)
	case "package-chart":
		err = packageChart(args)
	case "values-table":
		err = valuesTable(args)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "releasetool:", err)
		os.Exit(1)
	}
}

var semver = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`)

func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	version := fs.String("version", "", "the release's version: the tag without its v (required)")
	chart := fs.String("chart", "charts/cake-agents", "the chart")
	changelog := fs.String("changelog", "CHANGELOG.md", "the changelog")
	_ = fs.Parse(args)
	if !semver.MatchString(*version) {
		return fmt.Errorf("-version %q: want a semantic version such as 1.2.3 (tag v1.2.3)", *version)
	}
	b, err := os.ReadFile(filepath.Join(*chart, "Chart.yaml"))
	if err != nil {
		return err
	}
	var errs []error
	for _, key := range []string{"version", "appVersion"} {
		m := regexp.MustCompile(`(?m)^` + key + `: *"?([^"\n]*)"?$`).FindSubmatch(b)
		if m == nil || string(m[1]) != *version {
			got := "nothing"
			if m != nil {
				got = string(m[1])
			}
			errs = append(errs, fmt.Errorf("%s/Chart.yaml %s is %s, the tag says %s: set version and appVersion to %s in the pull request that prepares the release", *chart, key, got, *version, *version))
		}
	}
	cl, err := os.ReadFile(*changelog)
	if err != nil {
		return err
	}
	if _, err := release.Changes(cl, *version); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func krewManifest(args []string) error {
	fs := flag.NewFlagSet("krew-manifest", flag.ExitOnError)
	tmpl := fs.String("template", "krew/agents.yaml.tmpl", "the krew-release-bot template")
	tag := fs.String("tag", "", "the release tag, e.g. v1.2.3 (required)")
	dist := fs.String("dist", "dist", "the directory holding the release archives")
	out := fs.String("o", "-", "where to write the manifest (- for stdout)")
	_ = fs.Parse(args)
	if *tag == "" {
		return fmt.Errorf("-tag is required (the release tag, e.g. v1.2.3)")
	}
	t, err := os.ReadFile(*tmpl)
	if err != nil {
		return err
	}
	m, err := release.KrewManifest(*tmpl, t, *tag, *dist)
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = os.Stdout.Write(m)
		return err
	}
	return os.WriteFile(*out, m, 0o644)
}

func packageChart(args []string) error {
	fs := flag.NewFlagSet("package-chart", flag.ExitOnError)
	version := fs.String("version", "", "the chart's version and appVersion (required)")
	registry := fs.String("registry", "", "where the project's images are published (values registry.project)")
	changesOf := fs.String("changes", "", `the CHANGELOG.md section for artifacthub.io/changes (default: -version; "Unreleased" for snapshots)`)
	chart := fs.String("chart", "charts/cake-agents", "the chart")
	changelog := fs.String("changelog", "CHANGELOG.md", "the changelog")
	out := fs.String("o", "dist/chart", "the directory the package is written to")
	_ = fs.Parse(args)
	if !semver.MatchString(*version) {
		return fmt.Errorf("-version %q: want a semantic version such as 1.2.3", *version)
	}
	if *changesOf == "" {
		*changesOf = *version
	}
	cl, err := os.ReadFile(*changelog)
	if err != nil {
		return err
	}
	changes, err := release.Changes(cl, *changesOf)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "chart-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	// helm package names the package after the directory's chart, not the directory.
	dst := filepath.Join(tmp, filepath.Base(*chart))
	if err := release.PrepareChart(*chart, dst, release.ChartRelease{Version: *version, Registry: *registry, Changes: changes}); err != nil {
		return err
	}
	helm := os.Getenv("HELM")
	if helm == "" {
		b, err := exec.Command("hack/tools.sh", "helm").Output()
		if err != nil {
			return fmt.Errorf("build helm (hack/tools.sh helm): %w", err)
		}
		helm = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	cmd := exec.Command(helm, "package", dst, "--destination", *out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("helm package: %w", err)
	}
	return nil
}

func valuesTable(args []string) error {
	fs := flag.NewFlagSet("values-table", flag.ExitOnError)
	chart := fs.String("chart", "charts/cake-agents", "the chart")
	check := fs.Bool("check", false, "only check that the README's table is current")
	_ = fs.Parse(args)
	values, err := os.ReadFile(filepath.Join(*chart, "values.yaml"))
	if err != nil {
		return err
	}
	docs, err := release.ValuesDoc(values)
	if err != nil {
		return err
	}
	readmePath := filepath.Join(*chart, "README.md")
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	updated, err := release.ReplaceValuesTable(readme, release.ValuesTable(docs))
	if err != nil {
		return err
	}
	if string(updated) == string(readme) {
		return nil
	}
	if *check {
		return fmt.Errorf("%s's values table is not current with values.yaml: run go run ./internal/release/cmd/releasetool values-table", readmePath)
	}
	return os.WriteFile(readmePath, updated, 0o644)
}
