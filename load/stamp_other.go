//go:build !linux

package main

import (
	"context"
	"net"
)

// dialStamped dials a plain connection: receive timestamps are Linux's
// (stamp_linux.go), so elsewhere deliveries are timed when read.
func dialStamped(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
