// Package ownedproc starts child processes that die with the test or tool that started
// them, so a killed test binary leaves no etcd, postgres or opencode behind.
package ownedproc

import (
	"os/exec"
	"runtime"
	"sync"
)

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan error
}

var spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

// Start starts cmd from one OS thread that never exits. Pdeathsig (which the caller
// sets in cmd.SysProcAttr) fires when the *thread* that forked the child exits, not the
// process, and the Go runtime may retire threads; a goroutine locked to its thread
// forever makes "the parent died" mean exactly that.
func Start(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for req := range spawner.reqs {
				req.result <- req.cmd.Start()
			}
		}()
	})
	result := make(chan error, 1)
	spawner.reqs <- spawnRequest{cmd: cmd, result: result}
	return <-result
}
