package kernel

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

// How a long move is shown in the running cell: a 1 GB move takes over a
// minute on a home link, and the cell shows nothing else meanwhile. Only a
// move past progressAfter gets a display (a short one leaves the cell's
// output as it would be without Ferry), updated at most every
// progressEvery, and replaced by a one-line summary when it ends.
// Variables, so tests can set them and the clock.
var (
	progressAfter = 2 * time.Second
	progressEvery = 250 * time.Millisecond
	progressClock = time.Now
)

// DisplayMarker is the metadata key of Ferry's own displays (a move's
// progress): tools that compare a cell's outputs with a run without Ferry
// drop outputs carrying it, as they drop stream lines starting "Ferry: ".
const DisplayMarker = "ferry"

// moveDisplay shows the progress of the running cell's moves as one
// updatable display (display_data with a transient display_id, then
// update_display_data). Moves run one at a time; chunks are reported from
// the router's goroutine, so it locks.
type moveDisplay struct {
	mu      sync.Mutex
	publish func(cell *wire.Message, msgType string, content map[string]any)
	now     func() time.Time
	after   time.Duration
	every   time.Duration

	cell        *wire.Message // the cell the current move's display is in; nil: no move
	start, last time.Time
	id          string
	shown       bool
}

func newMoveDisplay(publish func(*wire.Message, string, map[string]any)) *moveDisplay {
	return &moveDisplay{publish: publish, now: progressClock, after: progressAfter, every: progressEvery}
}

// observe takes one progress report of a move made for cell (nil: no cell
// shows output, as between cells).
func (d *moveDisplay) observe(cell *wire.Message, p transfer.Progress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cell == nil {
		if cell == nil || p.Finished {
			return
		}
		// A new move (a retry of the same move keeps its display).
		d.cell, d.start, d.last, d.id, d.shown = cell, d.now(), time.Time{}, wire.NewID(), false
	}
	now := d.now()
	switch {
	case p.Finished:
		if d.shown {
			d.send("update_display_data", summary(p, now.Sub(d.start)))
		}
		d.cell = nil
	case !d.shown && now.Sub(d.start) >= d.after:
		d.shown, d.last = true, now
		d.send("display_data", moving(p, now.Sub(d.start)))
	case d.shown && now.Sub(d.last) >= d.every:
		d.last = now
		d.send("update_display_data", moving(p, now.Sub(d.start)))
	}
}

func (d *moveDisplay) send(msgType, text string) {
	d.publish(d.cell, msgType, map[string]any{
		"data":      map[string]string{"text/plain": text},
		"metadata":  map[string]any{DisplayMarker: map[string]bool{"progress": true}},
		"transient": map[string]string{"display_id": d.id},
	})
}

// moving is the display of a move under way: "Ferry: moving x to the
// cloud: 412.0 MiB of 1.00 GiB (40%), 13.1 MiB/s, about 45 s left".
func moving(p transfer.Progress, took time.Duration) string {
	what := fmt.Sprintf("Ferry: moving %s to %s", strings.Join(shownNames(p.Names, true), ", "), p.Dst.Describe())
	switch {
	case p.RawTotal <= 0:
		return what + " …"
	case p.Raw >= p.RawTotal:
		return fmt.Sprintf("%s: %s sent, %s is loading it …", what, report.HumanBytes(p.RawTotal), p.Dst.Describe())
	}
	s := fmt.Sprintf("%s: %s of %s (%.0f%%)", what, report.HumanBytes(p.Raw), report.HumanBytes(p.RawTotal), 100*float64(p.Raw)/float64(p.RawTotal))
	if sec := took.Seconds(); sec > 0 && p.Raw > 0 {
		rate := float64(p.Raw) / sec
		left := time.Duration(float64(p.RawTotal-p.Raw) / rate * float64(time.Second))
		s += fmt.Sprintf(", %s/s, about %s left", report.HumanBytes(int64(rate)), roundSeconds(left))
	}
	return s
}

// summary is the line that replaces the display once the move ended.
func summary(p transfer.Progress, took time.Duration) string {
	names := strings.Join(shownNames(p.Names, true), ", ")
	if p.Err != nil {
		return fmt.Sprintf("Ferry: moving %s to %s stopped after %s", names, p.Dst.Describe(), roundSeconds(took))
	}
	s := fmt.Sprintf("Ferry: moved %s (%s) to %s in %s", names, report.HumanBytes(p.RawTotal), p.Dst.Describe(), roundSeconds(took))
	if sec := took.Seconds(); sec > 0 {
		s += fmt.Sprintf(" (%s/s)", report.HumanBytes(int64(float64(p.RawTotal)/sec)))
	}
	return s
}

// onProgress is the mover's progress hook: moves made while a cell runs
// are shown in it.
func (s *Server) onProgress(p transfer.Progress) {
	s.moves.observe(s.cell.Load(), p)
}
