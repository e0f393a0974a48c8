package kernel

import "time"

// SetIdleGrace shortens how long Ferry waits for a lost idle status, for
// tests; it returns a function that restores the old value.
func SetIdleGrace(d time.Duration) (restore func()) {
	old := idleGrace
	idleGrace = d
	return func() { idleGrace = old }
}
