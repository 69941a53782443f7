//go:build e2e

// Package e2e proves that Skywatch works as a whole, from the outside: the
// relay binary built from ./app runs as several "VMs" (processes with their
// own FLY_ALLOC_ID, FLY_REGION and port) against Google's official Pub/Sub
// emulator, and real clients — Go WebSocket clients and the page in headless
// Chromium — check what a person would see.
//
// What it proves:
//
//   - the gcppubsub broker passes the broker conformance suite (brokertest)
//     against the official emulator;
//   - an alert sent on any VM reaches every client on every VM exactly once,
//     with the same id, even with hundreds of alerts from many clients;
//   - each VM owns one subscription, ID_<alloc id>, with an expiration policy;
//   - a graceful stop (SIGTERM or SIGINT, as Fly sends) closes clients with
//     1012, exits 0 within Fly's kill_timeout and deletes the subscription,
//     and the VM restarted with the same alloc id rejoins without replaying
//     the alerts sent while it was down;
//   - a crash (SIGKILL) leaves the other VMs working and the subscription
//     behind with its expiration policy, and the restarted VM does not replay
//     the backlog (after a crash the official emulator keeps feeding part
//     of that subscription's messages to the dead process for a minute and
//     more, so arrival at the restarted VM is reported, not asserted: see
//     rejoin in lifecycle_test.go);
//   - clients whose VM goes away reconnect to another VM and keep receiving;
//   - a broker outage makes alerts fail with "unavailable" and /readyz 503,
//     crashes nothing, and the VMs recover alone when the broker returns;
//   - bad input gets the documented error or close code and harms no one else;
//   - in the browser, the red button on one VM's page shows the alert on
//     another VM's page, and the page follows its VM going away to a VM its
//     hello listed, never to one named in its URL;
//   - the page tells the truth (page_test.go): "degraded" within seconds of
//     the emulator stopping and back when it returns, typed text kept after
//     a failed send, "the server is restarting" on close 1012, an unread
//     count in a hidden tab's title, no sideways scroll at 320 px with a
//     280-character word, WCAG AA contrast in light and dark mode, a visible
//     focus ring, labels and roles; a screenshot of each state.
//   - the fleet (fleet_test.go, fleet_browser_test.go): a SIGKILLed VM's
//     subscription is deleted by a survivor's janitor within ORPHAN_AFTER
//     and a heartbeat interval or two, live VMs' never (also after an
//     emulator restart); two processes with one alloc id see each other;
//     after a 20 s emulator stall every VM notices its own heartbeats
//     missing, recreates its subscription and delivers everything again;
//     the page shows the fleet's total and VMs and follows VMs that stop.
//   - resuming: through a rolling restart under load (every VM restarted in
//     turn with SIGINT and the same alloc id) clients that reconnect with
//     since end with every acknowledged alert, and every resume is
//     recovered; a since from before a fresh VM's coverage is not; the page
//     shows the alerts sent while it was away, once (resume_test.go,
//     resume_browser_test.go).
//
// How to run it (from the repository root):
//
//	make e2e
//	go test -tags e2e -count=1 -timeout 20m ./e2e/...
//	go test -tags e2e -count=1 -run TestCrossVMBroadcast -v ./e2e/...
//
// It needs Go, Chromium (Debian: apt-get install chromium; or set
// SKYWATCH_CHROMIUM to a Chrome or Chromium binary) and one Pub/Sub emulator:
// a Docker engine (the suite then runs the emulator image with
// testcontainers-go) or the emulator installed on the machine
// (gcloud components install pubsub-emulator, or Debian/Ubuntu's
// google-cloud-cli-pubsub-emulator, plus java). SKYWATCH_EMULATOR=docker or
// SKYWATCH_EMULATOR=local forces one; by default Docker wins when an engine
// answers. Without either the suite fails at once and says how to get one.
//
// Logs of every VM, of the emulator and the browser screenshots go to
// e2e/artifacts/ (ignored by git, uploaded by CI); a failing test also prints
// the output of its VMs.
package e2e
