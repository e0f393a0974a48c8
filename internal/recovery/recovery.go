// Package recovery rebuilds values from lineage: when a kernel dies, the
// values that lived only there are made again in its successor (or, if it
// cannot come back, at another location) by re-running, hidden, the cells
// that made them, with the surviving values they read brought in; each
// rebuilt value's content hash is checked against the one recorded before
// the death. The same replay serves store-vs-recompute, where a value is
// made at a cell's location instead of moved there.
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

	mu      sync.Mutex
	pending map[location.Location][]state.Var // lost values to rebuild
	counts  Counts
}

// Counts are what recovery did in a session.
type Counts struct {
	// Lost values had their only copy die with a kernel; Rebuilt were
	// made again from lineage, in RebuildSeconds.
	Lost, Rebuilt  int
	RebuildSeconds float64
	// Recomputed values were made at a cell's location instead of moved.
	Recomputed int
}

// New returns a Recovery over the session's state map and lineage log.
func New(req transfer.Requester, mover *transfer.Mover, st *state.Map, lin *state.Lineage, model *policy.Model, locs location.Set, log *slog.Logger) *Recovery {
	if log == nil {
		log = slog.Default()
	}
	return &Recovery{req: req, mover: mover, state: st, lineage: lin, model: model, locs: locs, log: log, pending: map[location.Location][]state.Var{}}
}

// Counts returns a copy of the counters.
func (r *Recovery) Counts() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts
}

// Lost forgets loc's copies in the state map (its kernel died) and queues
// the values that had no other copy for rebuilding. It returns their names.
func (r *Recovery) Lost(loc location.Location) []string {
	lost := r.state.Lost(loc)
	if len(lost) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[loc] = append(r.pending[loc], lost...)
	r.counts.Lost += len(lost)
	names := make([]string, len(lost))
	for i, v := range lost {
		names[i] = v.Name
	}
	return names
}

// Pending reports whether lost values wait to be rebuilt.
func (r *Recovery) Pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending) > 0
}

// Rebuild rebuilds every queued lost value and returns the notice for the
// user (empty if nothing was lost).
func (r *Recovery) Rebuild(ctx context.Context) string {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[location.Location][]state.Var{}
	r.mu.Unlock()
	var notes []string
	for _, loc := range r.locs {
		if lost, ok := pending[loc]; ok {
			notes = append(notes, r.rebuildAt(ctx, loc, lost))
		}
	}
	return strings.Join(notes, "\n")
}

func (r *Recovery) rebuildAt(ctx context.Context, loc location.Location, lost []state.Var) string {
	t0 := time.Now()
	byName := map[string]state.Var{}
	versions := map[string]int{}
	for _, v := range lost {
		byName[v.Name] = v
		versions[v.Name] = v.Version
	}
	plan := r.lineage.Plan(versions, r.state.Have)
	missing := plan.Missing
	var rebuilt, differ []string
	// Rebuild in the dead kernel's successor; if there is none (the cloud
	// is unreachable), at another location, where replaying there
	// overwrites nothing it holds.
	at, moved := loc, ""
	if len(plan.Rebuilt) > 0 {
		if err := r.mover.Ready(ctx, loc); err != nil {
			at = ""
			for _, other := range r.locs.Except(loc) {
				if !r.clobbers(other, plan, versions) && r.mover.Ready(ctx, other) == nil {
					at, moved = other, fmt.Sprintf(" at %s (the %s kernel cannot start again)", other, loc)
					break
				}
			}
			if at == "" {
				for _, n := range plan.Rebuilt {
					missing[n] = fmt.Sprintf("the %s kernel cannot start again: %v", loc, err)
				}
				plan.Rebuilt = nil
			}
		}
	}
	if len(plan.Rebuilt) > 0 {
		accept := func(n string, ch agent.Change, reported bool, stepErr error) (bool, string) {
			v := byName[n]
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
			if !r.state.Restore(v, at) {
				return false, "bound again since"
			}
			return true, ""
		}
		var failed map[string]string
		var err error
		rebuilt, failed, err = r.Replay(ctx, at, plan, accept)
		if err != nil {
			r.log.Warn("rebuilding lost variables failed", "at", loc, "err", err)
			for _, n := range plan.Rebuilt {
				missing[n] = "re-running the cells that made it failed: " + err.Error()
			}
		}
		for n, why := range failed {
			missing[n] = why
		}
	}
	r.mu.Lock()
	r.counts.Rebuilt += len(rebuilt)
	r.counts.RebuildSeconds += time.Since(t0).Seconds()
	r.mu.Unlock()

	var b strings.Builder
	fmt.Fprintf(&b, "the %s kernel had died", loc)
	if len(rebuilt) > 0 {
		where := " there"
		if moved != "" {
			where = moved
		}
		fmt.Fprintf(&b, "; rebuilt %s%s by re-running %d earlier cell%s (%.1f s)", strings.Join(rebuilt, ", "),
			where, len(plan.Steps), plural(len(plan.Steps)), time.Since(t0).Seconds())
		if len(differ) > 0 {
			fmt.Fprintf(&b, "; %s came out different from before (the cells that made them are not deterministic)", strings.Join(differ, ", "))
		}
	}
	if len(missing) > 0 {
		// One reason often covers several names: say it once.
		byWhy := map[string][]string{}
		for n, why := range missing {
			byWhy[why] = append(byWhy[why], n)
		}
		var parts []string
		for why, names := range byWhy {
			sort.Strings(names)
			parts = append(parts, strings.Join(names, ", ")+" ("+why+")")
		}
		sort.Strings(parts)
		fmt.Fprintf(&b, "; lost, as they lived only there: %s — run the cells that make them again", strings.Join(parts, "; "))
	}
	return b.String()
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
		case err == nil || st.Failed:
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
		model.ObserveTransfer(res.Bytes, res.WireSeconds)
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
	return policy.Var{Size: v.Size, At: v.Locations(), Movable: v.Movable}, true
}

func (f facts) Sources(loc location.Location, names []string) map[location.Location][]string {
	return f.r.state.Stale(loc, names)
}
func (f facts) Needs(names []string) []string { return f.r.state.Needs(names) }
func (f facts) Size(names []string) int64     { return f.r.state.Size(names) }
func (f facts) Recipe(names []string, loc location.Location) (state.Plan, bool) {
	return f.r.Recipe(names, loc)
}
