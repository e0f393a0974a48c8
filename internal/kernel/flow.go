package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/wire"
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
}

// agentState tracks the agent in one backend incarnation.
type agentState struct {
	mu     sync.Mutex
	died   <-chan struct{} // the incarnation the agent was installed in
	commID string
	ok     bool
}

// analyze returns the cell's effects. If the helper fails, the cell is
// treated as dynamic: correct beats small.
func (s *Server) analyze(ctx context.Context, code string) effects {
	if s.cfg.Analyzer == nil {
		return effects{}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := s.cfg.Analyzer.Analyze(actx, code)
	if err != nil {
		slog.Warn("cell analysis failed; treating the cell as touching everything", "err", err)
		r = analysis.Result{Dynamic: true}
	}
	eff := effects{Reads: r.Reads, Writes: r.Writes, Dynamic: r.Dynamic, Defs: r.Defs}
	// A cell that binds, deletes, calls and mutates nothing cannot change
	// the namespace: it needs no report (pass, a bare name, x.shape).
	eff.Inert = r.Error == "" && !r.Dynamic && len(r.Writes) == 0 && len(r.Deleted) == 0 && len(r.Calls) == 0 && len(r.Maybe) == 0
	maybe := map[string]bool{}
	for _, n := range r.Maybe {
		maybe[n] = true
	}
	// Calling a notebook function may mutate what it uses.
	for _, c := range r.Calls {
		if v, ok := s.state.Get(c); ok {
			for _, u := range v.Uses {
				maybe[u] = true
			}
		}
	}
	if r.Dynamic {
		eff.Reads = s.state.Names()
	}
	if _, ok := s.state.Get(agent.RNG); ok {
		eff.Reads = append(eff.Reads, agent.RNG)
	}
	for n := range maybe {
		eff.Maybe = append(eff.Maybe, n)
	}
	sort.Strings(eff.Maybe)
	return eff
}

// installAgent makes sure the agent runs in the current incarnation of the
// backend at loc: installs it, opens the state comm with the session
// secret, and forgets what a dead incarnation held.
func (s *Server) installAgent(ctx context.Context, loc string, b backend.Backend) error {
	a := s.agents[loc]
	a.mu.Lock()
	defer a.mu.Unlock()
	died := b.Died()
	if a.died == died && a.ok {
		return nil
	}
	if a.died != nil && a.died != died {
		s.forgetDead(loc)
	}
	a.died, a.ok = died, false
	if _, err := s.hiddenExec(ctx, loc, agent.InstallCode(s.secret), nil); err != nil {
		return fmt.Errorf("installing the agent in the %s kernel: %w", loc, err)
	}
	a.commID = wire.NewID()
	if _, err := s.hidden(ctx, loc, wire.Shell, "comm_open", map[string]any{
		"comm_id": a.commID, "target_name": "ferry.state", "data": map[string]string{"secret": s.secret},
	}, nil, false, nil); err != nil {
		return fmt.Errorf("opening the state channel to the %s kernel: %w", loc, err)
	}
	a.ok = true
	return nil
}

// errUnmovable is returned when a needed value cannot be serialised.
var errUnmovable = errors.New("value cannot be moved")

// bring moves the stale variables eff needs to loc, and deletes there the
// names removed since. The source copies stay until the target confirmed
// the payload's hash.
func (s *Server) bring(ctx context.Context, loc string, eff effects) (int64, float64, []string, error) {
	if s.cfg.Analyzer == nil {
		return 0, 0, nil, nil
	}
	t0 := time.Now()
	if gone := s.state.Gone(loc); len(gone) > 0 {
		if err := s.deleteAt(ctx, loc, gone); err != nil {
			return 0, 0, nil, err
		}
	}
	var moved int64
	var names []string
	for src, group := range s.state.Stale(loc, s.state.Needs(eff.Reads)) {
		if made, note := s.recompute(ctx, loc, group); len(made) > 0 {
			s.lastWhy += "; " + note
			group = without(group, made)
			if len(group) == 0 {
				continue
			}
		}
		n, unmovable, err := s.transfer(ctx, src, loc, group)
		if err != nil {
			return moved, time.Since(t0).Seconds(), names, err
		}
		moved += n
		names = append(names, group...)
		if len(unmovable) > 0 {
			return moved, time.Since(t0).Seconds(), names, fmt.Errorf("%w: %s", errUnmovable, strings.Join(unmovable, ", "))
		}
	}
	sort.Strings(names)
	return moved, time.Since(t0).Seconds(), names, nil
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

// transfer moves names from src to dst in one payload, streaming chunks
// through Ferry as they come, and records the new copies.
func (s *Server) transfer(ctx context.Context, src, dst string, names []string) (int64, []string, error) {
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		n, unmovable, err := s.transferOnce(ctx, src, dst, names)
		if err == nil {
			return n, unmovable, nil
		}
		lastErr = err
		if errors.Is(err, backend.ErrDied) || ctx.Err() != nil {
			break
		}
		slog.Warn("state transfer failed; retrying", "from", src, "to", dst, "err", err)
	}
	return 0, nil, lastErr
}

// packWindow is how many chunks the source sends per request: IOPub has no
// flow control, so a source faster than the link would otherwise pile the
// whole payload up in Ferry's memory (measured: 1.6 GB of Go heap for a
// 1 GB array sent to a jupyter-server kernel).
const packWindow = 4

func (s *Server) transferOnce(ctx context.Context, src, dst string, names []string) (int64, []string, error) {
	versions := s.state.Versions(names)
	for _, loc := range []string{src, dst} {
		if _, err := s.ensure(ctx, loc); err != nil {
			return 0, nil, err
		}
	}
	srcComm, dstComm := s.agents[src].commID, s.agents[dst].commID
	id := wire.NewID()
	var (
		mu       sync.Mutex
		packed   *agent.Msg
		sendErr  error
		chunks   int
		agentErr string
		moved    int64
	)
	dstB := s.backends[dst]
	var paused bool // the source waits for "more" (under mu)
	// Each chunk goes on to the target as soon as it arrives, so Ferry
	// never holds the whole payload.
	onIOPub := func(m *wire.Message) {
		d, raw, ok := agent.CommData(m)
		if !ok || d.ID != id {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch d.Op {
		case "begin", "chunk":
			if d.Op == "chunk" && len(m.Buffers) != 1 {
				agentErr = "chunk without its buffer"
				return
			}
			fw, err := wire.New("comm_msg", backend.Session, "ferry", nil, map[string]any{"comm_id": dstComm, "data": raw})
			if err == nil {
				fw.Buffers = m.Buffers
				err = dstB.Send(ctx, wire.Shell, fw)
			}
			if err != nil && sendErr == nil {
				sendErr = err
			}
			if d.Op == "chunk" {
				chunks++
				moved += int64(len(m.Buffers[0]))
				if s.cfg.OnChunk != nil {
					s.cfg.OnChunk(src, dst, chunks)
				}
			}
		case "paused":
			paused = true
		case "packed":
			p := d
			packed = &p
		case "error":
			agentErr = d.Error
		}
	}
	tPack := time.Now()
	_, err := s.hidden(ctx, src, wire.Shell, "comm_msg", map[string]any{"comm_id": srcComm, "data": map[string]any{
		"op": "pack", "id": id, "names": names, "compress": true, "window": packWindow}}, nil, false, onIOPub)
	// Each window is relayed by the time its request is idle; only then
	// is the next asked for, so Ferry holds at most a window.
	more := func() bool {
		mu.Lock()
		defer mu.Unlock()
		p := paused && agentErr == "" && sendErr == nil
		paused = false
		return p
	}
	for err == nil && more() {
		_, err = s.hidden(ctx, src, wire.Shell, "comm_msg", map[string]any{"comm_id": srcComm, "data": map[string]any{
			"op": "more", "id": id}}, nil, false, onIOPub)
	}
	if packed != nil {
		slog.Debug("packed", "from", src, "names", names, "seconds", time.Since(tPack).Seconds(), "agent_seconds", packed.Seconds)
	}
	tLoad := time.Now()
	defer func() { slog.Debug("loaded", "at", dst, "seconds", time.Since(tLoad).Seconds()) }()
	mu.Lock()
	defer mu.Unlock()
	drop := func() {
		if m, e := wire.New("comm_msg", backend.Session, "ferry", nil, map[string]any{"comm_id": dstComm, "data": map[string]any{"op": "drop", "id": id}}); e == nil {
			_ = dstB.Send(ctx, wire.Shell, m)
		}
	}
	switch {
	case err != nil:
		drop()
		return 0, nil, fmt.Errorf("packing %s at %s: %w", strings.Join(names, ", "), src, err)
	case agentErr != "":
		drop()
		return 0, nil, fmt.Errorf("packing at %s: %s", src, agentErr)
	case packed == nil:
		drop()
		return 0, nil, fmt.Errorf("packing at %s: the agent did not answer", src)
	case sendErr != nil:
		drop()
		return 0, nil, fmt.Errorf("sending to %s: %w", dst, sendErr)
	case chunks != packed.Chunks:
		drop()
		return 0, nil, fmt.Errorf("packing at %s: %d of %d chunks arrived", src, chunks, packed.Chunks)
	}
	if packed.RawSize > 1<<20 && packed.Size > 0 {
		// What compression achieves on this notebook's payloads, for the
		// model's estimate of future moves (sizes are raw).
		c := float64(packed.Size) / float64(packed.RawSize)
		if l := &s.model.Link; !s.compMeasured || l.Compression <= 0 || l.Compression > 1 {
			l.Compression = c // the first measurement replaces the prior
			s.compMeasured = true
		} else {
			l.Compression = 0.7*l.Compression + 0.3*c
		}
	}
	var unmovable []string
	for n, why := range packed.Unmovable {
		unmovable = append(unmovable, n+" ("+why+")")
		s.state.SetUnmovable(n, why)
	}
	sort.Strings(unmovable)
	res, err := s.hidden(ctx, dst, wire.Shell, "comm_msg", map[string]any{"comm_id": dstComm, "data": map[string]any{
		"op": "load", "id": id, "hash": packed.Hash, "chunks": packed.Chunks}}, nil, false, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("loading at %s: %w", dst, err)
	}
	for _, m := range res.IOPub {
		d, _, ok := agent.CommData(m)
		if !ok || d.ID != id {
			continue
		}
		switch d.Op {
		case "loaded":
			if d.Hash != packed.Hash {
				return 0, nil, fmt.Errorf("loading at %s: hash %s confirmed, %s sent", dst, d.Hash, packed.Hash)
			}
			loaded := map[string]int{}
			for _, n := range d.Names {
				if v, ok := versions[n]; ok {
					loaded[n] = v
				}
			}
			s.state.Arrived(dst, loaded)
			return moved, unmovable, nil
		case "error":
			return 0, nil, fmt.Errorf("loading at %s: %s", dst, d.Error)
		}
	}
	return 0, nil, fmt.Errorf("loading at %s: the agent did not confirm", dst)
}

// deleteAt removes names at loc whose newest state is "deleted" or whose
// copy there is stale, so a cell there never sees an old value.
func (s *Server) deleteAt(ctx context.Context, loc string, names []string) error {
	if _, err := s.ensure(ctx, loc); err != nil {
		return err
	}
	_, err := s.hidden(ctx, loc, wire.Shell, "comm_msg", map[string]any{"comm_id": s.agents[loc].commID, "data": map[string]any{
		"op": "delete", "id": wire.NewID(), "names": names}}, nil, false, nil)
	return err
}

// withReport asks for the agent's post-cell report in the request's own
// user_expressions, so it costs no extra round trip.
func (s *Server) withReport(content json.RawMessage, eff effects) json.RawMessage {
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
	expr, _ := json.Marshal(agent.ReportExpr(eff.Maybe, eff.Dynamic))
	ue[agent.ReportKey] = expr
	c["user_expressions"], _ = json.Marshal(ue)
	out, err := json.Marshal(c)
	if err != nil {
		return content
	}
	return out
}

// afterCell updates the state map from the agent's report and returns the
// reply content without Ferry's entry, and the versions the cell wrote.
func (s *Server) afterCell(ctx context.Context, loc, cell string, eff effects, reply json.RawMessage) (json.RawMessage, map[string]int) {
	if s.cfg.Analyzer == nil || eff.Inert {
		return reply, nil
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(reply, &c) != nil {
		return reply, nil
	}
	var ue map[string]json.RawMessage
	_ = json.Unmarshal(c["user_expressions"], &ue)
	raw, ok := ue[agent.ReportKey]
	if !ok {
		// The cell raised, so ipykernel evaluated no expressions; ask now,
		// as the cell may have changed names before raising.
		exprs, err := s.hiddenExec(ctx, loc, "", map[string]string{agent.ReportKey: agent.ReportExpr(eff.Maybe, eff.Dynamic)})
		if err == nil {
			raw = exprs[agent.ReportKey]
		}
	}
	rep, err := agent.ParseReport(raw)
	if err != nil {
		slog.Warn("no state report from the agent; assuming the cell changed what it writes", "err", err)
		rep = agent.Report{Changed: map[string]agent.Change{}}
		for _, w := range eff.Writes {
			rep.Changed[w] = agent.Change{Movable: true}
		}
	}
	changes := make(map[string]state.Change, len(rep.Changed))
	for n, ch := range rep.Changed {
		sc := state.Change{Size: ch.Size, Hash: ch.Hash, Movable: ch.Movable, Reason: ch.Reason, Kind: ch.Kind, Group: ch.Group}
		if uses, ok := eff.Defs[n]; ok {
			sc.Uses = uses
		} else if old, ok := s.state.Get(n); ok && ch.Kind == old.Kind {
			sc.Uses = old.Uses
		}
		changes[n] = sc
	}
	wrote := s.state.Ran(loc, cell, changes, rep.Deleted)
	if ue != nil {
		delete(ue, agent.ReportKey)
		c["user_expressions"], _ = json.Marshal(ue)
		if out, err := json.Marshal(c); err == nil {
			return out, wrote
		}
	}
	return reply, wrote
}

// baselineDump measures what dump-the-session migration would cost before
// this cell: a full dill dump of every source that holds state the cell
// needs at loc. Only called with Config.BaselineDump.
func (s *Server) baselineDump(ctx context.Context, loc string, eff effects) {
	for src := range s.state.Stale(loc, s.state.Needs(eff.Reads)) {
		exprs, err := s.hiddenExec(ctx, src, "", map[string]string{"d": agent.DumpSessionExpr})
		if err != nil {
			slog.Warn("baseline dump failed", "at", src, "err", err)
			continue
		}
		var d struct {
			Bytes   int64   `json:"bytes"`
			Seconds float64 `json:"seconds"`
			Error   string  `json:"error"`
		}
		rep, err := agent.ParseBundle(exprs["d"])
		if err != nil || json.Unmarshal([]byte(rep), &d) != nil {
			slog.Warn("baseline dump answered no figure", "err", err)
			continue
		}
		if d.Error != "" {
			slog.Warn("dill could not dump the session (Ferry moved it anyway)", "err", d.Error)
		}
		s.Stats.mu.Lock()
		s.Stats.FullStateBytes += d.Bytes
		s.Stats.FullStateSeconds += d.Seconds
		s.Stats.mu.Unlock()
	}
}

