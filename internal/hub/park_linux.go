//go:build linux

package hub

import (
	"sync"
	"syscall"
)

// The parking lot: on Linux an idle connection holds no goroutine. When its
// reader finds nothing to read, it registers the connection with one epoll
// instance for the whole process and its goroutine ends; one goroutine waits
// on that instance and starts a reader again when the client sends
// something (a pong, an alert, its close). A goroutine waiting in a read
// holds 2 KiB of stack and its own descriptor, about half of an idle
// connection's memory (BenchmarkIdleConnMemory).
//
// Go's own poller watches the same descriptors; epoll allows a descriptor
// in several instances, and a closed one leaves them all. Every event is
// one-shot: the reader re-arms it when it parks again.
type lot struct {
	once sync.Once
	epfd int
	ok   bool // the epoll instance exists; written once, by start

	mu     sync.Mutex
	parked map[int32]*client // by descriptor
	broken bool              // epoll failed later: nobody parks any more
}

var parking lot

func (l *lot) start() bool {
	l.once.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		l.epfd, l.ok = fd, true
		l.parked = make(map[int32]*client)
		go l.run()
	})
	return l.ok
}

// run starts a reader for every connection that has something to read.
func (l *lot) run() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(l.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// Cannot happen with a valid instance; if it does, wake
			// everyone and read the old way from now on.
			l.mu.Lock()
			l.broken = true
			woken := l.parked
			l.parked = nil
			l.mu.Unlock()
			for _, c := range woken {
				go c.read()
			}
			return
		}
		for _, ev := range events[:n] {
			l.mu.Lock()
			c := l.parked[ev.Fd]
			delete(l.parked, ev.Fd)
			l.mu.Unlock()
			if c != nil {
				go c.read()
			}
		}
	}
}

// park arms c's connection for its next event and reports whether it did:
// the caller's goroutine must then end, and run starts c.read again. A
// connection that is being closed (unpark was called) never parks.
func (l *lot) park(c *client) bool {
	g := c.guard
	if g == nil || g.fd < 0 || !l.start() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if g.unparked || l.broken {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: g.fd}
	op := syscall.EPOLL_CTL_MOD
	if !g.armed {
		op = syscall.EPOLL_CTL_ADD
	}
	if err := syscall.EpollCtl(l.epfd, op, int(g.fd), &ev); err != nil {
		return false
	}
	g.armed = true
	l.parked[g.fd] = c
	return true
}

// unpark must be called before c's connection is closed: a parked reader is
// started again (it sees the close and ends), and c never parks again, so
// that no event can reach a reused descriptor in its name.
func (l *lot) unpark(c *client) {
	g := c.guard
	if g == nil {
		return
	}
	l.mu.Lock()
	g.unparked = true
	parked := l.parked[g.fd] == c
	if parked {
		delete(l.parked, g.fd)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(g.fd), nil)
	}
	l.mu.Unlock()
	if parked {
		go c.read()
	}
}
