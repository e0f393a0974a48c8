package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/transfer"
)

// effects is what analysis says a cell does, widened by what the state map
// knows (functions' globals, alias groups).
type effects struct {
	Reads, Writes []string
	// Maybe are names whose objects the cell may mutate: the agent checks
	// their contents after the cell, the rest only by identity.
	Maybe []string
	// Dynamic means analysis cannot see all names (exec, globals(), …):
	// every known name counts as read and possibly changed.
	Dynamic bool
	Defs    map[string][]string
	// Inert cells cannot change any name.
	Inert bool
	// Proc: the cell may change process settings (environment, cwd,
	// print options …), so the report captures them.
	Proc bool
	// Facts are what the cell does outside the namespace (files,
	// environment, settings, side-effect hints), with the functions it
	// calls; Outside are paths outside the notebook's folder it reads that
	// only the laptop has.
	Facts   analysis.Facts
	Outside []string
	// Shell: the cell runs shell commands, itself or through a function
	// it calls; their output describes the machine, so it stays home.
	Shell bool
	// Attrs are "X.attr" stores on names bound to modules: the agent
	// carries those attributes with the process state.
	Attrs []string
}

// analyze returns the cell's effects. If the helper fails, the cell is
// treated as dynamic: correct beats small.
func (s *Server) analyze(ctx context.Context, cell, code string) effects {
	if s.cfg.Analyzer == nil {
		return effects{}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := s.cfg.Analyzer.Analyze(actx, code)
	if err != nil {
		s.log.Warn("cell analysis failed; treating the cell as touching everything", "err", err)
		r = analysis.Result{Dynamic: true}
	}
	// A cell calling a notebook function that uses eval, exec or
	// globals() may touch any name, as if it did so itself (issue 14).
	if !r.Dynamic && s.state.UsesAnyName(append(append([]string(nil), r.Calls...), r.Reads...)) {
		r.Dynamic = true
	}
	eff := effects{Reads: r.Reads, Writes: r.Writes, Dynamic: r.Dynamic, Defs: r.Defs}
	eff.Facts = s.cellFacts(r)
	eff.Proc = changesProcess(eff.Facts, r)
	eff.Shell = r.Shell || slices.Contains(eff.Facts.SideEffects, "shell")
	seen := map[string]bool{}
	for _, a := range append(append([]string(nil), r.ModuleAttrs...), eff.Facts.AttrStores...) {
		x, _, _ := strings.Cut(a, ".")
		if v, ok := s.state.Get(x); (ok && v.Kind == "module") || slices.Contains(r.ModuleAttrs, a) {
			if !seen[a] {
				seen[a] = true
				eff.Attrs = append(eff.Attrs, a)
			}
		}
	}
	// A cell that binds, deletes, calls and mutates nothing cannot change
	// the namespace: it needs no report (pass, a bare name, x.shape).
	eff.Inert = r.Error == "" && !r.Dynamic && len(r.Writes) == 0 && len(r.Deleted) == 0 && len(r.Calls) == 0 && len(r.Maybe) == 0 &&
		!eff.Proc && len(eff.Facts.Files) == 0 && !eff.Facts.FilesUnknown && len(eff.Facts.SideEffects) == 0 && len(r.Magics) == 0
	maybe := map[string]bool{}
	for _, n := range r.Maybe {
		maybe[n] = true
	}
	// Calling a notebook function may mutate what it uses.
	for _, c := range r.Calls {
		if v, ok := s.state.Get(c); ok {
			for _, u := range v.Uses {
				if u != state.AnyName {
					maybe[u] = true
				}
			}
		}
	}
	if r.Dynamic {
		eff.Reads = s.state.Names()
	}
	for _, p := range []string{agent.RNG, agent.Proc} {
		if _, ok := s.state.Get(p); ok {
			eff.Reads = append(eff.Reads, p)
		}
	}
	// The files it may read, under the notebook's folder, are inputs like
	// names; those outside it stay on the laptop, and so does the cell.
	// The laptop's files enter the state map when its agent is installed;
	// a first cell planned before that (its kernel still starting) would
	// see none of them and run in the cloud without its data.
	s.awaitInventory(ctx)
	// A change of directory needs the folder there, and relative paths
	// after it mean other files: every known file counts as read.
	fn := s.fileNeeds(cell, eff.Facts, r.Dynamic || eff.Facts.Chdir)
	s.laptopEdits(fn.Names)
	eff.Reads = append(eff.Reads, fn.Names...)
	eff.Outside = fn.Outside
	for n := range maybe {
		eff.Maybe = append(eff.Maybe, n)
	}
	sort.Strings(eff.Maybe)
	return eff
}

// reportExpr is the agent's report expression for a cell at loc.
func (s *Server) reportExpr(loc location.Location, eff effects) string {
	maybe := eff.Maybe
	if eff.Dynamic {
		maybe = s.state.Names()
	}
	return agent.ReportExpr(eff.Maybe, eff.Dynamic, eff.Proc, s.state.Shared(loc, maybe), false, eff.Attrs...)
}

// withReport asks for the agent's post-cell report in the request's own
// user_expressions, so it costs no extra round trip.
func (s *Server) withReport(content json.RawMessage, loc location.Location, eff effects) json.RawMessage {
	if s.cfg.Analyzer == nil || eff.Inert {
		return content
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		return content
	}
	ue := map[string]json.RawMessage{}
	if raw, ok := c["user_expressions"]; ok {
		_ = json.Unmarshal(raw, &ue)
	}
	if ue == nil {
		ue = map[string]json.RawMessage{}
	}
	expr, _ := json.Marshal(s.reportExpr(loc, eff))
	ue[agent.ReportKey] = expr
	c["user_expressions"], _ = json.Marshal(ue)
	out, err := json.Marshal(c)
	if err != nil {
		return content
	}
	return out
}

// afterCell updates the state map from the agent's report and returns the
// reply content without Ferry's entry, the versions the cell wrote, and
// the report.
func (s *Server) afterCell(ctx context.Context, loc location.Location, cell string, eff effects, reply json.RawMessage) (json.RawMessage, map[string]int, agent.Report) {
	if s.cfg.Analyzer == nil || eff.Inert {
		return reply, nil, agent.Report{}
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(reply, &c) != nil {
		return reply, nil, agent.Report{}
	}
	var ue map[string]json.RawMessage
	_ = json.Unmarshal(c["user_expressions"], &ue)
	raw, ok := ue[agent.ReportKey]
	if !ok {
		// The cell raised, so ipykernel evaluated no expressions; ask now,
		// as the cell may have changed names before raising.
		// ipykernel aborts requests for a moment after a cell raised;
		// the report is asked again then (bounded), since losing it
		// would lose the cell's in-place changes.
		for attempt := 1; ; attempt++ {
			exprs, err := transfer.Exec(ctx, s, loc, "", map[string]string{agent.ReportKey: s.reportExpr(loc, eff)})
			if err == nil {
				raw = exprs[agent.ReportKey]
			}
			if !errors.Is(err, transfer.ErrAborted) || attempt == 8 {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 25 * time.Millisecond):
			}
		}
	}
	rep, err := agent.ParseReport(raw)
	if err != nil {
		s.log.Warn("no state report from the agent; assuming the cell changed what it writes or may mutate", "err", err)
		rep = agent.Report{Changed: map[string]agent.Change{}}
		for _, w := range eff.Writes {
			rep.Changed[w] = agent.Change{Movable: true}
		}
		for _, w := range eff.Maybe { // known values it may have changed in place
			if old, ok := s.state.Get(w); ok {
				rep.Changed[w] = agent.Change{Movable: old.Movable, Reason: old.Reason, Kind: old.Kind, Size: old.Size, Group: old.Group, Needs: old.Needs}
			}
		}
	}
	changes := make(map[string]state.Change, len(rep.Changed))
	for n, ch := range rep.Changed {
		sc := state.Change{Size: ch.Size, Hash: ch.Hash, Movable: ch.Movable, Reason: ch.Reason, Kind: ch.Kind, Group: ch.Group, Needs: ch.Needs, Ratio: ch.Ratio}
		if uses, ok := eff.Defs[n]; ok {
			sc.Uses = uses
		} else if cls, ok := s.state.Get(ch.Kind); ok && cls.Kind == "type" && len(cls.Uses) > 0 {
			// An instance of a notebook class needs what its methods use
			// (s.apply(2) reads factor), as the class does.
			sc.Uses = append([]string{ch.Kind}, cls.Uses...)
		} else if old, ok := s.state.Get(n); ok && ch.Kind == old.Kind && len(ch.Uses) == 0 {
			sc.Uses = old.Uses
		}
		// What the agent found the value's code reads: a function a
		// factory returned, a bound method, a partial, instances in a
		// list (issue 14), which no definition in the cell names.
		sc.Uses = mergeUses(sc.Uses, ch.Uses, n)
		changes[n] = sc
	}
	wrote := s.state.Ran(loc, cell, changes, rep.Deleted)
	if loc == location.Local { // the laptop's files as this cell left them
		for n := range changes {
			if files.IsName(n) {
				s.files.Stamp(files.Rel(n))
			}
		}
		for _, n := range rep.Deleted {
			if files.IsName(n) {
				s.files.Stamp(files.Rel(n))
			}
		}
	}
	if len(rep.Hashes) > 0 {
		later := make(map[string]string, len(rep.Hashes))
		for n, h := range rep.Hashes {
			if _, ok := rep.Changed[n]; !ok {
				later[n] = h
			}
		}
		s.state.SetHashes(loc, later)
	}
	s.files.Learn(cell, rep.Reads, rep.Lists)
	s.learnImports(loc, rep.Imports)
	if ue != nil {
		delete(ue, agent.ReportKey)
		c["user_expressions"], _ = json.Marshal(ue)
		if out, err := json.Marshal(c); err == nil {
			return out, wrote, rep
		}
	}
	return reply, wrote, rep
}

// baselineDump measures what dump-the-session migration would cost before
// this cell: a full dill dump of every source that holds state the cell
// needs at loc. Only called with Config.BaselineDump.
func (s *Server) baselineDump(ctx context.Context, plan policy.Plan) {
	for _, mv := range plan.Moves {
		src := mv.From
		exprs, err := transfer.Exec(ctx, s, src, "", map[string]string{"d": agent.DumpSessionExpr})
		if err != nil {
			s.log.Warn("baseline dump failed", "at", src, "err", err)
			continue
		}
		var d struct {
			Bytes   int64   `json:"bytes"`
			Seconds float64 `json:"seconds"`
			Error   string  `json:"error"`
		}
		rep, err := agent.ParseBundle(exprs["d"])
		if err != nil || json.Unmarshal([]byte(rep), &d) != nil {
			s.log.Warn("baseline dump answered no figure", "err", err)
			continue
		}
		if d.Error != "" {
			s.log.Warn("dill could not dump the session (Ferry moved it anyway)", "err", d.Error)
		}
		s.Stats.mu.Lock()
		s.Stats.FullStateBytes += d.Bytes
		s.Stats.FullStateSeconds += d.Seconds
		s.Stats.mu.Unlock()
	}
}

// mergeUses is the union of the analysis's and the agent's uses, in order,
// without the value's own name.
func mergeUses(a, b []string, self string) []string {
	if len(b) == 0 {
		return a
	}
	out := append([]string(nil), a...)
	for _, u := range b {
		if u != self && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}
