package kernel

import (
	"context"
	"errors"
	"log/slog"

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
	p, ok := s.policy.(policy.Idler)
	if !ok || s.cfg.Analyzer == nil || s.lastCell == "" || s.backends["remote"] == nil || s.stopping.Load() {
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
	moves := p.Idle(s.lastCell, s.state, s.model, s.state.Names())
	if len(moves) == 0 {
		return
	}
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-s.wake:
			cancel()
		case <-done:
		}
	}()
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
