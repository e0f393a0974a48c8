package kernel_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// TestLongMoveShowsProgress: a move that takes past the threshold shows in
// the cell as one display of Ferry's (marked in its metadata), which ends
// as the move's one-line summary; a quick move leaves the cell's outputs
// as they are without Ferry. The clock is the test's: each reading is a
// second after the last, so a move of 16 chunks "takes" 17 s.
func TestLongMoveShowsProgress(t *testing.T) {
	tests := []struct {
		name  string
		after time.Duration
		want  string // the display's final text; "" for none
	}{
		{"long move", 2 * time.Second, "Ferry: moved x ("},
		{"quick move", time.Hour, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ticks atomic.Int64
			clock := func() time.Time { return time.Unix(1e9+ticks.Add(1), 0) }
			defer kernel.SetProgress(tt.after, time.Second, clock)()
			local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
			sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
			run(t, sess, "x = blob(1000000)")
			r := run(t, sess, "%%ferry remote\nprint(len(x))")
			if r.Status != "ok" || r.Stream("stdout") != "1000000\n" {
				t.Fatalf("cloud cell: %s %q", r.Status, r.Text())
			}
			var displays []string
			for _, o := range r.Outputs {
				if o["output_type"] != "display_data" {
					continue
				}
				md, _ := o["metadata"].(map[string]any)
				if md[kernel.DisplayMarker] == nil {
					t.Errorf("a display without Ferry's marker: %v", o)
				}
				text, _ := o["data"].(map[string]any)["text/plain"].(string)
				displays = append(displays, text)
			}
			switch {
			case tt.want == "" && len(displays) > 0:
				t.Fatalf("a quick move showed %q", displays)
			case tt.want != "" && (len(displays) != 1 || !strings.HasPrefix(displays[0], tt.want) || !strings.Contains(displays[0], " MiB) to the cloud in ") || !strings.HasSuffix(displays[0], "/s)")):
				t.Fatalf("displays %q; want one, ending as %q…", displays, tt.want)
			}
			if tot := sess.Kernel.Stats.Totals(); tot.BytesMoved < 1000000 {
				t.Fatalf("moved %d bytes; the test proves nothing", tot.BytesMoved)
			}
		})
	}
}
