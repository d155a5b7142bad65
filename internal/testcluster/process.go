package testcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cakeai/cake-agents/internal/ownedproc"
)

// ProcessRecord identifies one control-plane process in the state file. StartTime (field 22 of
// /proc/<pid>/stat, in clock ticks since boot) guards against killing an unrelated process that
// reused the PID after ours exited.
type ProcessRecord struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
}

// process is a control-plane process started by this process.
type process struct {
	ProcessRecord
	done chan struct{} // closed when Wait returns
	err  error         // Wait's result, valid after done is closed

	// How it was started, so it can be started again (Cluster.StartAPIServer).
	bin      string
	args     []string
	env      []string
	detached bool
}

// startProcess runs bin with args, stdout and stderr appended to logPath, in its own process
// group. Owned processes get SIGKILL when this process dies; detached ones get their own session
// and outlive it.
func startProcess(name, bin string, args, env []string, logPath string, detached bool) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = childEnv()
	}
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		err = ownedproc.Start(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{
		ProcessRecord: ProcessRecord{Name: name, PID: cmd.Process.Pid, Log: logPath},
		done:          make(chan struct{}),
		bin:           bin, args: args, env: env, detached: detached,
	}
	if st, err := readProcStat(p.PID); err == nil {
		p.StartTime = st.startTime
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childEnv is this process's environment without variables that would point the control plane
// at another cluster.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

type procStat struct {
	state     byte
	startTime uint64
}

// readProcStat parses /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may contain spaces or parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, err
	}
	return procStat{state: fields[0][0], startTime: start}, nil
}

// alive reports whether the recorded process still runs (a zombie does not count) and is the
// same process that was recorded.
func (r ProcessRecord) alive() bool {
	if r.PID <= 0 {
		return false
	}
	st, err := readProcStat(r.PID)
	if err != nil {
		return false
	}
	if st.state == 'Z' || st.state == 'X' {
		return false
	}
	return r.StartTime == 0 || st.startTime == r.StartTime
}

// stopRecord sends SIGTERM to the recorded process's group, then SIGKILL after grace. It only
// signals a process that alive() recognises; done, when not nil, is closed once it was reaped.
func stopRecord(r ProcessRecord, grace time.Duration, done <-chan struct{}) error {
	gone := func() bool {
		if done != nil {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		return !r.alive()
	}
	if gone() || !r.alive() {
		return nil
	}
	signal := func(sig syscall.Signal) error {
		// Each process leads its own group (Setpgid or Setsid), so -PID reaches it and anything
		// it spawned, never our own group.
		err := syscall.Kill(-r.PID, sig)
		if errors.Is(err, syscall.ESRCH) {
			err = syscall.Kill(r.PID, sig)
		}
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	if err := signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s (pid %d): %w", r.Name, r.PID, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if gone() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !r.alive() {
		return nil
	}
	if err := signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s (pid %d): %w", r.Name, r.PID, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if gone() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s (pid %d) survived SIGKILL", r.Name, r.PID)
}

// tailFile returns the last n bytes of a log, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := st.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	return strings.TrimSpace(string(buf))
}
