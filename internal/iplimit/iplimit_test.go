package iplimit

import (
	"net/http/httptest"
	"testing"
	"time"
)

func TestClientIP(t *testing.T) {
	for _, tc := range []struct {
		name   string
		trust  bool
		remote string
		header string
		want   string
	}{
		{"peer, no header", false, "203.0.113.7:5555", "", "203.0.113.7"},
		{"spoofed header ignored when not trusted", false, "203.0.113.7:5555", "198.51.100.1", "203.0.113.7"},
		{"trusted header", true, "10.0.0.1:5555", "198.51.100.1", "198.51.100.1"},
		{"trusted header, IPv6", true, "10.0.0.1:5555", "2001:db8::1", "2001:db8::1"},
		{"trusted header, v4-mapped", true, "10.0.0.1:5555", "::ffff:198.51.100.1", "198.51.100.1"},
		{"trusted but garbage header: the peer", true, "10.0.0.1:5555", "not an ip", "10.0.0.1"},
		{"trusted but a list: the peer", true, "10.0.0.1:5555", "1.1.1.1, 2.2.2.2", "10.0.0.1"},
		{"trusted but absent: the peer", true, "[2001:db8::9]:5555", "", "2001:db8::9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws", nil)
			r.RemoteAddr = tc.remote
			if tc.header != "" {
				r.Header.Set(FlyClientIP, tc.header)
			}
			l := New(Config{TrustFlyClientIP: tc.trust})
			if got := l.ClientIP(r); got != tc.want {
				t.Errorf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConnectionsPerIP(t *testing.T) {
	l := New(Config{Conns: 2})
	r1, ok1 := l.Acquire("192.0.2.1")
	_, ok2 := l.Acquire("192.0.2.1")
	_, ok3 := l.Acquire("192.0.2.1")
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("three connections with a limit of 2: %v %v %v, want true true false", ok1, ok2, ok3)
	}
	if _, ok := l.Acquire("192.0.2.2"); !ok {
		t.Fatal("another address was refused")
	}
	r1()
	r1() // a second release does not free a second slot
	if _, ok := l.Acquire("192.0.2.1"); !ok {
		t.Fatal("after a release, a new connection was refused")
	}
	if _, ok := l.Acquire("192.0.2.1"); ok {
		t.Fatal("a double release freed two slots")
	}
}

func TestIPv6SharesA64(t *testing.T) {
	l := New(Config{Conns: 1})
	if _, ok := l.Acquire("2001:db8:1:2::1"); !ok {
		t.Fatal("first refused")
	}
	if _, ok := l.Acquire("2001:db8:1:2:ffff::7"); ok {
		t.Error("another address in the same /64 was admitted over the limit")
	}
	if _, ok := l.Acquire("2001:db8:1:3::1"); !ok {
		t.Error("an address in another /64 was refused")
	}
}

func TestAlertsPerIP(t *testing.T) {
	l := New(Config{Rate: 1e-9, Burst: 3}) // no refill within the test
	n := 0
	for range 10 {
		if l.Allow("192.0.2.1") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("allowed %d of 10, want the burst, 3", n)
	}
	if !l.Allow("192.0.2.2") {
		t.Error("another address shares the bucket")
	}
}

func TestSweepForgetsIdle(t *testing.T) {
	l := New(Config{Rate: 1000, Burst: 1})
	release, _ := l.Acquire("192.0.2.1")
	l.Allow("192.0.2.2")
	time.Sleep(5 * time.Millisecond) // the bucket refills at 1000/s
	l.lastSweep = time.Time{}
	l.Allow("192.0.2.3") // triggers a sweep
	if got := l.Len(); got != 2 {
		t.Fatalf("tracked %d addresses, want 2 (the connected one and the new one)", got)
	}
	release()
}
