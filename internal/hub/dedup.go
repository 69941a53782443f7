package hub

import "sync"

// dedup remembers the last size alert ids, so that a message the broker
// delivers again (Pub/Sub is at least once) is not shown twice. Memory is
// bounded: the oldest id is forgotten when a new one arrives. A redelivery
// normally follows within the subscription's ack deadline, long before
// thousands of newer alerts push its id out.
type dedup struct {
	mu   sync.Mutex
	seen map[[16]byte]struct{}
	ring [][16]byte // ids in arrival order, oldest at next once full
	next int
	size int
}

func newDedup(size int) *dedup {
	return &dedup{
		seen: make(map[[16]byte]struct{}, size),
		ring: make([][16]byte, 0, size),
		size: size,
	}
}

// add records id and reports whether it was new.
func (d *dedup) add(id [16]byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.seen[id]; ok {
		return false
	}
	if len(d.ring) < d.size {
		d.ring = append(d.ring, id)
	} else {
		delete(d.seen, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % d.size
	}
	d.seen[id] = struct{}{}
	return true
}
