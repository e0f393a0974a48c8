package policy

import (
	"fmt"
	"strings"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/state"
)

// Plan is everything Ferry will do for one cell, decided once, before
// anything is done: where it runs, what moves there first and what is
// remade there instead of moved. The kernel's executor carries it out in
// order and never decides again (kishu's restore plan, ElasticNotebook's
// selector/migrator split).
type Plan struct {
	// Loc is where the cell runs.
	Loc location.Location
	// Moves bring every input whose newest version is elsewhere to Loc,
	// one payload per source so aliases keep their identity.
	Moves []Move
	// Why is the decision's reason, as %ferry why shows it.
	Why string
	// Costs are the estimated seconds at each location.
	Costs map[location.Location]float64
}

// Move is one payload: names from one location to another.
type Move struct {
	// From is where the newest copies are; empty in a think-time
	// proposal (Idle), whose source is resolved when it is carried out.
	From, To location.Location
	Names    []string
	Bytes    int64
	// Recompute, if set, makes the names at To by re-running the cells
	// that made them instead (store-vs-recompute); what it does not yield
	// moves as usual.
	Recompute *Recompute
}

// Recompute is a store-vs-recompute choice: the steps that remake a
// group of values at a location, and the estimates that chose them.
type Recompute struct {
	Steps state.Plan
	// Cost is the estimated time to re-run the steps (and bring their
	// inputs); MoveCost the estimated time to move the values instead.
	Cost, MoveCost float64
}

// Facts is what planning needs beyond the policy's View. The kernel
// implements it over its state map and lineage log.
type Facts interface {
	View
	// Sources groups the names whose newest version is not at loc by a
	// location holding it.
	Sources(loc location.Location, names []string) map[location.Location][]string
	// Needs widens names to everything that must travel with them.
	Needs(names []string) []string
	// Size is the names' total size in bytes.
	Size(names []string) int64
	// Recipe is how names could be made at loc by re-running, hidden, the
	// cells that made them from values that exist; ok is false when they
	// may not be (aliased or unmovable values, a producing cell missing,
	// or a re-run that would overwrite a value loc holds).
	Recipe(names []string, loc location.Location) (state.Plan, bool)
}

// Recomputing must cost well under moving (estimates err), and only moves
// that take a while are worth a look.
const (
	RecomputeShare = 0.5
	RecomputeMin   = 1.0 // seconds
)

// MakePlan asks p where c runs and plans what must happen first. It is the
// only place the kernel consults a policy for a cell.
func MakePlan(p Policy, c Cell, f Facts, m *Model) Plan {
	d := p.Decide(c, f, m)
	return Plan{Loc: d.Loc, Why: d.Reason, Costs: d.Costs, Moves: PlanMoves(d.Loc, c, f, m)}
}

// PlanMoves plans the moves that bring c's inputs to loc: one per source,
// each with a recompute option where that is cheaper. MakePlan uses it;
// the kernel's executor calls it again only when recovery changed where
// values are (a kernel died during the moves), never to choose anew where
// the cell runs.
func PlanMoves(loc location.Location, c Cell, f Facts, m *Model) []Move {
	var moves []Move
	src := f.Sources(loc, c.Reads)
	for _, from := range c.locations() {
		group := src[from]
		if len(group) == 0 {
			continue
		}
		mv := Move{From: from, To: loc, Names: group, Bytes: f.Size(group)}
		if rc, ok := recomputeChoice(group, from, loc, f, m); ok {
			mv.Recompute = &rc
		}
		moves = append(moves, mv)
	}
	return moves
}

// recomputeChoice is the cost half of store-vs-recompute: re-running the
// producing cells at loc wins when that is well under the cost of moving
// (DESIGN.md: a large value cheap to make).
func recomputeChoice(names []string, from, loc location.Location, f Facts, m *Model) (Recompute, bool) {
	move := m.PayloadTime(from, loc, PayloadOf(f, names))
	if move < RecomputeMin {
		return Recompute{}, false
	}
	steps, ok := f.Recipe(names, loc)
	if !ok || len(steps.Steps) == 0 {
		return Recompute{}, false
	}
	cost := 0.0
	var inputs []string
	for _, st := range steps.Steps {
		if st.Cell == "" || m.Runs(st.Cell) == 0 {
			return Recompute{}, false // never timed: no estimate
		}
		rt, _ := m.Runtime(st.Cell, loc)
		cost += rt
		inputs = append(inputs, st.Inputs...)
	}
	for src, group := range f.Sources(loc, f.Needs(inputs)) {
		cost += m.PayloadTime(src, loc, PayloadOf(f, group))
	}
	if cost > RecomputeShare*move {
		return Recompute{}, false
	}
	return Recompute{Steps: steps, Cost: cost, MoveCost: move}, true
}

// Describe says what a recompute chose, for %ferry why.
func (r Recompute) Describe(made []string, at location.Location, seconds float64, bytes string) string {
	n := len(r.Steps.Steps)
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("recomputed %s at %s by re-running %d cell%s (%.1f s, estimated %.1f s) instead of moving %s (estimated %.1f s)",
		strings.Join(made, ", "), at, n, s, seconds, r.Cost, bytes, r.MoveCost)
}
