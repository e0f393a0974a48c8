// Package policy decides where each cell runs. It holds the cost model fed
// by measurements (cell runtimes per location, link bandwidth and round-trip
// time, payload sizes), the interaction model (hot spots, blocks, think
// time), and the policies that use them. The same code decides live in the
// kernel and in `ferry replay`, so a trace re-costs exactly what ran.
package policy

import (
	"math"
	"sort"
)

// Locations Ferry places cells on.
const (
	Local  = "local"
	Remote = "remote"
)

// Other returns the other location.
func Other(loc string) string {
	if loc == Local {
		return Remote
	}
	return Local
}

// Link is the measured connection between the two locations.
type Link struct {
	Bandwidth float64 // bytes per second
	RTT       float64 // seconds
	// Compression is compressed/raw size of payloads (1 = none).
	Compression float64
	// PerTransfer is the fixed cost of one move beyond the round trip:
	// packing, the agent's messages, loading (seconds, measured).
	PerTransfer float64
}

// TransferTime estimates the time to move n bytes in one payload.
func (l Link) TransferTime(n int64) float64 {
	if n <= 0 {
		return 0
	}
	bw := l.Bandwidth
	if bw <= 0 {
		bw = 100e6 / 8
	}
	c := l.Compression
	if c <= 0 || c > 1 {
		c = 1
	}
	return l.RTT + l.PerTransfer + float64(n)*c/bw
}

// Model is what the policies know: measured runtimes, the link and the
// user's interaction pattern. It learns from Observe.
type Model struct {
	Link Link
	// SpeedPrior is the local/remote speed ratio assumed until cells have
	// run at both places (from a calibration run or configuration).
	SpeedPrior float64
	// runtimes[cell][loc] is an exponentially weighted mean in seconds.
	runtimes map[string]map[string]float64
	// reads/writes/sizes remember each cell's last analysis, for look-ahead.
	cells map[string]*cellInfo
	// next[cell] counts which cell followed it, for block prediction.
	next   map[string]map[string]int
	last   string
	runs   map[string]int
	think  float64 // EWMA of think time
	thinkN int     // think times seen
	n      int
}

type cellInfo struct {
	Index  int
	Reads  []string
	Writes []string
	Sizes  map[string]int64
}

// NewModel returns an empty model over link.
func NewModel(link Link) *Model {
	return &Model{Link: link, runtimes: map[string]map[string]float64{}, cells: map[string]*cellInfo{},
		next: map[string]map[string]int{}, runs: map[string]int{}}
}

// Observation is one finished execution.
type Observation struct {
	Cell    string
	Index   int
	Loc     string
	Runtime float64
	Think   float64
	Reads   []string
	Writes  []string
	Sizes   map[string]int64
}

// Observe records a finished execution.
func (m *Model) Observe(o Observation) {
	const alpha = 0.5
	r := m.runtimes[o.Cell]
	if r == nil {
		r = map[string]float64{}
		m.runtimes[o.Cell] = r
	}
	if old, ok := r[o.Loc]; ok {
		r[o.Loc] = alpha*o.Runtime + (1-alpha)*old
	} else {
		r[o.Loc] = o.Runtime
	}
	m.cells[o.Cell] = &cellInfo{Index: o.Index, Reads: o.Reads, Writes: o.Writes, Sizes: o.Sizes}
	if m.last != "" {
		nx := m.next[m.last]
		if nx == nil {
			nx = map[string]int{}
			m.next[m.last] = nx
		}
		nx[o.Cell]++
	}
	m.last = o.Cell
	m.runs[o.Cell]++
	switch {
	case o.Think < 0: // the session's first cell: no think time before it
	case m.thinkN == 0:
		m.think = o.Think
		m.thinkN++
	default:
		m.think = 0.7*m.think + 0.3*o.Think
		m.thinkN++
	}
	m.n++
}

// SpeedRatio is the observed local/remote runtime ratio (the median over
// cells measured at both), or 1 when nothing is known.
func (m *Model) SpeedRatio() float64 {
	var rs []float64
	for _, r := range m.runtimes {
		l, okL := r[Local]
		rm, okR := r[Remote]
		if okL && okR && l > 1e-3 && rm > 1e-3 {
			rs = append(rs, l/rm)
		}
	}
	if len(rs) == 0 {
		if m.SpeedPrior > 0 {
			return m.SpeedPrior
		}
		return 1
	}
	sort.Float64s(rs)
	return rs[len(rs)/2]
}

// Runtime estimates a cell's runtime at loc: measured there, else scaled
// from the other location by the speed ratio, else the median runtime of
// the cells seen so far at the laptop, scaled to loc (a typical cell: so
// an unseen cell with small inputs goes where cells run fastest, and one
// reading large data stays where the data is).
func (m *Model) Runtime(cell, loc string) (float64, bool) {
	r := m.runtimes[cell]
	if v, ok := r[loc]; ok {
		return v, true
	}
	if v, ok := r[Other(loc)]; ok {
		ratio := m.SpeedRatio()
		if loc == Remote {
			return v / ratio, false
		}
		return v * ratio, false
	}
	typical := m.typicalLocal()
	if loc == Remote {
		return typical / m.SpeedRatio(), false
	}
	return typical, false
}

// PriorLocalRuntime is the laptop runtime assumed for a cell before any
// cell has run: a session's first cells (imports, loading data) are seldom
// free. With 0 the first cell always looked cheapest on the laptop, since
// the cloud adds a round trip, and hysteresis then kept the session there
// (replay of the tabular and digits sessions at 1 Gbit/1 ms: 39% and 34%
// slower than all-remote).
const PriorLocalRuntime = 0.1

// typicalLocal is the median laptop runtime of the cells seen so far, or
// PriorLocalRuntime before the first.
func (m *Model) typicalLocal() float64 {
	var rs []float64
	ratio := m.SpeedRatio()
	for _, r := range m.runtimes {
		if v, ok := r[Local]; ok {
			rs = append(rs, v)
		} else if v, ok := r[Remote]; ok {
			rs = append(rs, v*ratio)
		}
	}
	if len(rs) == 0 {
		return PriorLocalRuntime
	}
	sort.Float64s(rs)
	return rs[len(rs)/2]
}

// Runs is how often a cell ran; a cell run again and again is a hot spot.
func (m *Model) Runs(cell string) int { return m.runs[cell] }

// Think is the predicted think time before the next execution.
func (m *Model) Think() float64 { return m.think }

// PredictNext returns up to k cells predicted to run after cell, following
// the most frequent successor each time (a block the user runs in order).
func (m *Model) PredictNext(cell string, k int) []string {
	var out []string
	seen := map[string]bool{cell: true}
	cur := cell
	for len(out) < k {
		nx := m.next[cur]
		best, bestN := "", 0
		for c, n := range nx {
			if n > bestN || (n == bestN && c < best) {
				best, bestN = c, n
			}
		}
		if best == "" || seen[best] {
			break
		}
		seen[best] = true
		out = append(out, best)
		cur = best
	}
	return out
}

// Known returns what the model remembers of a cell's reads and writes.
func (m *Model) Known(cell string) (reads, writes []string, sizes map[string]int64, ok bool) {
	c := m.cells[cell]
	if c == nil {
		return nil, nil, nil, false
	}
	return c.Reads, c.Writes, c.Sizes, true
}

func finite(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return 1e18
	}
	return x
}
