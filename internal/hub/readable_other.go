//go:build !unix

package hub

// readable reports every connection as readable where peeking is not
// available: the reader then waits inside the read, on a larger stack.
func readable(uintptr) bool { return true }
