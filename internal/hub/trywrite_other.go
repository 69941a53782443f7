//go:build !unix

package hub

import (
	"errors"
	"syscall"
)

// canPump is false: tryWriter is unix's (trywrite_unix.go), so elsewhere
// every write is the writer goroutine's.
const canPump = false

type tryWriter struct{}

func newTryWriter() *tryWriter { return nil }

func (*tryWriter) try(syscall.RawConn, [][]byte) (int, error) {
	return 0, errors.ErrUnsupported
}
