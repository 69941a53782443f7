// Package gcppubsub is the broker.Broker on Google Cloud Pub/Sub, and on its
// emulators (Google's official one, and the in-process pstest fake that the
// tests use).
//
// One topic, shared by every VM, is made by infrastructure code (`pulumi
// up`); this package only makes it on an emulator. Each VM makes its own
// subscription with an expiration policy, so one left behind by a crash
// goes away by itself, and a short message retention, since a stale alert is
// worth nothing.
//
// New connects and checks the topic before it returns. Open returns a Lazy
// broker at once and connects in the background, retrying with backoff, so
// a relay can listen before Pub/Sub answers (IAM grants still propagating,
// an outage at boot); until then its calls fail with ErrNotConnected and
// the reason. Credentials come ready-made (Config.Credentials: a parsed key,
// or Fly's keyless workload identity from internal/flyoidc) or as a key.
package gcppubsub
