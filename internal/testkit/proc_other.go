//go:build !linux

package testkit

import "syscall"

// DiesWithParent returns attr as it is: only Linux can tie a child's life to
// its parent's, so elsewhere a process that dies leaves its children behind.
func DiesWithParent(attr *syscall.SysProcAttr) *syscall.SysProcAttr { return attr }
