//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fleetShown reads what the page's fleet panel shows: "vms clients | text".
const fleetShown = `(() => {
	const el = document.querySelector('#fleet-total');
	const vms = [...document.querySelectorAll('#fleet-regions .vm')].map(v => v.dataset.vm).sort();
	return el.dataset.vms + ' ' + el.dataset.clients + ' ' + vms.join(',') + ' | ' + el.textContent;
})()`

// TestBrowserFleet: the page shows the fleet's total and its VMs by region,
// from fleet frames, and the total changes when a VM stops.
func TestBrowserFleet(t *testing.T) {
	shortFleetTimings(t)
	browser := newBrowser(t)
	c := newCluster(t, sharedEmulator(t), 3)
	vm1, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]
	// One page on vm1, two plain clients on vm3: 3 watching on 3 VMs.
	p := openPage(t, browser, "page on "+vm1.name, vm1.URL("/"))
	p.waitConnected(t, vm1, arrival)
	dial(t, vm3, "watcher 1")
	dial(t, vm3, "watcher 2")

	all := strings.Join(sorted(vm1.alloc, vm2.alloc, vm3.alloc), ",")
	want := fmt.Sprintf("3 3 %s | ", all)
	got, err := poll[string](p, arrival, showing(want))
	if err != nil {
		t.Fatalf("%s: fleet panel never showed %q: %v; it shows %q", p.name, want, err, shownNow(p))
	}
	t.Logf("fleet panel: %s", got)
	for _, region := range []string{vm1.region, vm2.region, vm3.region} {
		if !strings.Contains(got, region) {
			t.Errorf("fleet panel %q does not name region %s", got, region)
		}
	}
	p.screenshot(t, "browser-fleet-three-vms.png")

	// vm2 stops as Fly stops it: its last heartbeat says it leaves.
	if res := vm2.stop(t, syscall.SIGTERM); res.Err != nil {
		t.Fatalf("%s: SIGTERM: %v", vm2, res.Err)
	}
	want = fmt.Sprintf("2 3 %s | ", strings.Join(sorted(vm1.alloc, vm3.alloc), ","))
	got, err = poll[string](p, arrival, showing(want))
	if err != nil {
		t.Fatalf("%s: after %s stopped, fleet panel never showed %q: %v; it shows %q", p.name, vm2.name, want, err, shownNow(p))
	}
	t.Logf("fleet panel after %s stopped: %s", vm2.name, got)

	// vm3 crashes: it leaves the panel by silence, and the total drops.
	vm3.Kill()
	want = fmt.Sprintf("1 1 %s | ", vm1.alloc)
	if _, err := poll[string](p, arrival, showing(want)); err != nil {
		t.Fatalf("%s: after %s crashed, fleet panel never showed %q: %v; it shows %q", p.name, vm3.name, want, err, shownNow(p))
	}
	p.screenshot(t, "browser-fleet-one-vm.png")
}

func shownNow(p *page) string {
	s, err := poll[string](p, time.Second, fleetShown)
	if err != nil {
		return err.Error()
	}
	return s
}

// showing is a poll expression: what the panel shows once it starts with
// want, else "" (keep polling). %q quotes an ASCII string as JavaScript
// reads it.
func showing(want string) string {
	return fmt.Sprintf(`(() => { const s = %s; return s.startsWith(%q) ? s : ''; })()`, fleetShown, want)
}

func sorted(ss ...string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}
