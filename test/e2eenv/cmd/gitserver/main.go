// Command gitserver serves the bare git repositories under a directory over HTTPS with git's
// own smart-HTTP backend (git http-backend as CGI, test/githttp), like e2eenv.GitServer does in process, for
// tests where the client is a pod: the real-node tier runs it from the gitserver image
// (test/images/gitserver) so session pods clone a repository through the same https:// path a
// hosted one takes.
//
//	gitserver -root /srv/git -cert tls.crt -key tls.key -listen :8443
//
// Every flag has an environment variable (GITSERVER_ROOT, GITSERVER_TLS_CERT, GITSERVER_TLS_KEY,
// GITSERVER_LISTEN, GITSERVER_PRIVATE, GITSERVER_TOKEN_FILE) so a pod sets them from a Secret.
// -private NAME.git makes one repository private: it answers only to the user x-access-token
// with the token in -token-file (HTTP basic authentication) and takes their pushes. Others
// are served read-only and
// whoever owns them (a hostPath volume is usually root's while the server runs as another
// user: git's safe.directory check is turned off for the backend). GET /healthz answers 200
// for probes. It prints its URL on stdout once it listens and stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/test/githttp"
	"github.com/cakeai/cake-agents/test/testserve"
)

func main() {
	testserve.Main(func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Stdout)
	})
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("gitserver", flag.ContinueOnError)
	root := fs.String("root", envOr("GITSERVER_ROOT", "/srv/git"), "directory of bare repositories (name.git), served as https://host/name.git (env GITSERVER_ROOT)")
	certFile := fs.String("cert", os.Getenv("GITSERVER_TLS_CERT"), "TLS certificate (PEM) (env GITSERVER_TLS_CERT)")
	keyFile := fs.String("key", os.Getenv("GITSERVER_TLS_KEY"), "TLS private key (PEM) (env GITSERVER_TLS_KEY)")
	listen := fs.String("listen", envOr("GITSERVER_LISTEN", ":8443"), "address to listen on (env GITSERVER_LISTEN)")
	private := fs.String("private", os.Getenv("GITSERVER_PRIVATE"), "repository (NAME.git) that needs the token and takes pushes (env GITSERVER_PRIVATE)")
	tokenFile := fs.String("token-file", os.Getenv("GITSERVER_TOKEN_FILE"), "file holding the private repository's token (env GITSERVER_TOKEN_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *certFile == "" || *keyFile == "" {
		return errors.New("a TLS certificate is required: pass -cert and -key (or GITSERVER_TLS_CERT and GITSERVER_TLS_KEY)")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("load the TLS certificate: %w (check -cert and -key)", err)
	}
	if info, err := os.Stat(*root); err != nil || !info.IsDir() {
		return fmt.Errorf("repository directory %s: not a directory (set -root)", *root)
	}
	h, err := githttp.New(*root)
	if err != nil {
		return err
	}
	if *private != "" {
		tok, err := os.ReadFile(*tokenFile)
		if err != nil || strings.TrimSpace(string(tok)) == "" {
			return fmt.Errorf("-private %s needs its token: -token-file %q: not a readable file with a token", *private, *tokenFile)
		}
		h.SetPrivate(*private, "x-access-token", strings.TrimSpace(string(tok)))
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.Handle("/", h)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (pick another address with -listen)", *listen, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	fmt.Fprintf(out, "https://%s\n", l.Addr())
	return testserve.Serve(ctx, srv, l)
}
