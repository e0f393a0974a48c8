package policy

import (
	"fmt"
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

// releaseIdle lets the replay's cloud kernel go if, by now, it has been
// idle past what the model says (Model.ReleaseAfter): what only it holds
// is written home first, in that think time, so those bytes count as
// moved but are not waited for, and it holds nothing afterwards.
func releaseIdle(k *meter, st simState, m *Model, s Settings, now float64, res *Result) (bool, float64) {
	if !k.up || (s.CloudIdle <= 0 && !m.Releases()) {
		return false, 0
	}
	var only int64
	for _, v := range st {
		if v.Has(Remote) && !v.Has(Local) {
			only += v.Size
		}
	}
	after := m.ReleaseAfter(Remote, time.Duration(s.CloudIdle*float64(time.Second)), only).Seconds()
	if now-k.lastUse < after {
		return false, 0
	}
	at := k.lastUse + after
	k.stop(at)
	res.BytesMoved += only
	for _, v := range st {
		if !v.Has(Remote) {
			continue
		}
		if !v.Has(Local) {
			v.At = append(v.At, Local)
		}
		v.At = slices.DeleteFunc(v.At, func(l location.Location) bool { return l == Remote })
	}
	return true, at
}

// runtimes returns each event's runtime at local and remote under s.
func runtimes(evs []trace.Event, s Settings) (local, remote []float64) {
	speed := s.RemoteSpeed
	if speed <= 0 {
		speed = measuredSpeed(evs)
	}
	local, remote = make([]float64, len(evs)), make([]float64, len(evs))
	for i, e := range evs {
		if e.Loc == Local {
			local[i] = e.Runtime
		} else {
			local[i] = e.Runtime * speed
		}
		remote[i] = local[i] / speed
	}
	return local, remote
}

// measuredSpeed is the median local/remote runtime ratio of cells the trace
// ran at both places, or 1.
func measuredSpeed(evs []trace.Event) float64 {
	at := map[string]map[location.Location]float64{}
	for _, e := range evs {
		if at[e.Cell] == nil {
			at[e.Cell] = map[location.Location]float64{}
		}
		at[e.Cell][e.Loc] = e.Runtime
	}
	var rs []float64
	for _, m := range at {
		if l, r := m[Local], m[Remote]; l > 1e-3 && r > 1e-3 {
			rs = append(rs, l/r)
		}
	}
	if len(rs) == 0 {
		return 1
	}
	sort.Float64s(rs)
	return rs[len(rs)/2]
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

// Replay re-costs a trace under a policy.
func Replay(evs []trace.Event, p Policy, s Settings) Result {
	// Values cost what they took when they moved, where the trace knows.
	evs = trace.Measured(evs)
	rl, rr := runtimes(evs, s)
	st := simState{}
	m := NewModel(s.Link)
	m.Objective = s.Objective
	m.SpeedPrior = s.RemoteSpeed
	if m.SpeedPrior <= 0 {
		m.SpeedPrior = measuredSpeed(evs)
	}
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
	var cloud meter
	now := 0.0
	m.Cold = func(l location.Location) bool { return l == Remote && (!cloud.up || cloud.readyAt > now) }
	m.StartedAgo = func(l location.Location) float64 {
		if l == Remote && cloud.up && cloud.readyAt > now {
			return now - cloud.since
		}
		return 0
	}
	wp, warms := p.(Warmer)
	for i, e := range evs {
		end := res.WallSeconds // the last cell's
		now = end
		res.WallSeconds += e.Think
		// A cold kernel may be started in this think time (warm.go): at
		// once if it was cold when the last cell ended, else once a
		// release made it so, unless that came past the warm's time.
		warmAt, due := -1.0, 0.0
		if warms && last != "" && !cloud.up {
			if w, ok := wp.Warm(last, st, m, nil); ok {
				warmAt, due = end+w.After, end+w.Due
			}
		}
		if released, at := releaseIdle(&cloud, st, m, s, res.WallSeconds, &res); released && warms && warmAt < 0 && last != "" {
			now = at
			if w, ok := wp.Warm(last, st, m, nil); ok && !w.Dropped(at-end) {
				warmAt, due = end+w.After, end+w.Due
			}
		}
		if warmAt >= 0 && warmAt < res.WallSeconds {
			cloud.warm(warmAt, s.CloudStart)
			cloud.lastUse = max(cloud.lastUse, due)
			if s.CloudStart > 0 {
				m.ObserveStart(Remote, s.CloudStart)
			}
			// A warmed kernel the user is too long in coming back to
			// is let go again, by its idle clock from when its cell was
			// due.
			releaseIdle(&cloud, st, m, s, res.WallSeconds, &res)
		}
		now = res.WallSeconds
		if id, ok := p.(Idler); ok && last != "" {
			budget := e.Think
			for _, mv := range id.Idle(last, st, m, st.names(), nil) {
				t := s.Link.TransferTime(mv.Bytes)
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
		c := Cell{Hash: e.Cell, Index: e.Index, Reads: e.Reads, Writes: e.Writes}
		if e.Pinned {
			c.Pin = e.Loc
		}
		seedInputs(st, e)
		t0 := nowMicros()
		d := p.Decide(c, st, m)
		decide += nowMicros() - t0
		started := d.Loc == Remote && cloud.startIfCold(res.WallSeconds)
		cost, moved := apply(st, e, d.Loc, s.Link)
		run := rl[i]
		if d.Loc == Remote {
			run = rr[i]
			cost += s.Link.RTT
			res.CellsRemote++
		}
		if started && s.CloudStart > 0 {
			cost += s.CloudStart
			m.ObserveStart(Remote, s.CloudStart)
		}
		if d.Loc == Remote && cloud.readyAt > res.WallSeconds {
			cost += cloud.readyAt - res.WallSeconds // the rest of a warm start
		}
		cost += run
		if moved > 0 {
			res.Migrations++
		}
		res.BytesMoved += moved
		res.Seconds += cost
		res.WallSeconds += cost
		if d.Loc == Remote {
			cloud.lastUse = res.WallSeconds
		}
		res.Placement = append(res.Placement, string(d.Loc))
		m.ObserveRuntime(Observation{Cell: e.Cell, Index: e.Index, Loc: d.Loc, Runtime: run, Think: e.Think, Reads: e.Reads, Writes: e.Writes, Sizes: e.Sizes, Pin: c.Pin})
		last = e.Cell
	}
	if len(evs) > 0 {
		res.DecideMicros = decide / float64(len(evs))
	}
	cloud.stop(res.WallSeconds)
	res.CloudKernelSeconds, res.CloudStarts, res.CloudWarmStarts = cloud.seconds, cloud.starts, cloud.warms
	res.CloudCost = cloud.seconds * s.CloudPrice / 3600
	return res
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
// payload), outputs live only at loc. It returns the transfer time and bytes.
func apply(st simState, e trace.Event, loc location.Location, link Link) (float64, int64) {
	var p Payload
	var moved int64
	for _, r := range e.Reads {
		v := st[r]
		if v == nil || v.Has(loc) || len(v.At) == 0 {
			continue
		}
		moved += v.Size
		p = p.Add(*v)
		v.At = append(v.At, loc)
	}
	for _, w := range e.Writes {
		st[w] = &Var{Size: e.Sizes[w], At: []location.Location{loc}, Movable: true}
	}
	return link.payloadTime(p), moved
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
