package kernel

import (
	"context"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
)

// SetIdleGrace shortens how long Ferry waits for a lost idle status, for
// tests; it returns a function that restores the old value.
func SetIdleGrace(d time.Duration) (restore func()) {
	old := idleGrace
	idleGrace = d
	return func() { idleGrace = old }
}

// LinkModel is the cost model's current link estimate, for tests, read
// while the shell worker is paused (quiet): think-time work after a cell
// (a probe, a prefetch) learns the link on the worker.
func (s *Server) LinkModel() (l policy.Link) {
	s.quiet(func() { l = s.model.Link })
	return l
}

// quiet runs f while the shell worker holds no request and spends no think
// time (pauseWorker). The model is the worker's alone, so a test reads it
// here (CI's -race run caught a read beside a think-time probe's write).
func (s *Server) quiet(f func()) {
	release, _ := s.pauseWorker(context.Background())
	defer release()
	f()
}

// SetStartNotices shortens when a kernel start is announced and how often
// it is updated, for tests; it returns a function that restores them.
func SetStartNotices(notice, update time.Duration) (restore func()) {
	on, ou := startNotice, startUpdate
	startNotice, startUpdate = notice, update
	return func() { startNotice, startUpdate = on, ou }
}

// StartSeconds is the cost model's measured start of loc's kernel.
func (s *Server) StartSeconds(loc location.Location) float64 { return s.model.StartSeconds(loc) }

// SetProgress sets when a move's progress is shown, how often it is
// updated, and the clock it is timed by, for Servers made after it; it
// returns a function that restores them.
func SetProgress(after, every time.Duration, clock func() time.Time) (restore func()) {
	a, e, c := progressAfter, progressEvery, progressClock
	progressAfter, progressEvery, progressClock = after, every, clock
	return func() { progressAfter, progressEvery, progressClock = a, e, c }
}
