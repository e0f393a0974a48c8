package policy

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// Settings are the conditions a trace is re-costed under.
type Settings struct {
	Link Link
	// RemoteSpeed is how many times faster the remote machine runs a cell
	// than the laptop; 0 means as measured in the trace.
	RemoteSpeed float64
	// CloudPrice is what a cloud kernel costs per hour it exists, in USD
	// (0: cost is not shown).
	CloudPrice float64
	// CloudIdle is --cloud-idle in seconds (0: the cloud kernel is kept
	// to the end): a replay lets the kernel go as the kernel would
	// (Model.ReleaseAfter), writing home what only it holds in that
	// think time, and the next cloud cell starts a new one.
	CloudIdle float64
	// CloudStart is what starting a cloud kernel takes, in seconds: each
	// start (the first cloud cell, the first after a release) waits for
	// it, and the policy prices it (0: starts are free, as before).
	CloudStart float64
	// Objective is what ferry minimises and the oracle optimises
	// (objective.go); empty is time.
	Objective Objective
	// NoWarm re-costs ferry without starting cold cloud kernels in think
	// time (warm.go), to show what that gains.
	NoWarm bool
	// Remembered re-costs the session as its second: the model recalls
	// each cell's laptop runtime from an earlier session (package
	// recall) before the cell first runs, here the trace's own.
	Remembered bool
	// Clouds describes clouds one by one (--remote-speed gpu=12x in
	// replay); a cloud named here is a place the replay may put cells
	// even if the trace never ran one there. What a cloud's entry leaves
	// zero comes from the fields above, which describe every cloud.
	Clouds map[location.Location]CloudSettings
}

// CloudSettings are one cloud's conditions in a replay over several.
type CloudSettings struct {
	// Speed is how many times faster than the laptop it runs cells (0:
	// Settings.RemoteSpeed, else as the trace measured it).
	Speed float64
	// Price is its USD per hour (0: Settings.CloudPrice).
	Price float64
	// Link is its link to the laptop (zero: Settings.Link).
	Link Link
}

// locations are where a replay places cells: Locations over the clouds s
// describes.
func (s Settings) locations(evs []trace.Event) location.Set {
	return Locations(evs, slices.Collect(maps.Keys(s.Clouds))...)
}

// Locations are where a replay of evs may place cells: the laptop, every
// cloud the trace ran cells at and the clouds named; the default cloud
// when that is none.
func Locations(evs []trace.Event, clouds ...location.Location) location.Set {
	locs := append([]location.Location{Local}, clouds...)
	for _, e := range evs {
		locs = append(locs, e.Loc)
	}
	set := location.NewSet(locs...)
	if len(set.Clouds()) == 0 {
		set = location.NewSet(Local, Remote)
	}
	return set
}

// link is cloud c's link to the laptop.
func (s Settings) link(c location.Location) Link {
	if l := s.Clouds[c].Link; l != (Link{}) {
		if l.Compression == 0 {
			l.Compression = s.Link.Compression
		}
		return l
	}
	return s.Link
}

// price is cloud c's USD per hour.
func (s Settings) price(c location.Location) float64 {
	if p := s.Clouds[c].Price; p > 0 {
		return p
	}
	return s.CloudPrice
}

// speeds is each location's speed against the laptop (the laptop's 1):
// as configured for that cloud, as configured for all, or as measured.
func (s Settings) speeds(evs []trace.Event, locs location.Set) map[location.Location]float64 {
	sp := map[location.Location]float64{Local: 1}
	for _, c := range locs.Clouds() {
		switch {
		case s.Clouds[c].Speed > 0:
			sp[c] = s.Clouds[c].Speed
		case s.RemoteSpeed > 0:
			sp[c] = s.RemoteSpeed
		default:
			sp[c] = measuredSpeed(evs, c)
		}
	}
	return sp
}

// Result is a policy's cost on a trace.
type Result struct {
	Policy string `json:"policy"`
	// Seconds is the time the user waits for cells: runtimes, round trips
	// and transfers not hidden in think time.
	Seconds float64 `json:"seconds"`
	// WallSeconds adds the think time, as a recorded run's wall clock does.
	WallSeconds float64  `json:"wall_seconds"`
	BytesMoved  int64    `json:"bytes_moved"`
	Migrations  int      `json:"migrations"`
	CellsRemote int      `json:"cells_remote"`
	Placement   []string `json:"placement,omitempty"`
	// DecideMicros is the mean decision time per cell in microseconds.
	DecideMicros float64 `json:"decide_us"`
	// CloudKernelSeconds is how long a cloud kernel existed (billed from
	// its start to its release or the end); CloudCost that at
	// Settings.CloudPrice; CloudStarts counts the starts.
	CloudKernelSeconds float64 `json:"cloud_kernel_seconds"`
	CloudCost          float64 `json:"cloud_cost"`
	CloudStarts        int     `json:"cloud_starts"`
	// CloudWarmStarts are the starts made in think time (Warm), among
	// CloudStarts.
	CloudWarmStarts int `json:"cloud_warm_starts"`
}

// releaseAfter is how long cloud c's replayed kernel idles before it is
// let go (Model.ReleaseAfter); ok is false if it is not up or no release
// is asked for (--cloud-idle or the objective).
func releaseAfter(c location.Location, k *meter, st simState, m *Model, s Settings) (after float64, ok bool) {
	if k == nil || !k.up || (s.CloudIdle <= 0 && !m.Releases()) {
		return 0, false
	}
	return m.ReleaseAfter(c, time.Duration(s.CloudIdle*float64(time.Second)), st.onlyAt(c)).Seconds(), true
}

// onlyAt is the bytes whose newest version only c holds.
func (st simState) onlyAt(c location.Location) int64 {
	var only int64
	for _, v := range st {
		if v.Has(c) && len(v.At) == 1 {
			only += v.Size
		}
	}
	return only
}

// meter is a replay's cloud kernel: when it runs, since when, and when it
// last ran a cell, billed as backend.Remote bills a real one.
type meter struct {
	up             bool
	since, lastUse float64
	seconds        float64
	starts         int
	// readyAt is when a start begun in think time (Warm) ends; a cell
	// before it waits for the rest.
	readyAt float64
	warms   int
}

// warm starts the kernel at time at, in think time, ready start seconds
// later.
func (k *meter) warm(at, start float64) {
	if k.startIfCold(at) {
		k.readyAt = at + start
		k.warms++
	}
}

// startIfCold starts the kernel at time now if it is not up, and says
// whether it did.
func (k *meter) startIfCold(now float64) bool {
	if k.up {
		return false
	}
	k.up, k.since, k.lastUse = true, now, now
	k.starts++
	return true
}

// stop bills the kernel up to at and lets it go.
func (k *meter) stop(at float64) {
	if k.up {
		k.seconds += max(at-k.since, 0)
		k.up = false
	}
}

// releaseIdle lets cloud c's replayed kernel go if, by now, it has been
// idle past what the model says (Model.ReleaseAfter): what only it holds
// is written home first, in that think time, so those bytes count as
// moved but are not waited for, and it holds nothing afterwards.
func releaseIdle(c location.Location, k *meter, st simState, m *Model, s Settings, now float64, res *Result) (bool, float64) {
	after, ok := releaseAfter(c, k, st, m, s)
	if !ok || now-k.lastUse < after {
		return false, 0
	}
	at := k.lastUse + after
	k.stop(at)
	res.BytesMoved += st.onlyAt(c)
	for _, v := range st {
		if !v.Has(c) {
			continue
		}
		if len(v.At) == 1 {
			v.At = append(v.At, Local)
		}
		v.At = slices.DeleteFunc(v.At, func(l location.Location) bool { return l == c })
	}
	return true, at
}

// laptopRuntimes is each event's runtime on the laptop: as recorded, or
// the recorded cloud runtime times that cloud's speed.
func laptopRuntimes(evs []trace.Event, sp map[location.Location]float64) []float64 {
	out := make([]float64, len(evs))
	for i, e := range evs {
		f := sp[e.Loc]
		if f <= 0 {
			f = 1
		}
		out[i] = e.Runtime * f
	}
	return out
}

// measuredSpeed is cloud c's speed against the laptop as the trace shows
// it: the median laptop/c runtime ratio of cells it ran at both; else,
// for a cell run only at two clouds, through another cloud measured
// against the laptop; else 1.
func measuredSpeed(evs []trace.Event, c location.Location) float64 {
	at := map[string]map[location.Location]float64{}
	for _, e := range evs {
		if at[e.Cell] == nil {
			at[e.Cell] = map[location.Location]float64{}
		}
		at[e.Cell][e.Loc] = e.Runtime
	}
	if r, ok := medianRatio(at, Local, c); ok {
		return r
	}
	var clouds []location.Location
	for _, m := range at {
		for l := range m {
			if l != Local && l != c && !slices.Contains(clouds, l) {
				clouds = append(clouds, l)
			}
		}
	}
	slices.Sort(clouds)
	for _, d := range clouds {
		if base, ok := medianRatio(at, Local, d); ok {
			if r, ok := medianRatio(at, d, c); ok {
				return base * r
			}
		}
	}
	return 1
}

// medianRatio is the median a/b runtime ratio over the cells run at both.
func medianRatio(at map[string]map[location.Location]float64, a, b location.Location) (float64, bool) {
	var rs []float64
	for _, m := range at {
		if x, y := m[a], m[b]; x > 1e-3 && y > 1e-3 {
			rs = append(rs, x/y)
		}
	}
	if len(rs) == 0 {
		return 0, false
	}
	sort.Float64s(rs)
	return rs[len(rs)/2], true
}

// simState is the replay's state map.
type simState map[string]*Var

func (s simState) Var(n string) (Var, bool) {
	v, ok := s[n]
	if !ok {
		return Var{}, false
	}
	return *v, true
}

func (s simState) names() []string {
	out := make([]string, 0, len(s))
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Idler is a policy that uses think time: Idle proposes moves to make
// while the user thinks (prefetch, write-back), each with To set and From
// left to whoever carries it out. The think-time worker calls it after a
// cell, with every known name and the configured locations.
type Idler interface {
	Idle(lastCell string, v View, m *Model, all []string, locs location.Set) []Move
}

// Replay re-costs a trace under a policy, over the laptop and every cloud
// the trace or s names (Settings.locations), each cloud with its own
// speed, link, price and kernel.
func Replay(evs []trace.Event, p Policy, s Settings) Result {
	// Values cost what they took when they moved, where the trace knows.
	evs = trace.Measured(evs)
	locs := s.locations(evs)
	sp := s.speeds(evs, locs)
	rl := laptopRuntimes(evs, sp)
	st := simState{}
	m := s.model(locs, sp)
	if s.Remembered {
		sum, n := map[string]float64{}, map[string]int{}
		for i, e := range evs {
			sum[e.Cell] += rl[i]
			n[e.Cell]++
		}
		m.Remembered = func(cell string) (float64, bool) {
			if n[cell] == 0 {
				return 0, false
			}
			return sum[cell] / float64(n[cell]), true
		}
	}
	if f, ok := p.(*Ferry); ok && s.NoWarm {
		f.NoWarm = true
	}
	res := Result{Policy: p.Name()}
	var decide float64
	last := ""
	clouds := locs.Clouds()
	kernels := map[location.Location]*meter{}
	for _, c := range clouds {
		kernels[c] = &meter{}
	}
	now := 0.0
	m.Cold = func(l location.Location) bool {
		k := kernels[l]
		return k != nil && (!k.up || k.readyAt > now)
	}
	m.StartedAgo = func(l location.Location) float64 {
		if k := kernels[l]; k != nil && k.up && k.readyAt > now {
			return now - k.since
		}
		return 0
	}
	m.UntilRelease = func(l location.Location) float64 {
		after, ok := releaseAfter(l, kernels[l], st, m, s)
		if !ok {
			return math.Inf(1)
		}
		return max(kernels[l].lastUse+after-now, 0)
	}
	anyCold := func() bool {
		for _, k := range kernels {
			if !k.up {
				return true
			}
		}
		return false
	}
	releaseAll := func(at float64) (released bool, last float64) {
		for _, c := range clouds {
			if r, t := releaseIdle(c, kernels[c], st, m, s, at, &res); r {
				released, last = true, max(last, t)
			}
		}
		return released, last
	}
	wp, warms := p.(Warmer)
	for i, e := range evs {
		end := res.WallSeconds // the last cell's
		now = end
		res.WallSeconds += e.Think
		// A cold kernel may be started in this think time (warm.go): at
		// once if it was cold when the last cell ended, else once a
		// release made it so, unless that came past the warm's time.
		var warm Warm
		warmAt, due := -1.0, 0.0
		if warms && last != "" && anyCold() {
			if w, ok := wp.Warm(last, st, m, locs); ok {
				warm, warmAt, due = w, end+w.After, end+w.Due
			}
		}
		if released, at := releaseAll(res.WallSeconds); released && warms && warmAt < 0 && last != "" {
			now = at
			if w, ok := wp.Warm(last, st, m, locs); ok && !w.Dropped(at-end) {
				warm, warmAt, due = w, end+w.After, end+w.Due
			}
		}
		if k := kernels[warm.Loc]; k != nil && warmAt >= 0 && warmAt < res.WallSeconds {
			k.warm(warmAt, s.CloudStart)
			k.lastUse = max(k.lastUse, due)
			if s.CloudStart > 0 {
				m.ObserveStart(warm.Loc, s.CloudStart)
			}
			// A warmed kernel the user is too long in coming back to
			// is let go again, by its idle clock from when its cell was
			// due.
			releaseIdle(warm.Loc, k, st, m, s, res.WallSeconds, &res)
		}
		now = res.WallSeconds
		if id, ok := p.(Idler); ok && last != "" {
			budget := e.Think
			for _, mv := range id.Idle(last, st, m, st.names(), locs) {
				t := inputCost(mv.Names, st, m, mv.To)
				if t > budget {
					break
				}
				budget -= t
				res.BytesMoved += mv.Bytes
				for _, n := range mv.Names {
					if v := st[n]; v != nil && !v.Has(mv.To) {
						v.At = append(v.At, mv.To)
					}
				}
			}
		}
		c := Cell{Hash: e.Cell, Index: e.Index, Reads: e.Reads, Writes: e.Writes, Locs: locs}
		if e.Pinned {
			c.Pin = e.Loc
		}
		seedInputs(st, e)
		t0 := nowMicros()
		d := p.Decide(c, st, m)
		decide += nowMicros() - t0
		k := kernels[d.Loc]
		started := k != nil && k.startIfCold(res.WallSeconds)
		cost, moved := apply(st, e, d.Loc, m)
		run := rl[i]
		if k != nil {
			run = rl[i] / sp[d.Loc]
			cost += m.LinkTo(d.Loc).RTT
			res.CellsRemote++
		}
		if started && s.CloudStart > 0 {
			cost += s.CloudStart
			m.ObserveStart(d.Loc, s.CloudStart)
		}
		if k != nil && k.readyAt > res.WallSeconds {
			cost += k.readyAt - res.WallSeconds // the rest of a warm start
		}
		cost += run
		if moved > 0 {
			res.Migrations++
		}
		res.BytesMoved += moved
		res.Seconds += cost
		res.WallSeconds += cost
		if k != nil {
			k.lastUse = res.WallSeconds
		}
		res.Placement = append(res.Placement, string(d.Loc))
		m.ObserveRuntime(Observation{Cell: e.Cell, Index: e.Index, Loc: d.Loc, Runtime: run, Think: e.Think, Reads: e.Reads, Writes: e.Writes, Sizes: e.Sizes, Pin: c.Pin})
		last = e.Cell
	}
	if len(evs) > 0 {
		res.DecideMicros = decide / float64(len(evs))
	}
	for _, c := range clouds {
		k := kernels[c]
		k.stop(res.WallSeconds)
		res.CloudKernelSeconds += k.seconds
		res.CloudCost += k.seconds * s.price(c) / 3600
		res.CloudStarts += k.starts
		res.CloudWarmStarts += k.warms
	}
	return res
}

// model is the replay's cost model over locs: each cloud's link and
// speed as s gives them.
func (s Settings) model(locs location.Set, sp map[location.Location]float64) *Model {
	m := NewModel(s.link(Remote))
	m.Objective = s.Objective
	m.SpeedPriors = map[location.Location]float64{}
	for _, c := range locs.Clouds() {
		if c != Remote {
			m.SetLink(c, s.link(c))
		}
		m.SpeedPriors[c] = sp[c] // every cloud's: the shared SpeedPrior is never read
	}
	return m
}

// seedInputs puts the files e reads that no cell wrote (the notebook's
// data) on the laptop, where they were before the session, so the policy
// deciding e and apply both see what reading them elsewhere costs.
func seedInputs(st simState, e trace.Event) {
	for _, r := range e.Reads {
		if st[r] == nil && e.ReadSizes[r] > 0 {
			st[r] = &Var{Size: e.ReadSizes[r], Ratio: e.ReadRatios[r], At: []location.Location{Local}, Movable: true}
		}
	}
}

// apply runs event e at loc on the state: stale inputs are moved (one
// payload from each place they come cheapest from, as the kernel moves
// them), outputs live only at loc. It returns the transfer time and bytes.
func apply(st simState, e trace.Event, loc location.Location, m *Model) (float64, int64) {
	cost := inputCost(e.Reads, st, m, loc)
	var moved int64
	for _, r := range e.Reads {
		v := st[r]
		if v == nil || v.Has(loc) || len(v.At) == 0 {
			continue
		}
		moved += v.Size
		v.At = append(v.At, loc)
	}
	for _, w := range e.Writes {
		st[w] = &Var{Size: e.Sizes[w], At: []location.Location{loc}, Movable: true}
	}
	return cost, moved
}

// ReplayAll re-costs a trace under every policy, oracle included.
func ReplayAll(evs []trace.Event, s Settings, seed int64) []Result {
	var out []Result
	for _, name := range Names {
		p, err := New(name, seed)
		if err != nil {
			continue
		}
		out = append(out, Replay(evs, p, s))
	}
	return append(out, Replay(evs, Oracle(evs, s), s))
}

// ByName re-costs under one named policy (oracle included).
func ByName(evs []trace.Event, name string, s Settings, seed int64) (Result, error) {
	switch name {
	case "oracle":
		return Replay(evs, Oracle(evs, s), s), nil
	case "recorded":
		return Replay(evs, Recorded(evs), s), nil
	}
	p, err := New(name, seed)
	if err != nil {
		return Result{}, err
	}
	return Replay(evs, p, s), nil
}

// Fixed returns a policy that places the i-th execution at locs[i] (local
// past the end): it runs the oracle's placement live.
func Fixed(name string, locs []location.Location) Policy {
	return &assignment{name: name, locs: locs}
}

// Placement returns the placement a Fixed policy follows.
func Placement(p Policy) []location.Location {
	if a, ok := p.(*assignment); ok {
		return a.locs
	}
	return nil
}

// assignment replays a precomputed placement.
type assignment struct {
	name string
	locs []location.Location
	i    int
}

func (a *assignment) Name() string { return a.name }
func (a *assignment) Decide(c Cell, v View, m *Model) Decision {
	if d, ok := pinned(c); ok {
		a.i++
		return d
	}
	loc := Local
	if a.i < len(a.locs) {
		loc = a.locs[a.i]
	}
	a.i++
	return place(c, v, m, loc, fmt.Sprintf("%s placement", a.name))
}

// Calibrate estimates the link from a trace's own transfers: the fixed
// cost per move (from small moves) and the bandwidth (from large ones), so
// a replay under the recorded conditions predicts the recorded run.
func Calibrate(evs []trace.Event, base Link) Link {
	l := base
	var small, large []trace.Event
	for _, e := range evs {
		switch {
		case e.BytesMoved > 4<<20:
			large = append(large, e)
		case e.BytesMoved > 0:
			small = append(small, e)
		}
	}
	if len(small) > 0 {
		var sum float64
		for _, e := range small {
			sum += e.TransferSeconds
		}
		l.PerTransfer = max(sum/float64(len(small))-l.RTT, 0)
	}
	if len(large) > 0 {
		var bytes, secs float64
		for _, e := range large {
			bytes += float64(e.BytesMoved)
			secs += max(e.TransferSeconds-l.RTT-l.PerTransfer, 1e-3)
		}
		l.Bandwidth = bytes / secs
	}
	return l
}

// RecordedStart is the mean cloud start a recorded run's cells waited for
// (trace start_s), 0 if none did: a replay's Settings.CloudStart when the
// user names none.
func RecordedStart(evs []trace.Event) float64 {
	var sum float64
	n := 0
	for _, e := range evs {
		if e.StartSeconds > 0 && e.Loc != Local {
			sum += e.StartSeconds
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// Recorded returns a policy that places every execution where the trace
// says it ran: replaying it predicts the recorded run.
func Recorded(evs []trace.Event) Policy {
	locs := make([]location.Location, len(evs))
	for i, e := range evs {
		locs[i] = e.Loc
	}
	return Fixed("recorded", locs)
}
