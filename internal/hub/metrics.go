package hub

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skywatch-dev/skywatch/internal/protocol"
)

// metrics are the relay's Prometheus series, all prefixed skywatch_.
type metrics struct {
	connections    prometheus.Gauge
	published      prometheus.Counter
	received       prometheus.Counter
	delivered      prometheus.Counter
	duplicates     prometheus.Counter
	malformed      prometheus.Counter
	dropped        prometheus.Counter
	slowCloses     prometheus.Counter
	rejected       prometheus.Counter
	errors         *prometheus.CounterVec
	publishSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skywatch_connections",
			Help: "WebSocket clients connected to this relay.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_alerts_published_total",
			Help: "Alerts from this relay's clients that the broker accepted.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_alerts_received_total",
			Help: "Messages the broker delivered to this relay, duplicates and malformed ones included.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_alerts_delivered_total",
			Help: "Alert frames queued to clients (one per alert per client).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_alerts_duplicates_dropped_total",
			Help: "Broker messages dropped because their alert id was seen recently.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_alerts_malformed_total",
			Help: "Broker messages dropped because they are not a valid alert.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_frames_dropped_total",
			Help: "Frames not queued because the client was too slow (too much unread, or unread for too long).",
		}),
		slowCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_slow_client_closes_total",
			Help: "Clients closed (1008 too slow) for leaving too much unread, or unread for too long.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_upgrades_refused_total",
			Help: "WebSocket upgrades refused because the relay is shutting down.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skywatch_errors_total",
			Help: "Error frames sent to clients, by code.",
		}, []string{"code"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "skywatch_publish_duration_seconds",
			Help:    "Time for the broker to accept (or refuse) an alert.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	// Start every code at zero so dashboards see the series before the first
	// error.
	for _, code := range []string{protocol.CodeInvalid, protocol.CodeTooLarge, protocol.CodeRateLimited, protocol.CodeUnavailable} {
		m.errors.WithLabelValues(code)
	}
	if reg == nil {
		reg = prometheus.NewRegistry() // private: nobody scrapes it, and nothing collides
	}
	m.connections = register(reg, m.connections)
	m.published = register(reg, m.published)
	m.received = register(reg, m.received)
	m.delivered = register(reg, m.delivered)
	m.duplicates = register(reg, m.duplicates)
	m.malformed = register(reg, m.malformed)
	m.dropped = register(reg, m.dropped)
	m.slowCloses = register(reg, m.slowCloses)
	m.rejected = register(reg, m.rejected)
	m.errors = register(reg, m.errors)
	m.publishSeconds = register(reg, m.publishSeconds)
	return m
}

// register registers c, or returns the collector already registered under the
// same name, so two relays sharing a registry add up instead of panicking.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err) // a programming error, as with prometheus.MustRegister
}
