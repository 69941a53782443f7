package hub

import (
	"time"

	"golang.org/x/time/rate"
)

// bucket is a token bucket for one goroutine: no lock, 16 bytes, starting
// full. A connection's budgets (alerts, error replies, strikes, frames) are
// only touched by its reader, and as rate.Limiters they cost 80 bytes and a
// pointer each per idle connection. Limits shared between goroutines (per
// address, per relay) stay rate.Limiters.
type bucket struct {
	tokens float64
	last   int64 // monotonic nanoseconds (clock); 0 before the first call
}

// epoch anchors clock on the monotonic clock.
var epoch = time.Now()

// clock is the monotonic time in nanoseconds since epoch, never 0. (In a
// testing/synctest bubble it is the bubble's time minus the real epoch:
// negative, but its differences are right.)
func clock() int64 {
	if n := int64(time.Since(epoch)); n != 0 {
		return n
	}
	return 1
}

// allow takes a token if there is one, refilling at r per second up to
// burst since the last call. As rate.Limiter: rate.Inf allows everything,
// a burst of 0 nothing else.
func (b *bucket) allow(r rate.Limit, burst int) bool {
	if r == rate.Inf {
		return true
	}
	now := clock()
	if b.last == 0 {
		b.tokens = float64(burst)
	} else {
		elapsed := time.Duration(now - b.last).Seconds()
		b.tokens = min(float64(burst), b.tokens+elapsed*float64(r))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
