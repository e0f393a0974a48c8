// Package thinktime spends the user's think time after a cell, as
// DESIGN.md's policy asks: it probes the link's round trip when due, and
// makes the moves the policy proposes — the predicted next cell's inputs
// to where it will run (prefetch), values living only in a cloud copied
// home (write-back, so a cloud kernel's death loses nothing) — each
// cancelled the moment the next request arrives.
//
// It owns the probe schedule and its counters. The kernel calls Run on its
// shell worker after each cell, with a context it cancels when the next
// shell request arrives, so think-time work never races a cell.
package thinktime

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/calibrate"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recovery"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

// Requester is what think time needs of the kernel beyond moving: hidden
// requests for probes, and whether a kernel runs (a probe never starts one).
type Requester interface {
	transfer.Requester
	// Running reports whether loc's kernel has a live incarnation.
	Running(loc location.Location) bool
}

// Worker spends think time. Run is called from one goroutine at a time.
type Worker struct {
	req   Requester
	mover *transfer.Mover // nil when state is not tracked: probes only
	state *state.Map
	view  policy.View
	model *policy.Model
	locs  location.Set
	log   *slog.Logger

	lastProbe time.Time

	// Calibration (SetCalibration): each location's cache key, and under
	// mu the figures per location (this session's or the cache's) and
	// the locations measured or being measured this session: a
	// calibration may run on a kernel's start goroutine at connect as
	// well as here in think time.
	cache    *calibrate.Cache
	keys     map[location.Location]string
	figures  map[location.Location]calibrate.Result
	measured map[location.Location]bool

	mu     sync.Mutex
	counts Counts
}

// Counts are what think time did in a session.
type Counts struct {
	// Moves were made while the user thought (Bytes of them); Cancelled
	// were cut short by the next request.
	Moves, Cancelled int
	Bytes            int64
	// Probes measured the round trip.
	Probes int
	// Calibrations ran the speed calibration in a kernel.
	Calibrations int
}

// New returns a Worker. mover is nil when Ferry does not track state.
// view is the state map as the policy sees it.
func New(req Requester, mover *transfer.Mover, st *state.Map, view policy.View, model *policy.Model, locs location.Set, log *slog.Logger) *Worker {
	if log == nil {
		log = slog.Default()
	}
	return &Worker{req: req, mover: mover, state: st, view: view, model: model, locs: locs, log: log}
}

// Counts returns a copy of the counters.
func (w *Worker) Counts() Counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts
}

// ProbeEvery spaces the active link probes: the round trip changes slowly,
// and transfers measure the bandwidth passively.
const ProbeEvery = 30 * time.Second

// probeSamples is how many round trips one probe times; it keeps the
// fastest, as TCP's min-RTT does: a single sample right after a kernel
// starts, or while the machine is busy, measured 46 ms on a 1 ms link in
// the hybrid bench and sent the next cell to the laptop.
const probeSamples = 3

// SetCalibration turns on the speed calibration: each location's kernel
// is measured once per session when it runs (Calibrate), its figures kept
// in cache under keys[loc] (no key: not kept), and figures the cache
// already holds feed the model at once. Called once, before Run.
func (w *Worker) SetCalibration(cache *calibrate.Cache, keys map[location.Location]string) {
	w.cache, w.keys = cache, keys
	w.figures, w.measured = map[location.Location]calibrate.Result{}, map[location.Location]bool{}
	for _, loc := range w.locs {
		if r, ok := cache.Load(keys[loc]); ok && r.Single > 0 {
			w.figures[loc] = r
		}
	}
	w.feedSpeeds()
}

// Calibrated reports whether loc's speed is known from a calibration,
// this session's or the cache's. Any goroutine may call it.
func (w *Worker) Calibrated(loc location.Location) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.figures[loc]
	return ok
}

// CalibrationDue reports whether a running kernel has not been
// calibrated yet this session.
func (w *Worker) CalibrationDue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.measured == nil {
		return false
	}
	for _, loc := range w.locs {
		if !w.measured[loc] && w.req.Running(loc) {
			return true
		}
	}
	return false
}

// claim marks loc as being measured; false if it was or is already, or
// calibration is off.
func (w *Worker) claim(loc location.Location) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.measured == nil || w.measured[loc] {
		return false
	}
	w.measured[loc] = true
	return true
}

// Calibrate measures every running kernel not yet measured this session
// (the laptop's first), keeps the figures and gives the model each
// cloud's speed against the laptop. It costs each kernel about 200 ms of
// two cores (calibrate.py), which a cell sent meanwhile waits for. Any
// goroutine may call it: the kernel calls it when a kernel it started
// at connect is up, and Run in think time.
func (w *Worker) Calibrate(ctx context.Context) {
	if len(w.locs.Clouds()) == 0 {
		return // nothing to compare the laptop with: no cost to pay
	}
	for _, loc := range w.locs {
		if ctx.Err() != nil || !w.req.Running(loc) || !w.claim(loc) {
			continue
		}
		out, err := transfer.Exec(ctx, w.req, loc, "", map[string]string{"c": calibrate.Expr()})
		if err != nil {
			if ctx.Err() != nil {
				w.mu.Lock()
				w.measured[loc] = false // cut short: again at the next pause
				w.mu.Unlock()
			} else {
				w.log.Debug("calibration failed", "location", loc, "err", err)
			}
			continue
		}
		text, err := agent.ParseBundle(out["c"])
		var r calibrate.Result
		if err == nil {
			r, err = calibrate.Parse(text)
		}
		if err != nil {
			w.log.Warn("calibration unreadable; the speed stays assumed", "location", loc, "err", err)
			continue
		}
		if err := w.cache.Store(w.keys[loc], r); err != nil {
			w.log.Debug("calibration not kept", "err", err)
		}
		w.mu.Lock()
		w.figures[loc] = r
		w.counts.Calibrations++
		w.mu.Unlock()
		w.log.Debug("calibrated", "location", loc, "single_s", r.Single, "multi_s", r.Multi, "cores", r.Cores)
	}
	w.feedSpeeds()
}

// feedSpeeds gives the model each calibrated cloud's speed against the
// calibrated laptop.
func (w *Worker) feedSpeeds() {
	for loc, v := range w.Speeds() {
		w.model.ObserveCalibration(loc, v)
	}
}

// Speeds are the calibrated clouds' speeds against the laptop.
func (w *Worker) Speeds() map[location.Location]float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[location.Location]float64{}
	home, ok := w.figures[location.Local]
	if !ok {
		return out
	}
	for _, loc := range w.locs.Clouds() {
		if r, ok := w.figures[loc]; ok {
			out[loc] = calibrate.Speed(home, r)
		}
	}
	return out
}

// Run spends the think time after lastCell ("" before any cell): a
// calibration and a probe when due, then p's proposed moves. It returns
// when done or when ctx is cancelled (the next request came).
func (w *Worker) Run(ctx context.Context, p policy.Policy, lastCell string) {
	if len(w.locs.Clouds()) == 0 {
		return
	}
	w.Calibrate(ctx)
	if ctx.Err() != nil {
		return
	}
	if time.Since(w.lastProbe) >= ProbeEvery {
		w.probe(ctx)
		if ctx.Err() != nil {
			return
		}
	}
	id, ok := p.(policy.Idler)
	if !ok || w.mover == nil || lastCell == "" {
		return
	}
	for _, mv := range id.Idle(lastCell, w.view, w.model, w.state.Names(), w.locs) {
		if !w.locs.Has(mv.To) {
			continue
		}
		for src, group := range w.state.Stale(mv.To, w.state.Needs(mv.Names)) {
			if ctx.Err() != nil {
				return
			}
			vers := w.state.Versions(group)
			res, err := w.mover.Move(ctx, src, mv.To, group)
			w.mu.Lock()
			switch {
			case err == nil:
				w.counts.Moves++
				w.counts.Bytes += res.Bytes
			case errors.Is(err, context.Canceled) || ctx.Err() != nil:
				w.counts.Cancelled++
			}
			w.mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					w.log.Debug("think-time move failed; the next cell moves what it needs", "to", mv.To, "names", group, "err", err)
				}
				return
			}
			recovery.Record(w.state, w.model, mv.To, vers, res)
			w.log.Debug("moved in think time", "from", src, "to", mv.To, "names", group, "bytes", res.Bytes)
		}
	}
}

// probe measures the round trip to the cloud kernels with kernel_info
// requests and feeds the fastest of a few samples to the model. A probe
// cut short by a cell is retried at the next pause.
func (w *Worker) probe(ctx context.Context) {
	prev := w.lastProbe
	w.lastProbe = time.Now()
	for _, loc := range w.locs.Clouds() {
		if !w.req.Running(loc) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		rtt := -1.0
		for range probeSamples {
			t0 := time.Now()
			if _, err := w.req.Request(pctx, loc, wire.Shell, "kernel_info_request", map[string]any{}, true, nil); err != nil {
				if ctx.Err() != nil {
					w.lastProbe = prev
				}
				w.log.Debug("link probe failed", "location", loc, "err", err)
				rtt = -1
				break
			}
			if d := time.Since(t0).Seconds(); rtt < 0 || d < rtt {
				rtt = d
			}
		}
		cancel()
		if rtt > 0 {
			w.model.ObserveRTT(loc, rtt)
			w.mu.Lock()
			w.counts.Probes++
			w.mu.Unlock()
		}
	}
}
