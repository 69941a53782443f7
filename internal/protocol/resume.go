package protocol

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Resuming (docs/protocol.md, "Resuming"): a client that reconnects asks for
// /ws?since=T, T being the sent_at of the newest alert it holds, and gets the
// alerts it missed, then a resumed frame, then live alerts.

// TypeResumed is the frame that ends a replay.
const TypeResumed = "resumed"

// SinceParam is the query parameter that asks for a replay.
const SinceParam = "since"

// MaxSinceAhead is how far in the future a since may be before it is
// refused as invalid: VMs' clocks differ by far less, so a since minutes
// ahead is a client's bug (or its own clock), not a relay's sent_at.
const MaxSinceAhead = time.Minute

// Resumed ends the replay of a resume; live alerts follow it.
type Resumed struct {
	Type string `json:"type"` // always "resumed"
	// Recovered is true when the relay vouches that no alert sent after
	// the client's since (minus the margin) is missing from the replay
	// and the live stream after it.
	Recovered bool `json:"recovered"`
	// Replayed is the number of alerts sent before this frame.
	Replayed int `json:"replayed"`
	// From is the instant after which the relay holds every alert (RFC
	// 3339, UTC, milliseconds, like sent_at).
	From string `json:"from"`
}

// NewResumed builds the resumed frame.
func NewResumed(recovered bool, replayed int, from time.Time) Resumed {
	return Resumed{Type: TypeResumed, Recovered: recovered, Replayed: replayed, From: FormatTime(from)}
}

// FormatTime formats t the way sent_at is: RFC 3339, UTC, milliseconds. It
// rounds up to the next millisecond, so that a time formatted and parsed back
// is never earlier than t (a "from" must not claim more than is held).
func FormatTime(t time.Time) string {
	if r := t.Truncate(time.Millisecond); !r.Equal(t) {
		t = r.Add(time.Millisecond)
	}
	return t.UTC().Format(SentAtLayout)
}

// ParseSince reads a since value: any RFC 3339 timestamp (with or without
// fractional seconds, any offset, 't' and 'z' in either case), not more than
// MaxSinceAhead after now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("since is empty")
	}
	// RFC 3339 allows lower-case t and z (section 5.6); Go's parser does
	// not. No other letter is valid, so upper-casing changes nothing else.
	t, err := time.Parse(time.RFC3339Nano, strings.ToUpper(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("since is not an RFC 3339 timestamp")
	}
	if t.After(now.Add(MaxSinceAhead)) {
		return time.Time{}, fmt.Errorf("since is in the future")
	}
	return t, nil
}
