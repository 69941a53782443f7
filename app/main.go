// Command skywatch is the relay: it holds browsers' WebSockets, publishes
// their alerts to a Pub/Sub topic, and forwards every alert from its own
// subscription to all of its clients. See README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Fly sends SIGINT (kill_signal) and SIGTERM after kill_timeout; both
	// start the same ordered shutdown. A second signal kills at once,
	// because NotifyContext's stop restores the default handling.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "skywatch:", err)
		os.Exit(1)
	}
}
