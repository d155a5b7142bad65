// Command probe runs inside a RUN of the builder's tests: it reports what the command sees
// (ids, PID, working directory, HOME, /proc, DNS config) as JSON on stdout, writes a file
// owned by its user, and leaves a child running in the background, which the builder must
// not let outlive the RUN.
package main

import (
	"encoding/json"
	"os"
	"os/exec"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		select {}
	}
	cwd, _ := os.Getwd()
	_, procErr := os.Stat("/proc/self/status")
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	pid1, _ := os.ReadFile("/proc/1/cmdline")
	report := map[string]any{
		"uid": os.Getuid(), "gid": os.Getgid(), "pid": os.Getpid(), "cwd": cwd,
		"home": os.Getenv("HOME"), "path": os.Getenv("PATH"), "arg": os.Getenv("GREETING"),
		"proc": procErr == nil, "resolv": len(resolv), "init": string(pid1),
	}
	if err := os.WriteFile("made-by-run", []byte("hi\n"), 0o640); err != nil {
		panic(err)
	}
	bg := exec.Command("/probe", "sleep")
	bg.Stdout = os.Stdout // holds the RUN's output open until the PID namespace ends
	if err := bg.Start(); err != nil {
		panic(err)
	}
	report["bgpid"] = bg.Process.Pid
	if err := json.NewEncoder(os.Stdout).Encode(report); err != nil {
		panic(err)
	}
}
