package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/state"
)

// Recovery: when a kernel dies, the state map forgets its copies; values
// that lived only there are lost. Ferry then rebuilds them in the kernel's
// successor by re-running, hidden, the cells that made them (lineage),
// bringing in the surviving values those cells read. What cannot be
// rebuilt is named to the user.

// checkDeaths notices kernels that died since the agent was installed in
// them, before anything is planned, so a dead copy is never chosen as a
// transfer source. It reports whether one had died.
func (s *Server) checkDeaths() bool {
	died := false
	for loc, a := range s.agents {
		b := s.backends[loc]
		a.mu.Lock()
		if a.died != nil && (a.died != b.Died() || closed(a.died)) {
			s.forgetDead(loc)
			a.died, a.ok = nil, false
			died = true
		}
		a.mu.Unlock()
	}
	return died
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// forgetDead drops loc's copies from the state map and queues the values
// that had no other copy for rebuilding. It returns their names.
func (s *Server) forgetDead(loc string) []string {
	lost := s.state.Lost(loc)
	if len(lost) == 0 {
		return nil
	}
	s.lostMu.Lock()
	defer s.lostMu.Unlock()
	if s.pending == nil {
		s.pending = map[string][]state.Var{}
	}
	s.pending[loc] = append(s.pending[loc], lost...)
	names := make([]string, len(lost))
	for i, v := range lost {
		names[i] = v.Name
	}
	s.Stats.mu.Lock()
	s.Stats.VarsLost += len(lost)
	s.Stats.mu.Unlock()
	return names
}

// hasPending reports whether lost values wait to be rebuilt.
func (s *Server) hasPending() bool {
	s.lostMu.Lock()
	defer s.lostMu.Unlock()
	return len(s.pending) > 0
}

// rebuildLost rebuilds every queued lost value in its location's new
// kernel and returns the notice for the user (empty if nothing was lost).
func (s *Server) rebuildLost(ctx context.Context) string {
	s.lostMu.Lock()
	pending := s.pending
	s.pending = nil
	s.lostMu.Unlock()
	var notes []string
	locs := make([]string, 0, len(pending))
	for loc := range pending {
		locs = append(locs, loc)
	}
	sort.Strings(locs)
	for _, loc := range locs {
		notes = append(notes, s.rebuildAt(ctx, loc, pending[loc]))
	}
	return strings.Join(notes, "\n")
}

func (s *Server) rebuildAt(ctx context.Context, loc string, lost []state.Var) string {
	t0 := time.Now()
	byName := map[string]state.Var{}
	versions := map[string]int{}
	for _, v := range lost {
		byName[v.Name] = v
		versions[v.Name] = v.Version
	}
	plan := s.lineage.Plan(versions, s.state.Have)
	missing := plan.Missing
	var rebuilt, differ []string
	// Rebuild in the dead kernel's successor; if there is none (the cloud
	// is unreachable), on the other side, when replaying there overwrites
	// nothing it holds.
	at, moved := loc, ""
	if len(plan.Rebuilt) > 0 {
		if _, err := s.ensure(ctx, loc); err != nil {
			other := policy.Other(loc)
			if s.backends[other] == nil || s.clobbers(other, plan, versions) {
				for _, n := range plan.Rebuilt {
					missing[n] = fmt.Sprintf("the %s kernel cannot start again: %v", loc, err)
				}
				plan.Rebuilt = nil
			} else {
				at, moved = other, fmt.Sprintf(" at %s (the %s kernel cannot start again)", other, loc)
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
			if !s.state.Restore(v, at) {
				return false, "bound again since"
			}
			return true, ""
		}
		var failed map[string]string
		var err error
		rebuilt, failed, err = s.replay(ctx, at, plan, accept)
		if err != nil {
			slog.Warn("rebuilding lost variables failed", "at", loc, "err", err)
			for _, n := range plan.Rebuilt {
				missing[n] = "re-running the cells that made it failed: " + err.Error()
			}
		}
		for n, why := range failed {
			missing[n] = why
		}
	}
	s.Stats.mu.Lock()
	s.Stats.VarsRebuilt += len(rebuilt)
	s.Stats.RebuildSeconds += time.Since(t0).Seconds()
	s.Stats.mu.Unlock()

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

// replay runs plan's steps hidden at loc, each after the surviving values
// it reads are there. accept decides, per target, from what the agent
// reports of it afterwards (and the first error of a step that once ran
// cleanly), whether the value made at loc is good, and records it. It
// returns the accepted names and why the others were not. A step that
// raises does not stop the others: a name it bound before raising may
// still be proven good by its content hash.
func (s *Server) replay(ctx context.Context, loc string, plan state.Plan,
	accept func(name string, ch agent.Change, reported bool, stepErr error) (bool, string)) (kept []string, missing map[string]string, err error) {
	if _, err := s.ensure(ctx, loc); err != nil {
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
		s.state.Drop(loc, again)
		for src, group := range s.state.Stale(loc, s.state.Needs(st.Inputs)) {
			if _, _, err := s.transfer(ctx, src, loc, group); err != nil {
				return nil, nil, fmt.Errorf("bringing %s: %w", strings.Join(group, ", "), err)
			}
		}
		_, err := s.hiddenExec(ctx, loc, st.Code, nil)
		switch {
		case err == nil || st.Failed:
		case errors.Is(err, errAgent):
			if stepErr == nil {
				stepErr = fmt.Errorf("cell %q: %w", firstLine(st.Code), err)
			}
		default:
			return nil, nil, fmt.Errorf("cell %q: %w", firstLine(st.Code), err)
		}
		for n := range st.Writes {
			clobbered[n] = true
		}
	}
	exprs, err := s.hiddenExec(ctx, loc, "", map[string]string{agent.ReportKey: agent.ReportExpr(plan.Rebuilt, false)})
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
	// Every other name a step wrote holds an old or unproven value at
	// loc: forget loc's copy and delete it there, so no cell reads it.
	var extra, del []string
	for n := range clobbered {
		extra = append(extra, n)
	}
	sort.Strings(extra)
	s.state.Drop(loc, extra)
	for _, n := range extra {
		if v, ok := s.state.Get(n); !ok || !v.At[loc] {
			del = append(del, n)
		}
	}
	if len(del) > 0 {
		if err := s.deleteAt(ctx, loc, del); err != nil {
			return kept, missing, fmt.Errorf("clearing replayed values: %w", err)
		}
	}
	return kept, missing, nil
}

// recompute makes names at loc by re-running, hidden, the cells that made
// them, when the model says that is well under the cost of moving them
// (DESIGN.md's store-vs-recompute: a large value cheap to make). It
// returns the names now at loc and a note for %ferry why.
func (s *Server) recompute(ctx context.Context, loc string, names []string) ([]string, string) {
	size := s.state.Size(names)
	move := s.model.Link.TransferTime(size)
	if move < recomputeMin {
		return nil, ""
	}
	target := map[string]bool{}
	for _, n := range names {
		// Aliased values must move as one payload to stay one object.
		if v, ok := s.state.Get(n); !ok || v.Group != "" || !v.Movable {
			return nil, ""
		}
		target[n] = true
	}
	versions := s.state.Versions(names)
	plan := s.lineage.Plan(versions, func(n string, v int) bool { return !target[n] && s.state.Have(n, v) })
	if len(plan.Missing) > 0 || len(plan.Steps) == 0 {
		return nil, ""
	}
	if s.clobbers(loc, plan, versions) {
		return nil, ""
	}
	cost := 0.0
	var inputs []string
	for _, st := range plan.Steps {
		if st.Cell == "" || s.model.Runs(st.Cell) == 0 {
			return nil, "" // never timed: no estimate
		}
		rt, _ := s.model.Runtime(st.Cell, loc)
		cost += rt
		inputs = append(inputs, st.Inputs...)
	}
	for _, group := range s.state.Stale(loc, s.state.Needs(inputs)) {
		cost += s.model.Link.TransferTime(s.state.Size(group))
	}
	if cost > recomputeShare*move {
		return nil, ""
	}
	t0 := time.Now()
	accept := func(n string, ch agent.Change, reported bool, stepErr error) (bool, string) {
		cur, ok := s.state.Get(n)
		if !ok || !reported || ch.Hash == "" || ch.Hash != cur.Hash {
			return false, "the recomputed value differs"
		}
		s.state.Arrived(loc, map[string]int{n: cur.Version})
		return true, ""
	}
	kept, _, err := s.replay(ctx, loc, plan, accept)
	if err != nil {
		slog.Warn("recomputing instead of moving failed; moving", "names", names, "err", err)
	}
	if len(kept) == 0 {
		return nil, ""
	}
	s.Stats.mu.Lock()
	s.Stats.Recomputed += len(kept)
	s.Stats.mu.Unlock()
	return kept, fmt.Sprintf("recomputed %s at %s by re-running %d cell%s (%.1f s, estimated %.1f s) instead of moving %s (estimated %.1f s)",
		strings.Join(kept, ", "), loc, len(plan.Steps), plural(len(plan.Steps)), time.Since(t0).Seconds(), cost, report.HumanBytes(size), move)
}

// clobbers reports whether replaying plan at loc would overwrite a value
// loc holds now, other than the targets themselves.
func (s *Server) clobbers(loc string, plan state.Plan, targets map[string]int) bool {
	for _, st := range plan.Steps {
		for n := range st.Writes {
			if _, ok := targets[n]; ok {
				continue
			}
			if v, ok := s.state.Get(n); ok && v.At[loc] {
				return true
			}
		}
	}
	return false
}

// Recomputing must cost well under moving (estimates err), and only moves
// that take a while are worth a look.
const (
	recomputeShare = 0.5
	recomputeMin   = 1.0 // seconds
)

// lineageRun is what the lineage log keeps of one cell: reads at the
// versions the cell saw. The random generators' state counts as read only
// by a cell that advanced it; else every cell would chain to the last
// random draw.
func lineageRun(cell, code, loc string, failed bool, reads, wrote map[string]int) state.Run {
	r := state.Run{Cell: cell, Code: code, Loc: loc, Failed: failed, Reads: map[string]int{}, Writes: wrote}
	if r.Writes == nil {
		r.Writes = map[string]int{}
	}
	for n, v := range reads {
		if n == agent.RNG {
			if _, ok := r.Writes[n]; !ok {
				continue
			}
		}
		r.Reads[n] = v
	}
	return r
}

func firstLine(code string) string {
	line, _, more := strings.Cut(strings.TrimSpace(code), "\n")
	if len(line) > 60 {
		line, more = line[:60], true
	}
	if more {
		line += " …"
	}
	return line
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
