// Package fleet gives the relays a view of one another and cleans up after
// the ones that died.
//
// Every relay publishes a heartbeat on the topic every Interval (its VM id,
// a per-process instance id, region, connected clients, start time and
// version). A heartbeat carries the message attribute kind=heartbeat, so
// Route sends it here and never to the hub: it is never shown as an alert
// and never enters resume history. Relays that predate heartbeats read
// every message as an alert; they reject a heartbeat as malformed (its type
// is not "alert"), count it and log it, and show nothing.
//
// From the heartbeats it hears, a Fleet keeps:
//
//   - the fleet's state (VMs, regions, clients, last heard), answered on
//     GET /fleet, exported as metrics and sent to the page as a "fleet"
//     frame when it changes;
//   - proof of delivery: the relay's own heartbeats must come back through
//     its own subscription. When Missed in a row do not (while publishing
//     them succeeds) the relay is not ready and asks the feed to recreate
//     its subscription;
//   - duplicate detection: a heartbeat with this relay's VM id but another
//     instance id means two processes share one subscription;
//   - the janitor: subscriptions with the configured prefix on the topic
//     whose VM has not been heard for OrphanAfter are deleted, but only by a
//     relay whose own subscription has been receiving without a break for
//     longer than OrphanAfter (docs/fleet.md lists every rule).
package fleet
