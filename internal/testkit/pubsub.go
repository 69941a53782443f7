package testkit

import (
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Refuser is a pstest reactor (pstest.ServerReactorOption) that answers the
// call it is hooked to with PermissionDenied while On, as Pub/Sub does
// before a new IAM grant has propagated.
type Refuser struct{ On atomic.Bool }

// React implements pstest's Reactor.
func (r *Refuser) React(any) (bool, any, error) {
	if r.On.Load() {
		return true, nil, status.Error(codes.PermissionDenied, "User not authorized to perform this action.")
	}
	return false, nil, nil
}
