package hub

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// Gorilla reads a message's frames in a loop of its own, so an endless
// stream of empty continuation frames never returns to the hub: it burned
// 20 s of CPU in the 30 s before the read deadline ended it (pongs can even
// extend that deadline). The frame guard counts frames as their headers go
// by on the raw connection, beneath gorilla, and fails the read when a
// client sends too many.
const (
	// maxFramesPerMessage bounds the fragments of one message. Browsers send
	// every message in one frame; a message is at most Config.ReadLimit
	// bytes anyway.
	maxFramesPerMessage = 32
	// frameRate and frameBurst bound all frames (data, continuation and
	// control) a connection sends per second. A page sends one frame per
	// alert and one pong per ping.
	frameRate  = rate.Limit(50)
	frameBurst = 200
)

// Errors that end a connection from the frame guard; the reader closes it
// with 1008.
var (
	errFragmented    = errors.New("too many frames in one message")
	errFrameFlooding = errors.New("too many frames per second")
)

// guardWriter makes the upgrader's hijacked connection a guardedConn.
type guardWriter struct {
	http.ResponseWriter
}

func (w guardWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hub: response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	g := &guardedConn{Conn: nc, fd: -1}
	if brw.Reader.Buffered() > 0 {
		// Bytes sent before the handshake's answer: gorilla sees them in
		// net/http's reader and refuses the upgrade (they never passed
		// through the guard).
		return g, brw, nil
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			g.raw = raw
			_ = raw.Control(func(fd uintptr) { g.fd = int32(fd) })
		}
	}
	// Gorilla reads through this buffered reader (the upgrader's
	// ReadBufferSize is 0, so it adopts a hijacked reader of 256 bytes or
	// more), which lets waitReadable see what is buffered. Every byte
	// after the handshake passes through the guard.
	g.br = bufio.NewReaderSize(g, readBufferSize)
	return g, bufio.NewReadWriter(g.br, brw.Writer), nil
}

// writeConn is the connection the writer writes to: beneath the frame
// guard, which only reads, so that a *net.TCPConn keeps its writev.
func writeConn(nc net.Conn) net.Conn {
	if g, ok := nc.(*guardedConn); ok {
		return g.Conn
	}
	return nc
}

// guardedConn parses WebSocket frame headers (RFC 6455 section 5.2) from the
// bytes the client sends, skipping payloads, and counts frames.
type guardedConn struct {
	net.Conn
	frames bucket          // frameRate, frameBurst
	br     *bufio.Reader   // gorilla's reader on this connection
	raw    syscall.RawConn // nil if the connection has no descriptor
	fd     int32           // raw's descriptor, -1 if none
	// partial is held from a pump's write that the socket took only in part
	// until its rest is written (client.writeFirst), and by gorilla's own
	// writes (Write), so that nothing lands inside that frame.
	partial sync.Mutex
	// armed and unparked belong to the parking lot (park_linux.go), under
	// its lock: the descriptor is in its epoll set; the connection is
	// closing and must not park again.
	armed, unparked bool

	hdr       [14]byte // the header being read
	hdrLen    int      // bytes of it read so far
	skip      uint64   // payload bytes left in the current frame
	msgFrames int      // frames of the current data message
	err       error    // sticky
}

// Write is gorilla's: pings, close frames, the close 1009 on an oversized
// client frame. The writer's frames go beneath the guard (writeConn).
func (g *guardedConn) Write(p []byte) (int, error) {
	g.partial.Lock()
	defer g.partial.Unlock()
	return g.Conn.Write(p)
}

func (g *guardedConn) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	if ferr := g.scan(p[:n]); ferr != nil {
		g.err = ferr
		return 0, ferr
	}
	return n, err
}

// readable reports whether a read would not block: gorilla has bytes
// buffered, the client has sent some, or the read would fail at once (the
// guard failed, the client hung up). Without a descriptor it says true.
func (g *guardedConn) readable() bool {
	if g.settled() {
		return true
	}
	ok := true
	if err := g.raw.Control(func(fd uintptr) { ok = readable(fd) }); err != nil {
		return true // closed: the read reports it
	}
	return ok
}

// waitReadable returns when readable would say true, or the connection's
// read deadline has passed (the read that follows then reports it). It
// waits on a shallow stack: where a connection cannot park (park_other.go),
// its reader waits here rather than deep inside gorilla's frame reader, so
// its goroutine keeps the smallest stack (2 KiB instead of 4).
func (g *guardedConn) waitReadable() {
	if g.settled() {
		return
	}
	_ = g.raw.Read(readable) // an error comes back from the read itself
}

// settled reports whether the next read is decided without asking the
// socket: gorilla has bytes buffered, the guard has failed, or there is no
// descriptor to ask.
func (g *guardedConn) settled() bool {
	return g.raw == nil || g.br.Buffered() > 0 || g.err != nil
}

// scan advances the frame parser over b.
func (g *guardedConn) scan(b []byte) error {
	for len(b) > 0 {
		if g.skip > 0 {
			k := min(g.skip, uint64(len(b)))
			g.skip -= k
			b = b[k:]
			continue
		}
		g.hdr[g.hdrLen] = b[0]
		g.hdrLen++
		b = b[1:]
		if g.hdrLen < 2 || g.hdrLen < headerLen(g.hdr[1]) {
			continue
		}
		if err := g.frame(); err != nil {
			return err
		}
	}
	return nil
}

// headerLen is the length of a frame header whose second byte is b1.
func headerLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 { // masked, as every client frame must be
		n += 4
	}
	return n
}

// frame counts the frame whose header is complete in g.hdr.
func (g *guardedConn) frame() error {
	opcode := g.hdr[0] & 0x0f
	switch n := g.hdr[1] & 0x7f; n {
	case 126:
		g.skip = uint64(binary.BigEndian.Uint16(g.hdr[2:4]))
	case 127:
		g.skip = binary.BigEndian.Uint64(g.hdr[2:10])
	default:
		g.skip = uint64(n)
	}
	g.hdrLen = 0
	if !g.frames.allow(frameRate, frameBurst) {
		return errFrameFlooding
	}
	switch {
	case opcode == 0: // continuation
		g.msgFrames++
	case opcode < 8: // text or binary: a new message
		g.msgFrames = 1
	}
	if g.msgFrames > maxFramesPerMessage {
		return errFragmented
	}
	return nil
}

// rawConn is the client's TCP connection beneath the frame guard, for
// draining it once the guard has failed the reads.
func rawConn(conn *websocket.Conn) net.Conn {
	nc := conn.NetConn()
	if g, ok := nc.(*guardedConn); ok {
		return g.Conn
	}
	return nc
}
