package gcppubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

var (
	_ broker.Broker = (*Lazy)(nil)
	_ broker.Lister = (*Lazy)(nil)
)

// ErrNotConnected is what a Lazy broker's calls return, wrapped with the
// last reason, until it has connected.
var ErrNotConnected = errors.New("pubsub not connected yet")

// How a Lazy broker retries. The backoff matches the feed's (250 ms to 5 s)
// so that a relay becomes ready within seconds of Pub/Sub answering. An
// attempt gets 5 s: it includes the first token exchange (Fly OIDC, STS,
// IAM Credentials; each well under a second) and a GetTopic that the client
// library retries on its own while Pub/Sub is unreachable, so an
// unreachable Pub/Sub is reported after 5 s.
const (
	connectMinBackoff = 250 * time.Millisecond
	connectMaxBackoff = 5 * time.Second
	connectTimeout    = 5 * time.Second
	// relogEvery repeats an unchanged reason, so that a missing topic or
	// a missing grant stays visible in recent logs without a line per try.
	relogEvery = time.Minute
)

// Lazy is a Broker that exists at once and connects in the background,
// retrying with backoff until New succeeds. Until then every call fails
// with an error wrapping ErrNotConnected and the last reason, which the
// relay already treats as an outage: the feed retries (so /readyz stays
// 503) and the hub answers `unavailable`. A relay can thus listen before
// Pub/Sub answers: right after the first `pulumi up`, when IAM grants take
// minutes to propagate, or during an outage at boot.
type Lazy struct {
	b      atomic.Pointer[Broker]
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	lastErr error
}

// Open returns a Lazy broker and starts connecting with cfg. Configuration
// errors New would report on every attempt (a missing project or topic, an
// unparseable key) are returned at once instead: retrying cannot fix them.
// Each change of reason is logged once (and repeated every minute while it
// lasts); so is success.
func Open(cfg Config, log *slog.Logger) (*Lazy, error) {
	if cfg.ProjectID == "" {
		return nil, errors.New("gcppubsub: missing project ID")
	}
	if cfg.TopicID == "" {
		return nil, errors.New("gcppubsub: missing topic ID")
	}
	if cfg.Credentials == nil && len(cfg.CredentialsJSON) > 0 && cfg.EmulatorHost == "" {
		creds, err := KeyCredentials(cfg.CredentialsJSON)
		if err != nil {
			return nil, fmt.Errorf("gcppubsub: %w", err)
		}
		cfg.Credentials = creds
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Lazy{log: log, cancel: cancel, done: make(chan struct{})}
	go l.connect(ctx, cfg)
	return l, nil
}

func (l *Lazy) connect(ctx context.Context, cfg Config) {
	defer close(l.done)
	topic := fmt.Sprintf("projects/%s/topics/%s", cfg.ProjectID, cfg.TopicID)
	var lastReason string
	var loggedAt time.Time
	for backoff := connectMinBackoff; ; backoff = min(2*backoff, connectMaxBackoff) {
		actx, cancel := context.WithTimeout(ctx, connectTimeout)
		b, err := New(actx, cfg)
		cancel()
		if err == nil {
			l.b.Store(b)
			l.log.Info("pubsub connected", "topic", topic)
			return
		}
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		l.lastErr = err
		l.mu.Unlock()
		if reason := reasonFor(err, topic); reason != lastReason || time.Since(loggedAt) >= relogEvery {
			l.log.Warn("pubsub not connected yet; retrying", "reason", reason, "err", err)
			lastReason, loggedAt = reason, time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// reasonFor says in a few words why connecting failed, and what to do
// about it. Its value, not the full error (which varies with addresses and
// timings), decides whether a failure is news worth logging.
func reasonFor(err error, topic string) string {
	var missing *missingTopicError
	switch code := status.Code(unwrapStatus(err)); {
	case errors.As(err, &missing):
		return "topic " + topic + " does not exist: create it with `pulumi up`"
	case code == codes.PermissionDenied:
		return "permission denied on topic " + topic + ": grants can take minutes to propagate after `pulumi up`"
	case code == codes.Unauthenticated:
		return "credentials refused (key, or Fly OIDC token exchange)"
	case code == codes.Unavailable, code == codes.DeadlineExceeded, errors.Is(err, context.DeadlineExceeded):
		return "pubsub unreachable"
	default:
		return "pubsub error: " + code.String()
	}
}

// unwrapStatus finds the gRPC status error inside err's chain, if any.
func unwrapStatus(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}

// current returns the connected broker or the error to report.
func (l *Lazy) current() (*Broker, error) {
	if b := l.b.Load(); b != nil {
		return b, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastErr == nil {
		return nil, ErrNotConnected
	}
	return nil, fmt.Errorf("%w: %w", ErrNotConnected, l.lastErr)
}

// Connected reports whether the background connection has succeeded.
func (l *Lazy) Connected() bool { return l.b.Load() != nil }

// Publish implements broker.Publisher.
func (l *Lazy) Publish(ctx context.Context, m broker.Message) error {
	b, err := l.current()
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return b.Publish(ctx, m)
}

// CreateSubscription implements broker.Subscriber.
func (l *Lazy) CreateSubscription(ctx context.Context, name string) error {
	b, err := l.current()
	if err != nil {
		return fmt.Errorf("create subscription %s: %w", name, err)
	}
	return b.CreateSubscription(ctx, name)
}

// CheckSubscription implements broker.Subscriber. Before connecting it
// reports an outage, never broker.ErrNotFound.
func (l *Lazy) CheckSubscription(ctx context.Context, name string) error {
	b, err := l.current()
	if err != nil {
		return fmt.Errorf("check subscription %s: %w", name, err)
	}
	return b.CheckSubscription(ctx, name)
}

// Receive implements broker.Subscriber.
func (l *Lazy) Receive(ctx context.Context, name string, handle func(broker.Message)) error {
	b, err := l.current()
	if err != nil {
		return fmt.Errorf("receive %s: %w", name, err)
	}
	return b.Receive(ctx, name, handle)
}

// ListSubscriptions implements broker.Lister.
func (l *Lazy) ListSubscriptions(ctx context.Context) ([]string, error) {
	b, err := l.current()
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	return b.ListSubscriptions(ctx)
}

// DeleteSubscription implements broker.Subscriber. Before connecting there
// is nothing to delete: this process cannot have created a subscription.
func (l *Lazy) DeleteSubscription(ctx context.Context, name string) error {
	b := l.b.Load()
	if b == nil {
		return nil
	}
	return b.DeleteSubscription(ctx, name)
}

// Close stops connecting and closes the broker if it connected.
func (l *Lazy) Close() error {
	l.cancel()
	<-l.done
	if b := l.b.Load(); b != nil {
		return b.Close()
	}
	return nil
}
