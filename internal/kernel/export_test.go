package kernel

import (
	"time"

	"github.com/ferry-nb/ferry/internal/policy"
)

// SetIdleGrace shortens how long Ferry waits for a lost idle status, for
// tests; it returns a function that restores the old value.
func SetIdleGrace(d time.Duration) (restore func()) {
	old := idleGrace
	idleGrace = d
	return func() { idleGrace = old }
}

// LinkModel is the cost model's current link estimate, for tests.
func (s *Server) LinkModel() policy.Link { return s.model.Link }
