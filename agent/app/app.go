package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cakeai/cake-agents/agent/server"
	"github.com/cakeai/cake-agents/agent/sessions"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/pkg/version"
)

// NewRootCommand returns the `agent` command with its subcommands. out and errOut
// receive command output; logs go to errOut.
func NewRootCommand(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "agent",
		Short:         "The Cake Agents control plane",
		Long:          "The in-cluster control plane of Cake Agents: it serves the API and web UI, stores\nsessions, runs one OpenCode pod per session and proxies to them.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(newServeCommand(errOut), newMigrateCommand(out, errOut), newSessionInitCommand(errOut), newVersionCommand(out))
	return root
}

func newVersionCommand(out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the agent's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(out, "agent %s\n", version.Get())
			return err
		},
	}
}

func newServeCommand(errOut io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the API, the web UI and run the session controller",
		Long: `Serve the agent's HTTP API and web UI and run the session controller.

Every setting can be given as a flag or as the environment variable shown in
brackets (flags win). In a cluster the Helm chart sets the environment.`,
		Example: `  # Run outside a cluster against the current kubeconfig with SQLite:
  agent serve --database-url sqlite:///tmp/agents.db --namespace cake-agents --https-addr 127.0.0.1:8443`,
		Args: cobra.NoArgs,
	}
	load := BindFlags(cmd.Flags(), os.Getenv)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := load()
		if err != nil {
			return err
		}
		return Serve(cmd.Context(), cfg, errOut)
	}
	return cmd
}

// NewLogger returns the agent's root logger in the configured format and level.
func NewLogger(cfg *Config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "agent",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		Output:     w,
		JSONFormat: cfg.LogFormat == "json",
		TimeFormat: time.RFC3339,
	})
}

// RESTConfig returns the Kubernetes client configuration: the kubeconfig when one is
// given, in-cluster config when running in a pod, else the default loading rules.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration: run in a pod or set --kubeconfig: %w", err)
	}
	return cfg, nil
}

// Serve runs the agent until ctx is cancelled, then shuts down gracefully.
func Serve(ctx context.Context, cfg *Config, logOut io.Writer) error {
	log := NewLogger(cfg, logOut)
	if !version.Get().CGO {
		return errors.New("this agent was built without cgo, so its SQLite driver is a stub: rebuild with CGO_ENABLED=1")
	}
	restCfg, err := RESTConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "cake-agents/" + version.Version
	// client-go's default of 5 requests/s throttles a burst of session creates: see
	// sessions.KubeQPS.
	if restCfg.QPS == 0 {
		restCfg.QPS, restCfg.Burst = sessions.KubeQPS, sessions.KubeBurst
	}
	if cfg.KubeAPIQPS > 0 {
		restCfg.QPS, restCfg.Burst = float32(cfg.KubeAPIQPS), 2*cfg.KubeAPIQPS
	}
	if cfg.KubeAPIBurst > 0 {
		restCfg.Burst = cfg.KubeAPIBurst
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The listeners come up first so probes answer while the database is still being
	// reached: /healthz says the process lives, /readyz stays false until wiring is done.
	gate := &readyGate{}
	gate.setPending("store", errors.New("connecting to the database"))
	handler := &swapHandler{}
	handler.set(gate.notReadyHandler())

	cert, err := loadOrGenerateServingCert(ctx, cfg, kube, log)
	if err != nil {
		return err
	}
	servers, errc, err := listen(cfg, handler, cert, log)
	if err != nil {
		return err
	}
	if cfg.DebugAddr != "" {
		dbg, err := serveDebug(cfg.DebugAddr, errc)
		if err != nil {
			return err
		}
		servers = append(servers, dbg)
		log.Info("serving pprof profiles", "addr", cfg.DebugAddr)
	}
	log.Info("agent starting", "version", version.Version, "http", cfg.HTTPAddr, "https", cfg.HTTPSAddr, "session_namespace", cfg.SessionNamespace)

	var (
		wg  sync.WaitGroup
		st  store.Store // written by the wiring goroutine, read after wg.Wait
		run = make(chan error, 1)
	)
	fail := func(err error) {
		if ctx.Err() == nil {
			select {
			case run <- err:
			default:
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		opened, kr, err := openStoreWithRetry(ctx, cfg, log, func(err error) { gate.setPending("store", err) })
		if err != nil {
			fail(err)
			return
		}
		st = opened
		if err := publishServingCA(ctx, kube, cfg.Namespace, cfg.ServingCAConfigMap, cfg.Release, cert.caPEM); err != nil {
			log.Warn("publish serving CA failed: the plugin cannot verify this agent until it succeeds", "configmap", cfg.ServingCAConfigMap, "error", err)
		}
		deps, err := wire(ctx, cfg, restCfg, kube, st, kr, reg, log)
		if err != nil {
			fail(err)
			return
		}
		handler.set(deps.handler)
		gate.clear("store")
		log.Info("agent ready")
		if err := deps.run(ctx); err != nil {
			fail(fmt.Errorf("session controller: %w", err))
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	case runErr = <-run:
	}
	log.Info("agent shutting down")
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer done()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			log.Warn("http shutdown incomplete", "addr", s.Addr, "error", err)
		}
	}
	cancel()
	wg.Wait()
	if st != nil {
		if err := st.Close(); err != nil {
			log.Warn("store close failed", "error", err)
		}
	}
	if runErr != nil {
		log.Error("agent stopped", "error", runErr)
	}
	return runErr
}

// listen starts the plain-HTTP and TLS listeners; their serve errors go to the channel.
func listen(cfg *Config, h http.Handler, cert *servingCert, log hclog.Logger) ([]*http.Server, chan error, error) {
	errc := make(chan error, 3) // one per listener, the debug one included
	errLog := log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	newServer := func(addr string) *http.Server {
		return &http.Server{
			Addr:              addr,
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          errLog,
			// No Read/WriteTimeout: event streams and attach tunnels are long-lived.
		}
	}
	var servers []*http.Server
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen on --http-addr %s: %w", cfg.HTTPAddr, err)
		}
		s := newServer(cfg.HTTPAddr)
		servers = append(servers, s)
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http server: %w", err)
			}
		}()
	}
	if cfg.HTTPSAddr != "" {
		s := newServer(cfg.HTTPSAddr)
		s.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert.cert},
			// Client certificates are optional and verified by the Kubernetes
			// authenticator against the cluster's client CA, which can change at run time.
			ClientAuth: tls.RequestClientCert,
		}
		ln, err := net.Listen("tcp", cfg.HTTPSAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen on --https-addr %s: %w", cfg.HTTPSAddr, err)
		}
		servers = append(servers, s)
		go func() {
			if err := s.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("https server: %w", err)
			}
		}()
	}
	return servers, errc, nil
}

// serveDebug serves Go's pprof handlers on addr (a loopback address, checked by the
// configuration) from a mux of their own: net/http/pprof's init registers them on
// http.DefaultServeMux, which nothing else here serves.
func serveDebug(addr string, errc chan<- error) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --debug-addr %s: %w", addr, err)
	}
	s := &http.Server{Addr: ln.Addr().String(), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("debug server: %w", err)
		}
	}()
	return s, nil
}

// swapHandler lets the listeners start before the rest of the agent is wired.
type swapHandler struct{ h atomic.Value }

func (s *swapHandler) set(h http.Handler) { s.h.Store(&h) }

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load().(*http.Handler)).ServeHTTP(w, r)
}

// readyGate holds the reasons the agent is not ready yet.
type readyGate struct {
	mu      sync.Mutex
	pending map[string]error
}

func (g *readyGate) setPending(k string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending == nil {
		g.pending = map[string]error{}
	}
	g.pending[k] = err
}

func (g *readyGate) clear(k string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pending, k)
}

// notReadyHandler answers while the agent is wiring up: alive, not ready, API unavailable.
func (g *readyGate) notReadyHandler() http.Handler {
	return server.NotReady(func() map[string]error {
		g.mu.Lock()
		defer g.mu.Unlock()
		out := map[string]error{}
		for k, v := range g.pending {
			out[k] = v
		}
		return out
	})
}
