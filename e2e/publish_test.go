//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/skywatch-dev/skywatch/internal/names"
	"github.com/skywatch-dev/skywatch/internal/testkit"
)

// TestPublishCommand runs `skywatch publish` (the relay binary's
// subcommand) against one relay's API: the alert reaches the page in
// Chromium on another relay, with the id the command printed, and a Go
// client there sees origin.via "api". A wrong token fails with 401. Tokens
// travel only in the environment, never in arguments or logs.
func TestPublishCommand(t *testing.T) {
	browser := newBrowser(t)
	tok := "e2e-token-" + randomHex(16)
	// Every relay inherits the test's environment (vm.start), so this is
	// how the cluster gets its PUBLISH_TOKENS.
	t.Setenv(names.EnvPublishTokens, tok)
	c := newCluster(t, sharedEmulator(t), 2)
	vm1, vm2 := c.vms[0], c.vms[1]

	p := openPage(t, browser, "page on "+vm2.name, vm2.URL("/"))
	p.waitConnected(t, vm2, arrival)
	witness := dial(t, vm2, "witness")

	publish := func(token string, args ...string) (stdout, stderr string, err error) {
		cmd := exec.Command(relayBinary(t), append([]string{"publish", "-url", vm1.URL("")}, args...)...)
		cmd.Env = append(os.Environ(), names.EnvToken+"="+token)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return strings.TrimSpace(out.String()), errOut.String(), err
	}

	text := "Build " + randomHex(3) + " finished"
	id, stderr, err := publish(tok, text)
	if err != nil || len(id) != 32 {
		t.Fatalf("skywatch publish: %v, printed %q, stderr %q; want exit 0 and an alert id", err, id, stderr)
	}
	gotID, gotText := p.waitAlert(t, arrival)
	if gotID != id || !strings.Contains(gotText, text) {
		t.Errorf("%s shows alert %s %q, want %s %q", p.name, gotID, gotText, id, text)
	}
	f := witness.MustFrame(t, arrival, "the published alert", func(f testkit.Frame) bool { return f.Type == "alert" && f.ID == id })
	if f.Origin.VM != vm1.alloc || !strings.Contains(f.Raw, `"via":"api"`) {
		t.Errorf("%s: alert %s, want origin vm %s via api", witness, f, vm1.alloc)
	}
	p.screenshot(t, "publish-command-alert.png")

	// A wrong token: exit status 1, a 401 explained, nothing published.
	out, stderr, err := publish("wrong-token-"+randomHex(8), "intruder")
	if err == nil || out != "" || !strings.Contains(stderr, "401") {
		t.Errorf("wrong token: %v, stdout %q, stderr %q; want exit 1 and a 401", err, out, stderr)
	}
	marker, _, err := publish(tok, "marker")
	if err != nil {
		t.Fatalf("marker: %v", err)
	}
	next := witness.MustFrame(t, arrival, "the marker", func(f testkit.Frame) bool { return f.Type == "alert" && f.ID != id })
	if next.ID != marker {
		t.Errorf("%s: alert %s before the marker, want none: the wrong token published", witness, next)
	}
	for _, v := range c.vms {
		if strings.Contains(v.Log.String(), tok) {
			t.Errorf("%s logged the token", v)
		}
	}
}

// TestSignedBrowserPublish runs relays with BROWSER_PUBLISH=signed: the page
// opened with ?token= from `skywatch token` publishes (its alert reaches a
// page on another relay), and a page without one is told `forbidden` and
// publishes nothing.
func TestSignedBrowserPublish(t *testing.T) {
	browser := newBrowser(t)
	key := "e2e-signing-key-" + randomHex(16)
	t.Setenv(names.EnvBrowserPublish, "signed")
	t.Setenv(names.EnvSigningKey, key)
	c := newCluster(t, sharedEmulator(t), 2)
	vm1, vm2 := c.vms[0], c.vms[1]

	cmd := exec.Command(relayBinary(t), "token", "-ttl", "5m")
	cmd.Env = os.Environ() // PUBLISH_SIGNING_KEY from the environment, as the relays
	out, err := cmd.Output()
	tok := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(tok, "v1.") {
		t.Fatalf("skywatch token: %v, printed %q", err, tok)
	}

	signed := openPage(t, browser, "signed page on "+vm1.name, vm1.URL("/?token="+tok))
	plain := openPage(t, browser, "page without a token on "+vm2.name, vm2.URL("/"))
	signed.waitConnected(t, vm1, arrival)
	plain.waitConnected(t, vm2, arrival)
	witness := dial(t, vm2, "witness")

	if err := plain.do(20*time.Second, chromedp.Click(chromedp.CSS("#send"))); err != nil {
		t.Fatalf("%s: click #send: %v", plain.name, err)
	}
	notice, err := poll[string](plain, 20*time.Second, `document.querySelector('#notice').textContent`)
	if err != nil || !strings.Contains(notice, "token") {
		t.Errorf("%s: #notice %q (%v), want the forbidden message about a token", plain.name, notice, err)
	}

	if err := signed.do(20*time.Second, chromedp.Click(chromedp.CSS("#send"))); err != nil {
		t.Fatalf("%s: click #send: %v", signed.name, err)
	}
	id, _ := plain.waitAlert(t, arrival)
	if idSigned, _ := signed.waitAlert(t, arrival); idSigned != id {
		t.Errorf("%s shows %s, %s shows %s: want the signed page's alert on both, and nothing else", signed.name, idSigned, plain.name, id)
	}
	// The first alert anyone saw is the signed page's: the refused one was
	// never published.
	f := witness.MustFrame(t, arrival, "the first alert", func(f testkit.Frame) bool { return f.Type == "alert" })
	if f.ID != id || f.Origin.VM != vm1.alloc {
		t.Errorf("%s: first alert %s, want %s from the signed page's relay %s", witness, f, id, vm1.alloc)
	}
	plain.screenshot(t, "signed-alert-on-other-vm.png")
	for _, v := range c.vms {
		if strings.Contains(v.Log.String(), key) || strings.Contains(v.Log.String(), tok) {
			t.Errorf("%s logged the signing key or a token", v)
		}
	}
}
