package main

import (
	"context"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// dialStamped dials a client's TCP connection and asks the kernel to stamp
// what it receives (SO_TIMESTAMPNS). Without a stamp a delivery can only be
// timed when this tool reads it, and its clients share the machine's cores
// with the relays and the broker they measure: on a busy machine a reader
// waits its turn, which a browser on a machine of its own does not. The
// stamp says when the frame reached the client's socket.
func dialStamped(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return c, nil // unstamped: deliveries are timed when read
	}
	return &stampConn{TCPConn: tc, raw: raw, oob: make([]byte, syscall.CmsgSpace(int(unsafe.Sizeof(syscall.Timespec{}))))}, nil
}

// stampConn is a TCP connection that keeps the kernel's receive timestamp
// of its last read. Reads are one goroutine's (the client's reader).
type stampConn struct {
	*net.TCPConn
	raw  syscall.RawConn
	oob  []byte
	last int64 // ns since the epoch; 0 before the first stamped read
}

// Read reads with recvmsg to get the stamp. When a read returns the data of
// several segments, the kernel stamps it with the newest one's arrival, so
// an older frame in the same read is timed late, never early.
func (c *stampConn) Read(p []byte) (int, error) {
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob, 0)
			if rerr != syscall.EINTR {
				return rerr != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err // closed, or the read deadline passed
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	if msgs, err := syscall.ParseSocketControlMessage(c.oob[:oobn]); err == nil {
		for _, m := range msgs {
			if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SO_TIMESTAMPNS &&
				len(m.Data) >= int(unsafe.Sizeof(syscall.Timespec{})) {
				c.last = (*syscall.Timespec)(unsafe.Pointer(&m.Data[0])).Nano()
			}
		}
	}
	return n, nil
}

// arrived is when the data of the last read reached the socket.
func (c *stampConn) arrived() int64 { return c.last }
