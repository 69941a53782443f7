//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// chromiumEnv names a Chrome or Chromium binary to use instead of the one
// on PATH.
const chromiumEnv = "SKYWATCH_CHROMIUM"

// findChromium returns Debian's Chromium (or the binary SKYWATCH_CHROMIUM
// names), or fails the test saying how to get it.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(chromiumEnv); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s=%s: %v", chromiumEnv, p, err)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium on PATH: apt-get install chromium (Debian), or set %s to a Chrome or Chromium binary", chromiumEnv)
	return ""
}

// page is one browser tab showing a VM's page.
type page struct {
	name string
	ctx  context.Context
}

// newBrowser starts headless Chromium with a fresh profile, closed when the
// test ends. The flags keep it off the network: the machine has none, and
// Chromium's background connections would only fail.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	out := &testkit.SyncBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(findChromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // we run as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1000, 800),
		chromedp.CombinedOutput(out),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("---- Chromium output ----\n%s", tail(out.String(), 40))
		}
	})
	// The first Do starts the browser; its life is bound to ctx, which has
	// no deadline (see chromedp's docs/API.md, example 21).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v\n%s", err, tail(out.String(), 40))
	}
	return ctx
}

// openPage opens url in a new tab of the browser.
func openPage(t *testing.T, browser context.Context, name, url string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first Do opens the tab and binds its life to the context it is
	// given: give it ctx itself, with no deadline, and only then use
	// timeouts for single actions (chromedp's docs/API.md, example 21).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	p := &page{name: name, ctx: ctx}
	if err := p.do(30*time.Second, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", name, url, err)
	}
	return p
}

// do runs actions in the tab with a timeout.
func (p *page) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// poll waits until the JavaScript expression is truthy and returns its
// value. Interval polling, not requestAnimationFrame: a tab in the
// background gets no animation frames.
func poll[T any](p *page, timeout time.Duration, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, timeout+5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Poll[T](expr,
		chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(timeout)))
}

// state describes what the page shows, for failure messages.
func (p *page) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const st = document.querySelector('#status'), vm = document.querySelector('#vm');
		const ids = [...document.querySelectorAll('#alerts li')].map(li => li.dataset.id);
		return 'status=' + (st && st.dataset.state) + ' "' + (st && st.textContent) + '" vm=' +
			(vm && vm.dataset.vm) + ' alerts=' + JSON.stringify(ids);
	})()`))
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return s
}

// waitConnected waits until the page says it is open on VM v.
func (p *page) waitConnected(t *testing.T, v *vm, timeout time.Duration) {
	t.Helper()
	expr := fmt.Sprintf(`document.querySelector('#status').dataset.state === 'open' &&
		document.querySelector('#vm').dataset.vm === %q`, v.alloc)
	if _, err := poll[bool](p, timeout, expr); err != nil {
		t.Fatalf("%s: want #status open and #vm data-vm %s (%s): %v; the page shows %s", p.name, v.alloc, v, err, p.state())
	}
}

// waitAlert waits until the page lists an alert other than those in skip
// and returns its id and text.
func (p *page) waitAlert(t *testing.T, timeout time.Duration, skip ...string) (id, text string) {
	t.Helper()
	expr := fmt.Sprintf(`(() => {
		const skip = %s;
		const li = [...document.querySelectorAll('#alerts li')].find(li => li.dataset.id && !skip.includes(li.dataset.id));
		return li ? [li.dataset.id, li.querySelector('.text') ? li.querySelector('.text').textContent : li.textContent] : null;
	})()`, jsStrings(skip))
	got, err := poll[[]string](p, timeout, expr)
	if err != nil || len(got) != 2 {
		t.Fatalf("%s: want a new item in #alerts: %v; the page shows %s", p.name, err, p.state())
	}
	return got[0], got[1]
}

func jsStrings(ss []string) string {
	quoted := make([]string, len(ss))
	for i, s := range ss {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(quoted, ",") + "]"
}

// screenshot saves the visible part of the page in e2e/artifacts.
func (p *page) screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Errorf("%s: screenshot: %v", p.name, err)
		return
	}
	path := filepath.Join(artifactsDir, name)
	err = os.MkdirAll(artifactsDir, 0o755)
	if err == nil {
		err = os.WriteFile(path, png, 0o644)
	}
	if err != nil {
		t.Errorf("save screenshot: %v", err)
		return
	}
	t.Logf("screenshot: e2e/%s", path)
}

// TestBrowser drives the real page in headless Chromium: the red button on
// one VM's page makes the alert appear on another VM's page (and reach a
// Go client on a third VM with the same id), and when a page's VM stops,
// its status says why in words and then recovers on the next VM its hello
// listed, where the button works again. A crafted ?relays= in the page's
// URL is ignored: the page never tries that socket.
func TestBrowser(t *testing.T) {
	browser := newBrowser(t) // first: no point starting VMs without a browser
	c := newCluster(t, sharedEmulator(t), 3)
	vm1, vm2, vm3 := c.vms[0], c.vms[1], c.vms[2]
	evil := newTrap(t)

	// The query is what an attacker's link would carry; the page must not
	// take fallbacks from it (issue 13).
	a := openPage(t, browser, "page A on "+vm1.name, vm1.URL("/?relays="+evil.wsURL()))
	b := openPage(t, browser, "page B on "+vm2.name, vm2.URL("/"))
	a.waitConnected(t, vm1, arrival)
	b.waitConnected(t, vm2, arrival)
	witness := dial(t, vm3, "witness")

	// The red button on A; the alert shows on B, on A, and reaches vm3.
	if err := a.do(20*time.Second, chromedp.Click(chromedp.CSS("#send"))); err != nil {
		t.Fatalf("%s: click #send: %v; the page shows %s", a.name, err, a.state())
	}
	id, text := b.waitAlert(t, arrival)
	if !strings.Contains(text, "An alien landing!") {
		t.Errorf("%s: alert %s shows %q, want the default text", b.name, id, text)
	}
	if idA, _ := a.waitAlert(t, arrival); idA != id {
		t.Errorf("%s shows alert %s, %s shows %s: want the same id", a.name, idA, b.name, id)
	}
	f := witness.MustFrame(t, arrival, "the alert from the page's button", testkit.IsAlertID(id))
	if f.Origin.VM != vm1.alloc {
		t.Errorf("%s: alert %s from page A's button: want origin vm %s, got %s", witness, id, vm1.alloc, f)
	}
	b.screenshot(t, "browser-alert-on-other-vm.png")

	// Page A's VM stops: the status leaves "open", then the page is back,
	// connected to the next VM in its list.
	if _, err := poll[bool](a, 10*time.Second, `(() => {
		window.__states = []; window.__texts = [];
		const st = document.querySelector('#status');
		new MutationObserver(() => { window.__states.push(st.dataset.state); window.__texts.push(st.textContent); })
			.observe(st, {attributes: true, childList: true, characterData: true, subtree: true});
		return true;
	})()`); err != nil {
		t.Fatalf("%s: install the status recorder: %v", a.name, err)
	}
	if res := vm1.stop(t, syscall.SIGTERM); res.Err != nil {
		t.Errorf("%s: want exit status 0, got %s", vm1, testkit.ExitText(res.Err))
	}
	a.waitConnected(t, vm2, arrival)
	states, err := poll[[]string](a, 5*time.Second, `window.__states`)
	if err != nil || !containsAny(states, "reconnecting") {
		t.Errorf("%s: while its VM stopped, want #status to leave open (reconnecting), saw %v (%v)", a.name, states, err)
	}
	t.Logf("%s: status went %v", a.name, states)
	texts, err := poll[[]string](a, 5*time.Second, `window.__texts`)
	if err != nil || !containsSubstring(texts, "the server is restarting") {
		t.Errorf("%s: after SIGTERM (close 1012) want the status to say \"the server is restarting\", saw %q (%v)", a.name, texts, err)
	}
	if n := evil.attempts(); n != 0 {
		t.Errorf("%s: the page opened %d connections to the relay named in its URL's ?relays=; want none", a.name, n)
	}
	a.screenshot(t, "browser-reconnected.png")

	// The button works from the new VM.
	if err := a.do(20*time.Second, chromedp.Click(chromedp.CSS("#send"))); err != nil {
		t.Fatalf("%s: click #send after reconnecting: %v; the page shows %s", a.name, err, a.state())
	}
	id2, _ := b.waitAlert(t, arrival, id)
	f2 := witness.MustFrame(t, arrival, "the second alert from the page's button", testkit.IsAlertID(id2))
	if f2.Origin.VM != vm2.alloc {
		t.Errorf("%s: alert %s sent after reconnecting: want origin vm %s (page A's new VM), got %s", witness, id2, vm2.alloc, f2)
	}
	b.screenshot(t, "browser-after-reconnect.png")
}

func containsSubstring(ss []string, sub string) bool {
	for _, s := range ss {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func containsAny(ss []string, want ...string) bool {
	for _, s := range ss {
		for _, w := range want {
			if s == w {
				return true
			}
		}
	}
	return false
}
