package policy

import (
	"fmt"
	"sort"

	"github.com/ferry-nb/ferry/internal/location"
)

// Ferry is our policy: an online cost model with look-ahead over the block
// the user is predicted to run next, hysteresis so it does not flap, and
// (through Idle) prefetch and write-back in the user's think time.
type Ferry struct {
	// Horizon is how many predicted cells the look-ahead covers.
	Horizon int
	// Margin is the relative gain needed to leave the last location.
	Margin float64
	// NoWarm turns off starting cold cloud kernels in think time (Warm),
	// to measure what it gains.
	NoWarm bool
	last   location.Location
}

// NewFerry returns the Ferry policy.
func NewFerry() *Ferry { return &Ferry{Horizon: 6, Margin: 0.05, last: Local} }

func (f *Ferry) Name() string { return "ferry" }

func (f *Ferry) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		f.last = d.Loc
		return d
	}
	ahead := m.PredictNext(c.Hash, f.Horizon)
	total := map[location.Location]float64{}
	locs := c.locations()
	best := locs[0]
	for _, loc := range locs {
		ov := newOverlay(v)
		// A kernel's start is paid once, by this cell: not again by the
		// predicted cells, which find it running.
		total[loc] = immediateCost(c, ov, m, loc) + m.coldCost(loc)
		ov.ran(c.Reads, c.Writes, nil, loc)
		total[loc] += lookahead(ahead, ov, m, locs)
		if total[loc] < total[best] {
			best = loc
		}
	}
	// The reason is a sentence a user reads (%ferry why, the report).
	est := "Ferry's estimate of this cell"
	switch len(ahead) {
	case 0:
	case 1:
		est += " and the one expected next"
	default:
		est += fmt.Sprintf(" and the %d expected next", len(ahead))
	}
	est += ": " + costList(locs, total)
	reason := "quickest there by " + est
	if w := m.cloudWeight(); w > 0 {
		reason = fmt.Sprintf("cheapest there for --objective %s (your wait plus %g s per cloud kernel-second) by %s", m.Objective, w, est)
	}
	if _, ok := total[f.last]; !ok {
		f.last = Local
	}
	if best != f.last {
		gain := total[f.last] - total[best]
		if gain < f.Margin*total[f.last] || gain < 0.005 {
			best = f.last
			reason = "it stays where the last cell ran, as moving would gain too little by " + est
		}
	}
	f.last = best
	d := place(c, v, m, best, reason)
	d.Costs = total
	return d
}

// costList writes estimated costs per location for a reason: "0.42 s on
// the laptop, 1.30 s in the cloud".
func costList(locs location.Set, cost map[location.Location]float64) string {
	out := ""
	for i, l := range locs {
		if i > 0 {
			out += ", "
		}
		prep := "in "
		if l == Local {
			prep = "on "
		}
		out += fmt.Sprintf("%.2f s %s%s", cost[l], prep, l.Describe())
	}
	return out
}

// lookahead greedily places each predicted cell and returns the total cost.
func lookahead(cells []string, ov *overlay, m *Model, locs location.Set) float64 {
	var sum float64
	for _, h := range cells {
		reads, writes, sizes, ok := m.Known(h)
		if !ok {
			break
		}
		pc := Cell{Hash: h, Reads: reads, Writes: writes, Locs: locs}
		loc, cost := cheapest(pc, ov, m, locs)
		sum += cost
		ov.ran(reads, writes, sizes, loc)
	}
	return sum
}

// cheapest is the location where c costs least now, the first on a tie.
func cheapest(c Cell, v View, m *Model, locs location.Set) (location.Location, float64) {
	best, bestCost := locs[0], immediateCost(c, v, m, locs[0])
	for _, l := range locs[1:] {
		if cost := immediateCost(c, v, m, l); cost < bestCost {
			best, bestCost = l, cost
		}
	}
	return best, bestCost
}

// IdleMinThink is the predicted think time (seconds) below which no
// move is made in it.
const IdleMinThink = 2.0

// Idle proposes moves for the user's think time: inputs of the predicted
// next cell to where it will likely run (prefetch), and everything else
// back to the laptop (write-back), largest benefit first, within the
// predicted think time.
func (f *Ferry) Idle(lastCell string, v View, m *Model, all []string, locs location.Set) []Move {
	// Only when the user reads results for a while: a move costs both
	// kernels serialisation time, and one still running when the next cell
	// comes delays it (measured: 5-14% slower sessions at 0.2-1 s think
	// times). Then half the predicted think time, so a shorter pause than
	// usual seldom waits on a move (one in flight ends at its window's end).
	if m.Think() < IdleMinThink {
		return nil
	}
	budget := 0.5 * m.Think()
	if budget <= 0 {
		return nil
	}
	var moves []Move
	next := m.PredictNext(lastCell, 1)
	if len(next) == 1 {
		reads, writes, _, ok := m.Known(next[0])
		if ok {
			c := Cell{Hash: next[0], Reads: reads, Writes: writes, Locs: locs}
			loc, _ := cheapest(c, v, m, c.locations())
			names, b := stale(reads, v, loc)
			// Not to a kernel whose start is known and not yet paid: a
			// move would start it now, whatever the start costs; Warm
			// decides whether and when (warm.go).
			if t := inputCost(reads, v, m, loc); len(names) > 0 && t <= budget && m.StartCost(loc) <= 0 {
				moves = append(moves, Move{Names: names, To: loc, Bytes: b})
				budget -= t
			}
		}
	}
	// Write-back: the laptop is where the user's data must survive; copy
	// results that live only remotely home, smallest first, while time lasts.
	type nv struct {
		name string
		x    Var
		from location.Location
	}
	var wb []nv
	for _, n := range all {
		x, ok := v.Var(n)
		if ok && x.Movable && !x.Has(Local) && len(x.At) > 0 {
			wb = append(wb, nv{n, x, cheapestSource(x, m, Local)})
		}
	}
	sort.Slice(wb, func(i, j int) bool { return wb[i].x.Size < wb[j].x.Size })
	for _, w := range wb {
		t := m.PayloadTime(w.from, Local, Payload{}.Add(w.x))
		if t > budget {
			break
		}
		moves = append(moves, Move{Names: []string{w.name}, To: Local, Bytes: w.x.Size})
		budget -= t
	}
	return moves
}

// overlay is a View with hypothetical changes, for look-ahead.
type overlay struct {
	base View
	over map[string]Var
}

func newOverlay(v View) *overlay { return &overlay{base: v, over: map[string]Var{}} }

func (o *overlay) Var(name string) (Var, bool) {
	if x, ok := o.over[name]; ok {
		return x, true
	}
	return o.base.Var(name)
}

// ran applies a cell run at loc: its stale inputs now also live at loc,
// its outputs only at loc.
func (o *overlay) ran(reads, writes []string, sizes map[string]int64, loc location.Location) {
	for _, r := range reads {
		if x, ok := o.Var(r); ok && !x.Has(loc) && len(x.At) > 0 {
			x.At = append(append([]location.Location(nil), x.At...), loc)
			o.over[r] = x
		}
	}
	for _, w := range writes {
		x, _ := o.Var(w)
		x.At = []location.Location{loc}
		x.Movable = true
		x.Ratio = 0 // a new version: its compression is not known
		if s, ok := sizes[w]; ok {
			x.Size = s
		}
		o.over[w] = x
	}
}
