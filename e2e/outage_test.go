//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestBrokerOutage stops the Pub/Sub emulator under running VMs and proves
// that nothing crashes, alerts are answered "unavailable", /readyz turns
// 503 while /healthz stays 200; then starts it again (same address, and,
// like any restart of the official emulator, with no topic and no
// subscription left) and proves the VMs recover on their own and
// broadcast again.
//
// The outage lasts outage (40 s): long enough for gRPC's default reconnect
// backoff to have grown to waits of 10–25 s, which left a relay ready (its
// subscriber connected again) while its publisher's connections waited, and
// every alert failed; the relay caps that backoff (gcppubsub.reconnect).
const outage = 40 * time.Second

func TestBrokerOutage(t *testing.T) {
	emu := newEmulator(t) // its own: stopping the shared one would hurt other tests
	c := newCluster(t, emu, 3)
	adm := newAdmin(t, emu)
	ctx := context.Background()
	var clients []*testkit.Client
	for _, v := range c.vms {
		clients = append(clients, dial(t, v, "client"))
	}
	broadcast(t, clients[0], clients, "before the outage "+randomHex(3))

	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := emu.Stop(stopCtx); err != nil {
		t.Fatalf("stop the emulator: %v", err)
	}
	t.Logf("emulator stopped")
	outageEnds := time.Now().Add(outage)

	// Alerts fail fast and say why; the connection stays usable.
	for i, cl := range clients {
		nonce := fmt.Sprintf("during-outage-%d", i)
		cl.SendAlert(t, "during the outage "+randomHex(3), nonce)
		f, err := cl.WaitFrame(arrival, "the answer to "+nonce, testkit.AnswerTo(nonce))
		if err != nil {
			t.Error(err)
			continue
		}
		if f.Type != "error" || f.Code != "unavailable" {
			t.Errorf("%s: with the broker down want error unavailable, got %s", cl, f)
		}
	}
	down := time.Now().Add(2 * arrival) // one deadline for all VMs
	for _, v := range c.vms {
		if err := v.WaitStatus("/readyz", http.StatusServiceUnavailable, max(time.Until(down), time.Second), v.Alive); err != nil {
			t.Errorf("%s: with the broker down want GET /readyz 503: %v", v, err)
		}
		if code, err := v.Status("/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("%s: with the broker down want GET /healthz 200 (still serving), got %d %v", v, code, err)
		}
		v.running(t)
	}
	if t.Failed() {
		t.FailNow()
	}

	time.Sleep(time.Until(outageEnds))
	startCtx, cancel2 := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel2()
	if err := emu.Start(startCtx); err != nil {
		t.Fatalf("start the emulator again: %v", err)
	}
	t.Logf("emulator started again at %s, empty", emu.Host())

	up := time.Now().Add(2 * arrival)
	for _, v := range c.vms {
		if err := v.WaitStatus("/readyz", http.StatusOK, max(time.Until(up), time.Second), v.Alive); err != nil {
			t.Errorf("%s: after the broker came back want GET /readyz 200 (recovered alone): %v; the emulator now holds: %s",
				v, err, adm.describe(ctx, c.topic))
		}
		v.running(t)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The clients of before are still connected; they broadcast again.
	for i, cl := range clients {
		broadcast(t, cl, clients, fmt.Sprintf("after the outage %d %s", i, randomHex(3)))
	}
	time.Sleep(settle)
	exactlyOnce(t, clients)
}
