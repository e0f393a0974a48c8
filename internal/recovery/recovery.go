// Package recovery rebuilds values from lineage: when a kernel dies, the
// values that lived only there are made again, lazily (only those a cell
// reads, before it runs), on a kernel that runs, else in the dead one's
// successor, by re-running, hidden, the cells that made them, with the
// surviving values they read brought in; each rebuilt value's content hash
// is checked against the one recorded before the death. Cells with side
// effects, interrupted, raised or that read stdin are never re-run: what
// they made is lost, and a cell reading it fails saying what to run again.
// The same replay serves store-vs-recompute, where a value is made at a
// cell's location instead of moved there.
//
// It owns the queue of lost values and its counters. It reaches kernels
// through transfer's Requester and Mover, and reads and updates the state
// map and lineage log it is given; the kernel calls Lost when it notices a
// death, Rebuild before planning a cell, and Recompute for a planned move
// that chose it.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/transfer"
)

// Recovery rebuilds lost values. Its methods are called from the kernel's
// shell worker, except Lost, which a failing cell's handler also calls.
type Recovery struct {
	req     transfer.Requester
	mover   *transfer.Mover
	state   *state.Map
	lineage *state.Lineage
	model   *policy.Model
	locs    location.Set
	log     *slog.Logger

	mu sync.Mutex
	// pending are lost values lineage can make again, by name: rebuilt
	// lazily, when a cell reads them, so a death costs the next cell only
	// what it needs (a local cell after the cloud died waited a minute
	// while Ferry replayed everything the cloud had held).
	pending map[string]lostVar
	// gone are lost values lineage cannot make again (no record, a cell
	// with side effects, interrupted, raised or read stdin), by name, until
	// a cell binds the name again: a cell reading one fails saying so.
	gone   map[string]goneVar
	counts Counts
}

// lostVar is a value lost with the kernel at from.
type lostVar struct {
	v    state.Var
	from location.Location
}

// goneVar is a value that cannot be rebuilt: why, and the cells the user
// would run again to make it (oldest first; none if unknown).
type goneVar struct {
	from location.Location
	why  string
	redo []state.Run
}

// ErrLost is wrapped by the error Rebuild returns when a cell reads values
// that died with a kernel and cannot be rebuilt: the cell must not run.
var ErrLost = errors.New("values lost with a dead kernel")

// LostError names the lost values a cell reads, why they cannot be made
// again, and which cells to run again; its text is the user's message.
type LostError struct {
	Names []string
	msg   string
}

func (e *LostError) Error() string { return e.msg }
func (e *LostError) Unwrap() error { return ErrLost }

// Counts are what recovery did in a session.
type Counts struct {
	// Lost values had their only copy die with a kernel; Rebuilt were
	// made again from lineage, in RebuildSeconds.
	Lost, Rebuilt  int
	RebuildSeconds float64
	// Recomputed values were made at a cell's location instead of moved.
	Recomputed int
}

// Runner is implemented by a Requester that can tell whether a location's
// kernel runs now: a rebuild goes where no kernel has to start first.
type Runner interface {
	Running(loc location.Location) bool
}

// New returns a Recovery over the session's state map and lineage log.
func New(req transfer.Requester, mover *transfer.Mover, st *state.Map, lin *state.Lineage, model *policy.Model, locs location.Set, log *slog.Logger) *Recovery {
	if log == nil {
		log = slog.Default()
	}
	return &Recovery{req: req, mover: mover, state: st, lineage: lin, model: model, locs: locs, log: log,
		pending: map[string]lostVar{}, gone: map[string]goneVar{}}
}

// Counts returns a copy of the counters.
func (r *Recovery) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Lost forgets loc's copies in the state map (its kernel died) and sorts
// the values that had no other copy into those lineage can rebuild (queued
// until a cell needs them) and those it cannot. It returns one line for
// the user saying which are which ("" if nothing was lost), to follow
// "the cloud kernel died; ".
func (r *Recovery) Lost(loc location.Location) string {
	lost := r.state.Lost(loc)
	if len(lost) == 0 {
		return ""
	}
	versions := map[string]int{}
	for _, v := range lost {
		versions[v.Name] = v.Version
	}
	plan := r.lineage.Plan(versions, r.state.Have)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts.Lost += len(lost)
	var later []string
	gone := map[string]goneVar{}
	for _, v := range lost {
		if why, ok := plan.Missing[v.Name]; ok {
			gone[v.Name] = goneVar{from: loc, why: why, redo: plan.Redo[v.Name]}
			r.gone[v.Name] = gone[v.Name]
			delete(r.pending, v.Name)
			continue
		}
		r.pending[v.Name] = lostVar{v: v, from: loc}
		later = append(later, v.Name)
	}
	var parts []string
	if len(later) > 0 {
		it := them(len(later))
		parts = append(parts, strings.Join(later, ", ")+" (Ferry rebuilds "+it+" from the cells that made "+it+" when a cell needs "+it+")")
	}
	if len(gone) > 0 {
		parts = append(parts, "for good: "+goneText(gone))
	}
	return "lost with it: " + strings.Join(parts, "; ")
}

// Need is what a cell needs of the lost values.
type Need struct {
	// Reads are the names the cell reads (as analysis gave them); the
	// globals of functions it calls and alias groups are added here.
	Reads []string
	// All: analysis cannot see the cell's names (exec, globals()), so
	// every lost value that can be rebuilt is; none fails the cell.
	All bool
	// At is where the cell is pinned ("" if it is not): rebuilding there
	// is the only use. Else the rebuild goes to a kernel that runs now.
	At location.Location
	// Announce, if set, shows one line in the cell's output before a
	// rebuild starts (it may take as long as the cells it re-runs).
	Announce func(line string)
}

// Rebuild makes again, lazily, the lost values the cell needs: those it
// reads, the globals of lost functions it calls and lost aliases of them,
// by re-running hidden the cells that made them. It returns the notice for
// the cell's output (empty if nothing was rebuilt). If the cell reads a
// lost value that cannot be made again, nothing is rebuilt and the error,
// a *LostError wrapping ErrLost, says which, why, and what to run again.
func (r *Recovery) Rebuild(ctx context.Context, need Need) (string, error) {
	want, gone, extra := r.needed(need)
	if len(gone) > 0 && !need.All {
		return "", r.lostError(gone)
	}
	if len(want) == 0 {
		return "", nil
	}
	t0 := time.Now()
	targets := map[string]lostVar{}
	for _, n := range append(append([]string(nil), want...), extra...) {
		r.mu.Lock()
		lv, ok := r.pending[n]
		r.mu.Unlock()
		if ok {
			targets[n] = lv
		}
	}
	rebuilt, at, differ, failed := r.rebuild(ctx, targets, need)
	r.mu.Lock()
	for _, n := range rebuilt {
		delete(r.pending, n)
	}
	for n, g := range failed {
		delete(r.pending, n)
		r.gone[n] = g
	}
	r.counts.Rebuilt += len(rebuilt)
	r.counts.RebuildSeconds += time.Since(t0).Seconds()
	r.mu.Unlock()

	var b strings.Builder
	if len(rebuilt) > 0 {
		fmt.Fprintf(&b, "rebuilt %s %s in %.1f s", strings.Join(rebuilt, ", "), on(at), time.Since(t0).Seconds())
		if len(differ) > 0 {
			fmt.Fprintf(&b, "; %s came out different from before (the cells that made %s are not deterministic)", strings.Join(differ, ", "), them(len(differ)))
		}
	}
	// Values only rebuilt along the way (made by the same cells) may fail
	// without failing the cell; one it reads may not.
	needFailed := map[string]goneVar{}
	otherFailed := map[string]goneVar{}
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n] = true
	}
	for n, g := range failed {
		if wanted[n] && !need.All {
			needFailed[n] = g
		} else {
			otherFailed[n] = g
		}
	}
	if len(otherFailed) > 0 {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "could not rebuild %s", goneText(otherFailed))
	}
	if len(needFailed) > 0 {
		return b.String(), r.lostError(needFailed)
	}
	return b.String(), nil
}

// needed sorts out what the cell needs of the lost values: want are
// queued ones it reads (widened by functions' globals and alias groups),
// gone those it reads that cannot be rebuilt, extra the other queued ones
// its cells would make anyway. Names bound again since are forgotten.
func (r *Recovery) needed(need Need) (want []string, gone map[string]goneVar, extra []string) {
	reads := append(append([]string(nil), need.Reads...), r.state.Needs(need.Reads)...)
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.pending {
		if _, ok := r.state.Get(n); ok {
			delete(r.pending, n) // bound again since: the newer value stands
		}
	}
	for n := range r.gone {
		if _, ok := r.state.Get(n); ok {
			delete(r.gone, n)
		}
	}
	gone = map[string]goneVar{}
	seen := map[string]bool{}
	queue := reads
	if need.All {
		queue = nil
		for n := range r.pending {
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if seen[n] {
			continue
		}
		seen[n] = true
		if g, ok := r.gone[n]; ok {
			gone[n] = g
			continue
		}
		lv, ok := r.pending[n]
		if !ok {
			continue
		}
		want = append(want, n)
		queue = append(queue, lv.v.Uses...)
		if lv.v.Group != "" {
			for o, ov := range r.pending {
				if ov.v.Group == lv.v.Group {
					queue = append(queue, o)
				}
			}
		}
	}
	sort.Strings(want)
	// The queued values the same cells write at the versions lost come
	// along: re-running the cells makes them anyway.
	if len(want) > 0 {
		vers := map[string]int{}
		for _, n := range want {
			vers[n] = r.pending[n].v.Version
		}
		plan := r.lineage.Plan(vers, r.state.Have)
		for _, st := range plan.Steps {
			for n, v := range st.Writes {
				if lv, ok := r.pending[n]; ok && !seen[n] && lv.v.Version == v {
					seen[n] = true
					extra = append(extra, n)
				}
			}
		}
		sort.Strings(extra)
	}
	return want, gone, extra
}

// rebuild replays the cells that make targets, at the first location it
// can (rebuildAt), and returns what it made, where, which came out with
// another content hash, and what could not be made and why.
func (r *Recovery) rebuild(ctx context.Context, targets map[string]lostVar, need Need) (rebuilt []string, at location.Location, differ []string, failed map[string]goneVar) {
	failed = map[string]goneVar{}
	versions := map[string]int{}
	var from []location.Location
	for n, lv := range targets {
		versions[n] = lv.v.Version
		if !slices.Contains(from, lv.from) {
			from = append(from, lv.from)
		}
	}
	plan := r.lineage.Plan(versions, func(n string, v int) bool { _, t := targets[n]; return !t && r.state.Have(n, v) })
	for n, why := range plan.Missing {
		failed[n] = goneVar{from: targets[n].from, why: why, redo: plan.Redo[n]}
	}
	if len(plan.Rebuilt) == 0 {
		return nil, "", nil, failed
	}
	died := make([]string, 0, len(from))
	for _, l := range location.NewSet(from...) {
		died = append(died, KernelOf(l)+" died")
	}
	for _, loc := range r.candidates(plan, versions, need.At, from) {
		if err := r.mover.Ready(ctx, loc); err != nil {
			r.log.Warn("a kernel to rebuild lost values in could not start", "at", loc, "err", err)
			if loc == need.At {
				break // the cell pinned there cannot run either
			}
			continue
		}
		if need.Announce != nil {
			refs := make([]string, len(plan.Steps))
			for i, st := range plan.Steps {
				refs[i] = st.Ref()
			}
			need.Announce(fmt.Sprintf("rebuilding %s %s by re-running %s (%s) …", strings.Join(plan.Rebuilt, ", "), on(loc), strings.Join(refs, ", "), strings.Join(died, ", ")))
		}
		kept, why, dif, err := r.replayLost(ctx, loc, plan, targets)
		if err != nil {
			r.log.Warn("rebuilding lost variables failed", "at", loc, "err", err)
			for _, n := range plan.Rebuilt {
				why[n] = "re-running the cells that made it failed: " + err.Error()
			}
			for _, n := range kept {
				delete(why, n)
			}
		}
		for n, w := range why {
			// The cells to run again are those that lead to n alone.
			own := r.lineage.Plan(map[string]int{n: versions[n]}, func(m string, v int) bool { _, t := targets[m]; return !t && r.state.Have(m, v) })
			failed[n] = goneVar{from: targets[n].from, why: w, redo: stepRuns(own)}
		}
		return kept, loc, dif, failed
	}
	// No kernel could take it: the values stay queued for the next cell
	// that reads them, which fails on its own for the kernel that did not
	// start.
	return nil, "", nil, failed
}

// candidates orders the locations a rebuild may go to: the cell's pin
// first if it has one; then the kernels running now, the laptop first
// (the next cell is often there, and no start is paid), then the dead
// kernels' successors and the rest. A location other than a dead
// kernel's successor where the replay would overwrite a value it holds is
// left out.
func (r *Recovery) candidates(plan state.Plan, targets map[string]int, pin location.Location, from []location.Location) []location.Location {
	running := func(location.Location) bool { return false }
	if rn, ok := r.req.(Runner); ok {
		running = rn.Running
	}
	var first, then []location.Location
	if pin != "" && r.locs.Has(pin) && !r.clobbers(pin, plan, targets) {
		first = append(first, pin) // no move after it
	}
	for _, l := range append([]location.Location{location.Local}, r.locs...) {
		if !r.locs.Has(l) || slices.Contains(first, l) || r.clobbers(l, plan, targets) {
			continue
		}
		if running(l) {
			first = append(first, l)
		}
	}
	for _, l := range append(append([]location.Location(nil), from...), r.locs...) {
		// The dead kernel's successor takes it even where the replay
		// overwrites values it holds (Replay deletes those there, and the
		// next cell reading one brings it again), as before lazy rebuild:
		// skipping it left L2 and L3 of the fault suite lost after the
		// laptop kernel died, once a cell had brought L1 back there.
		if !slices.Contains(first, l) && !slices.Contains(then, l) && r.locs.Has(l) && (slices.Contains(from, l) || !r.clobbers(l, plan, targets)) {
			then = append(then, l)
		}
	}
	return append(first, then...)
}

// replayLost replays plan at loc and restores each target the agent
// reports made again (its hash compared with the one recorded before the
// death). It returns the names restored, why the others were not, and
// which came out different.
func (r *Recovery) replayLost(ctx context.Context, loc location.Location, plan state.Plan, targets map[string]lostVar) (kept []string, why map[string]string, differ []string, err error) {
	accept := func(n string, ch agent.Change, reported bool, stepErr error) (bool, string) {
		v := targets[n].v
		switch {
		case stepErr != nil && !(reported && ch.Hash != "" && ch.Hash == v.Hash):
			return false, "re-running the cells that made it failed: " + stepErr.Error()
		case !reported && n != agent.RNG:
			return false, "re-running the cells that made it did not bind it again"
		case reported:
			if v.Hash != "" && ch.Hash != "" && ch.Hash != v.Hash {
				differ = append(differ, n)
			}
			v.Size, v.Hash, v.Movable, v.Reason, v.Kind = ch.Size, ch.Hash, ch.Movable, ch.Reason, ch.Kind
		}
		if !r.state.Restore(v, loc) {
			return false, "bound again since"
		}
		return true, ""
	}
	kept, why, err = r.Replay(ctx, loc, plan, accept)
	if why == nil {
		why = map[string]string{}
	}
	sort.Strings(differ)
	return kept, why, differ, err
}

// lostError is the message for a cell that reads values that cannot be
// made again: which, why, and what to run again.
func (r *Recovery) lostError(gone map[string]goneVar) error {
	names := make([]string, 0, len(gone))
	for n := range gone {
		names = append(names, n)
	}
	sort.Strings(names)
	from := map[location.Location]bool{}
	for _, g := range gone {
		from[g.from] = true
	}
	var locs []string
	for _, l := range location.NewSet(keys(from)...) {
		locs = append(locs, KernelOf(l))
	}
	return &LostError{Names: names, msg: fmt.Sprintf("this cell reads %s, lost when %s died, and Ferry cannot rebuild %s: %s; this cell did not run",
		strings.Join(names, ", "), strings.Join(locs, " and "), them(len(names)), goneText(gone))}
}

// goneText says, for lost values grouped by reason, why each group cannot
// be rebuilt and what to run again: "df, model (the cell that made them
// … was interrupted; re-run In [3], then this cell)".
func goneText(gone map[string]goneVar) string {
	byWhy := map[string][]string{}
	redo := map[string][]state.Run{}
	for n, g := range gone {
		byWhy[g.why] = append(byWhy[g.why], n)
		if len(g.redo) > len(redo[g.why]) {
			redo[g.why] = g.redo
		}
	}
	var parts []string
	for why, names := range byWhy {
		sort.Strings(names)
		fix := "run the cells that make " + them(len(names)) + " again"
		if rs := redo[why]; len(rs) > 0 {
			refs := make([]string, len(rs))
			for i, run := range rs {
				refs[i] = run.Ref()
			}
			fix = "re-run " + strings.Join(refs, ", ") + " to make " + them(len(names)) + " again"
		}
		parts = append(parts, strings.Join(names, ", ")+" ("+why+"; "+fix+")")
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// stepRuns are a plan's runs, oldest first.
func stepRuns(p state.Plan) []state.Run {
	out := make([]state.Run, len(p.Steps))
	for i, st := range p.Steps {
		out[i] = st.Run
	}
	return out
}

// on says where a location is, for a sentence: "on the laptop", "in the
// cloud".
func on(l location.Location) string {
	if l == location.Local {
		return "on " + l.Describe()
	}
	return "in " + l.Describe()
}

// KernelOf names a location's kernel for a sentence: "the cloud kernel".
func KernelOf(l location.Location) string { return l.Describe() + " kernel" }

// them is "it" or "them" for n values.
func them(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Accept decides, per target of a replay, from what the agent reports of
// it afterwards (and the first error of a step that once ran cleanly),
// whether the value made is good, and records it; why says why not.
type Accept func(name string, ch agent.Change, reported bool, stepErr error) (ok bool, why string)

// Replay runs plan's steps hidden at loc, each after the surviving values
// it reads are there, and returns the accepted targets and why the others
// were not. A step that raises does not stop the others: a name it bound
// before raising may still be proven good by its content hash. Every
// other name a step wrote is forgotten and deleted at loc afterwards, so
// no cell reads an old or unproven value.
func (r *Recovery) Replay(ctx context.Context, loc location.Location, plan state.Plan, accept Accept) (kept []string, missing map[string]string, err error) {
	if err := r.mover.Ready(ctx, loc); err != nil {
		return nil, nil, err
	}
	missing = map[string]string{}
	// Names a step wrote hold old versions at loc now: an input among them
	// is brought again before a later step reads it.
	clobbered := map[string]bool{}
	var stepErr error
	for _, st := range plan.Steps {
		var again []string
		for _, n := range st.Inputs {
			if clobbered[n] {
				again = append(again, n)
			}
		}
		r.state.Drop(loc, again)
		for src, group := range r.state.Stale(loc, r.state.Needs(st.Inputs)) {
			vers := r.state.Versions(group)
			res, err := r.mover.Move(ctx, src, loc, group)
			if err != nil {
				return nil, nil, fmt.Errorf("bringing %s: %w", strings.Join(group, ", "), err)
			}
			Record(r.state, r.model, loc, vers, res)
		}
		_, err := transfer.Exec(ctx, r.req, loc, st.Code, nil)
		switch {
		case err == nil:
		case errors.Is(err, transfer.ErrAgent):
			if stepErr == nil {
				stepErr = fmt.Errorf("cell %q: %w", state.FirstLine(st.Code), err)
			}
		default:
			return nil, nil, fmt.Errorf("cell %q: %w", state.FirstLine(st.Code), err)
		}
		for n := range st.Writes {
			clobbered[n] = true
		}
	}
	exprs, err := transfer.Exec(ctx, r.req, loc, "", map[string]string{agent.ReportKey: agent.ReportExpr(plan.Rebuilt, false, false, nil, true)})
	if err != nil {
		return nil, nil, fmt.Errorf("asking the agent what was made: %w", err)
	}
	rep, err := agent.ParseReport(exprs[agent.ReportKey])
	if err != nil {
		return nil, nil, fmt.Errorf("reading the agent's report: %w", err)
	}
	for _, n := range plan.Rebuilt {
		ch, reported := rep.Changed[n]
		if ok, why := accept(n, ch, reported, stepErr); !ok {
			missing[n] = why
			continue // whatever it holds at loc is deleted below
		}
		kept = append(kept, n)
		delete(clobbered, n)
	}
	var extra, del []string
	for n := range clobbered {
		extra = append(extra, n)
	}
	sort.Strings(extra)
	r.state.Drop(loc, extra)
	for _, n := range extra {
		if v, ok := r.state.Get(n); !ok || !v.At[loc] {
			del = append(del, n)
		}
	}
	if len(del) > 0 {
		if err := r.mover.Delete(ctx, loc, del); err != nil {
			return kept, missing, fmt.Errorf("clearing replayed values: %w", err)
		}
	}
	return kept, missing, nil
}

// Record enters a finished move in the state map and the cost model: the
// names the target confirmed now live at dst too, at the versions they had
// when the move began (vers); the names that could not be serialised are
// marked unmovable; the move's own time and compression teach the model
// (nil: nothing to teach). Every mover (a cell's plan, replay, think time)
// records through it, so the link model learns in one place.
func Record(st *state.Map, model *policy.Model, dst location.Location, vers map[string]int, res transfer.Result) {
	if model != nil {
		model.ObserveTransfer(res.From, res.To, res.Bytes, res.WireSeconds)
		model.ObserveCompression(res.RawBytes, res.Bytes)
	}
	got := map[string]int{}
	for _, n := range res.Names {
		if v, ok := vers[n]; ok {
			got[n] = v
		}
	}
	st.Arrived(dst, got)
	for n, why := range res.Unmovable {
		st.SetUnmovable(n, why)
	}
}

// Recompute carries out a planned store-vs-recompute choice: it re-runs
// rc's steps at loc and keeps each target whose content hash equals the
// current version's. It returns the names now at loc; the caller moves
// the rest.
func (r *Recovery) Recompute(ctx context.Context, loc location.Location, rc policy.Recompute) []string {
	r.fetchHashes(ctx, loc, rc.Steps.Rebuilt)
	accept := func(n string, ch agent.Change, reported bool, _ error) (bool, string) {
		cur, ok := r.state.Get(n)
		if !ok || !reported || ch.Hash == "" || ch.Hash != cur.Hash {
			return false, "the recomputed value differs"
		}
		r.state.Arrived(loc, map[string]int{n: cur.Version})
		return true, ""
	}
	kept, _, err := r.Replay(ctx, loc, rc.Steps, accept)
	if err != nil {
		r.log.Warn("recomputing instead of moving failed; moving", "names", rc.Steps.Rebuilt, "err", err)
	}
	r.mu.Lock()
	r.counts.Recomputed += len(kept)
	r.mu.Unlock()
	return kept
}

// fetchHashes asks a holder other than loc for the content hashes of
// those names whose current version has none yet (the agent hashes big
// values in think time): a recomputed value is kept only if its hash
// equals the version's. A failure leaves them without, and the values
// move instead.
func (r *Recovery) fetchHashes(ctx context.Context, loc location.Location, names []string) {
	by := map[location.Location][]string{}
	for _, n := range names {
		v, ok := r.state.Get(n)
		if !ok || v.Hash != "" {
			continue
		}
		for _, l := range r.locs {
			if l != loc && v.At[l] {
				by[l] = append(by[l], n)
				break
			}
		}
	}
	for holder, ns := range by {
		exprs, err := transfer.Exec(ctx, r.req, holder, "", map[string]string{agent.HashesKey: agent.HashesExpr(ns)})
		if err != nil {
			r.log.Warn("asking for content hashes to check a recompute against", "at", holder, "err", err)
			continue
		}
		hashes, err := agent.ParseHashes(exprs[agent.HashesKey])
		if err != nil {
			r.log.Warn("asking for content hashes to check a recompute against", "at", holder, "err", err)
			continue
		}
		r.state.SetHashes(holder, hashes)
	}
}

// Recipe is how names could be made at loc by re-running the cells that
// made them from values that still exist; ok is false when they may not
// be: aliased values must move as one payload to stay one object, an
// unmovable value cannot be checked, a producing cell may be missing, and
// re-running must not overwrite a value loc holds.
func (r *Recovery) Recipe(names []string, loc location.Location) (state.Plan, bool) {
	target := map[string]bool{}
	for _, n := range names {
		// A hash left for think time is asked for when a recompute is
		// carried out (Recompute), not needed to plan one.
		if v, ok := r.state.Get(n); !ok || v.Group != "" || !v.Movable {
			return state.Plan{}, false
		}
		target[n] = true
	}
	versions := r.state.Versions(names)
	plan := r.lineage.Plan(versions, func(n string, v int) bool { return !target[n] && r.state.Have(n, v) })
	if len(plan.Missing) > 0 || len(plan.Steps) == 0 || r.clobbers(loc, plan, versions) {
		return state.Plan{}, false
	}
	return plan, true
}

// clobbers reports whether replaying plan at loc would overwrite a value
// loc holds now, other than the targets themselves.
func (r *Recovery) clobbers(loc location.Location, plan state.Plan, targets map[string]int) bool {
	for _, st := range plan.Steps {
		for n := range st.Writes {
			if _, ok := targets[n]; ok {
				continue
			}
			if v, ok := r.state.Get(n); ok && v.At[loc] {
				return true
			}
		}
	}
	return false
}

// Run is what the lineage log keeps of one cell: reads at the versions
// the cell saw. The random generators' state counts as read only by a cell
// that advanced it; else every cell would chain to the last random draw.
func Run(cell, code string, loc location.Location, failed bool, reads, wrote map[string]int) state.Run {
	run := state.Run{Cell: cell, Code: code, Loc: loc, Failed: failed, Reads: map[string]int{}, Writes: wrote}
	if run.Writes == nil {
		run.Writes = map[string]int{}
	}
	for n, v := range reads {
		if n == agent.RNG || n == agent.Proc {
			if _, ok := run.Writes[n]; !ok {
				continue
			}
		}
		run.Reads[n] = v
	}
	return run
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Facts is the state map and lineage log as planning sees them: the
// policies' view of each variable, where stale inputs come from, and
// Recipe for store-vs-recompute.
func (r *Recovery) Facts() policy.Facts { return facts{r} }

type facts struct{ r *Recovery }

func (f facts) Var(name string) (policy.Var, bool) {
	v, ok := f.r.state.Get(name)
	if !ok {
		return policy.Var{}, false
	}
	return policy.Var{Size: v.Size, At: v.Locations(), Movable: v.Movable, Ratio: v.Ratio}, true
}

func (f facts) Sources(loc location.Location, names []string) map[location.Location][]string {
	return f.r.state.Stale(loc, names)
}
func (f facts) Needs(names []string) []string { return f.r.state.Needs(names) }
func (f facts) Size(names []string) int64     { return f.r.state.Size(names) }
func (f facts) Recipe(names []string, loc location.Location) (state.Plan, bool) {
	return f.r.Recipe(names, loc)
}
