package kernel

import (
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/recall"
)

// remember records a cell that ran to the end in the recall file, in laptop
// seconds. A cell run in a cloud whose speed is only assumed is not: its
// laptop time is unknown. A cell that raised may have stopped at once, so
// the caller leaves it out.
func (s *Server) remember(cell string, loc location.Location, runtime float64) {
	h := s.cfg.Recall
	if h == nil {
		return
	}
	v := runtime
	if loc != location.Local {
		sp, why := s.model.SpeedWhy(loc)
		if why == "assumed" {
			return
		}
		v = runtime * sp
	}
	h.Put(recall.Key(s.root, cell), v)
}

// saveRecall writes the recall file if it changed: in think time after a
// cell and once at shutdown. A failure is logged: recall only helps.
func (s *Server) saveRecall() {
	if err := s.cfg.Recall.Save(); err != nil {
		s.log.Warn("saving the cells recalled in later sessions", "err", err)
	}
}

// recallEvery is how often think time writes the recall file: the file of
// 10,000 cells is about a megabyte, some milliseconds to write, and a
// request that comes meanwhile waits for it.
const recallEvery = 30 * time.Second

// saveRecallSometimes is saveRecall at most every recallEvery.
func (s *Server) saveRecallSometimes() {
	if s.cfg.Recall == nil || time.Since(s.recallSaved) < recallEvery {
		return
	}
	s.recallSaved = time.Now()
	s.saveRecall()
}
