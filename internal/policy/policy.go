package policy

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/ferry-nb/ferry/internal/location"
)

// Var is what a policy sees of one variable.
type Var struct {
	Size int64
	// Ratio is the share of Size a move would put on the link, estimated
	// from a sample of the value (a laptop file: files.Tracker.Ratio); 0
	// when unknown, and then the link's measured compression applies.
	Ratio float64
	// At lists the locations holding the newest version.
	At      []location.Location
	Movable bool
}

// Has reports whether loc holds the newest version.
func (v Var) Has(loc location.Location) bool {
	for _, a := range v.At {
		if a == loc {
			return true
		}
	}
	return false
}

// View is the state map as the policies see it.
type View interface {
	Var(name string) (Var, bool)
}

// Cell is the cell about to run.
type Cell struct {
	Hash  string
	Index int
	// Reads are every name that must be at the cell's location: what it
	// reads, widened by the globals of the functions it calls and alias
	// groups.
	Reads  []string
	Writes []string
	// Pin forces a location ("" if free): a %%ferry pin or unmovable state.
	Pin location.Location
	// Locs are the configured locations, the laptop first; nil means the
	// laptop and the default cloud (replay of a trace).
	Locs location.Set
}

// locations is where c may run.
func (c Cell) locations() location.Set {
	if c.Locs == nil {
		return location.Set{Local, Remote}
	}
	return c.Locs
}

// Decision is where a cell runs and why.
type Decision struct {
	Loc    location.Location
	Costs  map[location.Location]float64 // estimated seconds per location
	Reason string
}

// Policy places cells. Decide is called once per cell by the kernel
// (through MakePlan) and by replay; it may keep state across calls.
type Policy interface {
	Name() string
	Decide(c Cell, v View, m *Model) Decision
}

// Names lists the policies usable live; "oracle" exists only in replay.
var Names = []string{"local", "remote", "pingpong", "random", "paper", "ferry"}

// New returns the policy called name.
func New(name string, seed int64) (Policy, error) {
	switch name {
	case "", "local":
		return fixed(Local), nil
	case "remote":
		return fixed(Remote), nil
	case "pingpong":
		return &pingpong{}, nil
	case "random":
		return &random{r: rand.New(rand.NewPCG(uint64(seed), 0x5eed))}, nil
	case "paper":
		return NewPaper(), nil
	case "ferry":
		return NewFerry(), nil
	case "oracle":
		return nil, fmt.Errorf("policy oracle needs the whole session in advance; use it with 'ferry replay TRACE --policy oracle'")
	}
	return nil, fmt.Errorf("unknown policy %q; choose one of %s", name, strings.Join(Names, ", "))
}

// stale returns the names among reads whose newest version is not at loc,
// and their total size.
func stale(reads []string, v View, loc location.Location) ([]string, int64) {
	var names []string
	var n int64
	for _, r := range reads {
		x, ok := v.Var(r)
		if !ok || x.Has(loc) || len(x.At) == 0 {
			continue
		}
		names = append(names, r)
		n += x.Size
	}
	sort.Strings(names)
	return names, n
}

// pinned honours pins and a laptop-only configuration; ok is false if
// the policy may choose.
func pinned(c Cell) (Decision, bool) {
	loc := c.Pin
	locs := c.locations()
	if loc == "" && len(locs) == 1 {
		loc = locs[0]
	}
	if loc == "" {
		return Decision{}, false
	}
	why := "pinned to " + loc.Describe()
	if c.Pin == "" {
		why = "no cloud is configured"
	}
	return Decision{Loc: loc, Reason: why}, true
}

// place builds a decision for loc with the estimated costs of every place.
func place(c Cell, v View, m *Model, loc location.Location, reason string) Decision {
	if !c.locations().Has(loc) {
		// A fixed or replayed placement names a location this session
		// lacks: the laptop is always there.
		reason += "; " + loc.String() + " is not configured, so the laptop"
		loc = Local
	}
	d := Decision{Loc: loc, Reason: reason, Costs: map[location.Location]float64{}}
	for _, l := range c.locations() {
		d.Costs[l] = immediateCost(c, v, m, l) + m.coldCost(l)
	}
	return d
}

// immediateCost is the time to run c at loc now: moving its stale inputs,
// the request's round trip to a cloud kernel, and its runtime there.
func immediateCost(c Cell, v View, m *Model, loc location.Location) float64 {
	rt, _ := m.Runtime(c.Hash, loc)
	wait := rt + inputCost(c.Reads, v, m, loc)
	cost := wait
	if loc != Local {
		wait += m.LinkTo(loc).RTT
		cost = wait + m.cloudTime(loc, rt)
	}
	return cost + m.idleBilling(loc, wait, c.locations())
}

// inputCost is the estimated time to bring the stale values among reads
// to loc: one payload per source, each value from the place it comes
// cheapest from (with several clouds, a value the laptop also holds comes
// from the laptop, not through it from another cloud).
func inputCost(reads []string, v View, m *Model, loc location.Location) float64 {
	bySrc := map[location.Location]Payload{}
	for _, r := range reads {
		x, ok := v.Var(r)
		if !ok || x.Has(loc) || len(x.At) == 0 {
			continue
		}
		src := cheapestSource(x, m, loc)
		bySrc[src] = bySrc[src].Add(x)
	}
	cost := 0.0
	for src, p := range bySrc {
		cost += m.PayloadTime(src, loc, p)
	}
	return cost
}

// cheapestSource is the location of x's newest version it is cheapest to
// move x from to loc, the first of equals in x.At's order.
func cheapestSource(x Var, m *Model, loc location.Location) location.Location {
	p := Payload{}.Add(x)
	best, bestT := x.At[0], m.PayloadTime(x.At[0], loc, p)
	for _, a := range x.At[1:] {
		if t := m.PayloadTime(a, loc, p); t < bestT {
			best, bestT = a, t
		}
	}
	return best
}

type fixed location.Location

func (f fixed) Name() string { return string(f) }
func (f fixed) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		return d
	}
	loc := location.Location(f)
	if locs := c.locations(); loc == Remote && !locs.Has(Remote) && len(locs.Clouds()) > 0 {
		// Only named clouds (--remote gpu=URL): "remote" is the first.
		loc = locs.Clouds()[0]
	}
	return place(c, v, m, loc, "--policy "+string(f)+" runs every cell "+onAt(loc))
}

type pingpong struct{ n int }

func (p *pingpong) Name() string { return "pingpong" }
func (p *pingpong) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		return d
	}
	p.n++
	locs := c.locations()
	return place(c, v, m, locs[(p.n+len(locs)-1)%len(locs)], "--policy pingpong takes the laptop and each cloud in turn")
}

type random struct{ r *rand.Rand }

func (r *random) Name() string { return "random" }
func (r *random) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		return d
	}
	locs := c.locations()
	return place(c, v, m, locs[r.r.IntN(len(locs))], "--policy random places each cell at random")
}

// onAt is "on the laptop", "in the cloud", for reasons.
func onAt(l location.Location) string {
	if l == Local {
		return "on " + l.Describe()
	}
	return "in " + l.Describe()
}
