// Command skywatch is the relay: it holds browsers' WebSockets, publishes
// their alerts to a Pub/Sub topic, and forwards every alert from its own
// subscription to all of its clients. See README.md.
//
// `skywatch publish "text"` posts an alert to a deployment's API and
// `skywatch token` mints a browser token for BROWSER_PUBLISH=signed.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// commands are the subcommands beside the relay itself, each in a file of
// its own. Like run, each gets its arguments with its name first.
var commands = map[string]func(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error{
	"publish": publish,   // publish.go
	"token":   mintToken, // token.go
}

func main() {
	// Fly sends kill_signal (SIGINT, fly.toml) and SIGKILL after
	// kill_timeout; SIGINT and SIGTERM (docker stop, a terminal) start the
	// same ordered shutdown. A second signal kills at once, because
	// NotifyContext's stop restores the default handling.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	cmd, args := run, os.Args
	if len(args) > 1 && commands[args[1]] != nil {
		cmd, args = commands[args[1]], args[1:]
	}
	if err := cmd(ctx, args, os.Getenv, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "skywatch:", err)
		os.Exit(1)
	}
}
