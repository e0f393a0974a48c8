package kernel

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

type shown struct {
	cell    *wire.Message
	msgType string
	content map[string]any
}

func (s shown) text() string { return s.content["data"].(map[string]string)["text/plain"] }
func (s shown) id() string   { return s.content["transient"].(map[string]string)["display_id"] }

// TestMoveDisplay: a move's progress shows in the running cell only past
// the threshold, as one display (one display_id, Ferry's marker in its
// metadata) updated at most every interval, with bytes, rate and time
// left, and is replaced by a one-line summary when the move ends. The
// clock is the test's: each report comes 500 ms after the one before.
func TestMoveDisplay(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		cell    bool
		reports int   // chunk reports after the begin, 500 ms apart
		err     error // how the move ended
		// types is the sequence of messages published.
		types   []string
		summary string
	}{
		{"short move shows nothing", true, 3, nil, nil, ""},
		{"no cell shows nothing", false, 20, nil, nil, ""},
		{"long move", true, 8, nil, []string{"display_data", "update_display_data", "update_display_data", "update_display_data"},
			"Ferry: moved x (10.0 MiB) to the cloud in 4.5 s (2.2 MiB/s)"},
		{"failed move", true, 5, errBoom, []string{"display_data", "update_display_data"},
			"Ferry: moving x to the cloud stopped after 3.0 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1e9, 0)
			var got []shown
			d := &moveDisplay{now: func() time.Time { return now }, after: 2 * time.Second, every: time.Second,
				publish: func(c *wire.Message, mt string, content map[string]any) { got = append(got, shown{c, mt, content}) }}
			var cell *wire.Message
			if tt.cell {
				cell = &wire.Message{}
			}
			p := transfer.Progress{Src: location.Local, Dst: location.Remote, Names: []string{"x"}, RawTotal: 10 * mib}
			d.observe(cell, p)
			for i := 1; i <= tt.reports; i++ {
				now = now.Add(500 * time.Millisecond)
				p.Raw = int64(i) * 10 * mib / int64(tt.reports+1)
				d.observe(cell, p)
			}
			now = now.Add(500 * time.Millisecond)
			end := p
			end.Finished, end.Err, end.Raw = true, tt.err, p.RawTotal
			d.observe(cell, end)
			var types []string
			for _, g := range got {
				types = append(types, g.msgType)
				if g.cell != cell || g.id() != got[0].id() || g.id() == "" {
					t.Errorf("%s to cell %p id %q; want all to cell %p, one display id", g.msgType, g.cell, g.id(), cell)
				}
				if md, _ := g.content["metadata"].(map[string]any); md[DisplayMarker] == nil {
					t.Errorf("%s without Ferry's marker: %v", g.msgType, g.content["metadata"])
				}
			}
			if strings.Join(types, " ") != strings.Join(tt.types, " ") {
				t.Fatalf("published %v, want %v", types, tt.types)
			}
			if len(got) == 0 {
				return
			}
			if first := got[0].text(); !strings.HasPrefix(first, "Ferry: moving x to the cloud: ") || !strings.Contains(first, " of 10.0 MiB (") ||
				!strings.Contains(first, "MiB/s, about ") || !strings.HasSuffix(first, " left") {
				t.Errorf("progress line %q", first)
			}
			if last := got[len(got)-1].text(); last != tt.summary {
				t.Errorf("summary %q, want %q", last, tt.summary)
			}
			// The next move gets a display of its own.
			d.observe(cell, transfer.Progress{Dst: location.Remote, Names: []string{"y"}})
			now = now.Add(3 * time.Second)
			d.observe(cell, transfer.Progress{Dst: location.Remote, Names: []string{"y"}, Raw: 1, RawTotal: 2})
			if n := len(got); got[n-1].msgType != "display_data" || got[n-1].id() == got[0].id() {
				t.Errorf("a second move reused the first one's display: %s %s", got[n-1].msgType, got[n-1].id())
			}
		})
	}
}

var errBoom = errorString("the cloud kernel died")

type errorString string

func (e errorString) Error() string { return string(e) }
