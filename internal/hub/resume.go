package hub

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skywatch-dev/skywatch/internal/history"
	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// Resuming (docs/protocol.md, "Resuming"): the hub keeps a history of the
// alerts it broadcast, and a client that reconnects with /ws?since=T gets,
// after hello, every alert of the history sent at or after T minus a margin,
// oldest first, then a resumed frame, then live alerts.

// Resume defaults.
const (
	DefaultHistorySize = history.DefaultSize
	DefaultHistoryAge  = history.DefaultAge
	// DefaultResumeMargin is subtracted from a client's since. VMs' clocks
	// differ slightly and each subscription receives in its own order, so
	// the client may lack alerts sent a little before the newest it holds;
	// it drops the repeats this brings by id. 5 s is far more than NTP
	// skew or the broker's spread between subscriptions, and costs a
	// replay of 100 alerts at 20 alerts/s.
	DefaultResumeMargin = 5 * time.Second
)

func (c *Config) setResumeDefaults() {
	if c.HistorySize <= 0 {
		c.HistorySize = DefaultHistorySize
	}
	if c.HistoryAge <= 0 {
		c.HistoryAge = DefaultHistoryAge
	}
	if c.ResumeMargin <= 0 {
		c.ResumeMargin = DefaultResumeMargin
	}
}

// resumeState is the hub's history and what orders it with the clients.
type resumeState struct {
	// mu makes "recorded and offered to every client" one step as seen by a
	// resuming client: Deliver holds it shared while it adds an alert to the
	// history and broadcasts it, and a resuming client takes its replay and
	// is registered while holding it exclusively. So every alert is either
	// in the client's replay (delivered before) or in its live stream
	// (delivered after), never both and never neither. Delivers still run
	// side by side; a resume holds them up for one scan of the history.
	mu      sync.RWMutex
	history *history.History[[]byte] // encoded alert frames, shared with the live broadcast

	resumes  *prometheus.CounterVec // by outcome
	replayed prometheus.Counter
	late     prometheus.Counter
}

func (h *Hub) initResume() {
	rs := &h.rs
	rs.history = history.New[[]byte](history.Config{Size: h.cfg.HistorySize, Age: h.cfg.HistoryAge})
	reg := h.cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rs.resumes = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skywatch_resumes_total",
		Help: "Connections that asked to resume (?since=), by outcome: recovered (the relay vouched that nothing is missing) or not_recovered.",
	}, []string{"outcome"}))
	rs.resumes.WithLabelValues("recovered")
	rs.resumes.WithLabelValues("not_recovered")
	rs.replayed = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "skywatch_alerts_replayed_total",
		Help: "Alerts sent from the history to resuming clients (one per alert per client).",
	}))
	rs.late = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "skywatch_alerts_late_dropped_total",
		Help: "Broker messages dropped because their sent_at is older than the history's age (a late redelivery is not news).",
	}))
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "skywatch_history_alerts",
		Help: "Alerts held in the history for resuming clients.",
	}, func() float64 { return float64(rs.history.Len()) }))
	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "skywatch_history_coverage_start_seconds",
		Help: "Unix time from which the history is complete (when the subscription last started receiving); 0 before.",
	}, func() float64 {
		c := rs.history.Coverage()
		if c.IsZero() {
			return 0
		}
		return float64(c.UnixNano()) / 1e9
	}))
}

// CoverageStarts tells the hub that its subscription, newly created, has
// just started receiving: from now on every alert reaches the history, so
// resumes from this instant on can be vouched for. The feed calls it at boot
// and after recreating a vanished subscription.
func (h *Hub) CoverageStarts() {
	h.rs.history.Cover()
	h.log.Info("history coverage starts", "history_size", h.cfg.HistorySize, "history_age", h.cfg.HistoryAge)
}

// late reports (and counts) an alert too old to be news: the broker
// delivered it long after it was sent, e.g. redelivered after an outage.
func (h *Hub) late(a protocol.Alert, sentAt time.Time) bool {
	if time.Since(sentAt) <= h.cfg.HistoryAge {
		return false
	}
	h.rs.late.Inc()
	h.log.Info("alert dropped", "reason", "late", "id", a.ID, "sent_at", a.SentAt)
	return true
}

// record adds the alert to the history and broadcasts it, as one step for
// resuming clients (see resumeState.mu).
func (h *Hub) record(sentAt time.Time, f []byte) {
	h.rs.mu.RLock()
	defer h.rs.mu.RUnlock()
	h.rs.history.Add(sentAt, f)
	h.broadcast(f)
}

// registerFrom registers c with the frames that must precede its live ones,
// after the hello newClient queued: for a resume the replay and the resumed
// frame, or an invalid error for a since that is not one. They go into the
// queue before the client is visible to Deliver and before its writer
// starts, so they are written first. It reports false if the hub is closing.
func (h *Hub) registerFrom(c *client, req *http.Request) bool {
	q := req.URL.Query()
	if !q.Has(protocol.SinceParam) {
		return h.register(c)
	}
	now := time.Now()
	since, err := protocol.ParseSince(q.Get(protocol.SinceParam), now)
	if err != nil {
		h.m.errors.WithLabelValues(protocol.CodeInvalid).Inc()
		c.queue.preload(textFrame(protocol.Encode(protocol.Error{
			Type: protocol.TypeError, Code: protocol.CodeInvalid,
			Message: err.Error() + "; want the sent_at of the newest alert held (RFC 3339). Live alerts follow, without a replay",
		})), now)
		return h.register(c)
	}

	h.rs.mu.Lock()
	replay, v := h.rs.history.Since(since.Add(-h.cfg.ResumeMargin))
	for _, f := range replay {
		c.queue.preload(f, now)
	}
	c.queue.preload(textFrame(protocol.Encode(protocol.NewResumed(v.Recovered, len(replay), v.From))), now)
	ok := h.register(c)
	h.rs.mu.Unlock()
	if !ok {
		return false
	}
	outcome := "recovered"
	if !v.Recovered {
		outcome = "not_recovered"
	}
	h.rs.resumes.WithLabelValues(outcome).Inc()
	h.rs.replayed.Add(float64(len(replay)))
	h.log.Debug("client resumes", "remote", c.remote, "since", since, "replayed", len(replay), "recovered", v.Recovered, "from", v.From)
	return true
}
