//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestBootBeforeBroker starts relay processes while Pub/Sub does not
// answer, as after the first `pulumi up` (IAM grants still propagating) or
// during an outage at boot, then starts the emulator. The relays must not
// crash: they serve /healthz 200 and /readyz 503 and answer alerts
// `unavailable`, then become ready by themselves and broadcast, without a
// restart. Each VM has a fresh alloc id, so the emulator's stale-stream
// quirk (see TestBrokerOutage's neighbours) does not apply.
func TestBootBeforeBroker(t *testing.T) {
	emu := newEmulator(t) // its own: it is stopped before the relays start
	ctx := context.Background()
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := emu.Stop(stopCtx); err != nil {
		t.Fatalf("stop the emulator: %v", err)
	}

	// Readiness is the point here: the relays must serve without it.
	c := startCluster(t, emu, 2)

	var clients []*testkit.Client
	for _, v := range c.vms {
		if code, err := v.Status("/readyz"); err != nil || code != http.StatusServiceUnavailable {
			t.Errorf("%s: before the broker answers want GET /readyz 503, got %d %v", v, code, err)
		}
		cl := dial(t, v, "client")
		clients = append(clients, cl)
		nonce := "before-broker-" + v.name
		cl.SendAlert(t, "anyone there? "+randomHex(3), nonce)
		f, err := cl.WaitFrame(arrival, "the answer to "+nonce, testkit.AnswerTo(nonce))
		if err != nil {
			t.Error(err)
		} else if f.Type != "error" || f.Code != "unavailable" {
			t.Errorf("%s: before the broker answers want error unavailable, got %s", cl, f)
		}
	}
	// Saying why once, and still serving after more failed attempts.
	const why = "pubsub not connected yet; retrying"
	for _, v := range c.vms {
		v.Log.WaitFor(t, arrival, why)
	}
	time.Sleep(12 * time.Second) // two more attempts at least (5 s each, 5 s backoff)
	for _, v := range c.vms {
		v.running(t)
		if code, err := v.Status("/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("%s: want GET /healthz 200 while waiting for the broker, got %d %v", v, code, err)
		}
		if n := strings.Count(v.Log.String(), why); n != 1 {
			t.Errorf("%s: logged the unchanged reason %d times, want once", v, n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	startCtx, cancel2 := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel2()
	if err := emu.Start(startCtx); err != nil {
		t.Fatalf("start the emulator: %v", err)
	}
	t.Logf("emulator started at %s, after the relays", emu.Host())
	up := time.Now().Add(2 * arrival)
	for _, v := range c.vms {
		if err := v.WaitStatus("/readyz", http.StatusOK, max(time.Until(up), time.Second), v.Alive); err != nil {
			t.Fatalf("%s: once the broker answers want GET /readyz 200 (by itself): %v", v, err)
		}
		v.running(t)
	}
	for i, cl := range clients {
		broadcast(t, cl, clients, fmt.Sprintf("after boot %d %s", i, randomHex(3)))
	}
	time.Sleep(settle)
	exactlyOnce(t, clients)
}
