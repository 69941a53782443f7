// Package iplimit holds the per-client-IP limits of one relay: how many
// WebSocket connections one address may hold and how many alerts per second
// it may send, whatever the number of its connections. The per-connection
// bucket alone does not stop one person who opens a thousand connections.
//
// The client's address is the TCP peer, or, behind Fly's proxy, the
// Fly-Client-IP header. The header is trusted only when configured: anyone
// can send it, and a relay reached directly that believed it would let a
// client pick a fresh address per request.
package iplimit

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// FlyClientIP is the header in which Fly's proxy passes the client's address.
const FlyClientIP = "Fly-Client-IP"

// Config configures a Limiter; zero values mean the defaults.
type Config struct {
	// Conns is the most WebSocket connections one client address may hold
	// at once. Default 100: a school or office behind one NAT address opens
	// many tabs.
	Conns int
	// Rate and Burst are one client address's token bucket for alerts,
	// shared by all its connections. Defaults 20/s and 60.
	Rate  rate.Limit
	Burst int
	// TrustFlyClientIP takes the client's address from the Fly-Client-IP
	// header instead of the TCP peer. Turn it on only behind Fly's proxy
	// (fly.toml does), which sets the header itself.
	TrustFlyClientIP bool
}

// Defaults.
const (
	DefaultConns = 100
	DefaultRate  = rate.Limit(20)
	DefaultBurst = 60
)

// sweepEvery is how often idle addresses are forgotten, so the map holds
// only addresses that have connections or a bucket still refilling.
const sweepEvery = 10 * time.Second

// Limiter enforces Config for every client address. It is safe for
// concurrent use.
type Limiter struct {
	cfg Config

	mu        sync.Mutex
	addrs     map[netip.Prefix]*entry
	lastSweep time.Time
}

type entry struct {
	conns  int
	bucket *rate.Limiter
}

// New returns a Limiter with cfg's limits.
func New(cfg Config) *Limiter {
	if cfg.Conns <= 0 {
		cfg.Conns = DefaultConns
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	return &Limiter{cfg: cfg, addrs: make(map[netip.Prefix]*entry), lastSweep: time.Now()}
}

// Config returns the limits in force, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

// ClientIP returns the address of the client that sent r: Fly-Client-IP
// when trusted and valid, else the TCP peer.
func (l *Limiter) ClientIP(r *http.Request) string {
	if l.cfg.TrustFlyClientIP {
		if a, err := netip.ParseAddr(r.Header.Get(FlyClientIP)); err == nil {
			return a.Unmap().String()
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// key is what one client is counted under: its IPv4 address, or its IPv6
// /64, the smallest block an ISP hands to one customer (who could otherwise
// use 2^64 addresses in turn).
func key(ip string) netip.Prefix {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{} // unparsable peers share one entry
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// Acquire counts a new connection from ip. It returns false when ip already
// holds Conns connections; otherwise release must be called once when the
// connection ends.
func (l *Limiter) Acquire(ip string) (release func(), ok bool) {
	k := key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(k)
	if e.conns >= l.cfg.Conns {
		return nil, false
	}
	e.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			e.conns--
			l.mu.Unlock()
		})
	}, true
}

// Allow takes one alert from ip's bucket and reports whether there was one.
func (l *Limiter) Allow(ip string) bool {
	k := key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entry(k).bucket.Allow()
}

// entry returns k's entry, making it if needed; l.mu is held.
func (l *Limiter) entry(k netip.Prefix) *entry {
	now := time.Now()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	e := l.addrs[k]
	if e == nil {
		e = &entry{bucket: rate.NewLimiter(l.cfg.Rate, l.cfg.Burst)}
		l.addrs[k] = e
	}
	return e
}

// sweep forgets addresses with no connection and a full bucket: making them
// again later gives the same answers. l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, e := range l.addrs {
		if e.conns == 0 && e.bucket.TokensAt(now) >= float64(l.cfg.Burst) {
			delete(l.addrs, k)
		}
	}
}

// Len returns how many addresses are tracked, for tests and metrics.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}
