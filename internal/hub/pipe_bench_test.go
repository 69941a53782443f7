package hub

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkFanOutPipe is BenchmarkFanOut without the kernel: each client is
// a real *websocket.Conn, upgraded by Hub.ServeHTTP, but over net.Pipe,
// and read in-process by a minimal frame counter that allocates nothing.
// What is left is the relay's own path (Deliver, queues, writer wake-ups,
// gorilla framing) plus an in-memory copy per client, so it isolates the
// relay's cost from loopback TCP, which dominates BenchmarkFanOut.
func BenchmarkFanOutPipe(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			r := New(Config{PongWait: time.Hour}, &loopback{})
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = r.Close(ctx)
			})
			count := newTally(n, 1)
			for range n {
				srv, cli := net.Pipe()
				go pipeClient(cli, count)
				upgradeOverPipe(b, r, srv)
			}
			count.hellos.Wait()
			waitClients(b, r, n)

			tmpl := newAlertTemplate(b)
			alerts := 0
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				r.Deliver(tmpl.next())
				<-count.rounds
				alerts++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(alerts*n), "ns/delivery")
			b.ReportMetric(float64(cpu.used().Nanoseconds())/float64(alerts*n), "cpu-ns/delivery")
		})
	}
}

// upgradeOverPipe runs the WebSocket handshake of Hub.ServeHTTP on conn.
func upgradeOverPipe(b testing.TB, r *Hub, conn net.Conn) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, "http://relay.test/ws", nil)
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.ServeHTTP(&pipeHijacker{conn: conn, header: http.Header{}}, req)
}

// pipeHijacker is the http.ResponseWriter of a connection that is already
// open: the upgrade hijacks it at once.
type pipeHijacker struct {
	conn   net.Conn
	header http.Header
}

func (p *pipeHijacker) Header() http.Header         { return p.header }
func (p *pipeHijacker) Write(b []byte) (int, error) { return len(b), nil }
func (p *pipeHijacker) WriteHeader(int)             {}
func (p *pipeHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return p.conn, bufio.NewReadWriter(bufio.NewReader(p.conn), bufio.NewWriter(p.conn)), nil
}

// pipeClient reads the handshake response, then counts server text frames
// with count.
func pipeClient(conn net.Conn, count *tally) {
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 512)
	for { // the 101 response ends with an empty line
		line, err := br.ReadSlice('\n')
		if err != nil {
			count.hellos.Done()
			return
		}
		if len(line) <= 2 {
			break
		}
	}
	first := true
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(br, hdr[:2]); err != nil {
			return
		}
		size := int(hdr[1] & 0x7f)
		if size == 126 {
			if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
				return
			}
			size = int(hdr[2])<<8 | int(hdr[3])
		}
		if _, err := br.Discard(size); err != nil {
			return
		}
		if hdr[0]&0x0f != 1 { // not a text frame (close at the end)
			continue
		}
		count.frame(&first)
	}
}
