// Package policy decides where each cell runs. It holds the cost model fed
// by measurements (cell runtimes per location, link bandwidth and round-trip
// time, payload sizes), the interaction model (hot spots, blocks, think
// time), and the policies that use them. The same code decides live in the
// kernel and in `ferry replay`, so a trace re-costs exactly what ran.
package policy

import (
	"math"
	"slices"
	"sort"
	"sync"

	"github.com/ferry-nb/ferry/internal/location"
)

// The laptop and the default cloud, for the policies that know them by
// role (the fixed baselines, the seed paper's home-and-cloud model).
const (
	Local  = location.Local
	Remote = location.Remote
)

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
	return l.payloadTime(Payload{Raw: n})
}

// payloadTime estimates the time to move p in one payload: the link's
// compression applies to the bytes whose own is not known, never twice.
func (l Link) payloadTime(p Payload) float64 {
	if p.Raw <= 0 && p.Sent <= 0 {
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
	return l.RTT + l.PerTransfer + (float64(max(p.Raw, 0))*c+max(p.Sent, 0))/bw
}

// Payload is what one move would carry, in raw bytes whose compression is
// not known (the link's measured compression applies) and the bytes on the
// link of values whose compression was estimated (Var.Ratio).
type Payload struct {
	Raw  int64
	Sent float64
}

// Add is p with x's bytes.
func (p Payload) Add(x Var) Payload {
	if x.Ratio > 0 && x.Ratio <= 1 {
		p.Sent += float64(x.Size) * x.Ratio
	} else {
		p.Raw += x.Size
	}
	return p
}

// PayloadOf is the payload of moving names, as v knows them.
func PayloadOf(v View, names []string) Payload {
	var p Payload
	for _, n := range names {
		if x, ok := v.Var(n); ok {
			p = p.Add(x)
		}
	}
	return p
}

// Model is what the policies know: measured runtimes, the link and the
// user's interaction pattern. It learns only through its Observe methods,
// one per kind of measurement, each called from one place in the kernel:
// ObserveRuntime after every cell, ObserveTransfer after every move (its
// own time, never a kernel start or a recompute), ObserveCompression from
// a large payload, ObserveRTT from a link probe, ObserveStart from a
// kernel start. Policies read it.
type Model struct {
	// Objective is what the ferry policy minimises (objective.go); the
	// zero value is ObjectiveTime.
	Objective Objective
	// Cold, if set, reports whether loc's kernel is not running now, so
	// that running a cell there first pays the kernel's start (StartCost).
	// The kernel sets it at construction; replay leaves it nil (a trace
	// does not record which kernels ran).
	Cold func(loc location.Location) bool
	// StartedAgo, if set, is how many seconds ago a start of loc's kernel
	// began that is still under way (0 if none): a kernel started in
	// think time (Warm) has only the rest of its start left to wait for.
	StartedAgo func(loc location.Location) float64
	// UntilRelease, if set, is how many seconds loc's running kernel has
	// left before an idle release would let it go if no cell ran there
	// from now on (+Inf when none would): until then it is billed whatever
	// runs where (idleBilling). The kernel and replay set it; nil means no
	// kernel is known to be running.
	UntilRelease func(loc location.Location) float64
	// Remembered, if set, is a cell's laptop runtime from an earlier
	// session (package recall), for a cell not yet run in this one. The
	// kernel sets it at construction; replay with --remembered sets it
	// from the trace itself.
	Remembered func(cell string) (laptopSeconds float64, ok bool)
	// startMu guards starts: a start ends on whichever goroutine needed
	// the kernel (the kernel's pre-start, a cell), not only the shell
	// worker that plans.
	startMu sync.Mutex
	starts  map[location.Location]float64

	// Link is the default cloud's (Remote's) link to the laptop, and the
	// starting point of every other cloud's until that one is configured
	// (SetLink) or measured; read it through LinkTo. The Observe methods
	// set it (and by whoever builds the model, as the starting point).
	Link Link
	// links are the other clouds' links, each its own once configured or
	// first measured: a GPU cloud across an ocean and a CPU cloud next
	// door differ by an order of magnitude in round trip.
	links map[location.Location]*Link
	// compMeasured is set once a payload's compression was measured: the
	// first measurement replaces the configured prior.
	compMeasured bool
	// SpeedPrior is how many times faster than the laptop a cloud is
	// assumed to run cells until cells have run at both places (from a
	// calibration run or configuration); SpeedPriors overrides it per
	// cloud (--remote-speed gpu=8x,cpu=2x).
	SpeedPrior  float64
	SpeedPriors map[location.Location]float64
	// calibrated is each cloud's speed by the calibration (package
	// calibrate), below any configured prior: --remote-speed overrides it.
	// A calibration ends on whichever goroutine ran it (a kernel's start
	// at connect, think time), hence its own lock.
	calibMu    sync.Mutex
	calibrated map[location.Location]float64
	// runtimes[cell][loc] is an exponentially weighted mean in seconds.
	runtimes map[string]map[location.Location]float64
	// reads/writes/sizes remember each cell's last analysis, for look-ahead.
	cells map[string]*cellInfo
	// next[cell] counts which cell followed it, for block prediction.
	next   map[string]map[string]int
	last   string
	runs   map[string]int
	think  float64 // EWMA of think time
	thinkN int     // think times seen
	// thinkBefore[cell] are the last few think times before that cell
	// ran: a user reads a plot for seconds but edits and re-runs a
	// training cell after minutes.
	thinkBefore map[string][]float64
	n           int
}

type cellInfo struct {
	Index  int
	Reads  []string
	Writes []string
	Sizes  map[string]int64
	Pin    location.Location
}

// NewModel returns an empty model over link.
func NewModel(link Link) *Model {
	return &Model{Link: link, runtimes: map[string]map[location.Location]float64{}, cells: map[string]*cellInfo{},
		next: map[string]map[string]int{}, runs: map[string]int{}}
}

// Observation is one finished execution.
type Observation struct {
	Cell    string
	Index   int
	Loc     location.Location
	Runtime float64
	Think   float64
	Reads   []string
	Writes  []string
	Sizes   map[string]int64
	// Pin is where the cell was pinned ("" if free): a %%ferry pin, or
	// the laptop for state that cannot move.
	Pin location.Location
}

// ObserveRuntime records a finished execution: its runtime where it ran,
// its reads and writes for look-ahead, and the think time before it.
func (m *Model) ObserveRuntime(o Observation) {
	const alpha = 0.5
	r := m.runtimes[o.Cell]
	if r == nil {
		r = map[location.Location]float64{}
		m.runtimes[o.Cell] = r
	}
	if old, ok := r[o.Loc]; ok {
		r[o.Loc] = alpha*o.Runtime + (1-alpha)*old
	} else {
		r[o.Loc] = o.Runtime
	}
	m.cells[o.Cell] = &cellInfo{Index: o.Index, Reads: o.Reads, Writes: o.Writes, Sizes: o.Sizes, Pin: o.Pin}
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
	if o.Think >= 0 {
		if m.thinkBefore == nil {
			m.thinkBefore = map[string][]float64{}
		}
		tb := append(m.thinkBefore[o.Cell], o.Think)
		m.thinkBefore[o.Cell] = tb[max(len(tb)-thinkKept, 0):]
	}
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

// ObserveTransfer records one move of sent bytes from one location to
// another that took seconds, from the pack request to the target's
// confirmation (a kernel start before it is not part of it). A large move
// measures the bandwidth, a small one the fixed cost per move, of the
// cloud's link. A move between two clouds passes through Ferry over both
// links and says nothing about either alone: it is not learnt from.
func (m *Model) ObserveTransfer(from, to location.Location, sent int64, seconds float64) {
	cloud, ok := cloudEnd(from, to)
	if !ok {
		return
	}
	l := m.linkFor(cloud)
	switch {
	case sent <= 0 || seconds <= 0:
	case sent > 4<<20:
		bw := float64(sent) / max(seconds-l.PerTransfer, 1e-3)
		if l.Bandwidth <= 0 {
			l.Bandwidth = bw
		} else {
			l.Bandwidth = 0.7*l.Bandwidth + 0.3*bw
		}
	default:
		// A small move costs mostly its fixed overhead. TransferTime
		// counts compression, but sent bytes are already compressed.
		raw := Link{Bandwidth: l.Bandwidth, RTT: l.RTT, PerTransfer: l.PerTransfer}
		over := max(seconds-raw.TransferTime(sent)+l.PerTransfer, 0)
		l.PerTransfer = 0.7*l.PerTransfer + 0.3*over
	}
}

// cloudEnd is the cloud of a move between the laptop and one cloud.
func cloudEnd(from, to location.Location) (location.Location, bool) {
	switch {
	case from == Local && to != Local:
		return to, true
	case to == Local && from != Local:
		return from, true
	}
	return "", false
}

// linkFor is loc's link, to be changed by an observation: the default
// cloud's is Link; another cloud's starts as a copy of what is known of
// the default one.
func (m *Model) linkFor(loc location.Location) *Link {
	if loc == Remote || loc == Local {
		return &m.Link
	}
	if l, ok := m.links[loc]; ok {
		return l
	}
	if m.links == nil {
		m.links = map[location.Location]*Link{}
	}
	l := m.Link
	m.links[loc] = &l
	return &l
}

// SetLink configures cloud loc's link (--bandwidth gpu=20Mbit), the
// starting point its measurements refine.
func (m *Model) SetLink(loc location.Location, l Link) {
	*m.linkFor(loc) = l
}

// LinkTo is the link between the laptop and cloud loc (the default cloud's
// for the laptop itself, which nothing crosses). Payload compression is
// the payloads' property, measured on any link, so every link shares it.
func (m *Model) LinkTo(loc location.Location) Link {
	l := m.Link
	if x, ok := m.links[loc]; ok && loc != Remote {
		l = *x
		l.Compression = m.Link.Compression
	}
	return l
}

// MoveTime estimates moving n bytes in one payload from one location to
// another. Between two clouds the payload passes through Ferry, which
// streams it chunk by chunk: both round trips and fixed costs are paid,
// and the slower link sets the pace.
func (m *Model) MoveTime(from, to location.Location, n int64) float64 {
	return m.PayloadTime(from, to, Payload{Raw: n})
}

// PayloadTime is MoveTime for a payload whose values' compression may be
// known (Payload).
func (m *Model) PayloadTime(from, to location.Location, p Payload) float64 {
	if (p.Raw <= 0 && p.Sent <= 0) || from == to {
		return 0
	}
	if cloud, ok := cloudEnd(from, to); ok {
		return m.LinkTo(cloud).payloadTime(p)
	}
	if from == Local || to == Local {
		return m.Link.payloadTime(p) // a laptop-to-laptop move: none is planned
	}
	a, b := m.LinkTo(from), m.LinkTo(to)
	bw := min(orDefault(a.Bandwidth), orDefault(b.Bandwidth))
	relay := Link{Bandwidth: bw, RTT: a.RTT + b.RTT, PerTransfer: a.PerTransfer + b.PerTransfer, Compression: a.Compression}
	return relay.payloadTime(p)
}

func orDefault(bw float64) float64 {
	if bw <= 0 {
		return 100e6 / 8
	}
	return bw
}

// ObserveCompression records what compression achieved on one payload of
// raw bytes sent as sent bytes, for the estimate of future moves (sizes
// are raw). Only payloads over 1 MiB say anything.
func (m *Model) ObserveCompression(raw, sent int64) {
	if raw <= 1<<20 || sent <= 0 {
		return
	}
	c := float64(sent) / float64(raw)
	if l := &m.Link; !m.compMeasured || l.Compression <= 0 || l.Compression > 1 {
		l.Compression = c // the first measurement replaces the prior
		m.compMeasured = true
	} else {
		l.Compression = 0.7*l.Compression + 0.3*c
	}
}

// ObserveRTT records a probed round trip to cloud loc, blended into the running
// estimate so one slow probe does not swing placement; a configured round
// trip is the starting point.
func (m *Model) ObserveRTT(loc location.Location, seconds float64) {
	if seconds <= 0 || loc == Local {
		return
	}
	l := m.linkFor(loc)
	if l.RTT <= 0 {
		l.RTT = seconds
	} else {
		l.RTT = 0.7*l.RTT + 0.3*seconds
	}
}

// ObserveStart records that starting loc's kernel took seconds, from the
// request until it answered. The kernel calls it after each start it
// waited for; a start under a second (a warm laptop kernel) is noise and
// is recorded too, as it costs next to nothing in plans.
func (m *Model) ObserveStart(loc location.Location, seconds float64) {
	if seconds <= 0 {
		return
	}
	m.startMu.Lock()
	defer m.startMu.Unlock()
	if m.starts == nil {
		m.starts = map[location.Location]float64{}
	}
	if old, ok := m.starts[loc]; ok {
		m.starts[loc] = 0.5*old + 0.5*seconds
	} else {
		m.starts[loc] = seconds
	}
}

// StartCost is what running a cell at loc costs before it runs: the
// measured start of loc's kernel if it is not running now (Cold), less
// what a start under way has done already (StartedAgo), else 0.
// A location never started costs nothing here: there is no measurement,
// and a guess would keep a fresh session off the cloud for ever.
func (m *Model) StartCost(loc location.Location) float64 {
	if m.Cold == nil || !m.Cold(loc) {
		return 0
	}
	left := m.StartSeconds(loc)
	if m.StartedAgo != nil {
		left = max(left-m.StartedAgo(loc), 0)
	}
	return left
}

// StartSeconds is the measured start of loc's kernel (a blend of the
// starts seen), 0 before the first.
func (m *Model) StartSeconds(loc location.Location) float64 {
	m.startMu.Lock()
	defer m.startMu.Unlock()
	return m.starts[loc]
}

// Speed is how many times faster loc runs cells than the laptop: the
// median over cells measured at both of laptop/loc runtime; else, through
// a cloud whose speed is measured, that cloud's speed times the median
// ratio between the two; else loc's configured prior, the shared prior
// (--remote-speed), its calibration, or 1 when nothing is known. The
// laptop's is 1.
func (m *Model) Speed(loc location.Location) float64 {
	v, _ := m.SpeedWhy(loc)
	return v
}

// SpeedWhy is Speed with where it comes from, for %ferry status:
// "measured", "configured", "calibrated" or "assumed".
func (m *Model) SpeedWhy(loc location.Location) (float64, string) {
	if loc == Local {
		return 1, "measured"
	}
	if r, ok := m.measuredRatio(Local, loc); ok {
		return r, "measured"
	}
	// One step through another cloud: with three locations a cell may
	// have run at both clouds and never on the laptop.
	var via []float64
	for c := range m.cloudsMeasured() {
		if c == loc {
			continue
		}
		if base, ok := m.measuredRatio(Local, c); ok {
			if r, ok := m.measuredRatio(c, loc); ok {
				via = append(via, base*r)
			}
		}
	}
	if len(via) > 0 {
		sort.Float64s(via)
		return via[len(via)/2], "measured"
	}
	if p := m.SpeedPriors[loc]; p > 0 {
		return p, "configured"
	}
	if m.SpeedPrior > 0 {
		return m.SpeedPrior, "configured"
	}
	m.calibMu.Lock()
	c := m.calibrated[loc]
	m.calibMu.Unlock()
	if c > 0 {
		return c, "calibrated"
	}
	return 1, "assumed"
}

// ObserveCalibration records cloud loc's speed by the calibration: how
// many times faster than the laptop it ran the same short loop and BLAS
// product. Any goroutine may call it.
func (m *Model) ObserveCalibration(loc location.Location, speed float64) {
	if loc == Local || !(speed > 0) || math.IsInf(speed, 0) {
		return
	}
	m.calibMu.Lock()
	defer m.calibMu.Unlock()
	if m.calibrated == nil {
		m.calibrated = map[location.Location]float64{}
	}
	m.calibrated[loc] = speed
}

// measuredRatio is the median runtime ratio at a over at b of the cells
// measured at both.
func (m *Model) measuredRatio(a, b location.Location) (float64, bool) {
	var rs []float64
	for _, r := range m.runtimes {
		x, okA := r[a]
		y, okB := r[b]
		if okA && okB && x > 1e-3 && y > 1e-3 {
			rs = append(rs, x/y)
		}
	}
	if len(rs) == 0 {
		return 0, false
	}
	sort.Float64s(rs)
	return rs[len(rs)/2], true
}

// cloudsMeasured is every cloud some cell ran at.
func (m *Model) cloudsMeasured() map[location.Location]bool {
	out := map[location.Location]bool{}
	for _, r := range m.runtimes {
		for l := range r {
			if l != Local {
				out[l] = true
			}
		}
	}
	return out
}

// Runtime estimates a cell's runtime at loc: measured there, else scaled
// from the other location by the speed ratio, else its laptop runtime
// remembered from an earlier session, scaled, else the mean runtime of
// the cells seen so far at the laptop, scaled to loc (a typical cell: so
// an unseen cell with small inputs goes where cells run fastest, and one
// reading large data stays where the data is).
func (m *Model) Runtime(cell string, loc location.Location) (float64, bool) {
	r := m.runtimes[cell]
	if v, ok := r[loc]; ok {
		return v, true
	}
	// Scale from the laptop's time if measured, else from a cloud's.
	if v, ok := r[Local]; ok {
		return v / m.Speed(loc), false
	}
	// Else from a cloud's, the first by name for a deterministic pick.
	var at location.Location
	for l := range r {
		if at == "" || l < at {
			at = l
		}
	}
	if at != "" {
		return r[at] * m.Speed(at) / m.Speed(loc), false
	}
	// Else as it ran in an earlier session: a notebook's data-loading
	// cell costs seconds the typical cell does not.
	if m.Remembered != nil {
		if v, ok := m.Remembered(cell); ok {
			return v / m.Speed(loc), false
		}
	}
	return m.typicalLocal() / m.Speed(loc), false
}

// PriorLocalRuntime is the laptop runtime assumed for a cell before any
// cell has run: a session's first cells (imports, loading data) are seldom
// free. With 0 the first cell always looked cheapest on the laptop, since
// the cloud adds a round trip, and hysteresis then kept the session there
// (replay of the tabular and digits sessions at 1 Gbit/1 ms: 39% and 34%
// slower than all-remote).
const PriorLocalRuntime = 0.1

// typicalLocal is what an unseen cell is expected to take on the laptop:
// the middle of the range of laptop runtimes seen so far (halfway between
// the quickest and the slowest cell), or PriorLocalRuntime before the
// first. Where a cell runs is a choice between costs linear in its
// runtime, and for an unseen cell that runtime is only known to lie
// somewhere in what the session has shown; the choice that loses least in
// the worst case over that range (minimax regret) is the one that is
// cheaper at its middle. The mean assumes the unseen cell is drawn like
// the cells before it, but notebooks run their quick loading and
// inspection cells first and their training cells later: live on the
// raster session over the home link, the first training cell came after
// cells of 2.33, 0.09, 1.50 and 0.09 s, was estimated at their mean, 0.84
// s on the laptop against 0.87 s in the cloud, and ran 12.4 s on the
// laptop (the middle, 1.21 s, sends it up with 1.1 MB of features). Before
// that the median had kept a 26 s training cell on the laptop at 20
// Mbit/s. An unseen quick cell sent to the cloud the other way loses only
// its inputs' transfer and a round trip.
func (m *Model) typicalLocal() float64 {
	var rs []float64
	speeds := map[location.Location]float64{} // Speed walks every cell: once per cloud
	for _, r := range m.runtimes {
		if v, ok := r[Local]; ok {
			rs = append(rs, v)
			continue
		}
		// Measured only in clouds: in laptop seconds, from the first.
		var at location.Location
		for l := range r {
			if at == "" || l < at {
				at = l
			}
		}
		if at != "" {
			sp, ok := speeds[at]
			if !ok {
				sp = m.Speed(at)
				speeds[at] = sp
			}
			rs = append(rs, r[at]*sp)
		}
	}
	if len(rs) == 0 {
		return PriorLocalRuntime
	}
	return (slices.Min(rs) + slices.Max(rs)) / 2
}

// Runs is how often a cell ran; a cell run again and again is a hot spot.
func (m *Model) Runs(cell string) int { return m.runs[cell] }

// Think is the predicted think time before the next execution.
func (m *Model) Think() float64 { return m.think }

// thinkKept is how many think times before each cell ThinkBefore weighs.
const thinkKept = 3

// ThinkBefore is a late estimate of the think time before cell runs: the
// longest of the last few the user took before it, else Think. Late on
// purpose: it times a kernel's start in think time (Warm), and a start
// begun too late costs the cell at most the rest of the start, one begun
// too early bills the idle kernel and, if it is let go before the cell
// comes, the whole start in vain.
func (m *Model) ThinkBefore(cell string) float64 {
	tb := m.thinkBefore[cell]
	if len(tb) == 0 {
		return m.think
	}
	return slices.Max(tb)
}

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

// PinnedTo is where a known cell was pinned when it last ran ("" if free
// or unknown).
func (m *Model) PinnedTo(cell string) location.Location {
	if c := m.cells[cell]; c != nil {
		return c.Pin
	}
	return ""
}

func finite(x float64) float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return 1e18
	}
	return x
}
