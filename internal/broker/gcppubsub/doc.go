// Package gcppubsub is the broker.Broker on Google Cloud Pub/Sub, and on its
// emulators (Google's official one, and the in-process pstest fake that the
// tests use).
//
// One topic, shared by every VM, is made by infrastructure code (`pulumi
// up`); this package only makes it on an emulator. Each VM makes its own
// subscription with an expiration policy, so one left behind by a crash
// goes away by itself, and a short message retention, since a stale alert is
// worth nothing.
package gcppubsub
