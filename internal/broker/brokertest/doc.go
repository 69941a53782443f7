// Package brokertest is the conformance suite for broker.Broker. Every
// implementation runs it, so the in-memory default and Pub/Sub (the
// in-process fake, the official emulator, Google Cloud) behave alike:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, func(t *testing.T) broker.Broker {
//			return newIsolatedBroker(t) // its own topic; cleanup via t.Cleanup
//		})
//	}
//
// Delivery is at least once and eventually: the suite counts unique
// payloads, waits generously for arrival and never asserts timings.
package brokertest
