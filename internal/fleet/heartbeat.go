package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/skywatch-dev/skywatch/internal/broker"
)

// The message attribute that marks a heartbeat. A message without it is an
// alert, as every message was before heartbeats existed.
const (
	AttrKind      = "kind"
	KindHeartbeat = "heartbeat"
)

// typeHeartbeat is the payload's type. It is not "alert", so a relay that
// does not know attributes drops a heartbeat as a malformed alert instead
// of showing it.
const typeHeartbeat = "heartbeat"

// Heartbeat is what a relay publishes every Interval. About 250 bytes.
type Heartbeat struct {
	Type      string    `json:"type"` // always "heartbeat"
	VM        string    `json:"vm"`
	Instance  string    `json:"instance"` // random per process: tells two processes with one VM id apart
	Region    string    `json:"region"`
	Clients   int       `json:"clients"`
	StartedAt time.Time `json:"started_at"`
	Version   string    `json:"version"`
	// Seq counts this process's heartbeats from 1, so it can tell which of
	// its own came back.
	Seq uint64 `json:"seq"`
	// Leaving is set on the last heartbeat of a relay that stops cleanly, so
	// the others drop it from view at once instead of after a silence.
	Leaving bool `json:"leaving,omitempty"`
}

// message wraps hb for the broker.
func (hb Heartbeat) message() broker.Message {
	data, err := json.Marshal(hb)
	if err != nil {
		panic(fmt.Sprintf("fleet: encode heartbeat: %v", err)) // strings, numbers, times: cannot fail
	}
	return broker.Message{Data: data, Attributes: map[string]string{AttrKind: KindHeartbeat}}
}

var errBadHeartbeat = errors.New("bad heartbeat")

// decode validates a heartbeat heard on the topic. The topic is shared, so
// its messages are checked like a client's.
func decode(data []byte) (Heartbeat, error) {
	var hb Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil {
		return hb, fmt.Errorf("%w: %w", errBadHeartbeat, err)
	}
	switch {
	case hb.Type != typeHeartbeat:
		return hb, fmt.Errorf("%w: type %q", errBadHeartbeat, hb.Type)
	case hb.VM == "" || hb.Instance == "":
		return hb, fmt.Errorf("%w: no vm or instance", errBadHeartbeat)
	case len(hb.VM) > 255 || len(hb.Region) > 64 || len(hb.Instance) > 64 || len(hb.Version) > 64:
		return hb, fmt.Errorf("%w: field too long", errBadHeartbeat)
	case hb.Clients < 0:
		return hb, fmt.Errorf("%w: negative clients", errBadHeartbeat)
	}
	return hb, nil
}
