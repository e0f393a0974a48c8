package kernel

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/wire"
)

// idle uses the user's think time after a cell, as DESIGN.md's policy
// asks: it makes the moves the policy proposes — the predicted next cell's
// inputs to where it will run (prefetch), values that live only in the
// cloud copied home (write-back, which also means a cloud kernel's death
// loses nothing) — each cancelled the moment the next request arrives. It
// runs on the shell worker, so it never races a cell.
func (s *Server) idle(ctx context.Context, shellQ <-chan *wire.Message) {
	if s.backends["remote"] == nil || s.stopping.Load() {
		return
	}
	// A wake-up left by the request just handled is not news.
	select {
	case <-s.wake:
	default:
	}
	if len(shellQ) > 0 {
		return
	}
	if time.Since(s.lastProbe) >= probeEvery {
		pctx, stop := s.untilWoken(ctx)
		s.probe(pctx)
		woken := pctx.Err() != nil
		stop()
		if woken {
			return
		}
	}
	p, ok := s.policy.(policy.Idler)
	if !ok || s.cfg.Analyzer == nil || s.lastCell == "" || len(shellQ) > 0 {
		return
	}
	moves := p.Idle(s.lastCell, s.state, s.model, s.state.Names())
	if len(moves) == 0 {
		return
	}
	ictx, stop := s.untilWoken(ctx)
	defer stop()
	for _, mv := range moves {
		if s.backends[mv.To] == nil {
			continue
		}
		for src, group := range s.state.Stale(mv.To, s.state.Needs(mv.Names)) {
			if ictx.Err() != nil {
				return
			}
			n, _, err := s.transfer(ictx, src, mv.To, group)
			s.Stats.mu.Lock()
			switch {
			case err == nil:
				s.Stats.IdleMoves++
				s.Stats.IdleBytes += n
			case errors.Is(err, context.Canceled) || ictx.Err() != nil:
				s.Stats.IdleCancelled++
			}
			s.Stats.mu.Unlock()
			if err != nil {
				if ictx.Err() == nil {
					slog.Debug("idle-time move failed; the next cell moves what it needs", "to", mv.To, "names", group, "err", err)
				}
				return
			}
			slog.Debug("moved in think time", "from", src, "to", mv.To, "names", group, "bytes", n)
		}
	}
}

// untilWoken returns a context cancelled when the next shell request
// arrives (or by stop), so think-time work never makes a cell wait.
func (s *Server) untilWoken(ctx context.Context) (context.Context, func()) {
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-s.wake:
			cancel()
		case <-done:
		}
	}()
	return wctx, func() { close(done); cancel() }
}

// probeEvery spaces the active link probes: the round trip changes slowly,
// and transfers measure the bandwidth passively.
const probeEvery = 30 * time.Second

// probeSamples is how many round trips one probe times; it keeps the
// fastest, as TCP's min-RTT does: a single sample right after a kernel
// starts, or while the machine is busy, measured 46 ms on a 1 ms link in
// the hybrid bench and sent the next cell to the laptop.
const probeSamples = 3

// probe measures the round trip to the cloud kernel with kernel_info
// requests while the user thinks, and feeds it to the cost model as an
// exponentially weighted average, so one slow probe does not swing
// placement. A configured round trip is the average's starting point.
func (s *Server) probe(ctx context.Context) {
	b := s.backends["remote"]
	if !b.Alive() {
		return
	}
	prev := s.lastProbe
	s.lastProbe = time.Now()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rtt := -1.0
	for range probeSamples {
		t0 := time.Now()
		if _, err := s.hidden(pctx, "remote", wire.Shell, "kernel_info_request", map[string]any{}, nil, true, nil); err != nil {
			if ctx.Err() != nil {
				s.lastProbe = prev // cut short by a cell: probe at the next pause
			}
			slog.Debug("link probe failed", "err", err)
			return
		}
		if d := time.Since(t0).Seconds(); rtt < 0 || d < rtt {
			rtt = d
		}
	}
	if s.model.Link.RTT <= 0 {
		s.model.Link.RTT = rtt
	} else {
		s.model.Link.RTT = 0.7*s.model.Link.RTT + 0.3*rtt
	}
	s.probes++
}
