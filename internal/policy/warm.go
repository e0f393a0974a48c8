package policy

import (
	"fmt"

	"github.com/ferry-nb/ferry/internal/location"
)

// Starting a cloud kernel in think time (issues 16 and 18). A released
// kernel, or one never started, makes the next cloud cell wait for a whole
// start (20 s on a slow VM), and once the model has measured that wait it
// keeps cells it would have sent to the cloud on the laptop: replayed over
// the hybrid bench's digits session with minutes of think time and
// --cloud-idle 2m, the cells waited 46 s in all, more than all-local's
// 33 s. The user's think time can hide the start, as it hides prefetch: the
// block prediction says which cell comes next, the think-time estimate
// roughly when, so the kernel is started that long before it, less its
// start. It then bills only the start, which the cell would have paid
// anyway.

// Warm is a start the policy proposes for the user's think time: Loc's
// kernel, started After seconds after the last cell ended, so that it is
// up when the predicted next cell (Cell) comes, Due seconds after the last
// cell. The caller counts the started kernel's idle time from Due, not
// from its start: letting it go before the cell it was started for is due
// would undo the warm (think times vary: replayed, a kernel warmed for
// the digits session's training cell was released again before it came).
type Warm struct {
	Loc    location.Location
	After  float64
	Due    float64
	Cell   string
	Reason string
}

// Dropped reports whether a warm start is given up because the kernel it
// would start was let go only releasedAfter seconds after the last cell,
// past the warm's own time: the user is overdue, when they come back is
// unknown, and the release judged the kernel not worth keeping meanwhile.
func (w Warm) Dropped(releasedAfter float64) bool { return releasedAfter > w.After }

// Warmer is a policy that starts cold cloud kernels in think time. The
// kernel's shell worker (and a replay) calls Warm after each cell while a
// cloud kernel is cold, and again when an idle release has just made one
// cold, with the configured locations (nil: the laptop and the default
// cloud). The caller starts Loc's kernel After seconds after the last
// cell's end unless the next request comes first, at most once per think
// time, and does not wait for it: the next cell waits only for what is
// left of the start, if it is placed there.
type Warmer interface {
	Warm(lastCell string, v View, m *Model, locs location.Set) (Warm, bool)
}

// Warm proposes starting a cold cloud kernel before the predicted next
// cell when that cell costs least there with the start hidden in think
// time. Each location is costed as Decide costs it arriving cold (the
// whole start waited for, its billing weighed); a cold cloud also as
// started early, where only the part of the start the predicted think time
// does not cover is waited for. The warm start must win by Decide's
// margin. A cell pinned to a cold cloud is warmed whatever it costs: it
// runs there anyway.
//
// The cell alone must pay for it, not the block predicted after it as
// Decide's look-ahead weighs: replayed over the digits session with
// minutes of think time, a kernel warmed for a 0.05 s cell on the strength
// of the training cell predicted two cells later was let go again before
// that came, doubling the cloud kernel-seconds for no time saved. And a
// start the cell would not have made cold weighs at least one second of
// wait per kernel-second: under --objective time, which weighs none, the
// same replay warmed the kernel for a 0.13 s gain at the price of a 20 s
// start.
func (f *Ferry) Warm(lastCell string, v View, m *Model, locs location.Set) (Warm, bool) {
	if f.NoWarm || lastCell == "" {
		return Warm{}, false
	}
	ahead := m.PredictNext(lastCell, 1)
	if len(ahead) == 0 {
		return Warm{}, false
	}
	h := ahead[0]
	reads, writes, _, ok := m.Known(h)
	if !ok {
		return Warm{}, false
	}
	c := Cell{Hash: h, Reads: reads, Writes: writes, Locs: locs, Pin: m.PinnedTo(h)}
	think := max(m.ThinkBefore(h), 0)
	after := func(loc location.Location) float64 { return max(think-m.StartCost(loc), 0) }
	if c.Pin != "" {
		if c.Pin == Local || m.StartCost(c.Pin) <= 0 {
			return Warm{}, false
		}
		return Warm{Loc: c.Pin, After: after(c.Pin), Due: think, Cell: h,
			Reason: fmt.Sprintf("the cell expected next is pinned to %s", c.Pin.Describe())}, true
	}
	cold := map[location.Location]float64{}
	var warmLoc location.Location
	warmCost := 0.0
	for _, loc := range c.locations() {
		base := immediateCost(c, v, m, loc)
		cold[loc] = base + m.coldCost(loc)
		start := m.StartCost(loc)
		if start <= 0 {
			continue
		}
		// Started in time, the start is waited for only where the think
		// time falls short of it.
		if w := base + max(start-think, 0); warmLoc == "" || w < warmCost {
			warmLoc, warmCost = loc, w
		}
	}
	if warmLoc == "" {
		return Warm{}, false
	}
	best := c.locations()[0]
	for _, loc := range c.locations() {
		if cold[loc] < cold[best] {
			best = loc
		}
	}
	// A cell that would start that kernel anyway only has the start moved
	// into think time: billed the same, waited for less. Otherwise the
	// start is billed in hope of the cell, and a kernel-second of it
	// weighs at least a second of wait whatever the objective: a kernel is
	// never started for less than it costs.
	if best != warmLoc {
		warmCost += max(m.cloudWeight(), 1) * m.StartCost(warmLoc)
	} else {
		warmCost += m.cloudWeight() * m.StartCost(warmLoc)
	}
	if gain := cold[best] - warmCost; gain < f.Margin*cold[best] || gain < 0.005 {
		return Warm{}, false
	}
	return Warm{Loc: warmLoc, After: after(warmLoc), Due: think, Cell: h,
		Reason: fmt.Sprintf("the cell expected next costs %.2f s with %s started in think time, %.2f s at best otherwise", warmCost, warmLoc.Describe(), cold[best])}, true
}
