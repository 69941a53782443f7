package hub

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// The writer side of a client: a queue of ready-made WebSocket frames that
// Deliver appends to without blocking, and a drain that sends everything
// queued with one system call.
//
// Why not gorilla's WritePreparedMessage per frame: it costs one write
// system call per frame per client (on a loopback VM 12–17 µs of CPU each,
// most of the relay's cost), takes the PreparedMessage's mutex (shared by
// every writer) and sets a deadline per frame. A server frame is a short
// header and the payload, unmasked (RFC 6455 §5.2), so Deliver builds it
// once for every client, and the writer hands a client's whole backlog to
// the kernel in one writev. (The Upgrader negotiates no compression, so a
// frame is sent as built.)
//
// Every write to the connection after the upgrade comes from the client's
// writer (a broadcast's pump, or the writer goroutine it hands over to; one
// at a time, as the queue is claimed), so nothing can land inside a data
// frame: pings and the close frame are written by the writer between
// drains, and pongs to the client's pings are queued as frames (see
// client.readPump). The one exception is gorilla's own close 1009 on an
// oversized client frame, written by the reader; the kernel takes each
// blocking write whole (Go holds the socket's write lock for the full
// write), and gorilla's writes wait while a pump's write that the socket
// took only in part waits for its rest (guardedConn.partial), so it can only
// follow a data frame, except after a write that failed half-way, which
// closes the connection at once.

// textFrame returns payload as one unmasked, final server text frame.
func textFrame(payload []byte) []byte {
	return appendFrame(make([]byte, 0, len(payload)+10), opText, payload)
}

const (
	opText = 0x1
	opPong = 0xA
)

func appendFrame(b []byte, op byte, payload []byte) []byte {
	b = append(b, 0x80|op) // FIN
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// queue holds the frames waiting for one client's writer. Frames are shared
// between clients (encoded once), so a queue costs a slice header per frame;
// bytes counts what the client has not yet received, for the too-slow
// policy.
type queue struct {
	mu     sync.Mutex
	frames [][]byte
	bytes  int       // queued plus being written
	since  time.Time // when the oldest queued frame was queued; zero if none
	// writing is the since of the batch the writer is writing, zero when
	// it is not writing: while a write is blocked, its frames are the
	// oldest unread.
	writing time.Time
	spare   [][]byte // the previous batch's array, reused
	// allowance is what preload queued and the writer has not yet written:
	// the server chose to send it (hello, a resume's replay), so it does
	// not count against the client when push judges it too slow.
	allowance int
	// running is true while the client has a writer (a pump or a writer
	// goroutine; push's start hands it to the caller), and for good once it
	// has closed the connection.
	running bool
	closed  bool // the client is closing: push refuses, nothing is kept
}

// push appends f unless the client is too slow: it already has more than
// maxBytes unread, or its oldest unread frame waited longer than maxAge.
// It reports whether the caller must start a writer, and whether f was
// queued.
func (q *queue) push(f []byte, now time.Time, maxBytes int, maxAge time.Duration) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, false
	}
	oldest := q.writing
	if oldest.IsZero() {
		oldest = q.since
	}
	if q.bytes+len(f) > maxBytes+q.allowance || (!oldest.IsZero() && now.Sub(oldest) > maxAge) {
		return false, false
	}
	if len(q.frames) == 0 {
		q.since = now
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f)
	start = !q.running
	q.running = true
	return start, true
}

// preload appends f for a writer that has not started yet (the hello and
// what follows it before the client is registered); it starts none.
func (q *queue) preload(f []byte, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) == 0 {
		q.since = now
	}
	q.frames = append(q.frames, f)
	q.bytes += len(f)
	q.allowance += len(f)
}

// close drops what is queued and refuses what comes: the client is closing.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.frames, q.spare = nil, nil
}

// claim reports whether the caller must start a writer, marking one as
// running.
func (q *queue) claim() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	start := !q.running
	q.running = true
	return start
}

// release marks the writer as stopped if the queue is empty and idle()
// holds, both under the lock; it reports whether it did.
func (q *queue) release(idle func() bool) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.frames) > 0 || !idle() {
		return false
	}
	q.running = false
	return true
}

// take moves every queued frame to the caller, who must call done after
// writing them.
func (q *queue) take() (batch [][]byte, size int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch = q.frames
	q.frames, q.spare = q.spare[:0], nil
	q.writing, q.since = q.since, time.Time{}
	for _, f := range batch {
		size += len(f)
	}
	return batch, size
}

// done records that a batch of size bytes was written and keeps its array
// for the next one, unless a burst made it large.
func (q *queue) done(batch [][]byte, size int) {
	clear(batch) // the frames belong to the GC now
	q.mu.Lock()
	defer q.mu.Unlock()
	q.bytes -= size
	q.allowance = max(0, q.allowance-size)
	q.writing = time.Time{}
	if cap(batch) <= 256 {
		q.spare = batch[:0]
	}
}

// writeBatch writes frames to nc with one system call where the connection
// allows it: net.Buffers becomes a single writev on TCP; other connections
// (TLS, net.Pipe) get the frames copied into scratch and written once. The
// caller has set the write deadline (client.armWrite).
func writeBatch(nc net.Conn, frames [][]byte, scratch *[]byte) error {
	if len(frames) == 1 {
		_, err := nc.Write(frames[0])
		return err
	}
	if _, ok := nc.(*net.TCPConn); ok {
		bufs := net.Buffers(frames) // WriteTo consumes bufs, not frames' length
		_, err := bufs.WriteTo(nc)
		return err
	}
	b := (*scratch)[:0]
	for _, f := range frames {
		b = append(b, f...)
	}
	_, err := nc.Write(b)
	if cap(b) <= 64<<10 {
		*scratch = b[:0]
	} else {
		*scratch = nil // a burst; do not keep its buffer per connection
	}
	return err
}
