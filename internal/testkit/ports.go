package testkit

import (
	"fmt"
	"net"
	"strconv"
	"testing"
)

// FreePort asks the kernel for a free TCP port on 127.0.0.1. Another
// process could take it before it is used; at this scale that does not
// happen.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is a loopback host:port nobody listens on yet, or the test fails.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
