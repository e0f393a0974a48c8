package kernel

import (
	"context"

	"github.com/ferry-nb/ferry/internal/wire"
)

// idle hands the user's think time after a shell request to the
// think-time worker, with a context cancelled the moment the next shell
// request arrives. It runs on the shell worker, so think-time work never
// races a cell. After a cell (afterCell) it spends the time on probes and
// moves; after any request it then waits to let an idle cloud kernel go
// (--cloud-idle), so completions and inspections while the user types do
// not stop that clock, nor a start due before the cell expected next.
func (s *Server) idle(ctx context.Context, shellQ <-chan *wire.Message, afterCell bool) {
	if afterCell && len(shellQ) == 0 {
		s.saveRecallSometimes()
	}
	if len(s.locs.Clouds()) == 0 || s.stopping.Load() {
		return
	}
	if !afterCell && !s.releases() && !s.think.CalibrationDue() {
		if _, _, warm := s.nextWarm(); !warm {
			return
		}
	}
	// A wake-up left by the request just handled is not news.
	select {
	case <-s.wake:
	default:
	}
	if len(shellQ) > 0 {
		return
	}
	ictx, stop := s.untilWoken(ctx)
	defer stop()
	s.releaseDue(ictx)
	if !afterCell {
		// A kernel started at connect is measured at the first pause
		// (kernel_info, a completion), not only after a cell (after one,
		// Run calibrates first).
		s.think.Calibrate(ictx)
	} else {
		s.think.Run(ictx, s.policy, s.lastCell)
		// Files written in a cloud go home while the user thinks,
		// whatever the policy: the laptop is where the user expects to
		// find them.
		if ictx.Err() == nil {
			s.writeBackFiles(ictx)
		}
	}
	// Then wait to let an idle cloud kernel go (--cloud-idle, or the
	// objective's break-even) or to start a cold one before the cell
	// expected there.
	s.releaseIdle(ictx, ctx)
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
