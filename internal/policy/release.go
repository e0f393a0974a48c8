package policy

import (
	"time"

	"github.com/ferry-nb/ferry/internal/location"
)

// ReleaseAfter is how long loc's cloud kernel must have run no cell before
// letting it go pays (issue 18's idle release): the configured idle time,
// but never less than what a release that proves premature would cost the
// user when the next cloud cell comes — starting a kernel there again and
// bringing back the onlyThere bytes that only it holds now (written home
// before the release, so they cross again).
//
// This is the break-even of the ski-rental problem: keeping an idle kernel
// until the restart cost has passed, then releasing, is never worse than
// twice the best choice made knowing when the next cloud cell comes, and
// nothing better is known without that. A cell is not foreseeable here:
// in think time the next request is the user's, and the model's block
// prediction knows which cell follows, not when. With a measured start of
// 20 s (a jupyter-server on a slow VM) and --cloud-idle 10s, a user who
// runs a cloud cell every 15 s would otherwise pay a 20 s start each time.
//
// Called by the kernel's shell worker in think time, which also owns the
// model's writes, so it reads the model without further locking.
func (m *Model) ReleaseAfter(loc location.Location, configured time.Duration, onlyThere int64) time.Duration {
	restart := m.StartSeconds(loc) + m.LinkTo(loc).TransferTime(onlyThere)
	// A link never measured can make the estimate absurd; a day caps it
	// (Duration overflows near 292 years).
	restart = min(finite(restart), 24*3600)
	if configured <= 0 && m.Releases() {
		// No --cloud-idle: the objective's break-even (objective.go).
		return m.objectiveIdle(restart)
	}
	return max(configured, time.Duration(restart*float64(time.Second)))
}
