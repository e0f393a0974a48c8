package policy

import (
	"math"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// TestReleaseAfter: an idle cloud kernel goes after the configured time,
// but not before starting it again and bringing its values back would
// have cost as much.
func TestReleaseAfter(t *testing.T) {
	link := Link{Bandwidth: 1e6, RTT: 0.05, Compression: 1}
	for _, c := range []struct {
		name       string
		start      float64 // measured start of the cloud kernel, s
		only       int64
		configured time.Duration
		want       time.Duration
	}{
		{"never started: the configured time", 0, 0, 15 * time.Minute, 15 * time.Minute},
		{"start shorter than the configured time", 20, 10e6, 15 * time.Minute, 15 * time.Minute},
		{"start longer: wait it out", 20, 0, 10 * time.Second, 20 * time.Second},
		{"start plus values to bring back", 20, 10e6, 10 * time.Second, 30050 * time.Millisecond},
		{"absurd estimate is capped at a day", math.Inf(1), 0, time.Second, 24 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := NewModel(link)
			if c.start != 0 {
				m.ObserveStart(location.Remote, c.start)
			}
			if got := m.ReleaseAfter(location.Remote, c.configured, c.only); got != c.want {
				t.Fatalf("ReleaseAfter = %v, want %v", got, c.want)
			}
		})
	}
}

// TestReplayBillsTheCloudKernel: a replay bills the cloud kernel from the
// first cloud cell to the end, or, with CloudIdle, lets it go after that
// much idle (never sooner than a restart would cost), writes home what
// only it held, and starts it again for the next cloud cell.
func TestReplayBillsTheCloudKernel(t *testing.T) {
	const mb = 1 << 20
	session := func(think float64) []trace.Event {
		return []trace.Event{
			{Seq: 1, Cell: "load", Loc: location.Local, Writes: []string{"x"}, Sizes: map[string]int64{"x": mb}, Runtime: 1},
			{Seq: 2, Cell: "fit", Loc: location.Remote, Reads: []string{"x"}, Writes: []string{"m"}, Sizes: map[string]int64{"m": 4 * mb}, Runtime: 10, Think: 5},
			{Seq: 3, Cell: "look", Loc: location.Local, Runtime: 1, Think: 2},
			{Seq: 4, Cell: "score", Loc: location.Remote, Reads: []string{"m"}, Runtime: 5, Think: think},
		}
	}
	link := Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}
	tests := []struct {
		name              string
		think, idle, cost float64 // think before the last cell; CloudIdle; CloudStart
		starts            int
		released          bool
	}{
		{"kept to the end", 600, 0, 0, 1, false},
		{"released after idle", 600, 60, 0, 2, true},
		{"idle shorter than the release", 30, 60, 0, 1, false},
		{"kept while a restart would cost more", 90, 60, 120, 1, false},
		{"released past the restart cost", 600, 60, 120, 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := session(tt.think)
			s := Settings{Link: link, RemoteSpeed: 1, CloudPrice: 3.6, CloudIdle: tt.idle, CloudStart: tt.cost}
			r := Replay(evs, Recorded(evs), s)
			if r.CloudStarts != tt.starts {
				t.Fatalf("%d cloud starts, want %d", r.CloudStarts, tt.starts)
			}
			// The kernel is up from the start of "fit" (wall 6 s) to the
			// end, less what a release cut out.
			span := r.WallSeconds - 6
			if !tt.released && (r.CloudKernelSeconds < span-1e-6 || r.CloudKernelSeconds > span+1e-6) {
				t.Fatalf("billed %.2f s, want the span from the first cloud cell to the end, %.2f s", r.CloudKernelSeconds, span)
			}
			if tt.released {
				idle := max(tt.idle, tt.cost+link.TransferTime(4*mb))
				if r.CloudKernelSeconds > span-tt.think+idle+1e-6 {
					t.Fatalf("billed %.2f s of a %.2f s span; a release after %.0f s idle should have cut it", r.CloudKernelSeconds, span, idle)
				}
				if r.BytesMoved < 1*mb+4*mb+4*mb {
					t.Fatalf("moved %d bytes; want x there, m written home at the release and brought back", r.BytesMoved)
				}
			}
			if want := r.CloudKernelSeconds * 3.6 / 3600; r.CloudCost < want-1e-9 || r.CloudCost > want+1e-9 {
				t.Fatalf("cost $%.6f, want $%.6f", r.CloudCost, want)
			}
		})
	}
}
