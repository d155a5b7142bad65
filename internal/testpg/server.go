// Package testpg gives tests a real, throwaway PostgreSQL server.
//
// Tests call Start(t) and get the URL of a fresh, empty database that is dropped when
// the test ends. All tests of one test binary share one server: the one named by
// $CAKE_TEST_POSTGRES_URL when set (`make test` starts one with `testpg up` for every
// package), or else one this binary starts on first use from the Debian postgresql-15
// binaries: initdb in a temp dir on a free loopback port, fsync off (Options.Durable turns it on), run as the
// `postgres` OS user when the tests run as root (initdb refuses root). Such a server
// dies with the test binary (Pdeathsig); use Main in TestMain to also remove its dir.
package testpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cakeai/cake-agents/internal/ownedproc"
)

// EnvURL names the variable holding the URL of an existing server for the tests; its
// user must be allowed to CREATE DATABASE.
const EnvURL = "CAKE_TEST_POSTGRES_URL"

// ErrNoBinaries: the PostgreSQL server binaries are not installed.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH or under /usr/lib/postgresql/*/bin: " +
	"install postgresql-15 (apt-get install postgresql-15), or set " + EnvURL + " to a server's URL")

// FindBinaries returns the directory holding initdb and postgres: from PATH, else the
// newest /usr/lib/postgresql/N/bin.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Options configure StartServer.
type Options struct {
	// Detached starts the server in its own session without Pdeathsig, so it outlives
	// this process (for `testpg up`). Otherwise it dies with this process.
	Detached bool
	// Prefix names the temp dir (default "cake-testpg-").
	Prefix string
	// Durable keeps PostgreSQL's production durability settings (fsync, synchronous_commit,
	// full_page_writes on): for benchmarks that compare it with SQLite, which syncs its WAL.
	// Otherwise they are off, which tests that count rows rather than time them can afford.
	Durable bool
}

// Server is a running PostgreSQL server in a temp dir.
type Server struct {
	// URL connects to the "postgres" database as the superuser "postgres".
	URL string
	// Dir holds the data dir, the socket and the log.
	Dir string
	// PID is the postmaster's.
	PID int

	done chan struct{} // closed when the postmaster exits (owned servers only)

	// What Restart needs to start the same server again.
	binDir string
	port   int
	cred   *syscall.Credential
	opts   Options
}

// StartServer runs initdb in a fresh temp dir and starts postgres on a free loopback
// port, returning once it accepts connections.
func StartServer(ctx context.Context, o Options) (_ *Server, err error) {
	binDir, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	if o.Prefix == "" {
		o.Prefix = "cake-testpg-"
	}
	dir, err := os.MkdirTemp("", o.Prefix)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the children hold their own descriptors

	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir, initdb.Stdout, initdb.Stderr = dir, logFile, logFile
	initdb.Env = pgEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb failed: %w\n%s", err, tail(logPath))
	}

	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(ctx, binDir, dir, data, port, cred, logFile, o)
		if err == nil {
			return s, nil
		}
		if attempt >= 2 || ctx.Err() != nil {
			return nil, err
		}
		// Most likely another process took the port between probing and binding.
	}
}

func start(ctx context.Context, binDir, dir, data string, port int, cred *syscall.Credential, logFile *os.File, o Options) (*Server, error) {
	detached := o.Detached
	durability := "off"
	if o.Durable {
		durability = "on"
	}
	cmd := exec.Command(filepath.Join(binDir, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync="+durability, "-c", "synchronous_commit="+durability, "-c", "full_page_writes="+durability,
		"-c", "max_connections=300", "-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning", "-c", "logging_collector=off")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.Env = pgEnv()
	s := &Server{
		URL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		Dir: dir,

		binDir: binDir, port: port, cred: cred, opts: o,
	}
	var err error
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
		err = cmd.Start()
	} else {
		// SIGQUIT is postgres' immediate shutdown: the postmaster takes its backends along.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGQUIT}
		err = ownedproc.Start(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	s.PID = cmd.Process.Pid
	exited := make(chan struct{})
	if detached {
		go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // only the exit matters
	} else {
		s.done = exited
		go func() { cmd.Wait(); close(exited) }() //nolint:errcheck // only the exit matters
	}

	deadline := time.Now().Add(90 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.URL)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return s, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("postgres exited during start-up:\n%s", tail(filepath.Join(dir, "postgres.log")))
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck
			return nil, fmt.Errorf("postgres not ready after 90s: %v\n%s", err, tail(filepath.Join(dir, "postgres.log")))
		}
	}
}

// Halt stops the postmaster (fast shutdown, then immediate) and keeps its data dir, so
// Restart brings the same databases back: a database outage, for the tests of what a
// client does meanwhile.
func (s *Server) Halt() error {
	return stopPID(s.PID, s.done)
}

// Restart starts a halted server again on its port, with its data, returning once it
// accepts connections.
func (s *Server) Restart(ctx context.Context) error {
	if s.binDir == "" {
		return errors.New("restart postgres: this server was not started by StartServer")
	}
	logFile, err := os.OpenFile(filepath.Join(s.Dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor
	n, err := start(ctx, s.binDir, s.Dir, filepath.Join(s.Dir, "data"), s.port, s.cred, logFile, s.opts)
	if err != nil {
		return fmt.Errorf("restart postgres on port %d: %w", s.port, err)
	}
	s.PID, s.done = n.PID, n.done
	return nil
}

// Stop shuts the server down (fast shutdown, then immediate) and removes its dir.
func (s *Server) Stop() error {
	if err := stopPID(s.PID, s.done); err != nil {
		return err
	}
	return os.RemoveAll(s.Dir)
}

// stopPID asks the postmaster for a fast shutdown (SIGINT) and escalates to an
// immediate one (SIGQUIT), then SIGKILL. done, when not nil, closes on exit.
func stopPID(pid int, done chan struct{}) error {
	if pid <= 0 {
		return nil
	}
	gone := func() bool {
		if done != nil {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return err != nil || zombie(st)
	}
	for _, step := range []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{syscall.SIGINT, 20 * time.Second}, {syscall.SIGQUIT, 10 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
		if gone() {
			return nil
		}
		if err := syscall.Kill(pid, step.sig); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return nil
			}
			return fmt.Errorf("stop postgres (pid %d): %w", pid, err)
		}
		for end := time.Now().Add(step.wait); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if gone() {
				return nil
			}
		}
	}
	return fmt.Errorf("postgres (pid %d) does not stop", pid)
}

func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// runAs returns the credentials to run initdb and postgres with: the postgres OS user
// when this process is root, else nil (this process's own user).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a %q OS user for initdb and postgres (installing postgresql-15 creates it): %w", "postgres", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres OS user has non-numeric ids %s:%s", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// pgEnv drops libpq variables that would point the server or initdb elsewhere.
func pgEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Record identifies a server so that another process can find and stop it (what
// `testpg up` saves and `testpg down` reads).
type Record struct {
	URL       string `json:"url"`
	Dir       string `json:"dir"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"` // guards against a reused pid
}

// Record describes s.
func (s *Server) Record() Record {
	st, _ := procStartTime(s.PID)
	return Record{URL: s.URL, Dir: s.Dir, PID: s.PID, StartTime: st}
}

// Alive reports whether the recorded postmaster still runs.
func (r Record) Alive() bool {
	st, err := procStartTime(r.PID)
	return err == nil && st == r.StartTime && isPostgres(r.PID)
}

// Stop stops the recorded server, if it still runs, and removes its dir.
func (r Record) Stop() error {
	if r.Alive() {
		if err := stopPID(r.PID, nil); err != nil {
			return err
		}
	}
	if r.Dir == "" || !strings.HasPrefix(filepath.Base(r.Dir), "cake-testpg-") {
		return fmt.Errorf("refusing to remove %q: not a testpg dir", r.Dir)
	}
	return os.RemoveAll(r.Dir)
}
