package mempubsub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

var (
	_ broker.Broker = (*Broker)(nil)
	_ broker.Lister = (*Broker)(nil)
)

// DefaultMaxBacklog is the per-subscription backlog cap used when
// Config.MaxBacklog is zero. At a few hundred bytes per alert it bounds a
// forgotten subscription to a few megabytes.
const DefaultMaxBacklog = 10_000

// Config configures a Broker. The zero value is ready to use.
type Config struct {
	// MaxBacklog caps the number of undelivered messages kept per
	// subscription. When a subscription is full, Publish drops its oldest
	// message: Pub/Sub ages out old messages too (message retention), and a
	// stale alert is worth less than a fresh one. Zero means
	// DefaultMaxBacklog; negative means no cap.
	MaxBacklog int
}

// Broker is an in-memory topic with named subscriptions. The zero value is
// not usable; call New.
//
// Receive calls handle serially, from the goroutine that called Receive, in
// publish order. Several Receive calls on one subscription share its
// messages, each message going to one of them, as on Pub/Sub.
type Broker struct {
	maxBacklog int

	mu   sync.RWMutex
	subs map[string]*subscription
}

// New returns an empty broker.
func New(cfg Config) *Broker {
	if cfg.MaxBacklog == 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	return &Broker{
		maxBacklog: cfg.MaxBacklog,
		subs:       make(map[string]*subscription),
	}
}

// errEmpty mirrors Pub/Sub, which rejects a message with neither data nor
// attributes, so code that works here does not fail on Google Cloud.
var errEmpty = errors.New("empty message")

// Publish appends m to the backlog of every subscription. It never blocks
// on receivers: the cost is one copy of m plus one append per subscription.
// handle receives that shared copy, so it must not modify it.
func (b *Broker) Publish(ctx context.Context, m broker.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if len(m.Data) == 0 {
		return fmt.Errorf("publish: %w", errEmpty)
	}
	// The caller may reuse its buffer and map.
	m = broker.Message{Data: bytes.Clone(m.Data), Attributes: maps.Clone(m.Attributes)}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, s := range b.subs {
		s.push(m, b.maxBacklog)
	}
	return nil
}

// CreateSubscription makes the named subscription. On an existing one it
// drops the backlog in place: receivers already running on it stay attached
// and get only what is published from now on.
func (b *Broker) CreateSubscription(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create subscription %s: %w", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.subs[name]; ok {
		s.clear()
		return nil
	}
	b.subs[name] = newSubscription()
	return nil
}

// CheckSubscription reports whether the named subscription exists.
func (b *Broker) CheckSubscription(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check subscription %s: %w", name, err)
	}
	if b.lookup(name) == nil {
		return fmt.Errorf("check subscription %s: %w", name, broker.ErrNotFound)
	}
	return nil
}

// DeleteSubscription removes the named subscription and its backlog. Any
// Receive on it returns an error wrapping broker.ErrNotFound.
func (b *Broker) DeleteSubscription(ctx context.Context, name string) error {
	b.mu.Lock()
	s, ok := b.subs[name]
	delete(b.subs, name)
	b.mu.Unlock()
	if ok {
		s.delete()
	}
	return nil
}

// Receive calls handle for each message of the named subscription, one at a
// time, until ctx is done (it then returns nil) or the subscription is
// deleted (it then returns an error wrapping broker.ErrNotFound). A message
// is taken off the backlog just before handle is called with it.
func (b *Broker) Receive(ctx context.Context, name string, handle func(m broker.Message)) error {
	s := b.lookup(name)
	if s == nil {
		return fmt.Errorf("receive %s: %w", name, broker.ErrNotFound)
	}
	for {
		// Checked before each message, not only while idle, so that a busy
		// subscription cannot keep Receive from stopping.
		if ctx.Err() != nil {
			return nil
		}
		m, ok := s.pop()
		if ok {
			handle(m)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.gone:
			return fmt.Errorf("receive %s: %w", name, broker.ErrNotFound)
		case <-s.ready:
		}
	}
}

// ListSubscriptions returns the names of every subscription, sorted.
func (b *Broker) ListSubscriptions(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return slices.Sorted(maps.Keys(b.subs)), nil
}

func (b *Broker) lookup(name string) *subscription {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.subs[name]
}

// subscription is a FIFO backlog with a wake-up signal for receivers.
type subscription struct {
	// ready holds a token while the backlog may be non-empty. One token
	// wakes one receiver, which passes it on if messages remain, so several
	// receivers on one subscription all get work.
	ready chan struct{}
	// gone is closed when the subscription is deleted.
	gone chan struct{}

	mu    sync.Mutex
	queue []broker.Message // queue[0] is the oldest message
}

func newSubscription() *subscription {
	return &subscription{
		ready: make(chan struct{}, 1),
		gone:  make(chan struct{}),
	}
}

func (s *subscription) push(m broker.Message, maxBacklog int) {
	s.mu.Lock()
	if maxBacklog > 0 && len(s.queue) >= maxBacklog {
		s.queue[0] = broker.Message{} // let the dropped message be collected
		s.queue = s.queue[1:]
	}
	// Appending to a slice whose head has been popped reuses its spare
	// capacity, and on growth copies only the live part: memory stays
	// proportional to the backlog.
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	s.signal()
}

func (s *subscription) pop() (broker.Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return broker.Message{}, false
	}
	m := s.queue[0]
	s.queue[0] = broker.Message{}
	s.queue = s.queue[1:]
	if len(s.queue) > 0 {
		s.signal()
	}
	return m, true
}

func (s *subscription) clear() {
	s.mu.Lock()
	s.queue = nil
	s.mu.Unlock()
}

func (s *subscription) delete() {
	close(s.gone)
	s.clear()
}

// signal leaves a wake-up token unless one is already waiting.
func (s *subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}
