//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestBrowserResume: the page is connected to one VM; that VM stops, and
// while the page is away alerts are sent from another VM. When the page is
// back (on the next VM of its list) it shows every one of them, once, in
// time order, with no "may be missing" notice.
//
// The page reconnects within milliseconds of a 1012, which would leave
// nothing to miss; so for the stop the test holds the page offline as a
// laptop lid or a dead network would: window.WebSocket throws while
// window.__offline is set (app.js treats that as a failed attempt and backs
// off), and the alerts are sent in that window.
func TestBrowserResume(t *testing.T) {
	browser := newBrowser(t)
	c := newCluster(t, sharedEmulator(t), 3)
	vm1, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]

	p := openPage(t, browser, "page on "+vm1.name, vm1.URL("/?relays="+vm2.WS("")))
	p.waitConnected(t, vm1, arrival)
	sender := dial(t, vm3, "sender on "+vm3.name)

	// vm2's history must cover the page's since minus the margin: let it
	// run longer than the margin before the alert that sets the since.
	time.Sleep(resumeMargin + time.Second)
	first := broadcast(t, sender, []*testkit.Client{sender}, "before the stop "+randomHex(3))
	if id, _ := p.waitAlert(t, arrival); id != first.ID {
		t.Fatalf("%s shows %s, want %s", p.name, id, first.ID)
	}

	if _, err := poll[bool](p, 10*time.Second, `(() => {
		const Real = window.WebSocket;
		window.__offline = true;
		window.WebSocket = function (url) {
			if (window.__offline) throw new Error("offline (e2e)");
			return new Real(url);
		};
		window.WebSocket.prototype = Real.prototype;
		Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
		return true;
	})()`); err != nil {
		t.Fatalf("%s: take the page offline: %v", p.name, err)
	}
	if res := vm1.stop(t, syscall.SIGINT); res.Err != nil {
		t.Errorf("%s: want exit status 0, got %s", vm1, testkit.ExitText(res.Err))
	}
	if _, err := poll[bool](p, arrival, `document.querySelector('#status').dataset.state !== 'open'`); err != nil {
		t.Fatalf("%s: status still open after its VM stopped: %s", p.name, p.state())
	}
	want := []string{first.ID}
	for i := range 5 {
		a := broadcast(t, sender, []*testkit.Client{sender}, fmt.Sprintf("while the page is away %d %s", i, randomHex(3)))
		want = append(want, a.ID)
	}
	if _, err := poll[bool](p, 10*time.Second, `(() => { window.__offline = false; return true; })()`); err != nil {
		t.Fatalf("%s: back online: %v", p.name, err)
	}
	p.waitConnected(t, vm2, arrival)

	expr := fmt.Sprintf(`(() => {
		const want = %s;
		const ids = [...document.querySelectorAll('#alerts li')].map(li => li.dataset.id);
		return want.every(id => ids.includes(id)) ? ids : null;
	})()`, jsStrings(want))
	if _, err := poll[[]string](p, arrival, expr); err != nil {
		t.Fatalf("%s: want every alert %v listed: %v; the page shows %s", p.name, want, err, p.state())
	}
	// A settle, in which a repeat (the replay reaches back before the
	// since) would be added.
	time.Sleep(settle)
	ids, err := poll[[]string](p, 10*time.Second, `[...document.querySelectorAll('#alerts li')].map(li => li.dataset.id)`)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, id := range ids {
		count[id]++
	}
	for _, id := range want {
		if count[id] != 1 {
			t.Errorf("%s: alert %s listed %d times, want once", p.name, id, count[id])
		}
	}
	if len(ids) != len(want) {
		t.Errorf("%s: %d alerts listed, want %d: %v", p.name, len(ids), len(want), ids)
	}
	sentAts, err := poll[[]string](p, 10*time.Second, `[...document.querySelectorAll('#alerts li')].map(li => li.dataset.sentAt)`)
	if err != nil || !sortedBySentAt(sentAts) {
		t.Errorf("%s: alerts not listed newest first: %v (%v)", p.name, sentAts, err)
	}
	gap, err := poll[[]any](p, 10*time.Second, `[document.querySelector('#gap').hidden, document.querySelector('#gap').textContent]`)
	if err != nil || len(gap) != 2 || gap[0] != true {
		t.Errorf("%s: want no \"may be missing\" notice, #gap is %v (%v)", p.name, gap, err)
	}
	p.screenshot(t, "resume-after-reconnect.png")

	// The same page on a narrow phone screen.
	if err := p.do(20*time.Second, chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile)); err != nil {
		t.Errorf("%s: narrow viewport: %v", p.name, err)
	} else {
		if _, err := poll[bool](p, 10*time.Second, `document.documentElement.scrollWidth <= window.innerWidth`); err != nil {
			t.Errorf("%s: on a 360 px screen the page scrolls sideways", p.name)
		}
		p.screenshot(t, "resume-narrow.png")
	}

	// A tab reopened long after: what it showed comes back from
	// localStorage, and the VM cannot vouch for the time since (its
	// history starts at its boot), so the page says alerts may be missing.
	// Stored from a page of vm3's origin that runs no script (the page
	// itself would write its own state back when it goes away).
	q := openPage(t, browser, "reopened page on "+vm3.name, vm3.URL("/healthz"))
	old := time.Now().Add(-20 * time.Minute).UTC()
	stored := fmt.Sprintf(`{"since":%q,"ids":["%032x"],"alerts":[{"id":"%032x","text":"seen before the reload","origin":{"vm":"x","region":"ams"},"sent_at":%q}]}`,
		old.Format("2006-01-02T15:04:05.000Z"), 1, 1, old.Format("2006-01-02T15:04:05.000Z"))
	if _, err := poll[bool](q, 10*time.Second, fmt.Sprintf(`(localStorage.setItem("skywatch.resume.v1", %q), true)`, stored)); err != nil {
		t.Fatalf("%s: store an old since: %v", q.name, err)
	}
	if err := q.do(20*time.Second, chromedp.Navigate(vm3.URL("/"))); err != nil {
		t.Fatalf("%s: open the page: %v", q.name, err)
	}
	q.waitConnected(t, vm3, arrival)
	notice, err := poll[string](q, arrival, `!document.querySelector('#gap').hidden && document.querySelector('#gap').textContent`)
	if err != nil || !strings.Contains(notice, "may be missing") {
		t.Errorf("%s: want the \"may be missing\" notice after resuming from 20 minutes ago, got %q (%v); the page shows %s", q.name, notice, err, q.state())
	}
	if _, err := poll[bool](q, 10*time.Second, `[...document.querySelectorAll('#alerts li .text')].some(e => e.textContent === 'seen before the reload')`); err != nil {
		t.Errorf("%s: the alert shown before the reload is not listed again: %s", q.name, q.state())
	}
	q.screenshot(t, "resume-may-be-missing.png")
}
