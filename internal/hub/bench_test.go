package hub

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The benchmarks serve a real Hub over loopback TCP and put the clients in
// a child process (this test binary, re-executed in client mode by
// TestMain). That way the server's allocations and heap are measured alone,
// and each process needs only one file descriptor per connection, so 10k
// connections fit a 20000 descriptor limit. The clients still share the
// machine's cores, as they would not in production: the figures are
// pessimistic for the server.

const (
	envClientURL = "SKYWATCH_BENCH_CLIENT_URL"
	envClientN   = "SKYWATCH_BENCH_CLIENT_N"
)

func TestMain(m *testing.M) {
	if u := os.Getenv(envClientURL); u != "" {
		n, _ := strconv.Atoi(os.Getenv(envClientN))
		if err := runClients(u, n, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runClients connects n WebSocket clients to url, prints "ready" once every
// client has its hello, then prints one line each time every client has
// received one more alert. It returns when stdin closes.
func runClients(url string, n int, stdin io.Reader, stdout io.Writer) error {
	d := &websocket.Dialer{HandshakeTimeout: time.Minute, ReadBufferSize: 512, WriteBufferSize: 256}
	conns := make([]*websocket.Conn, n)
	var dials sync.WaitGroup
	count := newTally(n, 1024)
	errs := make(chan error, 1)
	next := atomic.Int64{}
	for range 64 { // parallel dials, within the listen backlog
		dials.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, _, err := d.Dial(url, nil)
				if err != nil {
					select {
					case errs <- fmt.Errorf("dial %d: %w", i, err):
					default:
					}
					count.hellos.Done()
					continue
				}
				conns[i] = c
				go func() {
					first := true
					for {
						_, r, err := c.NextReader() // also answers pings
						if err != nil {
							return
						}
						if _, err := io.Copy(io.Discard, r); err != nil {
							return
						}
						count.frame(&first)
					}
				}()
			}
		})
	}
	dials.Wait()
	count.hellos.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	w := bufio.NewWriter(stdout)
	fmt.Fprintln(w, "ready")
	w.Flush()
	go func() {
		for range count.rounds {
			fmt.Fprintln(w, "r")
			w.Flush()
		}
	}()
	_, _ = io.Copy(io.Discard, stdin) // until the parent closes it
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// tally counts the text frames the benchmark's clients read: each
// client's first is its hello, every later one an alert, and a round ends
// each time all n clients have one more alert.
type tally struct {
	n        int64
	received atomic.Int64
	hellos   sync.WaitGroup // one per client, done at its hello (or failure)
	rounds   chan struct{}
}

func newTally(n, roundsBuffered int) *tally {
	t := &tally{n: int64(n), rounds: make(chan struct{}, roundsBuffered)}
	t.hellos.Add(n)
	return t
}

// frame counts one text frame of a client; first is that client's own
// "no frame yet" flag.
func (t *tally) frame(first *bool) {
	if *first {
		*first = false
		t.hellos.Done()
		return
	}
	if t.received.Add(1)%t.n == 0 {
		t.rounds <- struct{}{}
	}
}

// benchClients is the parent's handle on a client process.
type benchClients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
}

func startClients(b *testing.B, url string, n int) *benchClients {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envClientURL+"="+url, envClientN+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	bc := &benchClients{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout)}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	if !bc.lines.Scan() || bc.lines.Text() != "ready" {
		b.Fatalf("client process: %q, %v", bc.lines.Text(), bc.lines.Err())
	}
	return bc
}

// round waits until every client has received one more alert.
func (bc *benchClients) round(b *testing.B) {
	if !bc.lines.Scan() {
		b.Fatalf("client process ended: %v", bc.lines.Err())
	}
}

// benchHub serves a relay for benchmarks: no pings during the run, and
// the relay is closed (its clients get 1012) at the end.
func benchHub(b *testing.B) (*Hub, string) {
	b.Helper()
	r := New(Config{PongWait: time.Hour}, &loopback{})
	srv := httptest.NewServer(r)
	b.Cleanup(srv.Close)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			b.Errorf("close hub: %v", err)
		}
	})
	return r, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func waitClients(b *testing.B, r *Hub, n int) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for r.Clients() != n {
		if time.Now().After(deadline) {
			b.Fatalf("%d clients registered, want %d", r.Clients(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alertTemplate is a broker message whose id is rewritten in place, so the
// benchmark loop allocates nothing of its own.
type alertTemplate struct {
	data  []byte
	idPos int
	seq   uint64
}

func newAlertTemplate(b *testing.B) *alertTemplate {
	const placeholder = "ffffffffffffffffffffffffffffffff"
	data := alertJSON(&testing.T{}, placeholder, "An alien landing!")
	pos := strings.Index(string(data), placeholder)
	if pos < 0 {
		b.Fatal("no id in template")
	}
	return &alertTemplate{data: data, idPos: pos}
}

func (a *alertTemplate) next() []byte {
	a.seq++
	var id [16]byte
	for i := range 8 {
		id[15-i] = byte(a.seq >> (8 * i))
	}
	hex.Encode(a.data[a.idPos:], id[:])
	return a.data
}

// BenchmarkFanOut measures one alert from Deliver to every client's
// WebSocket: decode, dedup, encode once, queue to n clients, n writer
// goroutines each writing the frame to its TCP socket, and the client
// process reading all n frames. ns/op is per alert; ns/delivery divides it
// by the clients; deliver-ns/op is the time Deliver itself holds the
// broker's handler.
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			r, url := benchHub(b)
			clients := startClients(b, url, n)
			waitClients(b, r, n)
			tmpl := newAlertTemplate(b)
			var inDeliver time.Duration
			alerts := 0
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				start := time.Now()
				r.Deliver(tmpl.next())
				inDeliver += time.Since(start)
				clients.round(b)
				alerts++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(alerts*n), "ns/delivery")
			b.ReportMetric(float64(inDeliver.Nanoseconds())/float64(alerts), "deliver-ns/op")
			b.ReportMetric(float64(cpu.used().Nanoseconds())/float64(alerts*n), "server-cpu-ns/delivery")
			if got := count(&testing.T{}, r.m.slowCloses); got != 0 {
				b.Errorf("%v slow clients closed during the benchmark", got)
			}
		})
	}
}

// BenchmarkFanOutBurst is BenchmarkFanOut with alerts arriving faster than
// one at a time: each op delivers a burst of alerts back to back, then waits
// until every client has all of them. It is where a writer finds several
// frames queued, so it shows what coalescing them into one write saves.
// Figures are per delivery (one alert to one client).
func BenchmarkFanOutBurst(b *testing.B) {
	const n = 1000
	for _, burst := range []int{10, 70} {
		b.Run(fmt.Sprintf("clients=%d/burst=%d", n, burst), func(b *testing.B) {
			r, url := benchHub(b)
			clients := startClients(b, url, n)
			waitClients(b, r, n)
			tmpl := newAlertTemplate(b)
			alerts := 0
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				for range burst {
					r.Deliver(tmpl.next())
				}
				for range burst {
					clients.round(b)
				}
				alerts += burst
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(alerts*n), "ns/delivery")
			b.ReportMetric(float64(cpu.used().Nanoseconds())/float64(alerts*n), "server-cpu-ns/delivery")
			if got := count(&testing.T{}, r.m.slowCloses); got != 0 {
				b.Errorf("%v slow clients closed during the benchmark", got)
			}
		})
	}
}

// BenchmarkLoopbackFloor is the same fan-out without the relay: one
// goroutine per core writes a ready-made alert frame to its share of the n
// sockets; no queues, no per-connection goroutines, no deadlines. It shows
// what the kernel's loopback TCP (and the client process) cost on this
// machine, the floor under BenchmarkFanOut.
func BenchmarkLoopbackFloor(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			var mu sync.Mutex
			var sockets []net.Conn
			up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				c, err := up.Upgrade(w, req, nil)
				if err != nil {
					return
				}
				// Listed before the hello is written: once every client
				// has its hello, every socket is in the list.
				mu.Lock()
				sockets = append(sockets, c.NetConn())
				mu.Unlock()
				_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello"}`))
			}))
			b.Cleanup(srv.Close)
			clients := startClients(b, "ws"+strings.TrimPrefix(srv.URL, "http"), n)
			b.Cleanup(func() {
				for _, c := range sockets {
					c.Close()
				}
			})
			// The frame a relay would send: a server text frame header
			// and the alert JSON.
			payload := newAlertTemplate(b).next()
			frame := []byte{0x81, 126, byte(len(payload) >> 8), byte(len(payload))}
			if len(payload) < 126 {
				frame = []byte{0x81, byte(len(payload))}
			}
			frame = append(frame, payload...)
			mu.Lock()
			conns := slices.Clone(sockets)
			mu.Unlock()
			if len(conns) != n {
				b.Fatalf("%d sockets, want %d", len(conns), n)
			}
			alerts := 0
			cpu := startCPU()
			// One writer per core, each with its share of the sockets:
			// as parallel as the relay's writers, without their queues,
			// wake-ups and deadlines.
			procs := runtime.GOMAXPROCS(0)
			for b.Loop() {
				var wg sync.WaitGroup
				for p := range procs {
					wg.Go(func() {
						for i := p; i < len(conns); i += procs {
							_, _ = conns[i].Write(frame) // a lost frame stalls the round, which shows
						}
					})
				}
				wg.Wait()
				clients.round(b)
				alerts++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(alerts*n), "ns/delivery")
			b.ReportMetric(float64(cpu.used().Nanoseconds())/float64(alerts*n), "server-cpu-ns/delivery")
		})
	}
}

// cpuClock measures the CPU time (user and system, all threads) this
// process spends, which leaves out the client process sharing the cores.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) used() time.Duration { return processCPU() - c.start }

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleConnMemory measures what an idle connection costs the server:
// Go heap and goroutine stacks in use, after GC, with n connected clients
// minus before. Kernel socket buffers are not included (they are not Go
// memory). The loop body is empty: the figures come from the setup, which
// b.Loop runs once.
func BenchmarkIdleConnMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			r, url := benchHub(b)
			before := memStats()
			startClients(b, url, n)
			waitClients(b, r, n)
			after := memStats()
			heap := float64(after.HeapInuse) - float64(before.HeapInuse)
			stack := float64(after.StackInuse) - float64(before.StackInuse)
			goroutines := float64(runtime.NumGoroutine()) / float64(n)
			for b.Loop() {
			}
			// Reported after the loop: b.Loop's first iteration resets
			// the timer, which discards metrics reported before it.
			b.ReportMetric((heap+stack)/float64(n), "B/conn")
			b.ReportMetric(heap/float64(n), "heap-B/conn")
			b.ReportMetric(stack/float64(n), "stack-B/conn")
			b.ReportMetric(goroutines, "goroutines/conn")
		})
	}
}

// memStats returns memory statistics after collecting garbage twice (the
// second GC also shrinks stacks that grew during the handshake).
func memStats() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
