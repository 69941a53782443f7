//go:build unix

package hub

import "syscall"

// readable is a syscall.RawConn read callback: it reports whether a read of
// fd would not block, by peeking at one byte. End of stream and errors
// count as readable, so that the read that follows reports them.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
