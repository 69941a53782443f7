package fleet

import (
	"context"
	"strings"
	"time"
)

// sweep is the janitor's round: list the topic's subscriptions, delete the
// orphans. Several relays sweeping at once is harmless: deleting a
// subscription that is already gone succeeds.
func (f *Fleet) sweep(ctx context.Context) {
	if f.admin == nil {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, f.cfg.Interval)
	defer cancel()
	subs, err := f.admin.ListSubscriptions(lctx)
	if err != nil {
		f.log.Warn("janitor: list subscriptions", "err", err)
		return
	}
	for _, o := range f.judge(time.Now(), subs) {
		if err := f.admin.DeleteSubscription(lctx, o.name); err != nil {
			f.log.Warn("janitor: delete orphan subscription", "orphan", o.name, "err", err)
			continue
		}
		f.m.deleted.Inc()
		f.log.Warn("janitor: deleted orphan subscription", "orphan", o.name, "silent_for", o.silent.Round(time.Second))
	}
}

type orphan struct {
	name   string
	silent time.Duration
}

// judge returns the subscriptions in subs to delete at now, and remembers
// when it first saw each one listed. The rules (docs/fleet.md):
//
//   - judge nothing unless this relay's own subscription has been receiving
//     without a break for longer than OrphanAfter, so that "not heard"
//     means "silent", not "we were deaf" (a relay just booted, or one
//     coming out of a broker outage, deletes nothing);
//   - only names with the configured prefix (on this topic: the broker
//     lists only the topic's), never this relay's own;
//   - delete one whose VM has not been heard for longer than OrphanAfter,
//     counting a VM never heard from when its subscription was first seen
//     listed.
func (f *Fleet) judge(now time.Time, subs []string) []orphan {
	f.mu.Lock()
	defer f.mu.Unlock()
	covered := !f.coverage.IsZero() && now.Sub(f.coverage) > f.cfg.OrphanAfter
	listed := make(map[string]time.Time, len(subs))
	var out []orphan
	for _, name := range subs {
		if name == f.cfg.Subscription || !strings.HasPrefix(name, f.cfg.Prefix) {
			continue
		}
		last, ok := f.listed[name]
		if !ok {
			last = now
		}
		listed[name] = last
		if h := f.heard[name]; h.After(last) {
			last = h
		}
		if covered && now.Sub(last) > f.cfg.OrphanAfter {
			out = append(out, orphan{name, now.Sub(last)})
		}
	}
	f.listed = listed
	return out
}
