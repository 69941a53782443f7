// Package feed keeps one VM's subscription alive and reports whether it is
// receiving.
//
// At boot it creates the subscription afresh, so a backlog left by a crash of
// a VM with the same id is never replayed as live alerts. While running it
// receives, and polls the broker so that a subscription that vanished
// (expired, deleted, emulator restarted) is recreated and an unreachable
// broker turns readiness off until it answers again. At shutdown the caller
// stops Run, then calls Delete.
//
// It knows nothing of WebSockets: what happens to a message is the handle
// function's business.
package feed
