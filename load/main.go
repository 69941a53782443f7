// Command load is Skywatch's load generator: it answers "how many browsers
// can one VM hold, at what alert rate?". By default it starts its own
// Pub/Sub emulator and relays on loopback, connects N WebSocket clients per
// relay, publishes alerts from random clients at each rate of a sweep, and
// reports latency (p50/p90/p99/max, and split into the broker's path and
// the fan-out, beside the broker's own latency measured apart),
// delivered/expected, duplicates, closes
// by code, and the relays' CPU per delivery and RSS per connection. It
// prints a progress line per second and a JSON summary at the end.
//
// It can also load a deployed app (-url wss://…/ws, with -remote), then
// without the relays' CPU and memory, which it cannot see.
//
// See docs/performance.md for figures and the commands that made them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}
