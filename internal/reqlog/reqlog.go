// Package reqlog keeps what a relay logs about requests small: values taken
// from a request are clipped, and lines about refused requests are limited
// in rate. A client controls both how big and how many such lines are, so
// without this it controls the size of the log: 50 upgrades with a 900 KB
// Origin header once wrote 45 MB in a second.
package reqlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// MaxValue is the most bytes of a request value that a log line carries.
const MaxValue = 128

// Clip returns s cut to MaxValue bytes (on a character boundary), saying
// how long it was if it was cut.
func Clip(s string) string {
	if len(s) <= MaxValue {
		return s
	}
	cut := MaxValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:cut], len(s))
}

// Limited logs at most a few lines per second and counts the ones it
// drops; the next line it writes says how many.
type Limited struct {
	log     *slog.Logger
	lim     *rate.Limiter
	dropped atomic.Int64
}

// NewLimited returns a Limited writing to log at most perSecond lines a
// second on average, burst at once.
func NewLimited(log *slog.Logger, perSecond rate.Limit, burst int) *Limited {
	return &Limited{log: log, lim: rate.NewLimiter(perSecond, burst)}
}

// Info logs msg with args if the rate allows.
func (l *Limited) Info(msg string, args ...any) { l.logAt(slog.LevelInfo, msg, args) }

// Warn logs msg with args if the rate allows.
func (l *Limited) Warn(msg string, args ...any) { l.logAt(slog.LevelWarn, msg, args) }

func (l *Limited) logAt(level slog.Level, msg string, args []any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	if !l.lim.Allow() {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), level, msg, args...)
}
