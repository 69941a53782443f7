//go:build !linux

package hub

// lot parks nothing outside Linux: every connection keeps a reader
// goroutine, waiting in guardedConn.waitReadable.
type lot struct{}

var parking lot

func (*lot) park(*client) bool { return false }
func (*lot) unpark(*client)    {}
