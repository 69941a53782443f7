//go:build unix

package testkit

import (
	"os/exec"
	"syscall"
	"time"
)

// Group is a child process started in a process group of its own, which
// dies with this process (see DiesWithParent): the emulator, whose launcher
// execs java, and the load tool's relays, Redis and Centrifugo nodes. Stop
// ends the whole group, and nothing else.
type Group struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartGroup starts cmd in a group of its own. onExit, if set, runs once
// the process has exited (and been waited for), before Exited is closed.
func StartGroup(cmd *exec.Cmd, onExit func()) (*Group, error) {
	cmd.SysProcAttr = DiesWithParent(&syscall.SysProcAttr{Setpgid: true})
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &Group{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		if onExit != nil {
			onExit()
		}
		close(g.exited)
	}()
	return g, nil
}

// Pid is the process's id (and the group's).
func (g *Group) Pid() int { return g.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (g *Group) Exited() <-chan struct{} { return g.exited }

// Stop sends SIGTERM to the group, SIGKILL after grace (and to whatever of
// the group is left), and returns once the process has exited.
func (g *Group) Stop(grace time.Duration) {
	pgid := g.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	select {
	case <-g.exited:
	case <-t.C:
	}
	t.Stop()
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-g.exited
}
