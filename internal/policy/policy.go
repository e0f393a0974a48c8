package policy

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
)

// Var is what a policy sees of one variable.
type Var struct {
	Size int64
	// At lists the locations holding the newest version.
	At      []string
	Movable bool
}

// Has reports whether loc holds the newest version.
func (v Var) Has(loc string) bool {
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
	Hash   string
	Index  int
	Reads  []string
	Writes []string
	// Pin forces a location ("" if free): a %%ferry pin or unmovable state.
	Pin string
	// HasRemote is false when no remote backend is configured.
	NoRemote bool
}

// Decision is where a cell runs and why.
type Decision struct {
	Loc    string
	Costs  map[string]float64 // estimated seconds per location
	Move   []string           // names to bring to Loc before the cell
	Bytes  int64
	Reason string
}

// Policy places cells.
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
func stale(reads []string, v View, loc string) ([]string, int64) {
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

// pinned honours pins and missing backends; ok is false if the policy
// may choose.
func pinned(c Cell, v View) (Decision, bool) {
	loc := c.Pin
	if loc == "" && c.NoRemote {
		loc = Local
	}
	if loc == "" {
		return Decision{}, false
	}
	mv, b := stale(c.Reads, v, loc)
	why := "pinned to " + loc
	if c.NoRemote && c.Pin == "" {
		why = "no remote backend"
	}
	return Decision{Loc: loc, Move: mv, Bytes: b, Reason: why}, true
}

// place builds a decision for loc with the estimated costs of both places.
func place(c Cell, v View, m *Model, loc, reason string) Decision {
	d := Decision{Loc: loc, Reason: reason, Costs: map[string]float64{}}
	for _, l := range []string{Local, Remote} {
		d.Costs[l] = immediateCost(c, v, m, l)
	}
	d.Move, d.Bytes = stale(c.Reads, v, loc)
	return d
}

// immediateCost is the time to run c at loc now: moving its stale inputs,
// the request's round trip to a remote kernel, and its runtime there.
func immediateCost(c Cell, v View, m *Model, loc string) float64 {
	_, b := stale(c.Reads, v, loc)
	rt, _ := m.Runtime(c.Hash, loc)
	cost := rt + m.Link.TransferTime(b)
	if loc == Remote {
		cost += m.Link.RTT
	}
	return cost
}

type fixed string

func (f fixed) Name() string { return string(f) }
func (f fixed) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c, v); ok {
		return d
	}
	return place(c, v, m, string(f), "policy "+string(f))
}

type pingpong struct{ n int }

func (p *pingpong) Name() string { return "pingpong" }
func (p *pingpong) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c, v); ok {
		return d
	}
	p.n++
	loc := Local
	if p.n%2 == 0 {
		loc = Remote
	}
	return place(c, v, m, loc, "pingpong alternates")
}

type random struct{ r *rand.Rand }

func (r *random) Name() string { return "random" }
func (r *random) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c, v); ok {
		return d
	}
	loc := Local
	if r.r.IntN(2) == 1 {
		loc = Remote
	}
	return place(c, v, m, loc, "random placement")
}
