//go:build !unix

package hub

import (
	"errors"
	"syscall"
)

// canPump is false: tryWrite is unix's (trywrite_unix.go), so elsewhere
// every write is the writer goroutine's.
const canPump = false

func tryWrite(syscall.RawConn, [][]byte) (int, error) {
	return 0, errors.ErrUnsupported
}
