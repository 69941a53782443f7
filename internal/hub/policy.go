package hub

import (
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/skywatch-dev/skywatch/internal/iplimit"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/reqlog"
	"github.com/skywatch-dev/skywatch/internal/token"
)

// BrowserPublish says which browser connections may publish alerts
// (BROWSER_PUBLISH).
type BrowserPublish string

const (
	// PublishOpen lets every connection publish (the default, as the
	// original demo).
	PublishOpen BrowserPublish = "open"
	// PublishOff makes browsers listeners only: their alerts are answered
	// `forbidden`. Alerts come from the HTTP API.
	PublishOff BrowserPublish = "off"
	// PublishSigned lets a connection publish only if it was opened with a
	// valid signed token (/ws?token=..., see package token).
	PublishSigned BrowserPublish = "signed"
)

// Policy is who may publish through this hub and how much, on top of each
// connection's bucket (Config.RateLimit). Zero values mean the defaults.
type Policy struct {
	// Browsers is the BROWSER_PUBLISH mode. Default PublishOpen.
	Browsers BrowserPublish
	// SigningKey verifies tokens in PublishSigned mode (required there).
	SigningKey []byte
	// PerIP limits connections and alerts per client address. Nil: no
	// per-address limits (the hub's own tests and benchmarks, whose clients
	// all share 127.0.0.1).
	PerIP *iplimit.Limiter
	// RelayRate and RelayBurst are the relay's ceiling: all its browser
	// clients together publish at most RelayRate alerts per second (bucket
	// RelayBurst), however many addresses they come from. Defaults 50 and
	// 100.
	RelayRate  rate.Limit
	RelayBurst int
}

// Defaults of Policy.
const (
	DefaultRelayRate  = rate.Limit(50)
	DefaultRelayBurst = 100
)

// Budgets of a connection's bad frames. Every rejected frame also costs a
// token of the connection's bucket (see handle). Error replies are limited
// to replyBurst at once, refilled at replyRate: a flood of `{}` once got
// 154k error replies a second. A frame that finds the reply budget empty
// gets no answer and is a strike; a connection that keeps striking faster
// than strikeRate, strikeBurst at once, is closed with 1008.
const (
	replyRate   = rate.Limit(10)
	replyBurst  = 100 // a flood of 100 alerts at once is still answered in full
	strikeRate  = rate.Limit(5)
	strikeBurst = 20
)

// requestLogRate bounds the lines logged about refused requests (a client
// controls how many there are).
const (
	requestLogRate  = rate.Limit(5)
	requestLogBurst = 20
)

func (p *Policy) setDefaults() {
	if p.Browsers == "" {
		p.Browsers = PublishOpen
	}
	if p.RelayRate <= 0 {
		p.RelayRate = DefaultRelayRate
	}
	if p.RelayBurst <= 0 {
		p.RelayBurst = DefaultRelayBurst
	}
}

// policy is the hub's shared state for Policy.
type policy struct {
	Policy
	relay  *rate.Limiter
	reqLog *reqlog.Limited

	refused    *prometheus.CounterVec
	unanswered prometheus.Counter
}

func newPolicy(cfg Config, m *metrics) *policy {
	p := cfg.Publish
	p.setDefaults()
	switch p.Browsers {
	case PublishOpen, PublishOff:
	case PublishSigned:
		if len(p.SigningKey) < token.MinKeyLen {
			panic("hub: PublishSigned without a signing key") // config checks it first
		}
	default:
		panic(fmt.Sprintf("hub: unknown BrowserPublish %q", p.Browsers))
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	pol := &policy{
		Policy: p,
		relay:  rate.NewLimiter(p.RelayRate, p.RelayBurst),
		reqLog: reqlog.NewLimited(cfg.Logger, requestLogRate, requestLogBurst),
		refused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skywatch_policy_refusals_total",
			Help: "Refusals by the publish policy, by reason: browser alerts (forbidden, ip_rate, relay_rate) and WebSocket upgrades over the per-address connection limit (ip_connections).",
		}, []string{"reason"})),
		unanswered: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_frames_unanswered_total",
			Help: "Rejected client frames that got no error reply because the connection's reply budget was spent.",
		})),
	}
	for _, r := range []string{"forbidden", "ip_rate", "relay_rate", "ip_connections"} {
		pol.refused.WithLabelValues(r)
	}
	m.errors.WithLabelValues(protocol.CodeForbidden)
	return pol
}

// clientPolicy is one connection's part of the policy.
type clientPolicy struct {
	ip         string // the client's address, as the limits count it
	mayPublish bool
	release    func() // frees the per-address connection slot; never nil

	replies bucket // error replies
	strikes bucket // frames that found no reply budget
}

func (h *Hub) newClientPolicy(remote string) clientPolicy {
	return clientPolicy{
		ip:         remote,
		mayPublish: h.pol.Browsers == PublishOpen,
		release:    func() {},
	}
}

// admit applies the policy to an upgrade request before it is upgraded. It
// answers 429 itself when the client's address holds too many connections.
// On success the caller must call the returned policy's release when the
// connection ends (or is never made).
func (h *Hub) admit(w http.ResponseWriter, req *http.Request) (clientPolicy, bool) {
	p := h.newClientPolicy(req.RemoteAddr)
	if h.pol.PerIP != nil {
		p.ip = h.pol.PerIP.ClientIP(req)
		release, ok := h.pol.PerIP.Acquire(p.ip)
		if !ok {
			h.pol.refused.WithLabelValues("ip_connections").Inc()
			h.pol.reqLog.Info("upgrade refused", "remote", req.RemoteAddr, "ip", p.ip, "reason", "too many connections from this address")
			w.Header().Set("Retry-After", "10")
			http.Error(w, "too many connections from your address", http.StatusTooManyRequests)
			return p, false
		}
		p.release = release
	}
	if h.pol.Browsers == PublishSigned {
		// Checked once, at connect: the connection keeps the right for its
		// life, as a ticket lets you in and not out again.
		tok := req.URL.Query().Get("token")
		if tok != "" {
			_, err := token.Verify(h.pol.SigningKey, tok, time.Now())
			p.mayPublish = err == nil
			if err != nil {
				// Never the token itself: it is a credential.
				h.pol.reqLog.Info("browser token refused", "remote", req.RemoteAddr, "err", err)
			}
		}
	}
	return p, true
}

// forbidden answers an alert from a connection that may not publish, and
// reports whether it did.
func (c *client) forbidden(nonce string) bool {
	if c.pol.mayPublish {
		return false
	}
	c.hub.pol.refused.WithLabelValues("forbidden").Inc()
	msg := "this relay does not accept alerts from browsers"
	if c.hub.pol.Browsers == PublishSigned {
		msg = "publishing needs a valid token when connecting (/ws?token=...)"
	}
	c.reject(protocol.CodeForbidden, nonce, msg)
	return true
}

// overShared checks the limits the connection shares with others: its
// address's bucket, then the relay's ceiling. It answers rate_limited and
// reports true when one is spent.
func (c *client) overShared(nonce string) bool {
	pol := c.hub.pol
	if pol.PerIP != nil && !pol.PerIP.Allow(c.pol.ip) {
		pol.refused.WithLabelValues("ip_rate").Inc()
		c.reject(protocol.CodeRateLimited, nonce, "too many alerts from your address; slow down")
		return true
	}
	if !pol.relay.Allow() {
		pol.refused.WithLabelValues("relay_rate").Inc()
		c.reject(protocol.CodeRateLimited, nonce, "this relay is at its publish ceiling; try again shortly")
		return true
	}
	return false
}

// reject answers a frame the reader refused, within the connection's reply
// budget; past it the frame goes unanswered, and a connection that keeps
// going is closed with 1008.
func (c *client) reject(code, nonce, message string) {
	if c.pol.replies.allow(replyRate, replyBurst) {
		c.replyError(code, nonce, message)
		return
	}
	c.hub.pol.unanswered.Inc()
	if !c.pol.strikes.allow(strikeRate, strikeBurst) {
		c.shutdown(protocol.ClosePolicy, protocol.CloseBadFramesReason)
	}
}
