//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/protocol"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// Short fleet timings for the e2e suite, set in the environment that every
// relay process inherits (the harness starts them with os.Environ()).
// The heartbeat is 2 s rather than 1 s so that a janitor's round delayed by
// a loaded machine (publish, list and delete share its goroutine) stays
// small beside it.
const (
	e2eHeartbeat   = 2 * time.Second
	e2eOrphanAfter = 12 * time.Second
)

func shortFleetTimings(t *testing.T) {
	t.Setenv(names.EnvHeartbeatInterval, e2eHeartbeat.String())
	t.Setenv(names.EnvOrphanAfter, e2eOrphanAfter.String())
}

// fleetOf asks a VM's GET /fleet.
func fleetOf(v *vm) (protocol.Fleet, error) {
	var f protocol.Fleet
	body, err := v.Get("/fleet")
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal([]byte(body), &f)
}

// waitFleetSize polls v's /fleet until it lists n VMs.
func waitFleetSize(t *testing.T, v *vm, n int, timeout time.Duration) protocol.Fleet {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f, err := fleetOf(v)
		if err == nil && len(f.VMs) == n {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /fleet %+v (err %v), want %d VMs", v, f, err, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deletedRE finds the janitor's deletions in a relay's log.
var deletedRE = regexp.MustCompile(`janitor: deleted orphan subscription.*? orphan=(\S+)`)

// deletions returns every subscription the janitors of c deleted.
func deletions(c *cluster) []string {
	var out []string
	for _, v := range c.vms {
		for _, m := range deletedRE.FindAllStringSubmatch(v.Log.String(), -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// TestFleetJanitor: a relay killed with SIGKILL leaves its subscription
// behind; a surviving relay deletes it within ORPHAN_AFTER plus a heartbeat
// interval or two. The live relays' subscriptions are never touched, also
// right after an emulator restart (which empties the emulator: every relay
// recreates its subscription, and a janitor that mistook "just recreated"
// for "orphan" would delete them).
func TestFleetJanitor(t *testing.T) {
	shortFleetTimings(t)
	emu := newEmulator(t) // its own: the test restarts it
	c := newCluster(t, emu, 3)
	adm := newAdmin(t, emu)
	ctx := context.Background()
	for _, v := range c.vms {
		waitFleetSize(t, v, 3, arrival)
	}
	// The janitors judge only once their own subscription has received
	// without a break for ORPHAN_AFTER: let that pass, so the bound below
	// is the one that counts.
	time.Sleep(e2eOrphanAfter + e2eHeartbeat)

	dead := c.vms[2]
	dead.Kill()
	killed := time.Now()
	// The earliest a janitor may delete it: ORPHAN_AFTER after its last
	// heartbeat, which left at most one interval before the kill.
	time.Sleep(e2eOrphanAfter - 2*e2eHeartbeat)
	subs, err := adm.topicSubscriptions(ctx, c.topic)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(subs, dead.subscription()) {
		t.Fatalf("%s's subscription deleted %v after the kill, before ORPHAN_AFTER (%v): %v", dead, time.Since(killed), e2eOrphanAfter, subs)
	}
	// Then it goes. How soon after ORPHAN_AFTER is the janitor's timing,
	// tested in fake time (internal/fleet, janitor_test.go); here it is only
	// reported, since a loaded machine delays it.
	for {
		subs, err := adm.topicSubscriptions(ctx, c.topic)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(subs, dead.subscription()) {
			t.Logf("%s's subscription deleted %v after SIGKILL (ORPHAN_AFTER %v, heartbeat %v)", dead, time.Since(killed).Round(100*time.Millisecond), e2eOrphanAfter, e2eHeartbeat)
			break
		}
		if time.Since(killed) > e2eOrphanAfter+arrival {
			t.Fatalf("%s's subscription still there %v after SIGKILL (ORPHAN_AFTER %v): %v", dead, time.Since(killed), e2eOrphanAfter, subs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, v := range c.vms[:2] {
		waitFleetSize(t, v, 2, arrival)
	}

	// The emulator restarts empty; the live relays recreate their
	// subscriptions. Their janitors must not take the fresh ones, nor each
	// other's, for orphans.
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := emu.Stop(stopCtx); err != nil {
		t.Fatalf("stop the emulator: %v", err)
	}
	if err := emu.Start(stopCtx); err != nil {
		t.Fatalf("start the emulator: %v", err)
	}
	for _, v := range c.vms[:2] {
		v.waitReady(t, 2*arrival)
	}
	// Long enough for a janitor to act if it were going to.
	time.Sleep(e2eOrphanAfter + 4*e2eHeartbeat)
	subs, err = adm.topicSubscriptions(ctx, c.topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range c.vms[:2] {
		if !slices.Contains(subs, v.subscription()) {
			t.Errorf("%s's subscription missing after the emulator restart: %v", v, subs)
		}
	}
	for _, name := range deletions(c) {
		if name != dead.subscription() {
			t.Errorf("a janitor deleted %s, a live relay's subscription", name)
		}
	}
	// And they still broadcast to each other.
	var clients []*testkit.Client
	for _, v := range c.vms[:2] {
		clients = append(clients, dial(t, v, "client"))
	}
	broadcast(t, clients[0], clients, "after the janitor "+randomHex(3))
}

// TestFleetDuplicateAlloc: two processes with one alloc id share one
// subscription; each hears the other's heartbeats, logs an error and says
// so in /fleet.
func TestFleetDuplicateAlloc(t *testing.T) {
	shortFleetTimings(t)
	c := newCluster(t, sharedEmulator(t), 2)
	// vm2 becomes a second process with vm1's alloc id, as a misconfigured
	// deploy would run it. vm1's subscription is recreated by it (the
	// boot drops the backlog), and both then receive from it.
	twin := c.vms[1]
	twin.Kill()
	twin.alloc = c.vms[0].alloc
	twin.Env[names.EnvAllocID] = twin.alloc
	twin.start(t)
	for _, v := range c.vms {
		deadline := time.Now().Add(arrival)
		for {
			f, err := fleetOf(v)
			if err == nil && len(f.VMs) == 1 && f.VMs[0].Duplicate {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /fleet %+v (err %v), want its VM marked duplicate", v, f, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(v.Log.String(), "another process uses this VM id") {
			t.Errorf("%s: no error logged about the other process", v)
		}
	}
}

// emulatorGroup returns the process group of the local emulator this test
// started, to pause it; the container emulator has none we may signal.
func emulatorGroup(t *testing.T, emu emulator) int {
	t.Helper()
	le, ok := emu.(*localEmulator)
	if !ok {
		t.Skipf("pausing needs the local emulator, not %s", emu.Kind())
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.proc == nil {
		t.Fatal("the emulator is not running")
	}
	return le.proc.Pid() // the group leader
}

// TestFleetEmulatorStall pauses the emulator for 20 s (SIGSTOP to its
// process group, then SIGCONT), as the lead saw relays go on saying ready
// while 40-60 % of alerts never reached them. The relays must notice that
// their own heartbeats stop coming back, recreate their subscriptions, and
// deliver every alert again.
func TestFleetEmulatorStall(t *testing.T) {
	shortFleetTimings(t)
	emu := newEmulator(t)
	pgid := emulatorGroup(t, emu)
	c := newCluster(t, emu, 3)
	var clients []*testkit.Client
	for _, v := range c.vms {
		clients = append(clients, dial(t, v, "client"))
	}
	broadcast(t, clients[0], clients, "before the stall "+randomHex(3))

	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP the emulator group %d: %v", pgid, err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(-pgid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	time.Sleep(20 * time.Second)
	resume()
	t.Logf("emulator resumed after 20 s")

	// The emulator cannot close pull streams cancelled during the stall;
	// they go on taking a share of their subscription's messages, and some
	// only die (and start taking) well after the resume. A relay notices
	// when its own heartbeats stop coming back (3 unanswered), says it is
	// not ready, and recreates its subscription (with a 2 s gap, see
	// feed.recreateGap); alerts sent before it noticed are lost to it,
	// which no relay can prevent. So: every relay gets back to ready, and
	// rounds of alerts (one from each VM) go out until a run of three full
	// rounds reaches every client.
	for _, v := range c.vms {
		v.waitReady(t, 2*arrival)
	}
	deadline := time.Now().Add(3 * time.Minute)
	var sent, lost, full int
	for round := 0; full < 3; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("after %d rounds (%d alerts, %d deliveries lost) no 3 full rounds in a row", round, sent, lost)
		}
		complete := true
		for i, sender := range clients {
			text := fmt.Sprintf("after the stall %d.%d %s", round, i, randomHex(3))
			nonce := "n-" + randomHex(4)
			sender.SendAlert(t, text, nonce)
			if ack := sender.MustFrame(t, arrival, "the answer to "+nonce, testkit.AnswerTo(nonce)); ack.Type != "ack" {
				complete = false // publishing failed: the emulator is still waking up
				continue
			}
			sent++
			for _, cl := range clients {
				if _, err := cl.WaitFrame(5*time.Second, text, testkit.IsAlertText(text)); err != nil {
					lost++
					complete = false
				}
			}
		}
		if complete {
			full++
		} else {
			full = 0
		}
	}
	t.Logf("after the resume: %d alerts sent, %d of %d deliveries lost before the relays had recovered", sent, lost, sent*len(clients))
	time.Sleep(settle)
	exactlyOnce(t, clients)
	for _, v := range c.vms {
		t.Logf("%s: %d subscription recreations for lost heartbeats", v, strings.Count(v.Log.String(), "recreating the subscription"))
	}
}
