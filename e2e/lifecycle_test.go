//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestGracefulStop stops a VM the way Fly does (SIGINT, fly.toml's
// kill_signal, and SIGTERM) and proves: its clients get close 1012, it exits
// 0 within kill_timeout, its subscription is gone, the other VMs carry on,
// and when it starts again with the same alloc id it rejoins without
// replaying the alerts sent while it was down.
func TestGracefulStop(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sigName(sig), func(t *testing.T) {
			emu := sharedEmulator(t)
			c := newCluster(t, emu, 3)
			adm := newAdmin(t, emu)
			ctx := context.Background()
			victim, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]
			leaving := dial(t, victim, "leaving client")
			c2, c3 := dial(t, vm2, "client"), dial(t, vm3, "client")

			res := victim.stop(t, sig)
			leaving.ExpectClose(t, 5*time.Second, websocket.CloseServiceRestart, "the VM is restarting: reconnect elsewhere")
			if res.Err != nil {
				t.Errorf("%s: after %s want exit status 0, got %s after %s", victim, sigName(sig), testkit.ExitText(res.Err), res.Took.Round(time.Millisecond))
			}
			if res.Took > killTimeout {
				t.Errorf("%s: after %s the process took %s to exit; Fly kills it after kill_timeout %s",
					victim, sigName(sig), res.Took.Round(time.Millisecond), killTimeout)
			}
			t.Logf("%s exited (%s) %s after %s", victim.name, testkit.ExitText(res.Err), res.Took.Round(time.Millisecond), sigName(sig))
			if _, err := adm.subscription(ctx, victim.subscription()); !isNotFound(err) {
				t.Errorf("%s: after a graceful stop want subscription %s deleted, GetSubscription says: %v",
					victim, victim.subscription(), err)
			}

			// The others carry on.
			broadcast(t, c2, []*testkit.Client{c2, c3}, "still here after "+victim.name+" left "+randomHex(3))
			vm2.running(t)
			vm3.running(t)

			// Alerts sent while the VM is away are not its business.
			stale := sendWhileAway(t, c2, []*testkit.Client{c2, c3}, "stale")
			rejoin(t, c, adm, victim, stale, false)
		})
	}
}

// TestCrash kills a VM with SIGKILL and proves the others carry on, that its
// subscription stays behind with an expiration policy (so Pub/Sub removes
// it if the VM never returns), and that restarting with the same alloc id
// does not replay the backlog that built up in that subscription meanwhile.
func TestCrash(t *testing.T) {
	emu := sharedEmulator(t)
	c := newCluster(t, emu, 3)
	adm := newAdmin(t, emu)
	ctx := context.Background()
	victim, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]
	orphan := dial(t, victim, "orphaned client")
	c2, c3 := dial(t, vm2, "client"), dial(t, vm3, "client")

	victim.Kill()
	if _, err := orphan.WaitClosed(10 * time.Second); err != nil {
		t.Errorf("%s: the connection to a killed VM should end: %v", orphan, err)
	}
	broadcast(t, c2, []*testkit.Client{c2, c3}, "still here after "+victim.name+" crashed "+randomHex(3))
	vm2.running(t)
	vm3.running(t)

	sub, err := adm.subscription(ctx, victim.subscription())
	if err != nil {
		t.Fatalf("%s: after SIGKILL want subscription %s left behind, GetSubscription says: %v", victim, victim.subscription(), err)
	}
	checkExpiration(t, victim, sub.GetExpirationPolicy().GetTtl().AsDuration())

	// The orphaned subscription collects a backlog while the VM is down.
	backlog := sendWhileAway(t, c2, []*testkit.Client{c2, c3}, "backlog")
	rejoin(t, c, adm, victim, backlog, true)
}

// sigName names a signal as Fly's docs do.
func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
}

// sendWhileAway sends a few alerts from sender and waits until every client
// of watchers has them, so they are surely in the broker; it returns their
// texts.
func sendWhileAway(t *testing.T, sender *testkit.Client, watchers []*testkit.Client, label string) []string {
	t.Helper()
	var texts []string
	for i := range 5 {
		text := fmt.Sprintf("%s %d %s", label, i, randomHex(3))
		broadcast(t, sender, watchers, text)
		texts = append(texts, text)
	}
	return texts
}

// rejoin restarts v with the same alloc id and proves it rejoins: its
// subscription exists again, its clients get new alerts from the other VMs
// and the other VMs get its alerts, and none of the old alerts (sent while
// it was away) reach its clients. A client dials while the process starts
// (the relay serves before its subscription is made), so a replay would
// reach at least that client; the relay's own count of received messages
// must not include the old alerts either.
//
// After a crash, the official emulator keeps handing part of the messages
// of that subscription to the killed process's streaming pull, even after
// the subscription is deleted and made again (reproduced with gcppubsub
// alone: after a SIGKILLed receiver, a new receiver on the same name got 0
// to 20 of 20 messages within 20 s). Real Pub/Sub notices dead streams.
// So after a crash, arrival at the restarted VM is retried and reported,
// not asserted; no replay and delivery to the other VMs still are.
func rejoin(t *testing.T, c *cluster, adm *admin, v *vm, old []string, crashed bool) {
	t.Helper()
	early := make(chan *testkit.Client, 1)
	stopEarly := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			cl, err := tryDial(v, "early client", "")
			if err == nil {
				early <- cl
				return
			}
			select {
			case <-stopEarly:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	v.restart(t)
	close(stopEarly)
	wg.Wait()
	var clients []*testkit.Client
	select {
	case cl := <-early:
		t.Cleanup(cl.Close)
		clients = append(clients, cl)
	default:
		t.Logf("%s: the early client did not get in before the VM was ready", v)
	}
	clients = append(clients, dial(t, v, "client after restart"))

	if _, err := adm.subscription(context.Background(), v.subscription()); err != nil {
		t.Errorf("%s: after restart want subscription %s, GetSubscription says: %v", v, v.subscription(), err)
	}
	var others []*testkit.Client
	for _, o := range c.vms {
		if o != v {
			others = append(others, dial(t, o, "client"))
		}
	}
	everyone := append(append([]*testkit.Client(nil), clients...), others...)
	sent := 0
	if crashed {
		sent += freshAfterCrash(t, v, others[0], clients, others)
	} else {
		broadcast(t, others[0], everyone, "fresh after "+v.name+" restarted "+randomHex(3))
		sent++
	}
	broadcast(t, clients[len(clients)-1], others, "from "+v.name+" after restart "+randomHex(3))
	sent++
	time.Sleep(settle)
	for _, cl := range clients {
		for _, text := range old {
			if got := cl.AlertsWithText(text); len(got) > 0 {
				t.Errorf("%s: got %s, sent while %s was down: a restarted VM must not replay it", cl, got[0], v.name)
			}
		}
	}
	exactlyOnce(t, everyone)

	// Only alerts published since the restart may have reached the relay; a
	// replayed backlog would show in its own count.
	received, dups, err := receivedCounts(v)
	if err != nil {
		t.Logf("%s: cannot read /metrics (%v); skipping the count check", v, err)
		return
	}
	if received-dups > float64(sent) {
		t.Errorf("%s: since restart /metrics says %v messages received (%v duplicates dropped); only %d alerts were sent since, so the %d old ones were replayed",
			v, received, dups, sent, len(old))
	}
	if !crashed && received-dups != float64(sent) {
		t.Errorf("%s: since restart /metrics says %v messages received (%v duplicates dropped), want the %d new alerts", v, received, dups, sent)
	}
}

// freshAfterCrash sends alerts from sender until one reaches the restarted
// VM's clients (see rejoin for why this is not asserted), checks that each
// reached the other VMs, and returns how many it sent.
func freshAfterCrash(t *testing.T, v *vm, sender *testkit.Client, restarted, others []*testkit.Client) int {
	t.Helper()
	const tries = 10
	for i := range tries {
		text := fmt.Sprintf("fresh %d after %s crashed %s", i, v.name, randomHex(3))
		broadcast(t, sender, others, text)
		arrived := true
		for _, cl := range restarted {
			if _, err := cl.WaitFrame(5*time.Second, text, testkit.IsAlertText(text)); err != nil {
				arrived = false
			}
		}
		if arrived {
			if i > 0 {
				t.Logf("%s: after the crash, %d of the first %d fresh alerts did not reach the restarted VM (the emulator's dead-stream quirk, see rejoin)", v, i, i+1)
			}
			return i + 1
		}
	}
	t.Logf("%s: none of %d fresh alerts reached the restarted VM: the official emulator still hands this subscription's messages to the killed process's stream (see rejoin); not counted as a relay failure", v, tries)
	return tries
}

// receivedCounts reads the relay's counts of broker messages received and
// of duplicates dropped from /metrics.
func receivedCounts(v *vm) (received, dups float64, err error) {
	body, err := v.Get("/metrics")
	if err != nil {
		return 0, 0, err
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "skywatch_alerts_received_total":
			received, err = strconv.ParseFloat(value, 64)
			found++
		case "skywatch_alerts_duplicates_dropped_total":
			dups, err = strconv.ParseFloat(value, 64)
			found++
		}
		if err != nil {
			return 0, 0, fmt.Errorf("metric %s: %w", name, err)
		}
	}
	if found != 2 {
		return 0, 0, fmt.Errorf("skywatch_alerts_received_total or skywatch_alerts_duplicates_dropped_total missing")
	}
	return received, dups, nil
}

// TestClientReconnects proves that a client whose VM stops gets close 1012,
// reconnects to another VM by itself (as the page does, with the same
// order of candidates) and keeps receiving alerts.
func TestClientReconnects(t *testing.T) {
	c := newCluster(t, sharedEmulator(t), 3)
	vm1, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]
	f := follow(t, "follower", vm1, vm2, vm3)
	f.wait(t, 30*time.Second, "hello from "+vm1.name, func(fr followed) bool { return fr.Type == "hello" && fr.VM == vm1.alloc })
	sender := dial(t, vm3, "sender")

	before := "before the stop " + randomHex(3)
	sender.SendAlert(t, before, "")
	f.wait(t, arrival, "alert "+strconv.Quote(before), func(fr followed) bool { return fr.Type == "alert" && fr.Text == before })

	res := vm1.stop(t, syscall.SIGTERM)
	if res.Err != nil {
		t.Errorf("%s: want exit status 0, got %s", vm1, testkit.ExitText(res.Err))
	}
	hello := f.wait(t, 60*time.Second, "hello from another VM", func(fr followed) bool { return fr.Type == "hello" && fr.VM != vm1.alloc })
	if hello.from != vm2 {
		t.Errorf("follower reconnected to %s, want the next candidate %s", hello.from, vm2)
	}
	if ended := f.ended(); len(ended) == 0 || !strings.Contains(ended[0], "closed 1012") {
		t.Errorf("follower: want its first connection closed with 1012, connections ended: %v", ended)
	}

	after := "after the stop " + randomHex(3)
	// The follower may still be finishing its handshake when this is sent;
	// wait for its hello first (above), then the alert must arrive.
	sender.SendAlert(t, after, "")
	got := f.wait(t, arrival, "alert "+strconv.Quote(after), func(fr followed) bool { return fr.Type == "alert" && fr.Text == after })
	if got.from == vm1 {
		t.Errorf("alert %q came from the stopped %s", after, vm1)
	}
}
