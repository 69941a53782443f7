//go:build unix

package hub

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPump says whether tryWrite can write here.
const canPump = true

// tryWrite writes frames to a socket without waiting: what it takes now,
// with one writev. It returns how many bytes went out (0 if the socket is
// full). A read or write deadline that has passed, or a closed connection,
// is an error.
func tryWrite(raw syscall.RawConn, frames [][]byte) (n int, err error) {
	var werr error
	err = raw.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Writev(int(fd), frames)
			if werr != syscall.EINTR {
				return true // written or not, never wait here
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN:
		return 0, nil
	case werr != nil:
		return 0, &net.OpError{Op: "write", Net: "tcp", Err: werr}
	}
	return max(n, 0), nil
}
