package fleet

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	published   prometheus.Counter
	received    prometheus.Counter
	malformed   prometheus.Counter
	unanswered  prometheus.Gauge
	recreations prometheus.Counter
	duplicates  prometheus.Counter
	deleted     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, f *Fleet) *metrics {
	m := &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_heartbeats_published_total",
			Help: "Heartbeats this relay published.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_heartbeats_received_total",
			Help: "Heartbeats this relay heard, its own included.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_heartbeats_malformed_total",
			Help: "Messages marked as heartbeats that were not valid ones.",
		}),
		unanswered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skywatch_heartbeats_unanswered",
			Help: "This relay's own heartbeats, published while receiving, that have not come back yet.",
		}),
		recreations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_subscription_recreations_total",
			Help: "Times this relay recreated its subscription because its own heartbeats did not come back.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_duplicate_vm_heartbeats_total",
			Help: "Heartbeats heard from another process with this relay's VM id.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skywatch_janitor_deletions_total",
			Help: "Orphan subscriptions this relay's janitor deleted.",
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.published, m.received, m.malformed, m.unanswered, m.recreations, m.duplicates, m.deleted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "skywatch_fleet_vms",
			Help: "Relays in the fleet as this relay sees them, itself included.",
		}, func() float64 { return float64(len(f.Snapshot(false).VMs)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "skywatch_fleet_clients",
			Help: "Clients connected to the fleet as this relay sees it.",
		}, func() float64 { return float64(f.Snapshot(false).Clients) }),
	)
	return m
}
