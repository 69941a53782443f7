package hub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// These tests run the writer over net.Pipe inside a synctest bubble: a
// pipe has no buffer, so a client that does not read blocks the writer at
// once, and the fake clock makes deadlines and ages exact. The client side
// is a raw frame reader written from RFC 6455, independent of the writer's
// framing code.

// recConn records every write the relay makes, whole, with the write
// deadline in force when it was made.
type recConn struct {
	net.Conn
	mu       sync.Mutex
	deadline time.Time
	writes   []recWrite
}

type recWrite struct {
	data     []byte
	at       time.Time
	deadline time.Time
}

func (r *recConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	r.deadline = t
	r.mu.Unlock()
	return r.Conn.SetWriteDeadline(t)
}

func (r *recConn) SetDeadline(t time.Time) error {
	r.mu.Lock()
	r.deadline = t
	r.mu.Unlock()
	return r.Conn.SetDeadline(t)
}

func (r *recConn) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.writes = append(r.writes, recWrite{data: bytes.Clone(b), at: time.Now(), deadline: r.deadline})
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func (r *recConn) recorded() []recWrite {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recWrite(nil), r.writes...)
}

// wsFrame is one frame as a client sees it.
type wsFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// readWSFrame reads one unmasked server frame.
func readWSFrame(r io.Reader) (wsFrame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return wsFrame{}, err
	}
	f := wsFrame{fin: hdr[0]&0x80 != 0, op: hdr[0] & 0x0f}
	if hdr[0]&0x70 != 0 {
		return f, errors.New("reserved bits set")
	}
	if hdr[1]&0x80 != 0 {
		return f, errors.New("server frame is masked")
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	f.payload = make([]byte, n)
	_, err := io.ReadFull(r, f.payload)
	return f, err
}

// clientPing writes a masked ping frame, as a client must.
func clientPing(w io.Writer, data string) error { return clientControl(w, 0x9, data) }

// clientControl writes a masked control frame of opcode op.
func clientControl(w io.Writer, op byte, data string) error {
	key := [4]byte{1, 2, 3, 4}
	b := []byte{0x80 | op, 0x80 | byte(len(data))}
	b = append(b, key[:]...)
	for i := range len(data) {
		b = append(b, data[i]^key[i%4])
	}
	_, err := w.Write(b)
	return err
}

// pipeClient connects a client to h over net.Pipe; it returns the client's
// end (its response line already read) and the relay's end, recorded.
func pipeConn(t *testing.T, h *Hub) (*bufio.Reader, net.Conn, *recConn) {
	t.Helper()
	srv, cli := net.Pipe()
	rec := &recConn{Conn: srv}
	done := make(chan struct{})
	go func() {
		defer close(done)
		upgradeOverPipe(t, h, rec)
	}()
	br := bufio.NewReader(cli)
	for { // the 101 response ends with an empty line
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if line == "\r\n" {
			break
		}
	}
	<-done
	return br, cli, rec
}

// pipeHub is a hub for writer tests; it is closed when the test ends.
func pipeHub(t *testing.T, cfg Config) *Hub {
	cfg.PongWait = max(cfg.PongWait, time.Hour) // pings only where a test asks
	if cfg.WriteDelay == 0 {
		// Writes at once, so synctest.Wait finds them made; TestWriteDelay
		// tests the delay.
		cfg.WriteDelay = -1
	}
	h := New(cfg, &loopback{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = h.Close(ctx)
	})
	return h
}

// countFrames returns how many whole frames b holds.
func countFrames(t *testing.T, b []byte) int {
	t.Helper()
	r := bytes.NewReader(b)
	n := 0
	for ; r.Len() > 0; n++ {
		if _, err := readWSFrame(r); err != nil {
			t.Fatalf("%d bytes: frame %d: %v", len(b), n, err)
		}
	}
	return n
}

// checkWholeFrames fails unless every recorded write is a sequence of
// whole frames: then no other write can have landed inside a frame.
func checkWholeFrames(t *testing.T, writes []recWrite) {
	t.Helper()
	for i, w := range writes {
		r := bytes.NewReader(w.data)
		for r.Len() > 0 {
			if _, err := readWSFrame(r); err != nil {
				t.Fatalf("write %d (%d bytes) does not end on a frame boundary: %v", i, len(w.data), err)
			}
		}
	}
}

// TestWriterCoalescesInOrder queues alerts (and a pong) while the writer is
// blocked, then lets the client read: they arrive intact and in order, in
// one write.
func TestWriterCoalescesInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := pipeHub(t, Config{})
		br, cli, rec := pipeConn(t, h)
		defer cli.Close()
		synctest.Wait() // the writer is blocked writing the hello

		const n = 100
		for i := range n / 2 {
			h.Deliver(alertJSON(t, testID(i), fmt.Sprint("alert ", i)))
		}
		// A ping from the client: its pong is queued between the alerts.
		if err := clientPing(cli, "p1"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for i := n / 2; i < n; i++ {
			h.Deliver(alertJSON(t, testID(i), fmt.Sprint("alert ", i)))
		}
		synctest.Wait()
		if got := len(rec.recorded()); got != 2 {
			t.Fatalf("%d writes before the client read anything, want 2 (handshake, hello)", got)
		}

		want := 0
		for want < n {
			f, err := readWSFrame(br)
			if err != nil {
				t.Fatalf("after %d alerts: %v", want, err)
			}
			if !f.fin {
				t.Fatalf("fragmented frame %+v", f)
			}
			switch f.op {
			case opText:
				var a struct{ Type, ID, Text string }
				if err := json.Unmarshal(f.payload, &a); err != nil {
					t.Fatalf("frame is not JSON: %q", f.payload)
				}
				if a.Type == protocol.TypeHello {
					continue
				}
				if a.ID != testID(want) || a.Text != fmt.Sprint("alert ", want) {
					t.Fatalf("alert %d: got %+v", want, a)
				}
				want++
			case opPong:
				if string(f.payload) != "p1" || want != n/2 {
					t.Fatalf("pong %q after %d alerts, want p1 after %d", f.payload, want, n/2)
				}
			default:
				t.Fatalf("unexpected frame %+v", f)
			}
		}
		writes := rec.recorded()[1:] // after the handshake
		checkWholeFrames(t, writes)
		// The hello alone, then everything queued behind it in one write.
		if len(writes) != 2 {
			t.Errorf("%d writes for the hello, %d alerts and a pong, want 2", len(writes), n)
		}
	})
}

// TestWriterPingsBetweenBatches has the server ping while alerts flow and
// the client ping back: every write is whole frames, so no control frame
// sits inside a data frame.
func TestWriterPingsBetweenBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := pipeHub(t, Config{})
		h.pingPeriod = 50 * time.Millisecond
		br, cli, rec := pipeConn(t, h)
		defer cli.Close()
		pings := 0
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cli.Close() // before the wait: the sender may be blocked on a ping
		wg.Go(func() {
			for i := range 200 {
				if i%20 == 0 {
					_ = clientPing(cli, fmt.Sprint(i))
				}
				h.Deliver(alertJSON(t, testID(i), "flowing"))
				time.Sleep(7 * time.Millisecond)
			}
		})
		got := 0
		for got < 200 {
			f, err := readWSFrame(br)
			if err != nil {
				t.Fatalf("after %d alerts: %v", got, err)
			}
			switch f.op {
			case opText:
				if bytes.Contains(f.payload, []byte(testID(got))) {
					got++
				}
			case 0x9:
				pings++
			}
		}
		if pings == 0 {
			t.Fatal("the server never pinged")
		}
		checkWholeFrames(t, rec.recorded()[1:])
	})
}

// TestLatePongsKeepClient: a client that is behind on its reads answers
// each ping late, by as much as the too-slow policy lets it lag
// (MaxQueueAge, the default and a longer one). The relay must not take it
// for a silent client.
func TestLatePongsKeepClient(t *testing.T) {
	for name, age := range map[string]time.Duration{"default age": 0, "age 1m": time.Minute} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := New(Config{WriteDelay: -1, MaxQueueAge: age}, &loopback{}) // the default PongWait
				defer h.Close(context.Background())
				br, cli, _ := pipeConn(t, h)
				lag := h.cfg.MaxQueueAge
				var wmu sync.Mutex
				var pings atomic.Int32
				lost := make(chan error, 1)
				go func() {
					for {
						f, err := readWSFrame(br)
						if err != nil {
							lost <- err
							return
						}
						if f.op == 0x9 {
							pings.Add(1)
							data := string(f.payload)
							time.AfterFunc(lag, func() {
								wmu.Lock()
								defer wmu.Unlock()
								_ = clientControl(cli, 0xA, data)
							})
						}
					}
				}()
				time.Sleep(10 * time.Minute)
				synctest.Wait()
				select {
				case err := <-lost:
					t.Fatalf("after %d pings answered %v late, the relay hung up: %v", pings.Load(), lag, err)
				default:
				}
				if n := pings.Load(); n < 5 || h.Clients() != 1 {
					t.Fatalf("%d pings in 10 minutes, %d clients; want pings and the client kept", n, h.Clients())
				}
				wmu.Lock()
				cli.Close()
				wmu.Unlock()
				<-lost
			})
		})
	}
}

// TestWriterDeadlines checks that every write starts with a deadline
// between WriteWait less a tenth of it and WriteWait away (one set for an
// earlier write serves while it is that far), and that a client that reads
// nothing is cut off when it passes.
func TestWriterDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const wait = 3 * time.Second
		h := pipeHub(t, Config{WriteWait: wait})
		// A reading client first, to see the deadlines of normal writes.
		br, cli, rec := pipeConn(t, h)
		defer cli.Close()
		const alerts = 8
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 1 + alerts { // hello and the alerts
				if _, err := readWSFrame(br); err != nil {
					t.Error(err)
					return
				}
			}
		})
		time.Sleep(time.Second) // long after the hello
		synctest.Wait()
		before := len(rec.recorded())
		if before < 2 {
			t.Fatalf("%d writes before the alerts, want the handshake and the hello", before)
		}
		for i := range alerts {
			h.Deliver(alertJSON(t, testID(i), "x"))
			time.Sleep(time.Second / 10 * time.Duration(1+i%4)) // 0.1 to 0.4 s apart
		}
		wg.Wait()
		writes := rec.recorded()[1:] // [0] is the handshake, before deadlines
		if len(writes) != before-1+alerts {
			t.Fatalf("%d writes after the handshake, want %d", len(writes), before-1+alerts)
		}
		deadlines := map[time.Time]bool{}
		for i, w := range writes {
			if got := w.deadline.Sub(w.at); got < wait-wait/10 || got > wait {
				t.Errorf("write %d: deadline %v after its start, want %v to %v", i, got, wait-wait/10, wait)
			}
			deadlines[w.deadline] = true
		}
		if len(deadlines) >= len(writes) {
			t.Errorf("%d deadlines set for %d writes, most within 0.3 s of the one before, want them shared", len(deadlines), len(writes))
		}

		// A client that reads nothing: its hello write blocks and fails at
		// the deadline; the relay closes the connection.
		_, mute, _ := pipeConn(t, h)
		defer mute.Close()
		synctest.Wait()
		if h.Clients() != 2 {
			t.Fatalf("clients = %d, want 2", h.Clients())
		}
		time.Sleep(wait + time.Millisecond)
		synctest.Wait()
		if h.Clients() != 1 {
			t.Fatalf("clients = %d after the write deadline, want 1", h.Clients())
		}
	})
}

// TestPreloadIsNotHeldAgainstTheClient: what the server chose to queue
// before the writer started (hello, a resume's replay) may exceed the
// too-slow bound without closing the client; once written, the bound is the
// client's again.
func TestPreloadIsNotHeldAgainstTheClient(t *testing.T) {
	var q queue
	now := time.Now()
	const maxBytes = 1024
	q.preload(make([]byte, 3*maxBytes), now) // a long replay
	if _, ok := q.push(make([]byte, 100), now, maxBytes, time.Minute); !ok {
		t.Fatal("a live frame after a replay over the bound was refused: the replay counted against the client")
	}
	batch, size := q.take()
	q.done(batch, size)
	if _, ok := q.push(make([]byte, maxBytes), now, maxBytes, time.Minute); !ok {
		t.Fatal("a frame within the bound was refused once the replay was written")
	}
	if _, ok := q.push(make([]byte, 1), now, maxBytes, time.Minute); ok {
		t.Fatal("a frame over the bound was accepted once the replay was written: the allowance outlived it")
	}
}

// TestWriterKeepsWritev: the frame guard wraps every upgraded connection
// for reading; the writer must still reach the TCP connection beneath it,
// or every batch is copied into a buffer the connection keeps.
func TestWriterKeepsWritev(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	g := &guardedConn{Conn: nc}
	if _, ok := writeConn(g).(*net.TCPConn); !ok {
		t.Fatalf("writeConn(guarded TCP) = %T, want the *net.TCPConn beneath the guard", writeConn(g))
	}
}

// TestWriteDelay: a writer woken after a quiet spell writes at once; one
// that finds frames queued as soon as it has written waits WriteDelay, and
// the alerts that arrive meanwhile go out together, in one write.
func TestWriteDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay = 3 * time.Millisecond
		h := pipeHub(t, Config{WriteDelay: delay})
		br, cli, rec := pipeConn(t, h)
		defer cli.Close()
		// The client reads a frame each time the test lets it, so that the
		// test can hold the writer inside a write.
		readOne := make(chan struct{})
		go func() {
			for range readOne {
				if _, err := readWSFrame(br); err != nil {
					t.Errorf("client read: %v", err)
					return
				}
			}
		}()
		readOne <- struct{}{} // the hello
		time.Sleep(time.Second)
		synctest.Wait()
		before := len(rec.recorded())

		start := time.Now()
		h.Deliver(alertJSON(t, testID(0), "after a quiet spell"))
		synctest.Wait() // the writer is inside its write, the client not reading
		for i := 1; i <= 4; i++ {
			h.Deliver(alertJSON(t, testID(i), "queued behind it"))
			time.Sleep(delay / 6)
		}
		resumed := time.Now()
		for range 5 {
			readOne <- struct{}{}
		}
		time.Sleep(2 * delay)
		synctest.Wait()
		writes := rec.recorded()[before:]
		checkWholeFrames(t, writes)
		if len(writes) != 2 {
			t.Fatalf("%d writes, want 2: the first alert at once, the four queued behind it together", len(writes))
		}
		if got := writes[0].at.Sub(start); got != 0 {
			t.Errorf("the first alert was written %v after it arrived, want at once", got)
		}
		if n := countFrames(t, writes[1].data); n != 4 {
			t.Errorf("the second write holds %d frames, want the 4 queued", n)
		}
		if got := writes[1].at.Sub(resumed); got != delay {
			t.Errorf("the queued alerts were written %v after the first write ended, want the delay %v", got, delay)
		}
		close(readOne)
		cli.Close()
	})
}
