//go:build unix

package hub

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPump says whether a tryWriter can write here.
const canPump = true

// tryWriter writes to sockets without waiting, for one pump. Its callback
// is made once, so a write allocates nothing: a closure per write cost three
// allocations per client and broadcast.
type tryWriter struct {
	frames [][]byte
	n      int
	err    error
	write  func(fd uintptr) bool // writev, as a method value
}

func newTryWriter() *tryWriter {
	w := &tryWriter{}
	w.write = w.writev
	return w
}

func (w *tryWriter) writev(fd uintptr) bool {
	for {
		w.n, w.err = unix.Writev(int(fd), w.frames)
		if w.err != syscall.EINTR {
			return true // written or not, never wait here
		}
	}
}

// try writes frames to the socket: what it takes now, with one writev. It
// returns how many bytes went out (0 if the socket is full). A write
// deadline that has passed, or a closed connection, is an error.
func (w *tryWriter) try(raw syscall.RawConn, frames [][]byte) (int, error) {
	w.frames = frames
	err := raw.Write(w.write)
	n, werr := w.n, w.err
	w.frames, w.n, w.err = nil, 0, nil
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
