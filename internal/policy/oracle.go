package policy

import (
	"math"
	"slices"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

func nowMicros() float64 { return float64(time.Now().UnixNano()) / 1e3 }

// Oracle computes the optimal placement of a whole trace under the replay's
// cost model (runtimes, a round trip per remote cell, one transfer per
// version of a variable and location it is read at) and returns a policy
// that replays it. With two locations the optimum is a minimum s-t cut:
// each cell is a node (source side = local); a variable version read on
// the other side of its writer costs one transfer, a hyperedge cost that
// two auxiliary nodes per version express exactly. Files the session read
// before writing them (its input data) start on the laptop. It ignores think-time
// overlap, so a policy that prefetches can come in under it. With several
// clouds see searchOracle.
func Oracle(evs []trace.Event, s Settings) Policy {
	locs := s.locations(evs)
	sp := s.speeds(evs, locs)
	rl := laptopRuntimes(evs, sp)
	if clouds := locs.Clouds(); len(clouds) > 1 {
		return searchOracle(evs, rl, sp, locs, s)
	}
	c := locs.Clouds()[0]
	return cut(evs, rl, scaled(rl, sp[c]), c, s.link(c), s)
}

// scaled is the runtimes rl (the laptop's) at a location speed times
// faster.
func scaled(rl []float64, speed float64) []float64 {
	out := make([]float64, len(rl))
	for i, r := range rl {
		out[i] = r / speed
	}
	return out
}

// OracleFrom is Oracle with each execution's runtime at both locations
// given (e.g. measured by an all-local and an all-remote run of the same
// session). Under s.Objective a cloud cell also costs its weighed cloud
// time, as it does ferry; the kernel's starts and releases are not in the
// cut (a min-cut has no notion of when).
func OracleFrom(evs []trace.Event, rl, rr []float64, s Settings) Policy {
	return cut(evs, rl, rr, Remote, s.Link, s)
}

// searchOracle is the oracle over the laptop and several clouds. The
// optimum is then a multiway cut, NP-hard from three locations on, so it
// is searched for: from the best of all-local and each two-location cut
// (the laptop against one cloud, each exact for its pair), it moves one
// execution, or one run of consecutive executions at one place, to
// another location while the replayed objective (the user's wait, plus
// the objective's weight of billed cloud kernel-seconds) falls, for a few
// sweeps at most. It is a bound to compare policies against, not a proof
// of optimality; TestSeveralCloudsOracle checks it against exhaustive
// search on small traces.
func searchOracle(evs []trace.Event, rl []float64, sp map[location.Location]float64, locs location.Set, s Settings) Policy {
	w := s.Objective.CloudWeight()
	score := func(pl []location.Location) float64 {
		r := Replay(evs, Fixed("oracle", pl), s)
		return r.Seconds + w*r.CloudKernelSeconds
	}
	best := make([]location.Location, len(evs))
	for i := range best {
		best[i] = Local
	}
	bestScore := score(best)
	for _, c := range locs.Clouds() {
		pl := Placement(cut(evs, rl, scaled(rl, sp[c]), c, s.link(c), s))
		if sc := score(pl); sc < bestScore-1e-9 {
			best, bestScore = pl, sc
		}
	}
	try := func(from, to int, loc location.Location) bool {
		pl := slices.Clone(best)
		changed := false
		for i := from; i < to; i++ {
			if !evs[i].Pinned && pl[i] != loc {
				pl[i], changed = loc, true
			}
		}
		if !changed {
			return false
		}
		if sc := score(pl); sc < bestScore-1e-9 {
			best, bestScore = pl, sc
			return true
		}
		return false
	}
	const sweeps = 4
	for range sweeps {
		improved := false
		for i := 0; i < len(best); {
			j := i + 1
			for j < len(best) && best[j] == best[i] {
				j++
			}
			for _, loc := range locs {
				if j-i > 1 && try(i, j, loc) {
					improved = true
				}
			}
			for k := i; k < j; k++ {
				for _, loc := range locs {
					if try(k, k+1, loc) {
						improved = true
					}
				}
			}
			i = j
		}
		if !improved {
			break
		}
	}
	return &assignment{name: "oracle", locs: best}
}

// cut is the two-location oracle between the laptop and cloud c over
// link, rl and rr each execution's runtime at either. A cell pinned to
// another cloud is put on c's side: the cut is then a starting point
// (searchOracle), the pin honoured when it is replayed.
func cut(evs []trace.Event, rl, rr []float64, c location.Location, link Link, s Settings) Policy {
	w := s.Objective.CloudWeight()
	evs = trace.Measured(evs)
	n := len(evs)
	type version struct {
		members []int
		cost    float64
	}
	var vers []*version
	lastWriter := map[string]*version{}
	// Files read before any cell wrote them were on the laptop from the
	// start: a version with the laptop as a member (onLaptop), so a cloud
	// reader pays for it.
	onLaptop := map[*version]bool{}
	for i, e := range evs {
		for _, r := range e.Reads {
			if lastWriter[r] == nil && e.ReadSizes[r] > 0 {
				v := &version{cost: link.payloadTime(Payload{}.Add(Var{Size: e.ReadSizes[r], Ratio: e.ReadRatios[r]}))}
				vers = append(vers, v)
				lastWriter[r] = v
				onLaptop[v] = true
			}
			if v := lastWriter[r]; v != nil && (len(v.members) == 0 || v.members[len(v.members)-1] != i) {
				v.members = append(v.members, i)
			}
		}
		for _, w := range e.Writes {
			v := &version{members: []int{i}, cost: link.TransferTime(e.Sizes[w])}
			vers = append(vers, v)
			lastWriter[w] = v
		}
	}
	src, sink := n+2*len(vers), n+2*len(vers)+1
	g := newFlow(n + 2*len(vers) + 2)
	inf := math.Inf(1)
	for i, e := range evs {
		local, remote := rl[i], rr[i]+link.RTT+w*(rr[i]+link.RTT)
		if e.Pinned {
			if e.Loc == Local {
				remote = inf
			} else {
				local = inf
			}
		}
		g.add(src, i, remote) // cut when i is remote
		g.add(i, sink, local) // cut when i is local
	}
	for k, v := range vers {
		u, w := n+2*k, n+2*k+1
		if onLaptop[v] && v.cost > 0 {
			// The laptop is on the source side: only the "some member is
			// in the cloud" half of the gadget can be cut.
			g.add(src, u, v.cost)
			for _, i := range v.members {
				g.add(u, i, inf)
			}
			continue
		}
		if len(v.members) < 2 || v.cost <= 0 {
			continue
		}
		g.add(src, u, v.cost)
		g.add(w, sink, v.cost)
		for _, i := range v.members {
			g.add(u, i, inf)
			g.add(i, w, inf)
		}
	}
	g.maxflow(src, sink)
	side := g.sourceSide(src)
	locs := make([]location.Location, n)
	for i := range locs {
		if side[i] {
			locs[i] = Local
		} else {
			locs[i] = c
		}
	}
	return &assignment{name: "oracle", locs: locs}
}

// flow is Dinic's maximum flow on float capacities.
type flow struct {
	head        []int
	to, next    []int
	cap         []float64
	level, iter []int
}

func newFlow(n int) *flow {
	f := &flow{head: make([]int, n), level: make([]int, n), iter: make([]int, n)}
	for i := range f.head {
		f.head[i] = -1
	}
	return f
}

func (f *flow) add(a, b int, c float64) {
	f.to = append(f.to, b)
	f.cap = append(f.cap, c)
	f.next = append(f.next, f.head[a])
	f.head[a] = len(f.to) - 1
	f.to = append(f.to, a)
	f.cap = append(f.cap, 0)
	f.next = append(f.next, f.head[b])
	f.head[b] = len(f.to) - 1
}

const eps = 1e-12

func (f *flow) bfs(s, t int) bool {
	for i := range f.level {
		f.level[i] = -1
	}
	f.level[s] = 0
	q := []int{s}
	for len(q) > 0 {
		x := q[0]
		q = q[1:]
		for e := f.head[x]; e >= 0; e = f.next[e] {
			if f.cap[e] > eps && f.level[f.to[e]] < 0 {
				f.level[f.to[e]] = f.level[x] + 1
				q = append(q, f.to[e])
			}
		}
	}
	return f.level[t] >= 0
}

func (f *flow) dfs(x, t int, pushed float64) float64 {
	if x == t {
		return pushed
	}
	for ; f.iter[x] >= 0; f.iter[x] = f.next[f.iter[x]] {
		e := f.iter[x]
		y := f.to[e]
		if f.cap[e] > eps && f.level[y] == f.level[x]+1 {
			d := f.dfs(y, t, math.Min(pushed, f.cap[e]))
			if d > eps {
				f.cap[e] -= d
				f.cap[e^1] += d
				return d
			}
		}
	}
	return 0
}

func (f *flow) maxflow(s, t int) float64 {
	var total float64
	for f.bfs(s, t) {
		copy(f.iter, f.head)
		for {
			d := f.dfs(s, t, math.Inf(1))
			if d <= eps {
				break
			}
			total += d
		}
	}
	return total
}

// sourceSide marks the nodes reachable from s in the residual graph.
func (f *flow) sourceSide(s int) []bool {
	seen := make([]bool, len(f.head))
	seen[s] = true
	q := []int{s}
	for len(q) > 0 {
		x := q[0]
		q = q[1:]
		for e := f.head[x]; e >= 0; e = f.next[e] {
			if f.cap[e] > eps && !seen[f.to[e]] {
				seen[f.to[e]] = true
				q = append(q, f.to[e])
			}
		}
	}
	return seen
}
