package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

// Config tunes a Feed. Zero values mean the defaults.
type Config struct {
	// Name is the subscription's name (names.Subscription). Required.
	Name string
	// CheckInterval is how often the broker is asked whether the
	// subscription still exists. Default 2s: a vanished subscription or an
	// unreachable broker is noticed within a few seconds, and the cost is one
	// small admin call per VM every interval.
	CheckInterval time.Duration
	// CheckTimeout bounds each broker call made by the supervisor.
	// Default 3s.
	CheckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to recover.
	// Defaults 250ms and 5s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// OnReceiving, if set, is called when a newly created subscription
	// (at boot, or recreated after it vanished) starts receiving: alerts
	// sent from then on all arrive. The hub's history starts its coverage.
	OnReceiving func()
}

// Feed supervises one subscription. Create it with New, start Run once.
type Feed struct {
	sub    broker.Subscriber
	cfg    Config
	handle func(broker.Message)
	log    *slog.Logger
	ready  atomic.Bool
	// recreate and stop serve Recreate (fleet: own heartbeats not returning).
	recreate atomic.Bool
	stop     atomic.Pointer[context.CancelCauseFunc]
	// created is set when attach made the subscription and cleared once
	// OnReceiving was called for it; only Run's goroutine touches it.
	created bool
}

// New returns a Feed that delivers every message on the subscription to
// handle, which may be called from several goroutines at once.
func New(sub broker.Subscriber, cfg Config, handle func(m broker.Message)) *Feed {
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 3 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Feed{sub: sub, cfg: cfg, handle: handle, log: cfg.Logger.With("subscription", cfg.Name)}
}

// Name is the subscription's name.
func (f *Feed) Name() string { return f.cfg.Name }

// Ready reports whether the subscription is receiving right now.
func (f *Feed) Ready() bool { return f.ready.Load() }

// Run creates the subscription afresh and receives from it until ctx is
// done, recovering on its own from a vanished subscription or an unreachable
// broker. It returns nil once receiving has stopped after ctx is done; it
// never gives up on its own, because a relay that still serves its clients
// is worth more than one that exits while the broker is away.
func (f *Feed) Run(ctx context.Context) error {
	defer f.ready.Store(false)
	backoff := f.cfg.MinBackoff
	// fresh is true until the subscription has been created once by this
	// process. Later recoveries keep an existing subscription (its backlog is
	// minutes old at most: alerts sent during a network blip) and recreate
	// only a vanished one.
	fresh := true
	for ctx.Err() == nil {
		if f.recreate.Swap(false) {
			f.drop(ctx)
			fresh = true
		}
		err := f.attach(ctx, fresh)
		if err == nil {
			fresh = false
			backoff = f.cfg.MinBackoff
			err = f.receive(ctx)
		}
		if ctx.Err() != nil {
			break
		}
		f.log.Warn("subscription not receiving", "err", err, "retry_in", backoff)
		if !sleep(ctx, backoff) {
			break
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
	return nil
}

// attach makes sure the subscription exists: created anew at boot, and
// recreated if it has vanished since.
func (f *Feed) attach(ctx context.Context, fresh bool) error {
	cctx, cancel := context.WithTimeout(ctx, f.cfg.CheckTimeout)
	defer cancel()
	if !fresh {
		err := f.sub.CheckSubscription(cctx, f.cfg.Name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, broker.ErrNotFound) {
			return fmt.Errorf("check subscription: %w", err)
		}
		f.log.Warn("subscription vanished; recreating")
	}
	if err := f.sub.CreateSubscription(cctx, f.cfg.Name); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	f.log.Info("subscription created")
	f.created = true
	return nil
}

// receive runs Receive and a watchdog beside it until either fails or ctx
// is done. The watchdog is needed because not every broker ends a Receive
// when its subscription is deleted or the network goes away (the Pub/Sub
// client retries silently).
func (f *Feed) receive(ctx context.Context) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f.stop.Store(&cancel)
	done := make(chan error, 1)
	go func() { done <- f.sub.Receive(rctx, f.cfg.Name, f.handle) }()

	f.ready.Store(true)
	f.log.Info("subscription receiving")
	if f.created && f.cfg.OnReceiving != nil {
		f.cfg.OnReceiving()
	}
	f.created = false
	defer f.ready.Store(false)

	tick := time.NewTicker(f.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				err = context.Cause(rctx) // Recreate's reason, if it stopped us
			}
			if err == nil {
				err = errors.New("receive ended")
			}
			return fmt.Errorf("receive: %w", err)
		case <-tick.C:
			cctx, ccancel := context.WithTimeout(ctx, f.cfg.CheckTimeout)
			err := f.sub.CheckSubscription(cctx, f.cfg.Name)
			ccancel()
			if err != nil && ctx.Err() == nil {
				f.ready.Store(false)
				cancel(err)
				<-done
				return fmt.Errorf("check subscription: %w", err)
			}
		case <-ctx.Done():
			<-done
			return nil
		}
	}
}

// Recreate stops receiving and makes the subscription again (dropping its
// backlog), through the path that recovers a vanished one. The fleet calls
// it when the relay's own heartbeats stop coming back although the
// subscription exists: a pull stream the broker no longer serves.
func (f *Feed) Recreate(reason string) {
	f.recreate.Store(true)
	if stop := f.stop.Load(); stop != nil {
		(*stop)(errors.New(reason))
	}
}

// recreateGap is how long Recreate waits between deleting the subscription
// and making it again. The emulator (0.8.20) cannot close a cancelled pull
// stream: one by the same name made within about a second is served partly
// to the dead stream. Google Cloud has no such bug; the gap costs it a
// second or two more of lost messages on a path that is already a loss.
const recreateGap = 2 * time.Second

// drop deletes the subscription for Recreate and waits recreateGap.
func (f *Feed) drop(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, f.cfg.CheckTimeout)
	defer cancel()
	if err := f.sub.DeleteSubscription(cctx, f.cfg.Name); err != nil {
		f.log.Warn("delete subscription before recreating", "err", err)
	}
	sleep(ctx, recreateGap)
}

// Delete removes the subscription. Call it after Run has returned, so that
// nothing recreates it.
func (f *Feed) Delete(ctx context.Context) error {
	if err := f.sub.DeleteSubscription(ctx, f.cfg.Name); err != nil {
		return fmt.Errorf("delete subscription %s: %w", f.cfg.Name, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
