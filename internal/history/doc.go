// Package history is a relay's memory of the alerts it received recently, so
// that a browser that reconnects (to this VM or any other: every VM receives
// every alert) can be sent what it missed.
//
// A History keeps entries in receive order, bounded by count and by age, so
// its memory is bounded: at most Size entries of a few dozen bytes each plus
// whatever the values hold (the hub stores the alert's prepared WebSocket
// message, shared with the live broadcast).
//
// It also knows how far it can vouch for itself. Its coverage starts when the
// relay's subscription starts receiving (Cover): from then on every alert
// published reaches it, so the history is complete from that instant until
// entries are pushed out by count or age. Since answers a resume: the entries
// not older than a given time, and whether nothing newer than that time can
// be missing.
package history
