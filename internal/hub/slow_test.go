package hub

import (
	"bytes"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// The too-slow policy: a client is closed for what it has left unread, by
// bytes and by the age of its oldest unread frame, never by a frame count.

// TestSlowByAge: a client that reads nothing is closed once its oldest
// unread frame is older than MaxQueueAge, while alerts keep arriving.
func TestSlowByAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const age = 10 * time.Second
		// WriteWait longer than the age, so the age is what decides.
		h := pipeHub(t, Config{MaxQueueAge: age, WriteWait: time.Minute})
		_, mute, _ := pipeConn(t, h)
		defer mute.Close()
		start := time.Now()
		for i := 0; ; i++ {
			if time.Since(start) > 2*age {
				t.Fatalf("not closed after %v", time.Since(start))
			}
			h.Deliver(alertJSON(t, testID(i), "tick"))
			if count(t, h.m.slowCloses) != 0 {
				break
			}
			time.Sleep(time.Second)
		}
		// Closed by the first alert that found the hello older than age.
		if got := time.Since(start); got > age+time.Second {
			t.Errorf("closed after %v, want within %v", got, age+time.Second)
		}
	})
}

// TestSlowByBytes: with a tight byte bound, a client that reads nothing is
// closed as soon as its unread bytes would pass the bound.
func TestSlowByBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 4096
		h := pipeHub(t, Config{MaxQueueBytes: limit, WriteWait: time.Minute})
		_, mute, _ := pipeConn(t, h)
		defer mute.Close()
		size := len(textFrame(protocol.Encode(protocol.Alert{}))) // a lower bound on one alert frame
		i := 0
		for ; count(t, h.m.slowCloses) == 0; i++ {
			if i > limit/size+1 {
				t.Fatalf("not closed after %d alerts of at least %d bytes", i, size)
			}
			h.Deliver(alertJSON(t, testID(i), "fill"))
		}
		t.Logf("closed at alert %d", i)
	})
}

// TestBurstIsNotSlow: a client that reads steadily but is behind by a
// burst (here 700 alerts, ten times the 70 of seven senders' bursts) is not
// closed and gets every alert in order; the mute client beside it is.
func TestBurstIsNotSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := pipeHub(t, Config{WriteWait: time.Minute})
		br, cli, _ := pipeConn(t, h)
		defer cli.Close()
		_, mute, _ := pipeConn(t, h)
		defer mute.Close()

		const burst = 700
		var wg sync.WaitGroup
		wg.Go(func() {
			got := 0
			for got < burst {
				f, err := readWSFrame(br)
				if err != nil {
					t.Errorf("after %d alerts: %v", got, err)
					return
				}
				if f.op != opText || !bytes.Contains(f.payload, []byte(`"alert"`)) {
					continue
				}
				if !bytes.Contains(f.payload, []byte(testID(got))) {
					t.Errorf("alert %d: %s", got, f.payload)
					return
				}
				got++
				// A slow reader: the burst takes it 7 s to read, which a
				// frame count of 64 would have called too slow.
				time.Sleep(10 * time.Millisecond)
			}
		})
		for i := range burst {
			h.Deliver(alertJSON(t, testID(i), "burst"))
		}
		wg.Wait()
		if n := count(t, h.m.slowCloses); n != 0 {
			t.Errorf("slow closes = %v after a burst, want 0", n)
		}
		// The mute client, still holding its hello, goes once an alert
		// finds it older than the age bound.
		time.Sleep(DefaultMaxQueueAge)
		h.Deliver(alertJSON(t, testID(burst), "late"))
		if n := count(t, h.m.slowCloses); n != 1 {
			t.Errorf("slow closes = %v, want 1 (the mute client)", n)
		}
	})
}

// TestPingFloodIsSlow: pongs count as unread bytes, so a client that pings
// without reading the pongs is closed as too slow, not queued forever.
func TestPingFloodIsSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := pipeHub(t, Config{MaxQueueBytes: 2048, WriteWait: time.Minute})
		_, cli, _ := pipeConn(t, h)
		defer cli.Close()
		payload := string(bytes.Repeat([]byte{'p'}, 125))
		for i := 0; count(t, h.m.slowCloses) == 0; i++ {
			if i > 2048/127+1 {
				t.Fatalf("not closed after %d pings of 125 bytes", i)
			}
			if err := clientPing(cli, payload); err != nil {
				t.Fatal(err)
			}
			synctest.Wait() // the reader has handled the ping
		}
	})
}
