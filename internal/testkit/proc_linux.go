package testkit

import "syscall"

// DiesWithParent returns attr (a new one if nil) set so that the kernel ends
// the child process if this process dies without cleaning up: a panic, the
// test's -timeout alarm, a killed load tool.
func DiesWithParent(attr *syscall.SysProcAttr) *syscall.SysProcAttr {
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGKILL
	return attr
}
