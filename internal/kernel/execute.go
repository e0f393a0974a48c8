package kernel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recovery"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/trace"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

type executeRequest struct {
	Code            string          `json:"code"`
	Silent          bool            `json:"silent"`
	StoreHistory    *bool           `json:"store_history"`
	UserExpressions json.RawMessage `json:"user_expressions"`
	AllowStdin      *bool           `json:"allow_stdin"`
	StopOnError     *bool           `json:"stop_on_error"`
}

// execute is the flow of one cell, top to bottom as DESIGN.md draws it:
// (1) Ferry's own commands; (2) recovery of what dead kernels held, then
// analysis; (3) the plan, decided once by policy.MakePlan; (4) the plan's
// moves carried out (carryOut); (5) the request forwarded and relayed;
// (6) the agent's report, then the state map, lineage, model and trace.
// No step calls back to an earlier one; after a kernel death during (4)
// only the moves to the same location are planned again.
func (s *Server) execute(ctx context.Context, m *wire.Message) {
	var req executeRequest
	if err := m.Decode(&req); err != nil {
		s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "error", "ename": "FerryError",
			"evalue": "malformed execute_request: " + err.Error(), "traceback": []string{}, "execution_count": s.execCount}, nil)
		return
	}
	cmd, pin, body := parseFerry(req.Code, s.locs)
	code := req.Code
	if pin != "" {
		code = body
	}
	// Counted and stored in history as IPython does: not when silent, not
	// without store_history, and not when there is no code at all.
	store := !req.Silent && (req.StoreHistory == nil || *req.StoreHistory) && (cmd != nil || !isBlank(code))
	count := 0
	if store {
		count = s.execCount + 1
	}

	// 1. %ferry lines are answered in Go.
	if cmd != nil {
		if !req.Silent {
			// Like ipykernel, execute_input shows the number the cell
			// gets if it counts.
			s.publish(wire.IOPub, "execute_input", m, map[string]any{"code": req.Code, "execution_count": s.execCount + 1}, nil)
		}
		out, err := s.ferryCommand(cmd)
		if store {
			s.execCount = count
			s.histMu.Lock()
			s.history = append(s.history, historyEntry{Line: count, Input: req.Code})
			s.histMu.Unlock()
		}
		if err != nil {
			s.publishError(m, "FerryUsageError", err.Error())
			s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "error", "ename": "FerryUsageError", "evalue": err.Error(),
				"traceback": []string{}, "execution_count": s.execCount}, nil)
			return
		}
		if out != "" && !req.Silent {
			s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stdout", "text": out}, nil)
		}
		s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "ok", "execution_count": s.execCount, "user_expressions": map[string]any{}, "payload": []any{}}, nil)
		return
	}

	// 2. Analysis: which names the cell reads and writes; then recovery
	// of what it reads that died with a kernel, and only that.
	t0 := time.Now()
	deaths := s.noticeDeaths()
	think, first := 0.0, s.lastEnd.IsZero()
	if !first {
		think = t0.Sub(s.lastEnd).Seconds()
	}
	key := cellKey(m.Metadata, code)
	eff := s.analyze(ctx, key, code)
	need := s.rebuildNeed(m, eff, pin, req.Silent)
	var notes []string
	if need.Announce != nil {
		// Said at once: a rebuild announced next may take a while.
		for _, d := range deaths {
			need.Announce(d)
		}
	} else {
		notes = deaths
	}
	note, err := s.recovery.Rebuild(ctx, need)
	notes = append(notes, note)
	if err == nil && note != "" {
		// What was rebuilt is in the state map again (a function's
		// globals, a module's attributes): analysis sees it now.
		eff = s.analyze(ctx, key, code)
	}
	if err != nil {
		s.failLost(m, store, count, notes, err)
		return
	}
	cell := policy.Cell{Hash: key, Index: -1, Reads: s.state.Needs(eff.Reads), Writes: eff.Writes, Pin: pin, Locs: s.locs}
	pinWhy := ""
	if pin != "" {
		pinWhy = "pinned to " + pin.String() + " by %%ferry " + pin.String()
	} else if loc, why, ok := s.state.Pinned(cell.Reads); ok {
		cell.Pin = loc
		pinWhy = "pinned to " + loc.String() + " by " + strings.Join(why, ", ")
	} else if len(eff.Outside) > 0 {
		cell.Pin = location.Local
		pinWhy = "pinned to local: it reads " + strings.Join(eff.Outside, ", ") + ", outside the notebook's folder, which only the laptop has"
	} else if eff.Shell {
		// A command's output describes the machine it ran on: the
		// corpus's `!ls -l my_figure.png` printed the cloud's user as the
		// file's owner. %%ferry runs one elsewhere on purpose.
		cell.Pin = location.Local
		pinWhy = "pinned to local: it runs shell commands, whose output describes the machine they run on (users, paths, hosts); %%ferry NAME runs it elsewhere"
	}

	// 3. The plan: where the cell runs, what moves or is remade there.
	plan := policy.MakePlan(s.policy, cell, s.facts, s.model)
	if cell.Pin == "" && plan.Loc != location.Local {
		if fb := s.fileBytes(plan); fb > s.filesCap() {
			cell.Pin = location.Local
			pinWhy = fmt.Sprintf("pinned to local: it needs %s of files from the notebook's folder at %s, more than the %s Ferry moves for one cell (--files-cap)",
				report.HumanBytes(fb), plan.Loc, report.HumanBytes(s.filesCap()))
			plan = policy.MakePlan(s.policy, cell, s.facts, s.model)
		}
	}
	if pinWhy != "" {
		plan.Why = pinWhy
	}

	s.lastCosts = plan.Costs
	if s.backends[plan.Loc] == nil {
		err := fmt.Errorf("this cell is pinned to %s, but no %s backend is configured (pass --remote URL or set FERRY_REMOTE)", plan.Loc, plan.Loc)
		s.lastWhy = plan.Why
		s.publishError(m, "FerryError", err.Error())
		s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "error", "ename": "FerryError", "evalue": err.Error(), "traceback": []string{}, "execution_count": s.execCount}, nil)
		return
	}
	content := m.Content
	if pin != "" {
		content = withCode(m.Content, body)
	}
	var recordResult func(string)
	hist := -1
	if store {
		s.histMu.Lock()
		s.history = append(s.history, historyEntry{Line: count, Input: req.Code})
		hist = len(s.history) - 1
		s.histMu.Unlock()
		recordResult = func(text string) {
			s.histMu.Lock()
			s.history[hist].Output = &text
			s.histMu.Unlock()
		}
	}

	// 4. Carry the plan out: bring every stale input the cell reads to
	// its location, nothing else.
	if s.cfg.BaselineDump {
		s.baselineDump(ctx, plan)
	}
	lostBefore := s.recovery.Counts().Lost
	out := s.carryOut(ctx, &plan)
	notes = append(notes, out.notes...)
	if died := s.noticeDeaths(); (len(died) > 0 || s.recovery.Counts().Lost > lostBefore) && !s.stopping.Load() {
		// A kernel died during the moves: rebuild what it alone held and
		// this cell reads, then plan the moves to the same location again.
		s.log.Warn("a kernel died before or while moving state; rebuilding what it held, then moving again", "to", plan.Loc, "err", out.err)
		if need.Announce != nil {
			for _, d := range died {
				need.Announce(d)
			}
		} else {
			notes = append(notes, died...)
		}
		note, err := s.recovery.Rebuild(ctx, need)
		notes = append(notes, note)
		if err != nil {
			s.lastWhy = plan.Why
			s.failLost(m, store, count, notes, err)
			return
		}
		cell.Reads = s.state.Needs(eff.Reads)
		plan.Moves = policy.PlanMoves(plan.Loc, cell, s.facts, s.model)
		again := s.carryOut(ctx, &plan)
		again.bytes, again.seconds = again.bytes+out.bytes, again.seconds+out.seconds
		for n, b := range out.sizes {
			if again.sizes == nil {
				again.sizes = map[string]int64{}
			}
			again.sizes[n] += b
		}
		notes = append(notes, again.notes...)
		out = again
	}
	if note := ferryLines(notes); note != "" {
		s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stderr", "text": note}, nil)
	}
	loc := plan.Loc
	s.lastWhy = plan.Why
	if out.err != nil && pin != "" {
		// %%ferry is the user's word: the cell runs there or not at all,
		// never silently somewhere else.
		if ctx.Err() != nil {
			return // shutting down
		}
		s.lastWhy += fmt.Sprintf("; moving state to %s failed (%v), so the cell did not run", loc, out.err)
		s.failUnrun(m, store, count, unrunReason(pin, out.err, true))
		return
	}
	if out.err != nil {
		// The data stayed where it was; run the cell there instead of
		// failing it, so nothing is lost.
		s.log.Warn("moving state failed; running where the data is", "to", loc, "err", out.err)
		to := loc
		loc = out.from
		if s.backends[loc] == nil {
			loc = location.Local
		}
		s.lastWhy += fmt.Sprintf("; moving state to %s failed (%v), ran at %s", to, out.err, loc)
		// A value found unmovable is a placement fact (see %ferry why),
		// not a failure to tell in the cell's output.
		if !req.Silent && !errors.Is(out.err, errUnmovable) {
			s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stderr",
				"text": fmt.Sprintf("Ferry: could not move this cell's inputs to the %s kernel (%v); running it at %s, where they are\n", to, out.err, loc)}, nil)
		}
	}

	// 5. Forward and relay, once the kernel runs: a kernel that cannot
	// start ran nothing, and the cell is counted nowhere.
	if err := s.ready(ctx, loc); err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		s.lastWhy += fmt.Sprintf("; the %s kernel could not start (%v), so the cell did not run", loc, err)
		s.failUnrun(m, store, count, unrunReason(loc, err, false))
		return
	}
	// The kernel is ready, so what it said of its environment is known;
	// and a cloud kernel let go after idle time was started again for
	// this cell: a line each says so.
	if note := ferryLines([]string{s.envNotice(loc, eff.Facts.Env), s.releaseNotice(loc, len(out.names), t0)}); note != "" && !req.Silent {
		s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stderr", "text": note}, nil)
	}
	s.where.set(loc)
	defer s.where.set("")
	content = s.withReport(content, loc, eff)
	// The kernel's history in step with the front end's: its count, In,
	// and the results the cell reads (_, Out[n]).
	sent := m
	if md := s.syncHistory(ctx, loc, count, eff.Reads, m.Metadata); !bytes.Equal(md, m.Metadata) {
		cp := *m
		cp.Metadata = md
		sent = &cp
	}
	readVers := s.state.Versions(cell.Reads)
	t1 := time.Now()
	intr0, inputs0 := s.interrupts.Load(), s.inputs.Load()
	// execute_input and execute_result carry the number the cell gets if
	// it counts, as ipykernel's do, whichever backend runs it.
	reply, err := s.forwardAs(ctx, loc, wire.Shell, sent, content, s.execCount+1, false, recordResult)
	runtime := time.Since(t1).Seconds()
	switch {
	case store && err == nil && replyStatus(reply) == "aborted":
		// ipykernel aborted the request (it still cleared its queue after
		// an error): the cell did not run, and as ipykernel does it takes
		// no number and leaves no history; the front end may send it
		// again.
		s.histMu.Lock()
		s.history = slices.Delete(s.history, hist, hist+1)
		s.histMu.Unlock()
	case store:
		s.execCount = count
		s.histMu.Lock()
		if s.history[hist].Output != nil {
			s.history[hist].outAt = map[location.Location]bool{loc: true}
		}
		s.histMu.Unlock()
	}
	s.lastEnd = time.Now()
	s.cloudUsed(loc)
	s.lastMoved = "nothing moved"
	if len(out.names) > 0 {
		s.lastMoved = fmt.Sprintf("moved before it: %s (%s in %.2f s)", strings.Join(shownNames(out.names, true), ", "), report.HumanBytes(out.bytes), out.seconds)
	}
	s.Stats.mu.Lock()
	if loc == location.Local {
		s.Stats.CellsLocal++
	} else {
		s.Stats.CellsRemote++
	}
	if s.Stats.CellsAt == nil {
		s.Stats.CellsAt = map[location.Location]int{}
	}
	s.Stats.CellsAt[loc]++
	if out.bytes > 0 {
		s.Stats.Migrations++
		s.Stats.BytesMoved += out.bytes
	}
	s.Stats.TransferSeconds += out.seconds
	if cell.Pin != "" {
		s.Stats.PinnedCells++
	}
	s.Stats.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		ename, msg := "FerryError", err.Error()
		if errors.Is(err, backend.ErrDied) {
			st := s.backends[loc].Status()
			lost := s.recovery.Lost(loc)
			what := "died while running this cell"
			switch {
			case errors.Is(err, errNotSent):
				what = "died before this cell was sent to it, so the cell did not run"
			case errors.Is(err, errUnconfirmed):
				what = "died before it confirmed it started this cell, so the cell may have run partly"
			}
			ename = "KernelDied"
			msg = fmt.Sprintf("the %s kernel %s (%s); Ferry starts a new one for the next cell", loc, what, orDefault(st.LastExit, "no exit status"))
			if lost != "" {
				msg += "; " + lost
			}
		}
		s.publishError(m, ename, msg)
		s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "error", "ename": ename, "evalue": msg, "traceback": []string{}, "execution_count": s.execCount}, nil)
		return
	}

	// 6. The agent's report: what the cell bound, deleted or mutated;
	// then the state map, lineage, model and trace learn of it.
	var wrote map[string]int
	var rep agent.Report
	reply.Content, wrote, rep = s.afterCell(ctx, loc, cell.Hash, eff, reply.Content)
	var rs struct {
		Status string `json:"status"`
		EName  string `json:"ename"`
	}
	_ = json.Unmarshal(reply.Content, &rs)
	run := recovery.Run(cell.Hash, code, loc, rs.Status != "ok", readVers, wrote)
	run.Count = count
	// An interrupt during the cell counts even if the cell caught it: what
	// it bound may be partial.
	run.Interrupted = rs.EName == "KeyboardInterrupt" || s.interrupts.Load() != intr0
	run.Stdin = s.inputs.Load() != inputs0
	// What the cell did outside its namespace, as the agent saw it, and
	// what the analysis expects of it (a shell command or a network call
	// the audit hook may not see): such a cell is never re-run hidden.
	run.Effects = append(run.Effects, rep.Effects...)
	for _, e := range eff.Facts.SideEffects {
		if e != "file-write" || len(rep.Effects) == 0 {
			run.Effects = append(run.Effects, e)
		}
	}
	s.lineage.Add(run)
	c := &call{fe: m, count: s.execCount}
	if !store {
		c.count = 0
		reply.Content = setCount(reply.Content, s.execCount)
	}
	s.relayReply(wire.Shell, c, reply)
	s.lastCell = cell.Hash
	thinkObs := think
	if first {
		thinkObs = -1 // no cell before this one: no think time
	}
	s.model.ObserveRuntime(policy.Observation{Cell: cell.Hash, Loc: loc, Runtime: runtime, Think: thinkObs, Reads: eff.Reads, Writes: eff.Writes, Sizes: s.sizes(eff.Writes), Pin: cell.Pin})
	if rs.Status == "ok" {
		s.remember(cell.Hash, loc, runtime)
	}
	s.seq++
	released := s.rel.traced
	s.rel.traced = nil
	if s.cfg.Trace == nil {
		return // no trace: nothing more to gather on the cell's path
	}
	// The trace's writes are what the agent saw change as well as what
	// the analysis expected (random state, process settings, a value
	// changed in place): a replay must know where those versions live.
	writes := withWrote(eff.Writes, wrote)
	idleBytes := s.Stats.Totals().IdleBytes
	cloudSecs, _ := s.CloudUsage()
	ev := trace.Event{Seq: s.seq, Cell: cell.Hash, Index: -1, Reads: nonNil(eff.Reads), Writes: writes,
		Sizes: s.sizes(writes), ReadSizes: s.fileSizes(eff.Reads), ReadRatios: s.fileRatios(eff.Reads), Loc: loc, Runtime: runtime, BytesMoved: out.bytes, TransferSeconds: out.seconds, Think: think,
		Status: rs.Status, Pinned: cell.Pin != "", Why: s.lastWhy, Moved: out.names, MovedSizes: out.sizes,
		IdleBytes: idleBytes - s.tracedIdleBytes, Released: released, CloudSeconds: cloudSecs,
		StartSeconds: time.Duration(s.startWaited.Swap(0)).Seconds()}
	s.tracedIdleBytes = idleBytes
	if err := s.cfg.Trace.Add(ev); err != nil {
		s.log.Warn("writing trace", "err", err)
	}
}

// failUnrun answers a cell that did not run anywhere with one FerryError
// (in the cell and in its reply). It counts as executed, as a cell that
// raised does, so its history entry keeps its number.
func (s *Server) failUnrun(m *wire.Message, store bool, count int, msg string) {
	if store {
		s.execCount = count
	}
	s.lastEnd = time.Now()
	s.publishError(m, "FerryError", msg)
	s.send(wire.Shell, m, "execute_reply", map[string]any{"status": "error", "ename": "FerryError", "evalue": msg, "traceback": []string{}, "execution_count": s.execCount}, nil)
}

// unrunReason says why a cell bound for loc did not run, and what fixes
// it. err is a failure to get loc's kernel ready or, if moving, to move
// the cell's inputs there.
func unrunReason(loc location.Location, err error, moving bool) string {
	var se *startError
	switch {
	case errors.As(err, &se):
		fix := "check --remote URL (or FERRY_REMOTE) and the token (FERRY_TOKEN or --token-file)"
		if se.loc == location.Local {
			fix = "check --python (an interpreter with ipykernel)"
		}
		if backend.NamesTheFix(err) {
			// The backend's own words say what to do (a rejected token
			// and where to get one); the generic advice would repeat it.
			return fmt.Sprintf("the %s kernel could not start, so this cell did not run and nothing ran in its place: %v", se.loc, err)
		}
		return fmt.Sprintf("the %s kernel could not start, so this cell did not run and nothing ran in its place: %v; %s", se.loc, err, fix)
	case errors.Is(err, errUnmovable):
		return fmt.Sprintf("this cell is pinned to %s by %%%%ferry %s, but it reads values that cannot be moved there (%v), so it did not run; make them in a %%%%ferry %s cell, or remove %%%%ferry %s to run it where they are",
			loc, loc, strings.TrimPrefix(err.Error(), errUnmovable.Error()+": "), loc, loc)
	case errors.Is(err, errStopping):
		return "Ferry is shutting down, so this cell did not run"
	case moving:
		return fmt.Sprintf("could not move this cell's inputs to the %s kernel (%v); pinned there by %%%%ferry %s, it did not run, and nothing ran in its place", loc, err, loc)
	}
	return fmt.Sprintf("the %s kernel is not ready (%v), so this cell did not run", loc, err)
}

// errUnmovable is returned when a needed value cannot be serialised.
var errUnmovable = errors.New("value cannot be moved")

// moved is what carrying out a plan's moves did.
type moved struct {
	names []string
	bytes int64
	// sizes are the bytes each name took on the link (for the trace).
	sizes   map[string]int64
	seconds float64 // the moves' own time: no kernel start, no recompute
	// err is the first failure, and from the source of the move that
	// failed: the data is still there, so the cell can run there.
	err  error
	from location.Location
	// notes are for the cell's output: values remade by re-running cells
	// (what ran, where, why), and what a target said while loading.
	notes []string
}

// carryOut executes plan's moves in order: names gone or stale at the
// cell's location are deleted there, each move is made (or its values
// recomputed there, as planned), and each finished move is recorded in
// the state map and the model. It stops at the first failure.
func (s *Server) carryOut(ctx context.Context, plan *policy.Plan) moved {
	var out moved
	if s.cfg.Analyzer == nil {
		return out
	}
	if gone := s.state.Gone(plan.Loc); len(gone) > 0 {
		if err := s.mover.Delete(ctx, plan.Loc, gone); err != nil {
			out.err, out.from = err, location.Local
			return out
		}
	}
	for _, mv := range plan.Moves {
		names := mv.Names
		if mv.Recompute != nil {
			t0 := time.Now()
			if made := s.recovery.Recompute(ctx, mv.To, *mv.Recompute); len(made) > 0 {
				d := mv.Recompute.Describe(made, mv.To, time.Since(t0).Seconds(), report.HumanBytes(s.state.Size(made)))
				plan.Why += "; " + d
				out.notes = append(out.notes, d)
				names = without(names, made)
			}
		}
		if len(names) == 0 {
			continue
		}
		if err := s.checkVersions(ctx, mv.From, mv.To, names); err != nil {
			out.err, out.from = err, mv.From
			return out
		}
		vers := s.state.Versions(names)
		res, err := s.mover.Move(ctx, mv.From, mv.To, names)
		if errors.Is(err, transfer.ErrIncompatible) {
			// A certain failure: the target lacks what the values need.
			// They stay where they are, and so do the cells reading them.
			for _, n := range names {
				s.state.SetUnmovable(n, "the "+mv.To.String()+" kernel could not load it ("+innermost(err.Error())+")")
			}
		}
		if err != nil {
			out.err, out.from = err, mv.From
			return out
		}
		recovery.Record(s.state, s.model, mv.To, vers, res)
		for _, n := range res.Notes {
			out.notes = append(out.notes, fmt.Sprintf("the %s kernel said while loading %s: %s", mv.To, strings.Join(shownNames(res.Names, false), ", "), n))
		}
		out.bytes += res.Bytes
		out.seconds += res.WireSeconds
		out.names = append(out.names, names...)
		// One payload carries the names; its measured bytes are shared
		// out by their sizes, so the trace holds what moved.
		got := res.Names
		if len(got) == 0 {
			got = names
		}
		if out.sizes == nil {
			out.sizes = map[string]int64{}
		}
		for n, b := range trace.Apportion(res.Bytes, got, s.sizes(got)) {
			out.sizes[n] += b
		}
		if len(res.Unmovable) > 0 {
			var why []string
			for n, r := range res.Unmovable {
				why = append(why, n+" ("+r+")")
			}
			sort.Strings(why)
			out.err, out.from = fmt.Errorf("%w: %s", errUnmovable, strings.Join(why, ", ")), mv.From
			return out
		}
	}
	sort.Strings(out.names)
	return out
}

// noticeDeaths finds kernels that died since the agent was installed in
// them, before anything is planned, so a dead copy is never chosen as a
// transfer source: recovery forgets their copies and queues what only
// they held. It returns a line for the cell's output per death that lost
// values (what is rebuilt when needed, what is lost for good).
func (s *Server) noticeDeaths() []string {
	var notes []string
	for _, loc := range s.mover.Dead() {
		if lost := s.recovery.Lost(loc); lost != "" {
			notes = append(notes, recovery.KernelOf(loc)+" died; "+lost)
		}
	}
	return notes
}

// rebuildNeed is what recovery is told of the cell: what it reads, where
// it is pinned, and how to say in its output that a rebuild runs.
func (s *Server) rebuildNeed(m *wire.Message, eff effects, pin location.Location, silent bool) recovery.Need {
	need := recovery.Need{Reads: eff.Reads, All: eff.Dynamic, At: pin}
	if !silent {
		need.Announce = func(line string) {
			s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stderr", "text": "Ferry: " + line + "\n"}, nil)
		}
	}
	return need
}

// ferryLines is notes as the cell's stderr shows them: each line on its
// own, starting "Ferry: " (front ends and the transparency tests tell
// Ferry's words from the cell's by it), empty notes left out.
func ferryLines(notes []string) string {
	var b strings.Builder
	for _, n := range notes {
		for _, l := range strings.Split(n, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				b.WriteString("Ferry: " + l + "\n")
			}
		}
	}
	return b.String()
}

// failLost answers a cell that reads values lost with a dead kernel that
// cannot be rebuilt: the notes so far, then the error naming them. The
// cell did not run.
func (s *Server) failLost(m *wire.Message, store bool, count int, notes []string, err error) {
	var req executeRequest
	_ = m.Decode(&req)
	if note := ferryLines(notes); note != "" && !req.Silent {
		s.publish(wire.IOPub, "stream", m, map[string]string{"name": "stderr", "text": note}, nil)
	}
	s.lastWhy = "it reads values lost with a dead kernel, so it did not run"
	s.failUnrun(m, store, count, err.Error())
}

// without returns names minus drop.
func without(names, drop []string) []string {
	d := map[string]bool{}
	for _, n := range drop {
		d[n] = true
	}
	var out []string
	for _, n := range names {
		if !d[n] {
			out = append(out, n)
		}
	}
	return out
}

// isBlank reports whether code is empty or only whitespace, as Python's
// str.isspace sees it (IPython neither runs nor counts such a cell).
func isBlank(code string) bool {
	return strings.TrimFunc(code, func(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }) == ""
}

// withWrote is names plus the names in wrote, sorted, never nil.
func withWrote(names []string, wrote map[string]int) []string {
	out := append([]string{}, names...)
	for n := range wrote {
		if !slices.Contains(names, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// sizes returns the known sizes of names.
func (s *Server) sizes(names []string) map[string]int64 {
	out := map[string]int64{}
	for _, n := range names {
		if v, ok := s.state.Get(n); ok {
			out[n] = v.Size
		}
	}
	return out
}

// fileSizes is sizes for the files among names (nil when none).
func (s *Server) fileSizes(names []string) map[string]int64 {
	var fs []string
	for _, n := range names {
		if files.IsName(n) {
			fs = append(fs, n)
		}
	}
	if len(fs) == 0 {
		return nil
	}
	return s.sizes(fs)
}

// fileRatios are the compression estimates planning had of the files
// among names (fileFacts), for the trace: a replay prices them the same.
func (s *Server) fileRatios(names []string) map[string]float64 {
	var out map[string]float64
	for _, n := range names {
		if !files.IsName(n) {
			continue
		}
		if v, ok := s.facts.Var(n); ok && v.Ratio > 0 {
			if out == nil {
				out = map[string]float64{}
			}
			out[n] = v.Ratio
		}
	}
	return out
}

// cellKey identifies a cell for the cost and interaction models: the
// front end's cellId when it sends one (JupyterLab, VS Code and ferry run
// do), so a hot spot keeps its history while the user edits it; else the
// code's hash.
func cellKey(meta json.RawMessage, code string) string {
	var md struct {
		CellID string `json:"cellId"`
	}
	if json.Unmarshal(meta, &md) == nil && md.CellID != "" {
		return "id:" + md.CellID
	}
	return codeHash(code)
}

// codeHash identifies a cell's code in traces and the cost model.
func codeHash(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:8])
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// publishError shows an error in the cell the way a Python exception shows.
func (s *Server) publishError(m *wire.Message, ename, evalue string) {
	s.publish(wire.IOPub, "error", m, map[string]any{"ename": ename, "evalue": evalue,
		"traceback": []string{"\x1b[0;31m" + ename + "\x1b[0m: " + evalue}}, nil)
}

// withCode returns execute_request content with code replaced.
func withCode(content json.RawMessage, code string) json.RawMessage {
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		return content
	}
	b, _ := json.Marshal(code)
	c["code"] = b
	out, err := json.Marshal(c)
	if err != nil {
		return content
	}
	return out
}

// parseFerry recognises Ferry's own commands. A cell whose first line is
// `%%ferry LOCATION` (local, or a configured cloud's name) is pinned: pin
// is the location and body the rest. "remote" and "cloud" name the only
// cloud when there is one. A cell of only `%ferry ...` lines is a command
// for Ferry (cmd != nil); a pin to a location not configured is the
// command "__unknown_location__ NAME", so the user is told, not ignored.
func parseFerry(code string, locs location.Set) (cmd []string, pin location.Location, body string) {
	trimmed := strings.TrimLeft(code, " \t\r\n")
	first, rest, _ := strings.Cut(trimmed, "\n")
	f := strings.Fields(first)
	if len(f) == 0 {
		return nil, "", code
	}
	switch f[0] {
	case "%%ferry":
		if len(f) != 2 {
			return f[1:], "", ""
		}
		if l, ok := pinTarget(f[1], locs); ok {
			return nil, l, rest
		}
		if !isCommand(f[1]) {
			return []string{"__unknown_location__", f[1]}, "", ""
		}
		return f[1:], "", ""
	case "%ferry":
		if strings.TrimSpace(rest) != "" {
			return append([]string{"__multiline__"}, f[1:]...), "", ""
		}
		return f[1:], "", ""
	}
	return nil, "", code
}

// pinTarget resolves a %%ferry pin's name among the configured locations.
func pinTarget(name string, locs location.Set) (location.Location, bool) {
	if l, err := location.Parse(name, locs); err == nil {
		return l, true
	}
	if clouds := locs.Clouds(); (name == "remote" || name == "cloud") && len(clouds) == 1 {
		return clouds[0], true
	}
	if name == "remote" && len(locs.Clouds()) == 0 {
		// No cloud: the pin names the default one, which is not there;
		// the policy runs it on the laptop and says so, as before.
		return location.Remote, true
	}
	return "", false
}

// isCommand reports whether word is one of the %ferry commands, which a
// %%ferry first line may also carry.
func isCommand(word string) bool {
	switch word {
	case "help", "status", "policy", "why":
		return true
	}
	return false
}

// ferryCommand runs a %ferry command and returns its text output.
func (s *Server) ferryCommand(args []string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("%ferry needs a command: status, policy NAME, help")
	}
	switch args[0] {
	case "__multiline__":
		return "", errors.New("a %ferry command must be alone in its cell; move the Python code to another cell")
	case "__unknown_location__":
		hint := "name one of: " + s.locs.String()
		if args[1] == "remote" || args[1] == "cloud" {
			hint = "with several clouds, name one: " + s.locs.Clouds().String()
		}
		return "", fmt.Errorf("%%%%ferry %s: no location of that name is configured; %s (clouds come from --remote NAME=URL)", args[1], hint)
	case "help":
		return ferryHelp, nil
	case "status":
		return s.statusText(), nil
	case "policy":
		if len(args) == 1 {
			return "policy: " + s.policy.Name() + "\n", nil
		}
		p, err := policy.New(args[1], s.cfg.Seed)
		if err != nil {
			return "", err
		}
		s.policy = p
		return "policy: " + p.Name() + "\n", nil
	case "why":
		if s.lastWhy == "" {
			return "no cell has run yet\n", nil
		}
		out := fmt.Sprintf("last cell ran at %s: %s\n", s.where.now(), s.lastWhy)
		if len(s.lastCosts) > 0 {
			var est []string
			for _, l := range s.locs {
				if c, ok := s.lastCosts[l]; ok {
					est = append(est, fmt.Sprintf("%s %.3f s", l, c))
				}
			}
			out += "  estimated: " + strings.Join(est, ", ") + " (runtime, moving its inputs, round trip)\n"
		}
		return out + "  " + s.lastMoved + "\n", nil
	}
	return "", fmt.Errorf("unknown %%ferry command %q; try %%ferry help", args[0])
}

const ferryHelp = `Ferry commands:
  %ferry status          backends, interpreter, pid, uptime
  %ferry policy [NAME]   show or set the placement policy (local, remote, pingpong, random, paper, ferry)
  %ferry why             where the last cell ran and why
  %%ferry LOCATION       first line of a cell: run this cell there (local, remote, or a cloud's name)
  %ferry help            this text
`

func (s *Server) statusText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Ferry %s, policy %s, up %s, %d cells run\n", Version, s.policy.Name(), time.Since(s.start).Round(time.Second), s.execCount)
	for _, loc := range s.locs {
		bk := s.backends[loc]
		st := bk.Status()
		fmt.Fprintf(&b, "%s: %s %s", loc, st.Kind, st.State)
		if st.Interpreter != "" {
			fmt.Fprintf(&b, ", interpreter %s", st.Interpreter)
		}
		if st.PID != 0 {
			fmt.Fprintf(&b, ", pid %d", st.PID)
		}
		if st.URL != "" {
			fmt.Fprintf(&b, ", %s", st.URL)
		}
		if st.KernelID != "" {
			fmt.Fprintf(&b, ", kernel %s", st.KernelID)
		}
		b.WriteString(workDirNote(st))
		if !st.Started.IsZero() && st.State == "running" {
			fmt.Fprintf(&b, ", kernel uptime %s", time.Since(st.Started).Round(time.Second))
		}
		if st.RTT > 0 {
			fmt.Fprintf(&b, ", rtt %s", st.RTT.Round(time.Microsecond))
		}
		if st.Restarts > 0 {
			fmt.Fprintf(&b, ", restarted %d times (last exit: %s)", st.Restarts, st.LastExit)
		}
		b.WriteString("\n")
	}
	if len(s.locs.Clouds()) == 0 {
		b.WriteString("remote: not configured (pass --remote URL or set FERRY_REMOTE)\n")
	}
	if len(s.locs.Clouds()) > 0 {
		secs, usd := s.CloudUsage()
		price := "no --cloud-price given"
		if usd > 0 || s.cfg.CloudPrice > 0 {
			price = fmt.Sprintf("$%.4f", usd)
			if len(s.locs.Clouds()) == 1 {
				price += fmt.Sprintf(" at $%.2f/h", s.cfg.Price(s.locs.Clouds()[0]))
			}
		}
		fmt.Fprintf(&b, "cloud kernel time: %s (%s)\n", time.Duration(secs*float64(time.Second)).Round(time.Second), price)
	}
	b.WriteString(s.releaseStatus())
	b.WriteString(s.versionSkew())
	for _, loc := range s.locs.Clouds() {
		l := s.model.LinkTo(loc)
		if l.RTT <= 0 && l.Bandwidth <= 0 {
			continue
		}
		bw := "bandwidth not measured yet"
		if l.Bandwidth > 0 {
			bw = fmt.Sprintf("%.1f MB/s", l.Bandwidth/1e6)
		}
		comp := ""
		if l.Compression > 0 && l.Compression < 1 {
			comp = fmt.Sprintf(", payloads compress to %.0f%%", 100*l.Compression)
		}
		who := "link model"
		if len(s.locs.Clouds()) > 1 {
			// Several clouds: each line names its cloud, speed and price.
			who = fmt.Sprintf("%s: speed %.1fx the laptop's", loc, s.model.Speed(loc))
			if p := s.cfg.Price(loc); p > 0 {
				who += fmt.Sprintf(", $%.2f/h", p)
			}
			who += ", link model"
		}
		fmt.Fprintf(&b, "%s: rtt %.1f ms (probed %d times), %s, %.1f ms fixed per move%s\n", who, l.RTT*1e3, s.think.Counts().Probes, bw, l.PerTransfer*1e3, comp)
	}
	for _, loc := range s.locs.Clouds() {
		v, why := s.model.SpeedWhy(loc)
		switch why {
		case "measured":
			why = "measured on cells run at both places"
		case "configured":
			why = "as --remote-speed says, until cells run at both places"
		case "calibrated":
			why = "by the calibration (a short loop and BLAS product in both kernels), until cells run at both places"
		default:
			why = "assumed: not measured yet (the calibration runs once the kernel is up; --remote-speed sets it)"
		}
		fmt.Fprintf(&b, "speed: %s runs cells %.1fx as fast as the laptop, %s\n", loc.Describe(), v, why)
	}
	t := s.Stats.Totals()
	if t.IdleMoves > 0 || t.IdleCancelled > 0 {
		fmt.Fprintf(&b, "think time: %d moves (%s) made while you thought, %d cut short by your next cell\n", t.IdleMoves, report.HumanBytes(t.IdleBytes), t.IdleCancelled)
	}
	if t.VarsLost > 0 {
		fmt.Fprintf(&b, "recovery: %d values lost with dead kernels, %d rebuilt from the cells that made them (%.1f s)\n", t.VarsLost, t.VarsRebuilt, t.RebuildSeconds)
	}
	return b.String()
}

// replyStatus is a reply's content status ("ok", "error", "aborted"), ""
// if it has none.
func replyStatus(m *wire.Message) string {
	if m == nil {
		return ""
	}
	var c struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(m.Content, &c)
	return c.Status
}
