package testkit

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// Frame is any server frame, decoded loosely: the fields a type does not
// use stay empty. Raw keeps the frame as sent, for failure messages.
type Frame struct {
	Type           string          `json:"type"`
	VM             string          `json:"vm"`
	Region         string          `json:"region"`
	Protocol       int             `json:"protocol"`
	Limits         protocol.Limits `json:"limits"`
	PingIntervalMS int64           `json:"ping_interval_ms"`
	ID             string          `json:"id"`
	Text           string          `json:"text"`
	Origin         protocol.Origin `json:"origin"`
	SentAt         string          `json:"sent_at"`
	Nonce          string          `json:"nonce"`
	Code           string          `json:"code"`
	Message        string          `json:"message"`

	Raw string    `json:"-"`
	At  time.Time `json:"-"` // when it was read
}

func (f Frame) String() string { return f.Raw }

// Pseudo-types for frames that are not JSON text.
const (
	TypeBinary  = "!binary"
	TypeInvalid = "!invalid-json"
)

// Decode turns one WebSocket message into a Frame. A binary message or
// text that is not JSON gets one of the pseudo-types above.
func Decode(typ int, data []byte) Frame {
	f := Frame{Raw: string(data), At: time.Now()}
	if typ != websocket.TextMessage {
		f.Type = TypeBinary
	} else if err := json.Unmarshal(data, &f); err != nil {
		f.Type = TypeInvalid
	}
	return f
}

// ReadFrame reads one message from conn within timeout, for tests that read
// synchronously. It fails on anything but a JSON text frame.
func ReadFrame(conn *websocket.Conn, timeout time.Duration) (Frame, error) {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := conn.ReadMessage()
	if err != nil {
		return Frame{}, err
	}
	f := Decode(typ, data)
	if f.Type == TypeBinary || f.Type == TypeInvalid {
		return f, fmt.Errorf("got %s frame %q", f.Type, data)
	}
	return f, nil
}

// Match selects frames.
type Match func(Frame) bool

// IsType matches frames of type typ.
func IsType(typ string) Match { return func(f Frame) bool { return f.Type == typ } }

// IsAlertText matches alerts with this text.
func IsAlertText(text string) Match {
	return func(f Frame) bool { return f.Type == protocol.TypeAlert && f.Text == text }
}

// IsAlertID matches the alert with this id.
func IsAlertID(id string) Match {
	return func(f Frame) bool { return f.Type == protocol.TypeAlert && f.ID == id }
}

// AnswerTo matches the ack or error that answers the alert with nonce.
func AnswerTo(nonce string) Match {
	return func(f Frame) bool {
		return (f.Type == protocol.TypeAck || f.Type == protocol.TypeError) && f.Nonce == nonce
	}
}

// AlertRequest is the frame a client sends to raise an alert.
type AlertRequest struct {
	Type  string `json:"type"`
	Text  string `json:"text,omitempty"`
	Nonce string `json:"nonce,omitempty"`
}

// NewAlertRequest is an alert frame with text and nonce.
func NewAlertRequest(text, nonce string) AlertRequest {
	return AlertRequest{Type: protocol.TypeAlert, Text: text, Nonce: nonce}
}
