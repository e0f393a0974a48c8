package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recovery"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

// The cloud is another machine. This file is what the kernel keeps of the
// world outside the notebook's names: which kernel has which modules at
// which versions and which environment variables (by name), what the
// notebook itself set, and which files each kernel's disk holds (through
// the state map, as files.Name pseudo-variables).

// outside is that knowledge. Its fields are written by OnInstall (from
// whichever goroutine made a kernel ready) and by the shell worker.
type outside struct {
	mu sync.Mutex
	// mods[loc] are the top-level modules known at loc: imported there
	// (from the agent's info and reports) or looked up (find_versions);
	// a missing module is recorded as "\x00".
	mods map[location.Location]map[string]string
	env  map[location.Location]map[string]bool // variable names at loc
	info map[location.Location]agent.Info
	// inventoried[loc]: the files of loc's disk were registered once.
	inventoried map[location.Location]bool
	// envSet are variables the notebook set (they travel with the
	// process state); noticed are the names already told about.
	envSet, noticed map[string]bool
	// defFacts are the outside facts of notebook functions by name, so a
	// cell calling one inherits what it does.
	defFacts map[string]analysis.Facts
}

const missingModule = "\x00"

func newOutside() *outside {
	return &outside{mods: map[location.Location]map[string]string{}, env: map[location.Location]map[string]bool{},
		info: map[location.Location]agent.Info{}, inventoried: map[location.Location]bool{}, envSet: map[string]bool{},
		noticed: map[string]bool{}, defFacts: map[string]analysis.Facts{}}
}

// onInstall is transfer.Config.OnInstall: a new kernel incarnation at loc
// has the agent. Its modules and environment names are recorded, and the
// first time at the laptop, the files under the notebook's folder enter
// the state map as the newest versions (the user's copy).
func (s *Server) onInstall(loc location.Location, info agent.Info) {
	o := s.out
	o.mu.Lock()
	o.info[loc] = info
	o.mods[loc] = map[string]string{}
	for m, v := range info.Modules {
		o.mods[loc][m] = v
	}
	o.env[loc] = map[string]bool{}
	for _, n := range info.Env {
		o.env[loc][n] = true
	}
	first := !o.inventoried[loc]
	o.inventoried[loc] = true
	o.mu.Unlock()
	if !first || s.cfg.Analyzer == nil {
		return
	}
	if info.Truncated {
		s.log.Warn("more files under the notebook's folder than Ferry tracks; cells reading the others may not find them in the cloud", "at", loc, "tracked", len(info.Files))
	}
	// Only the laptop's files are registered: they are the user's. Files
	// already in a cloud's folder (left by an earlier session) are not
	// Ferry's to copy home or to delete; a cell there that reads one the
	// laptop also has gets the laptop's version first.
	if loc != location.Local {
		return
	}
	changed := map[string]state.Change{}
	for rel, st := range info.Files {
		changed[files.Name(rel)] = state.Change{Size: st[0], Hash: fmt.Sprintf("stat:%d:%d", st[0], st[1]), Movable: true, Kind: "file"}
	}
	if len(changed) > 0 {
		s.state.Ran(loc, "", changed, nil)
	}
	for rel := range info.Files {
		s.files.Stamp(rel)
	}
}

// onLoaded is transfer.Config.OnLoaded: files that arrived on the laptop
// are stamped as Ferry's own writes.
func (s *Server) onLoaded(dst location.Location, names []string) {
	if dst != location.Local {
		return
	}
	for _, n := range names {
		if files.IsName(n) {
			s.files.Stamp(files.Rel(n))
		}
	}
}

// laptopEdits brings into the state map the laptop files among names that
// changed or vanished there outside any cell (an editor, a download)
// since Ferry last knew them: the laptop's copy becomes the newest, so a
// cloud cell never reads the stale one.
func (s *Server) laptopEdits(names []string) {
	for _, n := range names {
		if !files.IsName(n) {
			continue
		}
		v, ok := s.state.Get(n)
		if !ok || !v.At[location.Local] {
			continue // the newest version is elsewhere: the laptop's is stale anyway
		}
		changed, gone, size, ver := s.files.Outside(files.Rel(n))
		switch {
		case gone:
			s.state.Ran(location.Local, "", nil, []string{n})
		case changed:
			s.state.Ran(location.Local, "", map[string]state.Change{n: {Size: size, Hash: ver, Movable: true, Kind: "file"}}, nil)
		}
	}
}

// cellFacts are the cell's outside facts with those of the notebook
// functions it calls, and the functions it defines remembered.
func (s *Server) cellFacts(r analysis.Result) analysis.Facts {
	o := s.out
	o.mu.Lock()
	defer o.mu.Unlock()
	for name, e := range r.DefEffects {
		o.defFacts[name] = e.Facts
	}
	f := r.Facts
	for _, c := range r.Calls {
		if d, ok := o.defFacts[c]; ok {
			f.Files = append(f.Files, d.Files...)
			f.FilesUnknown = f.FilesUnknown || d.FilesUnknown
			f.Imports = append(f.Imports, d.Imports...)
			f.Env = append(f.Env, d.Env...)
			f.EnvWrites = append(f.EnvWrites, d.EnvWrites...)
			f.EnvUnknown = f.EnvUnknown || d.EnvUnknown
			f.Chdir = f.Chdir || d.Chdir
			f.Settings = append(f.Settings, d.Settings...)
			f.SideEffects = append(f.SideEffects, d.SideEffects...)
		}
	}
	for _, n := range f.EnvWrites {
		o.envSet[n] = true
	}
	if f.Chdir {
		s.files.Chdir()
	}
	return f
}

// fileNeeds are the files (state names) the cell may read, and the paths
// outside the notebook's folder it reads that only the laptop has.
func (s *Server) fileNeeds(cell string, f analysis.Facts, dynamic bool) files.Needs {
	uses := make([]files.Use, 0, len(f.Files))
	for _, u := range f.Files {
		uses = append(uses, files.Use{Path: u.Path, Op: u.Op})
	}
	return s.files.Need(cell, uses, f.FilesUnknown || dynamic, f.Imports, s.state.Names)
}

// changesProcess reports whether the cell may change process state the
// agent captures (so the report takes a new snapshot of it).
func changesProcess(f analysis.Facts, r analysis.Result) bool {
	return len(f.Settings) > 0 || len(f.EnvWrites) > 0 || f.EnvUnknown || f.Chdir || len(r.ModuleAttrs) > 0 || len(r.Magics) > 0
}

// envNotice names the variables a cell at loc reads that the laptop has,
// loc's kernel lacks, and neither the notebook set nor the user forwarded:
// the laptop's environment is not copied, so the cell would see None
// there. Each name is told once.
func (s *Server) envNotice(loc location.Location, names []string) string {
	if loc == location.Local {
		return ""
	}
	o := s.out
	o.mu.Lock()
	defer o.mu.Unlock()
	local, remote := o.env[location.Local], o.env[loc]
	if local == nil || remote == nil {
		return ""
	}
	var miss []string
	for _, n := range names {
		if local[n] && !remote[n] && !o.envSet[n] && !o.noticed[n] && !s.forwarded(n) {
			o.noticed[n] = true
			miss = append(miss, n)
		}
	}
	if len(miss) == 0 {
		return ""
	}
	sort.Strings(miss)
	flags := make([]string, len(miss))
	for i, n := range miss {
		flags[i] = "--forward-env " + n
	}
	return fmt.Sprintf("%s %s set on the laptop but not in the %s kernel, so this cell sees it unset there; Ferry does not copy your environment: pass %s to send it",
		strings.Join(miss, ", "), map[bool]string{true: "is", false: "are"}[len(miss) == 1], loc, strings.Join(flags, " "))
}

func (s *Server) forwarded(name string) bool {
	for _, n := range s.cfg.ForwardEnv {
		if n == name {
			return true
		}
	}
	return false
}

// forwardEnv is transfer.Config.Env: the variables the user forwarded,
// for the clouds only.
func (s *Server) forwardEnv(loc location.Location) map[string]string {
	if loc == location.Local || len(s.cfg.ForwardEnv) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, n := range s.cfg.ForwardEnv {
		if v, ok := os.LookupEnv(n); ok {
			out[n] = v
		}
	}
	return out
}

// learnImports records modules a cell imported at loc.
func (s *Server) learnImports(loc location.Location, mods map[string]string) {
	if len(mods) == 0 {
		return
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	if s.out.mods[loc] == nil {
		s.out.mods[loc] = map[string]string{}
	}
	for m, v := range mods {
		s.out.mods[loc][m] = v
	}
}

// moduleVersions returns the versions of mods at loc, asking its agent for
// those not known yet (without importing them there).
func (s *Server) moduleVersions(ctx context.Context, loc location.Location, mods []string) map[string]string {
	out := map[string]string{}
	var ask []string
	s.out.mu.Lock()
	for _, m := range mods {
		if v, ok := s.out.mods[loc][m]; ok {
			out[m] = v
		} else {
			ask = append(ask, m)
		}
	}
	s.out.mu.Unlock()
	if len(ask) == 0 {
		return out
	}
	exprs, err := transfer.Exec(ctx, s, loc, "", map[string]string{"v": agent.FindVersionsExpr(ask)})
	if err != nil {
		return out
	}
	text, err := agent.ParseBundle(exprs["v"])
	var got map[string]*string
	if err != nil || json.Unmarshal([]byte(text), &got) != nil {
		return out
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	if s.out.mods[loc] == nil {
		s.out.mods[loc] = map[string]string{}
	}
	for _, m := range ask {
		v := missingModule
		if p, ok := got[m]; ok && p != nil {
			v = *p
		}
		s.out.mods[loc][m] = v
		out[m] = v
	}
	return out
}

// errIncompatible is a move refused before sending: the target lacks a
// module the values need, or has another major.minor version of it.
var errIncompatible = errors.New("the target cannot load these values faithfully")

// checkVersions refuses a move of names from src to dst whose values need
// a module dst lacks or has at another major.minor version: loading there
// would fail, or silently give another object. The names are then pinned
// to where they are (a certain failure is not tried again).
func (s *Server) checkVersions(ctx context.Context, src, dst location.Location, names []string) error {
	needs := map[string][]string{}
	for _, n := range names {
		if v, ok := s.state.Get(n); ok && v.Needs != "" {
			needs[v.Needs] = append(needs[v.Needs], n)
		}
	}
	if len(needs) == 0 {
		return nil
	}
	mods := make([]string, 0, len(needs))
	for m := range needs {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	// Both agents must be there to be asked (the move would install them
	// first anyway).
	for _, l := range []location.Location{src, dst} {
		if err := s.mover.Ready(ctx, l); err != nil {
			return err
		}
	}
	have, want := s.moduleVersions(ctx, dst, mods), s.moduleVersions(ctx, src, mods)
	for _, m := range mods {
		dv, ok := have[m]
		if !ok {
			continue // not known: the load at the target will tell
		}
		var why string
		switch {
		case dv == missingModule:
			why = fmt.Sprintf("%s needs %s, which the %s kernel does not have", strings.Join(needs[m], ", "), m, dst)
		case majorMinor(dv) != majorMinor(want[m]) && want[m] != missingModule:
			why = fmt.Sprintf("%s %s made with %s %s; the %s kernel has %s %s", strings.Join(needs[m], ", "), map[bool]string{true: "was", false: "were"}[len(needs[m]) == 1], m, want[m], dst, m, dv)
		default:
			continue
		}
		for _, n := range needs[m] {
			s.state.SetUnmovable(n, why)
		}
		return fmt.Errorf("%w: %s", errIncompatible, why)
	}
	return nil
}

// majorMinor is "1.2" of "1.2.3rc1"; a version without numbers is itself.
func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) >= 2 {
		return parts[0] + "." + parts[1]
	}
	return v
}

// versionSkew describes the differences between the laptop's kernel and
// each cloud's, for %ferry status.
func (s *Server) versionSkew() string {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	li, ok := s.out.info[location.Local]
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, loc := range s.locs.Clouds() {
		ri, ok := s.out.info[loc]
		if !ok {
			continue
		}
		var diffs []string
		if li.Python != ri.Python {
			diffs = append(diffs, fmt.Sprintf("Python %s here, %s there", li.Python, ri.Python))
		}
		if li.Pickle != ri.Pickle {
			diffs = append(diffs, fmt.Sprintf("pickle protocol %d here, %d there", li.Pickle, ri.Pickle))
		}
		lm, rm := s.out.mods[location.Local], s.out.mods[loc]
		var names []string
		for m := range lm {
			names = append(names, m)
		}
		sort.Strings(names)
		for _, m := range names {
			lv, rv := lm[m], rm[m]
			if rv == "" || lv == "" || lv == rv {
				continue
			}
			if rv == missingModule {
				diffs = append(diffs, m+" "+lv+" here, not installed there")
			} else if lv != missingModule {
				diffs = append(diffs, fmt.Sprintf("%s %s here, %s there", m, lv, rv))
			}
		}
		if len(diffs) == 0 {
			fmt.Fprintf(&b, "versions: the %s kernel matches the laptop's (Python %s, %d modules compared)\n", loc, ri.Python, len(names))
		} else {
			fmt.Fprintf(&b, "versions differ from the %s kernel: %s\n", loc, strings.Join(diffs, "; "))
		}
		fmt.Fprintf(&b, "%s kernel: user %s, folder %s\n", loc, orDefault(ri.User, "?"), orDefault(ri.Root, "?"))
	}
	return b.String()
}

// writeBackFiles copies files whose newest version is only in a cloud to
// the laptop, where the user's copy lives, while ctx lasts. The kernel
// calls it in think time and before shutting down, on the shell worker.
func (s *Server) writeBackFiles(ctx context.Context) int {
	if s.cfg.Analyzer == nil {
		return 0
	}
	bySrc := map[location.Location][]string{}
	for _, n := range s.state.Names() {
		if !files.IsName(n) {
			continue
		}
		v, ok := s.state.Get(n)
		if !ok || v.At[location.Local] || len(v.At) == 0 {
			continue
		}
		src := v.Locations()[0]
		if s.backends[src] == nil || !s.Running(src) {
			continue
		}
		bySrc[src] = append(bySrc[src], n)
	}
	moved := 0
	for _, src := range s.locs {
		names := bySrc[src]
		if len(names) == 0 || ctx.Err() != nil {
			continue
		}
		vers := s.state.Versions(names)
		t0 := time.Now()
		res, err := s.mover.Move(ctx, src, location.Local, names)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("could not copy files written in the cloud home", "from", src, "files", len(names), "err", err)
			}
			continue
		}
		recovery.Record(s.state, s.model, location.Local, vers, res)
		moved += len(res.Names)
		s.log.Info("copied files written in the cloud to the laptop", "from", src, "files", len(res.Names), "bytes", report.HumanBytes(res.Bytes), "seconds", time.Since(t0).Seconds())
	}
	return moved
}

// fileBytes is the size of the files plan moves to its location.
func (s *Server) fileBytes(plan policy.Plan) int64 {
	var n int64
	for _, mv := range plan.Moves {
		for _, name := range mv.Names {
			if files.IsName(name) {
				if v, ok := s.state.Get(name); ok {
					n += v.Size
				}
			}
		}
	}
	return n
}

// filesCap is Config.FilesCap with its default.
func (s *Server) filesCap() int64 {
	if s.cfg.FilesCap > 0 {
		return s.cfg.FilesCap
	}
	return 2 << 30
}

// innermost is the innermost cause of a wrapped error's text (after its
// last ": "), for a one-line reason.
func innermost(msg string) string {
	if i := strings.LastIndex(msg, ": "); i >= 0 && i+2 < len(msg) {
		return msg[i+2:]
	}
	return msg
}

// writeBackBeforeShutdown copies files only a cloud holds home before the
// kernels stop, within 30 s. On the shell channel the shell worker is the
// caller; from the control channel it first ends think time and waits
// briefly for the shell worker: during a running cell nothing is moved
// (the cell owns the mover), and the log says what stays in the cloud.
func (s *Server) writeBackBeforeShutdown(ctx context.Context, ch wire.Channel) {
	if s.cfg.Analyzer == nil || len(s.locs.Clouds()) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if ch == wire.Shell {
		s.writeBackFiles(wctx)
		return
	}
	pctx, pcancel := context.WithTimeout(wctx, 2*time.Second)
	defer pcancel()
	release, ok := s.pauseWorker(pctx)
	if !ok {
		s.log.Warn("shutting down while a cell runs: files written in the cloud and not yet copied home stay there")
		return
	}
	defer release()
	s.writeBackFiles(wctx)
}

// pauseWorker takes the shell worker's token once it holds no request,
// ending its think time as a request would, and returns the function that
// gives the token back; false if ctx ends first (a cell still runs). For a
// caller off the worker that needs what only the worker touches: the
// mover, the model. The wake-up is sent again while waiting, since think
// time drops one left before it began.
func (s *Server) pauseWorker(ctx context.Context) (release func(), ok bool) {
	for {
		select {
		case s.wake <- struct{}{}:
		default:
		}
		select {
		case s.work <- struct{}{}:
			return func() { <-s.work }, true
		case <-ctx.Done():
			return nil, false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// shownNames are names as a user knows them: variables by name, files by
// path; Ferry's own pseudo-variables are left out, or, with pseudo, named
// last in words.
func shownNames(names []string, pseudo bool) []string {
	var out, extra []string
	for _, n := range names {
		switch {
		case n == agent.RNG:
			extra = append(extra, "the random generators' state")
		case n == agent.Proc:
			extra = append(extra, "the process settings")
		case files.IsName(n):
			out = append(out, files.Rel(n))
		default:
			out = append(out, n)
		}
	}
	if pseudo {
		out = append(out, extra...)
	}
	return out
}

// awaitInventory makes sure the laptop's agent has been installed, so its
// files are in the state map, before a cell's file needs are resolved.
// Once it has, this costs a map lookup.
func (s *Server) awaitInventory(ctx context.Context) {
	s.out.mu.Lock()
	done := s.out.inventoried[location.Local]
	s.out.mu.Unlock()
	if done || s.backends[location.Local] == nil {
		return
	}
	if err := s.mover.Ready(ctx, location.Local); err != nil {
		s.log.Warn("the laptop kernel is not ready; its files are not known yet", "err", err)
	}
}

// fileFacts are the planning facts with each laptop file's compression
// estimated from a sample of it (files.Tracker.Ratio), so a move of the
// user's data is priced by what crosses the link before any payload has
// measured the link's compression: a 90 MB CSV crosses as 29 MB.
type fileFacts struct {
	policy.Facts
	files *files.Tracker
}

func (f fileFacts) Var(name string) (policy.Var, bool) {
	v, ok := f.Facts.Var(name)
	if ok && f.files != nil && files.IsName(name) && v.Has(location.Local) && v.Size >= files.RatioMin {
		v.Ratio = f.files.Ratio(files.Rel(name))
	}
	return v, ok
}
