package main

import (
	"log/slog"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skywatch-dev/skywatch/internal/broker"
	"github.com/skywatch-dev/skywatch/internal/fleet"
	"github.com/skywatch-dev/skywatch/internal/hub"
)

// newFleet builds one relay's fleet view, heartbeats and janitor.
func newFleet(cfg config, id relayID, sub string, h *hub.Hub, b broker.Broker, log *slog.Logger, reg prometheus.Registerer) *fleet.Fleet {
	return fleet.New(fleet.Config{
		VM:           id.VM,
		Region:       id.Region,
		Version:      version(),
		Interval:     cfg.HeartbeatInterval,
		OrphanAfter:  cfg.OrphanAfter,
		Prefix:       cfg.SubPrefix,
		Subscription: sub,
		Clients:      h.Clients,
		Broadcast:    h.BroadcastFleet,
		Logger:       log,
		Registerer:   reg,
	}, b)
}

// version is the relay's build: the VCS revision Go stamps into binaries
// built from a checkout, else the module version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return bi.Main.Version
}
