package history

import (
	"slices"
	"sync"
	"time"
)

// Defaults.
const (
	// DefaultSize is 1,000 alerts: at the default rate limit a burst from
	// many senders still fits minutes, and the memory stays near 1 MB even
	// for the longest texts (see the hub's docs).
	DefaultSize = 1000
	// DefaultAge is 10 minutes: longer than any reconnect after a deploy
	// or a laptop lid, short enough that a replay never shows stale news.
	DefaultAge = 10 * time.Minute
)

// Config bounds a History. Zero values mean the defaults.
type Config struct {
	// Size is the most entries kept; the oldest received goes first.
	Size int
	// Age is how long an entry is kept after it was received.
	Age time.Duration
}

// entry is one received value. Times are wall-clock UnixNano: sentAt comes
// from another VM's clock anyway, and int64s keep an entry small.
type entry[T any] struct {
	sentAt   int64
	received int64
	v        T
}

// History holds the values received recently, in receive order. All methods
// are safe for concurrent use.
type History[T any] struct {
	cfg Config

	mu   sync.Mutex
	ring []entry[T] // capacity cfg.Size; oldest at head once full
	head int
	n    int
	// covered is when coverage started (UnixNano), 0 before Cover.
	covered int64
	// lost is the newest sentAt of any entry pushed out (by count or age),
	// 0 if none: alerts sent up to then may be missing from the history.
	lost int64
}

// New returns an empty History with no coverage yet.
func New[T any](cfg Config) *History[T] {
	if cfg.Size <= 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Age <= 0 {
		cfg.Age = DefaultAge
	}
	return &History[T]{cfg: cfg, ring: make([]entry[T], cfg.Size)}
}

// Config returns the bounds in use, defaults filled in.
func (h *History[T]) Config() Config { return h.cfg }

// Cover starts coverage now: the caller's subscription has just started
// receiving, so every alert sent from now on will be added. Entries already
// held stay (they are still true), but nothing before now is vouched for.
func (h *History[T]) Cover() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.covered = time.Now().UnixNano()
}

// Add records v, sent at sentAt, as received now. When the history is full
// the oldest received entry is pushed out.
func (h *History[T]) Add(sentAt time.Time, v T) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expire(now)
	if h.n == len(h.ring) {
		h.drop()
	}
	h.ring[(h.head+h.n)%len(h.ring)] = entry[T]{sentAt: sentAt.UnixNano(), received: now.UnixNano(), v: v}
	h.n++
}

// expire pushes out entries received longer than Age ago.
func (h *History[T]) expire(now time.Time) {
	limit := now.Add(-h.cfg.Age).UnixNano()
	for h.n > 0 && h.ring[h.head].received < limit {
		h.drop()
	}
}

// drop pushes out the oldest received entry and remembers its sentAt.
func (h *History[T]) drop() {
	e := &h.ring[h.head]
	if e.sentAt > h.lost {
		h.lost = e.sentAt
	}
	var zero entry[T]
	*e = zero // let the value be collected
	h.head = (h.head + 1) % len(h.ring)
	h.n--
}

// Vouch says how far a History can answer for itself.
type Vouch struct {
	// Recovered is true when nothing sent at or after the asked time can
	// be missing: coverage started at or before it and nothing sent at or
	// after it was pushed out.
	Recovered bool
	// From is the instant after which the history holds every alert it
	// was sent: the later of coverage start and the newest sent_at pushed
	// out. Before coverage started, it is now.
	From time.Time
}

// Since returns the values sent at or after t, oldest sent first (receive
// order among equals), and whether the history can vouch that none is
// missing.
func (h *History[T]) Since(t time.Time) ([]T, Vouch) {
	now := time.Now()
	tn := t.UnixNano()
	h.mu.Lock()
	h.expire(now)
	// Two passes, so a short replay costs a short slice.
	n := 0
	for i := range h.n {
		if h.ring[(h.head+i)%len(h.ring)].sentAt >= tn {
			n++
		}
	}
	es := make([]entry[T], 0, n)
	for i := range h.n {
		if e := h.ring[(h.head+i)%len(h.ring)]; e.sentAt >= tn {
			es = append(es, e)
		}
	}
	var v Vouch
	switch {
	case h.covered == 0:
		v.From = now
	default:
		v.From = time.Unix(0, max(h.covered, h.lost))
		v.Recovered = h.covered <= tn && h.lost < tn
	}
	h.mu.Unlock()

	slices.SortStableFunc(es, func(a, b entry[T]) int {
		switch {
		case a.sentAt < b.sentAt:
			return -1
		case a.sentAt > b.sentAt:
			return 1
		}
		return 0
	})
	out := make([]T, len(es))
	for i, e := range es {
		out[i] = e.v
	}
	return out, v
}

// Len is the number of entries held (some may be past their age until the
// next Add or Since pushes them out).
func (h *History[T]) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Coverage is when coverage started, zero before Cover.
func (h *History[T]) Coverage() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.covered == 0 {
		return time.Time{}
	}
	return time.Unix(0, h.covered)
}
