package kernel

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recovery"
	"github.com/ferry-nb/ferry/internal/report"
)

// Idle release (--cloud-idle, issue 18). A cloud kernel costs money every
// second it exists, cells or not, and jupyter-server never culls a kernel
// Ferry holds a WebSocket to. So once no cell has run in a cloud for the
// configured time, the think time after a request lets that kernel go: what
// only it holds is written home first (each load confirms the payload's
// hash), then the kernel is deleted. Nothing is lost: the state map then
// holds every value at the laptop, the next cell placed in the cloud
// starts a new kernel (the policy already prices a cold start) and brings
// what it reads, and its output says so in one line.
//
// The shell worker owns all of this (think time never races a cell): the
// fields below are touched only there.

// releaseRecord is what the kernel remembers of one release until the next
// cell in that cloud tells it.
type releaseRecord struct {
	idle time.Duration // no cell had run there for this long
	home int           // values written home first
}

// releases are the shell worker's idle-release bookkeeping.
type releases struct {
	used map[location.Location]time.Time     // the end of the last cell there
	done map[location.Location]releaseRecord // released, not told yet
	// held says why a kernel cannot be released (a value that cannot
	// leave it); cleared by the next cell there.
	held map[location.Location]string
	// traced are the releases since the last execution's trace event.
	traced []location.Location

	// Warm starts (policy.Warmer, warm.go): warmSeq is the execution
	// whose think time had its warm start (or gave it up); due is, per
	// kernel started in think time, when the cell it was started for is
	// expected, from which its idle clock runs; warmed marks those whose
	// next cell has not said so yet; releasedAt is when each cloud's
	// kernel was last let go.
	warmSeq    int
	starting   chan struct{} // closed when the warm start under way ends
	due        map[location.Location]time.Time
	warmed     map[location.Location]bool
	releasedAt map[location.Location]time.Time
}

// cloudUsed marks a cell finished at loc: the idle clock starts again.
func (s *Server) cloudUsed(loc location.Location) {
	if loc == location.Local {
		return
	}
	if s.rel.used == nil {
		s.rel.used = map[location.Location]time.Time{}
	}
	s.rel.used[loc] = time.Now()
	delete(s.rel.held, loc)
	delete(s.rel.due, loc)
}

// releaseIdle spends the rest of the think time on cloud kernels' lives:
// it waits until a cloud kernel has had no cell for its release time
// (releaseAfter) and lets it go, and until the policy's warm start is due
// (policy.Warmer: a cold kernel started before the cell expected there)
// and starts it, whichever comes first, again and again. ctx ends when
// the next request arrives: the wait then resumes after that request,
// from the same last use, so cells on the laptop do not keep a cloud
// kernel alive.
// A warm start runs on under life (the session's context), not ctx: the
// next cell must find it under way.
func (s *Server) releaseIdle(ctx, life context.Context) {
	for ctx.Err() == nil {
		loc, due, ok := s.nextRelease()
		w, at, warm := s.nextWarm()
		if !ok && !warm {
			// A kernel started in think time is let go again, by its own
			// idle clock, if the user is long in coming back: once it is
			// up, look again.
			if st := s.rel.starting; st != nil {
				select {
				case <-st:
					s.rel.starting = nil
					continue
				case <-ctx.Done():
					return
				}
			}
			return
		}
		if warm && (!ok || at.Before(due)) {
			if !s.waitUntil(ctx, at) {
				return
			}
			s.warmStart(life, w)
			continue
		}
		if !s.waitUntil(ctx, due) || !s.tryRelease(ctx, loc) {
			return
		}
	}
}

// releaseDue lets go, before any other think-time work, every cloud
// kernel whose idle time has already passed. Think time is cut short by
// the next request, and a calibration or a link probe can take longer than
// the gap between requests (a user polling %ferry status every half
// second on a loaded machine: calibrate.py took over a second there, was
// cut short and tried again at every pause, and the hub test's kernel was
// never released in 90 s). A release past due must not wait behind them.
func (s *Server) releaseDue(ctx context.Context) {
	for ctx.Err() == nil {
		loc, due, ok := s.nextRelease()
		if !ok || due.After(time.Now()) || !s.tryRelease(ctx, loc) {
			return
		}
	}
}

// tryRelease releases loc, or, when something cannot leave it, marks it
// held with the reason (%ferry status shows it). It is false when ctx
// ended first: the release is tried again after the next request.
func (s *Server) tryRelease(ctx context.Context, loc location.Location) bool {
	err := s.release(ctx, loc)
	if err == nil {
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	if s.rel.held == nil {
		s.rel.held = map[location.Location]string{}
	}
	s.rel.held[loc] = err.Error()
	s.log.Info("keeping the idle cloud kernel", "location", loc, "why", err)
	return true
}

// waitUntil waits for t; false if ctx ended first.
func (s *Server) waitUntil(ctx context.Context, t time.Time) bool {
	wait := time.Until(t)
	if wait <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextWarm is the policy's warm start for this think time and when it is
// due, if there is one still to make: once per think time, for a kernel
// not running, and not once a release of it came past the warm's time
// (policy.Warm.Dropped).
func (s *Server) nextWarm() (policy.Warm, time.Time, bool) {
	wp, ok := s.policy.(policy.Warmer)
	if !ok || s.lastCell == "" || s.rel.warmSeq == s.seq || s.cfg.Analyzer == nil {
		return policy.Warm{}, time.Time{}, false
	}
	w, ok := wp.Warm(s.lastCell, s.facts, s.model, s.locs)
	if !ok || s.backends[w.Loc] == nil || s.Running(w.Loc) {
		return policy.Warm{}, time.Time{}, false
	}
	if r := s.rel.releasedAt[w.Loc]; r.After(s.lastEnd) && w.Dropped(r.Sub(s.lastEnd).Seconds()) {
		s.rel.warmSeq = s.seq
		s.log.Debug("warm start given up: the kernel was let go past its time", "location", w.Loc, "cell", w.Cell)
		return policy.Warm{}, time.Time{}, false
	}
	return w, s.lastEnd.Add(seconds(w.After)), true
}

// warmStart starts w's kernel without waiting for it: the next cell,
// wherever it runs, is not held up, and one placed there waits only for
// what is left of the start. The idle clock of the kernel runs from when
// the cell it was started for is due.
func (s *Server) warmStart(ctx context.Context, w policy.Warm) {
	s.rel.warmSeq = s.seq
	if s.rel.due == nil {
		s.rel.due, s.rel.warmed = map[location.Location]time.Time{}, map[location.Location]bool{}
	}
	s.rel.due[w.Loc] = s.lastEnd.Add(seconds(w.Due))
	s.rel.warmed[w.Loc] = true
	s.Stats.mu.Lock()
	s.Stats.WarmStarts++
	s.Stats.mu.Unlock()
	s.log.Info("starting a cloud kernel in think time", "location", w.Loc, "for", w.Cell, "why", w.Reason)
	done := make(chan struct{})
	s.rel.starting = done
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		if _, err := s.Start(ctx, w.Loc); err != nil && ctx.Err() == nil {
			s.log.Warn("starting the cloud kernel in think time failed; the next cell placed there starts it", "location", w.Loc, "err", err)
		}
	}()
}

// seconds is a policy's float seconds as a Duration.
func seconds(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }

// nextRelease is the running, releasable cloud kernel whose idle time
// ends first, and when.
func (s *Server) nextRelease() (loc location.Location, due time.Time, ok bool) {
	for _, l := range s.locs.Clouds() {
		if d, can := s.dueRelease(l); can && (!ok || d.Before(due)) {
			loc, due, ok = l, d, true
		}
	}
	return loc, due, ok
}

// dueRelease is when loc's kernel is let go if no cell runs there before;
// ok is false if it is not: not running, held, not releasable, or no
// release is asked for. Without analysis the state map is empty: Ferry
// cannot know what a cloud kernel holds, so it never lets one go.
func (s *Server) dueRelease(loc location.Location) (due time.Time, ok bool) {
	if !s.releases() || s.cfg.Analyzer == nil {
		return time.Time{}, false
	}
	if _, can := s.backends[loc].(backend.Releaser); !can || !s.Running(loc) || s.rel.held[loc] != "" {
		return time.Time{}, false
	}
	return s.lastUse(loc).Add(s.releaseAfter(loc)), true
}

// untilRelease is how long loc's running kernel has before its idle
// release, were no cell to run there (policy.Model.UntilRelease): +Inf
// if none would come.
func (s *Server) untilRelease(loc location.Location) float64 {
	due, ok := s.dueRelease(loc)
	if !ok {
		return math.Inf(1)
	}
	return max(time.Until(due).Seconds(), 0)
}

// releaseAfter is the idle time after which loc's kernel goes: the
// policy's, from --cloud-idle and what starting it again would cost.
func (s *Server) releaseAfter(loc location.Location) time.Duration {
	only, _ := s.onlyAt(loc)
	return s.model.ReleaseAfter(loc, s.cfg.CloudIdle, s.state.Size(only))
}

// lastUse is when loc last ran a cell, or started if later, or, for a
// kernel started in think time, when the cell it was started for is due.
func (s *Server) lastUse(loc location.Location) time.Time {
	t := s.rel.used[loc]
	if st := s.backends[loc].Status().Started; st.After(t) {
		t = st
	}
	if d := s.rel.due[loc]; d.After(t) {
		t = d
	}
	return t
}

// release writes home what only loc holds, checks that nothing is left
// there alone, and deletes loc's kernel.
func (s *Server) release(ctx context.Context, loc location.Location) error {
	t0 := time.Now()
	idle := t0.Sub(s.lastUse(loc))
	// Files written there go home as in any think time; then the values.
	s.writeBackFiles(ctx)
	only, stuck := s.onlyAt(loc)
	if len(stuck) > 0 {
		return fmt.Errorf("%s cannot leave the %s kernel", strings.Join(stuck, "; "), loc)
	}
	home := 0
	for src, group := range s.state.Stale(location.Local, s.state.Needs(only)) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		vers := s.state.Versions(group)
		res, err := s.mover.Move(ctx, src, location.Local, group)
		if err != nil {
			return fmt.Errorf("writing %s home from the %s kernel: %w", strings.Join(shownNames(group, true), ", "), src, err)
		}
		recovery.Record(s.state, s.model, location.Local, vers, res)
		home += len(res.Names)
		s.log.Debug("wrote home before releasing the cloud kernel", "from", src, "names", res.Names, "bytes", report.HumanBytes(res.Bytes))
	}
	if left, _ := s.onlyAt(loc); len(left) > 0 {
		return fmt.Errorf("%s still only in the %s kernel after writing home", strings.Join(shownNames(left, true), ", "), loc)
	}
	// Everything is home: finish the release even if a cell arrives now
	// (a delete takes a round trip; leaving it half done would keep a
	// kernel billed that Ferry no longer uses).
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.backends[loc].(backend.Releaser).Release(rctx); err != nil {
		return err
	}
	if s.rel.done == nil {
		s.rel.done = map[location.Location]releaseRecord{}
	}
	s.rel.done[loc] = releaseRecord{idle: idle, home: home}
	if s.rel.releasedAt == nil {
		s.rel.releasedAt = map[location.Location]time.Time{}
	}
	s.rel.releasedAt[loc] = time.Now()
	delete(s.rel.due, loc)
	delete(s.rel.warmed, loc)
	s.rel.traced = append(s.rel.traced, loc)
	s.Stats.mu.Lock()
	s.Stats.CloudReleases++
	s.Stats.WrittenHome += home
	s.Stats.mu.Unlock()
	s.log.Info("released the idle cloud kernel", "location", loc, "idle", idle.Round(time.Second), "written_home", home, "seconds", time.Since(t0).Seconds())
	return nil
}

// onlyAt lists the values whose newest version only loc holds (only), and
// those of them that cannot move, each with why (stuck).
func (s *Server) onlyAt(loc location.Location) (only, stuck []string) {
	for _, v := range s.state.List() {
		if !v.At[loc] || len(v.At) != 1 {
			continue
		}
		if !v.Movable {
			stuck = append(stuck, fmt.Sprintf("%s (%s)", v.Name, orDefault(v.Reason, "cannot be moved")))
			continue
		}
		only = append(only, v.Name)
	}
	sort.Strings(only)
	return only, stuck
}

// releaseNotice is the line a cell in a cloud whose kernel was released
// shows once a new one runs it: how long it had been idle, what the new
// one was brought, and what that took (from the cell's start). "" if loc
// was not released.
func (s *Server) releaseNotice(loc location.Location, brought int, since time.Time) string {
	r, ok := s.rel.done[loc]
	if !ok || !s.Running(loc) {
		return ""
	}
	delete(s.rel.done, loc)
	started := "a new one started for this cell"
	if s.rel.warmed[loc] {
		started = "a new one started while you thought, for this cell"
	}
	delete(s.rel.warmed, loc)
	return fmt.Sprintf("%s was released after %s idle (%d values written home first); %s, %d values brought to it, %.1f s",
		recovery.KernelOf(loc), roundIdle(r.idle), r.home, started, brought, time.Since(since).Seconds())
}

// roundIdle shows an idle time as a person would say it.
func roundIdle(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}

// releases reports whether idle cloud kernels are let go: --cloud-idle,
// or an objective that counts cost.
func (s *Server) releases() bool { return s.cfg.CloudIdle > 0 || s.model.Releases() }

// releaseStatus is %ferry status's line on idle release ("" without a
// cloud).
func (s *Server) releaseStatus() string {
	if len(s.locs.Clouds()) == 0 {
		return ""
	}
	if !s.releases() {
		return "idle release: off (--cloud-idle DURATION lets an idle cloud kernel go, its values written home; so do --objective balanced and cost)\n"
	}
	t := s.Stats.Totals()
	after := s.cfg.CloudIdle.String()
	if s.cfg.CloudIdle <= 0 {
		after = fmt.Sprintf("the break-even of --objective %s", s.cfg.Objective)
	}
	line := fmt.Sprintf("idle release: after %s with no cloud cell; %d released so far, %d values written home first, %d started again while you thought (before the cell expected there)", after, t.CloudReleases, t.WrittenHome, t.WarmStarts)
	for _, loc := range s.locs.Clouds() {
		if after := s.releaseAfter(loc); after > s.cfg.CloudIdle && s.Running(loc) {
			line += fmt.Sprintf("; the %s kernel not before %s idle (starting it again and bringing its values back would cost that)", loc, after.Round(100*time.Millisecond))
		}
		if why := s.rel.held[loc]; why != "" {
			line += fmt.Sprintf("; the %s kernel is kept: %s", loc, why)
		}
	}
	return line + "\n"
}
