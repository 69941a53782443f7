// Package api is the relay's HTTP publish API, POST /api/alerts: backends
// send alerts with a bearer token, and each alert travels exactly as a
// browser's does (the same protocol.Alert through the same broker), with
// origin.via "api". See docs/protocol.md.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/reqlog"
)

// Publisher sends an alert to every relay (the broker satisfies it).
type Publisher interface {
	Publish(ctx context.Context, data []byte) error
}

// MaxBody is the largest request body, in bytes: the same as the largest
// WebSocket frame, which fits the longest valid alert.
const MaxBody = 4096

// Error codes of the API that the WebSocket protocol does not have.
const (
	CodeUnauthorized = "unauthorized"
	CodeNotFound     = "not_found"
)

// Config configures a Handler; zero values mean the defaults.
type Config struct {
	// Tokens are the bearer tokens that may publish. None: the API is off
	// and answers 404.
	Tokens *Tokens
	// VM and Region go into the alerts' origin.
	VM, Region string
	// Rate and Burst are each token's bucket. Defaults 20/s and 40.
	Rate  rate.Limit
	Burst int
	// PublishTimeout bounds one publish. Default 5s.
	PublishTimeout time.Duration
	// Logger receives one line per request (refusals limited in rate).
	// Default: discard.
	Logger *slog.Logger
	// Registerer receives skywatch_api_requests_total. Nil: a private one.
	Registerer prometheus.Registerer
}

// Defaults.
const (
	DefaultRate           = rate.Limit(20)
	DefaultBurst          = 40
	DefaultPublishTimeout = broker.DefaultPublishTimeout
)

// Handler serves POST /api/alerts.
type Handler struct {
	cfg      Config
	pub      Publisher
	log      *slog.Logger
	refusals *reqlog.Limited
	buckets  []*rate.Limiter // one per token
	requests *prometheus.CounterVec
}

// New returns the API handler. It panics if pub is nil.
func New(cfg Config, pub Publisher) *Handler {
	if pub == nil {
		panic("api: New with a nil Publisher")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tokens == nil {
		cfg.Tokens = &Tokens{}
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &Handler{
		cfg:      cfg,
		pub:      pub,
		log:      cfg.Logger,
		refusals: reqlog.NewLimited(cfg.Logger, 5, 20),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skywatch_api_requests_total",
			Help: "Requests to POST /api/alerts, by HTTP status.",
		}, []string{"status"}),
	}
	reg.MustRegister(h.requests)
	for range cfg.Tokens.Len() {
		h.buckets = append(h.buckets, rate.NewLimiter(cfg.Rate, cfg.Burst))
	}
	return h
}

// Enabled reports whether any token may publish.
func (h *Handler) Enabled() bool { return h.cfg.Tokens.Len() > 0 }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.Enabled() {
		h.fail(w, r, http.StatusNotFound, CodeNotFound, "the publish API is off on this relay (no PUBLISH_TOKENS)")
		return
	}
	presented, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="skywatch"`)
		h.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "send Authorization: Bearer <token>")
		return
	}
	idx, ok := h.cfg.Tokens.Match(presented)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="skywatch", error="invalid_token"`)
		h.fail(w, r, http.StatusUnauthorized, CodeUnauthorized, "the token is not valid")
		return
	}
	if res := h.buckets[idx].Reserve(); res.Delay() > 0 {
		d := res.Delay()
		res.Cancel()
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
		h.fail(w, r, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many alerts for this token; slow down")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			h.fail(w, r, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, fmt.Sprintf("the body is over %d bytes", MaxBody))
			return
		}
		h.fail(w, r, http.StatusBadRequest, protocol.CodeInvalid, "the body could not be read")
		return
	}
	text, nonce, rej := protocol.ParsePublish(body)
	if rej != nil {
		status := http.StatusBadRequest
		if rej.Code == protocol.CodeTooLarge {
			status = http.StatusRequestEntityTooLarge
		}
		h.fail(w, r, status, rej.Code, rej.Message)
		return
	}
	a := protocol.NewAlert(text, protocol.Origin{VM: h.cfg.VM, Region: h.cfg.Region, Via: protocol.ViaAPI}, time.Now())
	if nonce != "" {
		a.ID = h.cfg.Tokens.idFor(idx, nonce)
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	err = h.pub.Publish(ctx, protocol.Encode(a))
	cancel()
	if err != nil {
		h.log.Warn("api publish failed", "remote", r.RemoteAddr, "id", a.ID, "err", err)
		w.Header().Set("Retry-After", "1")
		h.fail(w, r, http.StatusServiceUnavailable, protocol.CodeUnavailable, "the alert was not sent; try again later")
		return
	}
	h.log.Info("api alert published", "remote", r.RemoteAddr, "id", a.ID, "token", idx)
	h.write(w, http.StatusAccepted, map[string]string{"id": a.ID})
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	// The values a client sent are clipped and the lines limited: the
	// client chooses how many refusals there are.
	h.refusals.Info("api request refused", "remote", r.RemoteAddr, "status", status, "code", code,
		"user_agent", reqlog.Clip(r.UserAgent()))
	var b errorBody
	b.Error.Code, b.Error.Message = code, message
	h.write(w, status, b)
}

func (h *Handler) write(w http.ResponseWriter, status int, v any) {
	h.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// MinTokenLen is the shortest token accepted: a token is a password that
// anyone on the internet may try.
const MinTokenLen = 16

// Tokens are the publish tokens of PUBLISH_TOKENS. Only their SHA-256
// hashes are kept.
type Tokens struct {
	hashes [][32]byte
}

// ParseTokens reads a comma-separated list (several, so they can be rotated
// without downtime). Spaces around a token are dropped; an empty entry or
// a token under MinTokenLen characters is an error. The error never quotes
// a token: it is a secret.
func ParseTokens(s string) (*Tokens, error) {
	t := &Tokens{}
	if strings.TrimSpace(s) == "" {
		return t, nil
	}
	for i, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		switch {
		case tok == "":
			return nil, fmt.Errorf("token %d is empty", i+1)
		case len(tok) < MinTokenLen:
			return nil, fmt.Errorf("token %d is %d characters, want at least %d", i+1, len(tok), MinTokenLen)
		}
		t.hashes = append(t.hashes, sha256.Sum256([]byte(tok)))
	}
	return t, nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(t.hashes) }

// Match reports which token presented is, in time that does not depend on
// how much of it is right nor on which token it matches: hashing first
// makes every comparison 32 bytes (ConstantTimeCompare returns at once on
// a length difference), and every token is compared.
func (t *Tokens) Match(presented string) (int, bool) {
	h := sha256.Sum256([]byte(presented))
	idx := -1
	for i := range t.hashes {
		if subtle.ConstantTimeCompare(h[:], t.hashes[i][:]) == 1 {
			idx = i
		}
	}
	return idx, idx >= 0
}

// idFor derives the alert id of a nonce sent with token idx: a retry with
// the same token and nonce publishes the same id, which every relay drops
// as a duplicate when it has seen it recently. Without the token the id
// cannot be predicted, so nobody else can pre-empt it.
func (t *Tokens) idFor(idx int, nonce string) string {
	m := sha256.New()
	m.Write([]byte("skywatch api nonce\x00"))
	m.Write(t.hashes[idx][:])
	m.Write([]byte(nonce))
	return hex.EncodeToString(m.Sum(nil)[:16])
}
