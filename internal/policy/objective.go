package policy

import (
	"fmt"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
)

// Objective is what --policy ferry minimises (issue 16): the user's wait
// alone, or the wait plus what the cloud kernel costs while it exists.
//
// A cloud kernel is billed from its start to its release, so keeping it
// all session costs the session's length whatever the cells do: placing a
// cell on the laptop saves nothing while the kernel idles. What an
// objective that counts cost changes is therefore (1) the price of a cold
// start (the user waits for it and the cloud bills it), (2) each cloud
// cell's own cloud time, and (3) letting an idle kernel go at the
// ski-rental break-even of that weighing, never before ObjectiveIdleFloor
// (ReleaseAfter), so think time is not billed.
type Objective string

// The objectives: time is the default, as before.
const (
	ObjectiveTime     Objective = "time"
	ObjectiveBalanced Objective = "balanced"
	ObjectiveCost     Objective = "cost"
)

// ParseObjective reads --objective ("" is time).
func ParseObjective(s string) (Objective, error) {
	switch o := Objective(s); o {
	case "":
		return ObjectiveTime, nil
	case ObjectiveTime, ObjectiveBalanced, ObjectiveCost:
		return o, nil
	}
	return "", fmt.Errorf("--objective %q: want time (the quickest session, the default), balanced (a cloud kernel-second weighs a quarter of a second of your wait) or cost (it weighs a whole second)", s)
}

// CloudWeight is how many seconds of the user's wait one cloud
// kernel-second is worth under o: 0 for time, 0.25 for balanced, 1 for
// cost. A cell then pays for the cloud when it runs there more than 1+w
// times faster (1.25x, 2x) and gains more than a start, weighed, when the
// kernel is not running. Measured on replays of the data-on-laptop bench
// sessions (README, "Objectives"): with minutes of think time both cut
// the cloud kernel-seconds by 86-90% against all-remote at 5-11% more
// wall time. Heavier weights were worse: 4 kept every cell of a 4x cloud
// on the laptop (a cloud cell cost 5x its runtime), and 2 kept the image
// bench's training cells there after a release (85 s against 23.7 s).
func (o Objective) CloudWeight() float64 {
	switch o {
	case ObjectiveBalanced:
		return 0.25
	case ObjectiveCost:
		return 1
	}
	return 0
}

// cloudWeight is the model's objective's weight (0 when none is set).
func (m *Model) cloudWeight() float64 { return m.Objective.CloudWeight() }

// cloudTime is what running c at cloud loc for rt seconds adds to the
// objective beyond the wait: the kernel-seconds it is billed for, weighed.
func (m *Model) cloudTime(loc location.Location, rt float64) float64 {
	if loc == Local {
		return 0
	}
	return m.cloudWeight() * (rt + m.LinkTo(loc).RTT)
}

// idleBilling is what the cloud kernels running now, other than loc's,
// bill (weighed) while a cell waits wait seconds at loc. A kernel is
// billed from its start to its release whatever runs where, so a cell
// kept off a running kernel saves its billing only past the point where
// that kernel's idle release would come (UntilRelease). Without this
// term the cost objective counted a cloud cell's runtime as a cost and a
// laptop cell's as free while the kernel idled beside it: live on the
// tabular session at the recorded think times (home link), it kept the
// first training cell on the laptop (12.4 s there against 1.9 s in the
// cloud) and billed more kernel-seconds than time did (63 against 53),
// the kernel being up all session either way.
func (m *Model) idleBilling(loc location.Location, wait float64, locs location.Set) float64 {
	w := m.cloudWeight()
	if w == 0 || m.Cold == nil || m.UntilRelease == nil {
		return 0
	}
	var sum float64
	for _, l := range locs.Clouds() {
		if l == loc || m.Cold(l) {
			continue
		}
		sum += w * min(wait, max(m.UntilRelease(l), 0))
	}
	return sum
}

// coldCost is what starting loc's kernel for this cell costs under the
// objective: the wait for the start and, weighed, its billing. The idle
// time before a release is not charged to the cell that starts the
// kernel: the cloud cells after it share it (charged to the first, it
// kept every training cell of the image bench on the laptop once a
// release had come: 85 s against 23.7 s under time).
func (m *Model) coldCost(loc location.Location) float64 {
	return m.StartCost(loc) * (1 + m.cloudWeight())
}

// minRestart floors the restart an objective's release weighs when no
// start was measured yet, so a kernel is not let go between two cells.
const minRestart = 1.0

// idleBreakEven is how long an idle kernel is worth keeping when starting
// it again costs restart seconds of wait and (weighed) of billing:
// keeping it t seconds costs w*t, a restart restart*(1+w).
func (m *Model) idleBreakEven(restart float64) float64 {
	w := m.cloudWeight()
	return max(restart, minRestart) * (1 + 1/w)
}

// Releases reports whether the objective lets idle cloud kernels go even
// when --cloud-idle is not set.
func (m *Model) Releases() bool { return m.cloudWeight() > 0 }

// ObjectiveIdleFloor is the least idle time after which an objective
// (not --cloud-idle) lets a kernel go. The break-even alone is seconds
// when starts are: on the bench's test bed (a 3 s start) cost mode let the
// kernel go 6 s into a run of laptop cells, then kept the next, unseen,
// training cell on the laptop rather than pay a start for it (35.6 s
// against 13.4 s under time). Clouds bill a minute at least, and an
// active session's next cloud cell is seldom a minute away. Tests
// shorten it.
var ObjectiveIdleFloor = time.Minute

// objectiveIdle is ReleaseAfter's idle time when only the objective asks
// for a release.
func (m *Model) objectiveIdle(restart float64) time.Duration {
	d := time.Duration(min(finite(m.idleBreakEven(restart)), 24*3600) * float64(time.Second))
	return max(d, ObjectiveIdleFloor)
}
