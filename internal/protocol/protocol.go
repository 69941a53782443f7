// Package protocol is Skywatch's wire protocol v1 (docs/protocol.md): the
// frames the relay and browsers exchange, their limits, and the validation of
// what clients send and what comes back from the broker. The hub and the
// tests (including the e2e suite) use these types instead of their own.
package protocol

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// ProtocolVersion is sent in the hello frame; it changes only when a frame
// changes incompatibly.
const Version = 1

// Limits of protocol v1. They are part of the protocol (docs/protocol.md), not
// configuration, so every VM accepts the same alerts.
const (
	MaxTextRunes  = 280
	MaxNonceRunes = 64
	// DefaultText is used when an alert arrives without text (or with only
	// white space), so a bare {"type":"alert"} is a valid alert.
	DefaultText = "An alien landing!"
)

// Frame types.
const (
	TypeHello = "hello"
	TypeAlert = "alert"
	TypeAck   = "ack"
	TypeError = "error"
	// TypeStatus is added within v1: clients that do not know it ignore it
	// (docs/protocol.md, "Frames").
	TypeStatus = "status"
)

// Error codes sent in error frames.
const (
	CodeInvalid     = "invalid"
	CodeTooLarge    = "too_large"
	CodeRateLimited = "rate_limited"
	CodeUnavailable = "unavailable"
	// CodeForbidden answers an alert from a connection that may not publish
	// (BROWSER_PUBLISH off, or signed without a valid token).
	CodeForbidden = "forbidden"
)

// Close codes and reasons the relay sends. Gorilla itself sends 1009
// (websocket.CloseMessageTooBig) when a frame exceeds the read limit.
const (
	CloseBinary        = websocket.CloseUnsupportedData // 1003
	CloseBinaryReason  = "binary frames are not supported"
	CloseTooSlow       = websocket.ClosePolicyViolation // 1008
	CloseTooSlowReason = "too slow"
	CloseRestart       = websocket.CloseServiceRestart // 1012
	CloseRestartReason = "service restart"
	CloseTooBig        = websocket.CloseMessageTooBig // 1009, sent by gorilla
	// ClosePolicy (1008) also ends a connection that keeps sending frames
	// it should not: too many frames, or bad frames past their budget.
	ClosePolicy          = websocket.ClosePolicyViolation // 1008
	CloseFramesReason    = "too many frames"
	CloseBadFramesReason = "too many bad frames"
)

// SentAtLayout is RFC 3339 with milliseconds, fixed width, in UTC. Fixed width
// keeps every alert frame of a given text the same size, which makes the
// benchmarks' frame counting simple, and millisecond precision is plenty for
// people.
const SentAtLayout = "2006-01-02T15:04:05.000Z07:00"

// Origin says which VM accepted an alert from its client.
type Origin struct {
	VM     string `json:"vm"`
	Region string `json:"region"`
	// Via is "api" for alerts from the HTTP publish API, absent for a
	// browser's. Added within v1: clients ignore keys they do not know.
	Via string `json:"via,omitempty"`
}

// ViaAPI marks an alert published through POST /api/alerts.
const ViaAPI = "api"

// maxViaRunes bounds Origin.Via in broker messages.
const maxViaRunes = 16

// Alert is the frame every client on every VM receives, and also the exact
// payload published to the broker. Only the relay sets ID, Origin and SentAt.
type Alert struct {
	Type   string `json:"type"` // always "alert"
	ID     string `json:"id"`   // 32 lowercase hex digits, 128 random bits
	Text   string `json:"text"`
	Origin Origin `json:"origin"`
	SentAt string `json:"sent_at"` // RFC 3339, UTC, milliseconds
}

// Hello is the first frame the server sends on every connection.
type Hello struct {
	Type     string `json:"type"` // always "hello"
	VM       string `json:"vm"`
	Region   string `json:"region"`
	Protocol int    `json:"protocol"`
	Limits   Limits `json:"limits"`
	// PingIntervalMS is how often the server pings; a client that hears
	// nothing (no frame, no ping) for much longer can assume the connection
	// is dead and reconnect.
	PingIntervalMS int64 `json:"ping_interval_ms"`
	// Relays lists other relays' WebSocket URLs a page may fail over to.
	// Only local multi-process setups (make dev, the e2e suite) set it: on
	// Fly the page's own origin reaches another VM. Added within v1.
	Relays []string `json:"relays,omitempty"`
}

// Limits tells clients what the server accepts, so a page can enforce them
// before sending.
type Limits struct {
	Text  int   `json:"text"`  // characters (Unicode code points)
	Nonce int   `json:"nonce"` // characters
	Frame int64 `json:"frame"` // bytes per frame; larger frames close the connection (1009)
	// Rate is the sustained alerts per second per connection and Burst the
	// bucket size. Rate is omitted when unlimited.
	Rate  *float64 `json:"rate,omitempty"`
	Burst int      `json:"burst"`
}

// Ack tells the sender its alert was accepted by the broker.
type Ack struct {
	Type  string `json:"type"` // always "ack"
	Nonce string `json:"nonce,omitempty"`
	ID    string `json:"id"`
}

// Error answers an alert that was not sent, or a frame that made no sense.
type Error struct {
	Type    string `json:"type"` // always "error"
	Code    string `json:"code"`
	Nonce   string `json:"nonce,omitempty"`
	Message string `json:"message"`
}

// Status tells clients whether the relay can deliver alerts right now (its
// subscription is receiving). It is sent when that changes, and right after
// the hello if the relay is not ready when the client connects; a client that
// has seen no status frame assumes ready. Added within v1.
type Status struct {
	Type  string `json:"type"` // always "status"
	Ready bool   `json:"ready"`
}

// NewID returns 128 random bits as 32 lowercase hex digits. crypto/rand so
// that ids cannot be predicted, and a client cannot pre-empt another alert's
// id to have it dropped as a duplicate.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never returns an error since Go 1.24
	return hex.EncodeToString(b[:])
}

// NewAlert stamps text with a fresh id, this VM's origin and the time.
func NewAlert(text string, origin Origin, now time.Time) Alert {
	return Alert{
		Type:   TypeAlert,
		ID:     NewID(),
		Text:   text,
		Origin: origin,
		SentAt: now.UTC().Format(SentAtLayout),
	}
}

// request is what the relay reads from a client frame. Fields stay raw so
// that each can be checked on its own: a wrong text still lets us echo a good
// nonce, and fields the client may not set (id, origin, sent_at) are never
// read at all.
type request struct {
	Type, Text, Nonce json.RawMessage
}

// parseObject reads one JSON object, strictly as the protocol says: keys
// match exactly (lowercase; encoding/json would also take "TYPE"), a known
// key sent twice is an error (encoding/json keeps the last, so
// {"type":"hello","type":"alert"} would pass as an alert), and nothing may
// follow the object. Unknown keys are skipped. dup is the first known key
// seen twice, if any (the first value is kept, so a good nonce can still be
// echoed).
func parseObject(data []byte) (req request, dup string, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return req, "", errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, "", err
		}
		key, _ := tok.(string) // inside an object, Token returns keys as strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return req, "", err
		}
		var field *json.RawMessage
		switch key {
		case "type":
			field = &req.Type
		case "text":
			field = &req.Text
		case "nonce":
			field = &req.Nonce
		default:
			continue
		}
		if *field != nil {
			if dup == "" {
				dup = key
			}
			continue
		}
		*field = raw
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return req, "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, "", errors.New("data after the object")
	}
	return req, dup, nil
}

// Rejection is a client error: it becomes an error frame and the connection
// stays open.
type Rejection struct {
	Code, Nonce, Message string
}

// Frame is the error frame that answers r.
func (r *Rejection) Frame() Error {
	return Error{Type: TypeError, Code: r.Code, Nonce: r.Nonce, Message: r.Message}
}

// ParseRequest validates an alert request and returns its text (the default
// text if omitted) and nonce.
func ParseRequest(data []byte) (text, nonce string, rej *Rejection) {
	req, nonce, rej := parseHead(data, "frame")
	if rej != nil {
		return "", "", rej
	}
	if !present(req.Type) {
		return "", "", &Rejection{Code: CodeInvalid, Nonce: nonce, Message: "type is missing"}
	}
	var typ string
	if err := json.Unmarshal(req.Type, &typ); err != nil {
		return "", "", &Rejection{Code: CodeInvalid, Nonce: nonce, Message: "type must be a string"}
	}
	if typ != TypeAlert {
		return "", "", &Rejection{Code: CodeInvalid, Nonce: nonce, Message: "unknown type"}
	}
	text, rej = parseText(req, nonce)
	return text, nonce, rej
}

// parseHead decodes an alert frame or an API body (what names it in the
// message) and reads its nonce: the part both check the same way. A
// duplicate key is invalid; the nonce is echoed unless it is the duplicate.
func parseHead(data []byte, what string) (request, string, *Rejection) {
	req, dup, err := parseObject(data)
	if err != nil {
		return req, "", &Rejection{Code: CodeInvalid, Message: what + " is not a JSON object"}
	}
	if dup == "nonce" {
		return req, "", &Rejection{Code: CodeInvalid, Message: "nonce appears twice"}
	}
	nonce, rej := parseNonce(req)
	if rej != nil {
		return req, "", rej
	}
	if dup != "" {
		return req, nonce, &Rejection{Code: CodeInvalid, Nonce: nonce, Message: dup + " appears twice"}
	}
	return req, nonce, nil
}

// ParsePublish validates the body of POST /api/alerts: a JSON object with an
// optional text and nonce, by the same rules (and as strictly) as an alert
// frame; type is not needed and, if sent, ignored.
func ParsePublish(data []byte) (text, nonce string, rej *Rejection) {
	req, nonce, rej := parseHead(data, "body")
	if rej != nil {
		return "", "", rej
	}
	text, rej = parseText(req, nonce)
	return text, nonce, rej
}

func parseNonce(req request) (nonce string, rej *Rejection) {
	if present(req.Nonce) {
		if err := json.Unmarshal(req.Nonce, &nonce); err != nil {
			return "", &Rejection{Code: CodeInvalid, Message: "nonce must be a string"}
		}
		if utf8.RuneCountInString(nonce) > MaxNonceRunes {
			// Not echoed: a nonce over the limit is not a nonce.
			return "", &Rejection{Code: CodeTooLarge, Message: fmt.Sprintf("nonce is longer than %d characters", MaxNonceRunes)}
		}
	}
	return nonce, nil
}

func parseText(req request, nonce string) (text string, rej *Rejection) {
	if present(req.Text) {
		if err := json.Unmarshal(req.Text, &text); err != nil {
			return "", &Rejection{Code: CodeInvalid, Nonce: nonce, Message: "text must be a string"}
		}
		if utf8.RuneCountInString(text) > MaxTextRunes {
			return "", &Rejection{Code: CodeTooLarge, Nonce: nonce, Message: fmt.Sprintf("text is longer than %d characters", MaxTextRunes)}
		}
	}
	if strings.TrimSpace(text) == "" {
		text = DefaultText
	}
	return text, nil
}

// present reports whether a field was sent with a non-null value.
func present(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// ErrMalformed marks a broker message that is not a valid alert.
var ErrMalformed = errors.New("malformed alert")

// DecodeAlert validates an alert that came back from the broker. The broker
// is shared by every VM, so its messages are checked as strictly as a
// client's: a bad one is dropped rather than shown to every browser. It
// also returns what the hub needs beside the alert: its id as a dedup key
// and its parsed send time.
func DecodeAlert(data []byte) (a Alert, key [16]byte, sentAt time.Time, err error) {
	if err := json.Unmarshal(data, &a); err != nil {
		return a, key, sentAt, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch {
	case a.Type != TypeAlert:
		return a, key, sentAt, fmt.Errorf("%w: type %q", ErrMalformed, a.Type)
	case len(a.ID) != 32 || strings.ToLower(a.ID) != a.ID:
		return a, key, sentAt, fmt.Errorf("%w: id is not 32 lowercase hex digits", ErrMalformed)
	case a.Text == "" || utf8.RuneCountInString(a.Text) > MaxTextRunes:
		return a, key, sentAt, fmt.Errorf("%w: text is empty or too long", ErrMalformed)
	case a.Origin.VM == "" || a.Origin.Region == "":
		return a, key, sentAt, fmt.Errorf("%w: origin is incomplete", ErrMalformed)
	case utf8.RuneCountInString(a.Origin.Via) > maxViaRunes:
		return a, key, sentAt, fmt.Errorf("%w: origin.via is too long", ErrMalformed)
	}
	if _, err := hex.Decode(key[:], []byte(a.ID)); err != nil {
		return a, key, sentAt, fmt.Errorf("%w: id: %w", ErrMalformed, err)
	}
	if sentAt, err = time.Parse(time.RFC3339, a.SentAt); err != nil {
		return a, key, sentAt, fmt.Errorf("%w: sent_at: %w", ErrMalformed, err)
	}
	return a, key, sentAt, nil
}

// Encode returns v's JSON. Every frame type here holds only strings, numbers
// and booleans, so encoding cannot fail; an error is a programming bug and
// panics, the same everywhere.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("protocol: encode %T: %v", v, err))
	}
	return b
}

// TypeFleet is the frame that shows the fleet: every relay this one hears,
// with its clients. Added after v1 shipped; v1 clients ignore frame types
// they do not know, so Version stays 1.
const TypeFleet = "fleet"

// Fleet is the fleet as one relay sees it. The relay sends it as a frame
// (Type "fleet", without SeenAt) when it changes, at most every few
// seconds, and answers GET /fleet with it (without Type, with SeenAt).
type Fleet struct {
	Type    string    `json:"type,omitempty"`
	VMs     []FleetVM `json:"vms"`
	Clients int       `json:"clients"` // the sum of the VMs' clients
}

// FleetVM is one relay in a Fleet.
type FleetVM struct {
	VM      string `json:"vm"`
	Region  string `json:"region"`
	Clients int    `json:"clients"`
	SeenAt  string `json:"seen_at,omitempty"` // when its last heartbeat arrived, RFC 3339 UTC
	// Duplicate is true while two processes are heard with this VM id: they
	// share one subscription, so each gets only part of the alerts.
	Duplicate bool `json:"duplicate,omitempty"`
}
