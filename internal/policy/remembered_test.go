package policy

import (
	"math"
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// TestReplayRemembered: a session's first cell reads a 100 MB file on the
// laptop and computes for a minute there. Its first run gives the model
// nothing to go on but the file, so it runs where the file is; recalled
// from an earlier session (package recall), the same cell goes to the 4x
// cloud with the file (8 s up, 15 s there).
func TestReplayRemembered(t *testing.T) {
	const mb = 1 << 20
	evs := []trace.Event{
		{Seq: 1, Cell: "load", Loc: Local, Reads: []string{"file:data.csv"}, ReadSizes: map[string]int64{"file:data.csv": 100 * mb}, Writes: []string{"x"}, Sizes: map[string]int64{"x": mb}, Runtime: 60},
		{Seq: 2, Cell: "look", Loc: Local, Reads: []string{"x"}, Runtime: 0.1, Think: 5},
	}
	s := Settings{Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}, RemoteSpeed: 4}
	first := Replay(evs, NewFerry(), s)
	s.Remembered = true
	second := Replay(evs, NewFerry(), s)
	if len(first.Placement) == 0 || first.Placement[0] != string(Local) {
		t.Fatalf("first session placed the unseen cell at %v; the test expects the laptop (nothing known), so it proves nothing", first.Placement)
	}
	if len(second.Placement) == 0 || second.Placement[0] != string(Remote) {
		t.Fatalf("second session placed the minute-long cell at %v, want the cloud", second.Placement)
	}
	if second.Seconds > first.Seconds-20 {
		t.Fatalf("recalled: %.1f s waited against %.1f; want the 45 s the cloud saves, less the file's 8 s", second.Seconds, first.Seconds)
	}
}

// TestRuntimeRemembered: a cell not yet run is estimated by its recalled
// laptop time, scaled by the cloud's speed; once it runs, what it took in
// this session wins.
func TestRuntimeRemembered(t *testing.T) {
	m := NewModel(Link{})
	m.SpeedPrior = 4
	m.Remembered = func(cell string) (float64, bool) { return 8, cell == "a" }
	if v, _ := m.Runtime("a", Remote); v != 2 {
		t.Fatalf("recalled cell at a 4x cloud: %.2f s, want 2", v)
	}
	if v, _ := m.Runtime("b", Local); v != PriorLocalRuntime {
		t.Fatalf("a cell not recalled: %.2f s, want the prior %.2f", v, PriorLocalRuntime)
	}
	m.ObserveRuntime(Observation{Cell: "a", Loc: Local, Runtime: 1, Think: -1})
	if v, measured := m.Runtime("a", Local); v != 1 || !measured {
		t.Fatalf("after a run of 1 s: %.2f s (measured %v), want this session's 1 s", v, measured)
	}
}

// TestRatioPricesTheMove: a value whose compression was estimated from a
// sample (a laptop file: Var.Ratio) is priced by the bytes it would put on
// the link, and the link's own measured compression is not applied to it
// again. The tabular_disk case: a 90 MB CSV crossing as 29 MB sends the
// cell reading it (8 s on the laptop, 4x faster in the cloud) to the
// cloud; priced raw, it stays.
func TestRatioPricesTheMove(t *testing.T) {
	const size = 90e6
	link := Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}
	tests := []struct {
		name        string
		ratio, comp float64
		want        location.Location
		move        float64 // the move's seconds
	}{
		{"compression unknown", 0, 1, Local, 0.02 + size/(100e6/8)},
		{"the file's estimate", 0.32, 1, Remote, 0.02 + 0.32*size/(100e6/8)},
		{"the estimate, not the link's on top", 0.32, 0.5, Remote, 0.02 + 0.32*size/(100e6/8)},
		{"the link's for the rest", 0, 0.5, Remote, 0.02 + 0.5*size/(100e6/8)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := link
			l.Compression = tt.comp
			m := NewModel(l)
			m.SpeedPrior = 4
			m.Remembered = func(cell string) (float64, bool) { return 8, cell == "load" }
			v := simState{"file:data.csv": {Size: size, Ratio: tt.ratio, At: []location.Location{Local}, Movable: true}}
			if got := m.PayloadTime(Local, Remote, PayloadOf(v, []string{"file:data.csv"})); math.Abs(got-tt.move) > 1e-9 {
				t.Fatalf("the move: %.3f s, want %.3f", got, tt.move)
			}
			d := NewFerry().Decide(Cell{Hash: "load", Reads: []string{"file:data.csv"}, Writes: []string{"df"}}, v, m)
			if d.Loc != tt.want {
				t.Fatalf("the cell reading the file at %s, want %s (%s; costs %v)", d.Loc, tt.want, d.Reason, d.Costs)
			}
		})
	}
}

// TestReplayReadRatios: a trace's estimated file compression (ReadRatios)
// prices the file in replay and in the oracle as it did live: a 90 MB
// CSV crossing as 29 MB makes the 4x cloud worth it for the 8 s cell
// reading it; without the estimate, both keep it on the laptop.
func TestReplayReadRatios(t *testing.T) {
	const size = 90e6
	ev := func(ratios map[string]float64) []trace.Event {
		return []trace.Event{{Seq: 1, Cell: "load", Loc: Local, Reads: []string{"file:data.csv"}, ReadSizes: map[string]int64{"file:data.csv": size},
			ReadRatios: ratios, Writes: []string{"x"}, Sizes: map[string]int64{"x": 1000}, Runtime: 8}}
	}
	s := Settings{Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}, RemoteSpeed: 4, Remembered: true}
	for _, tt := range []struct {
		name   string
		ratios map[string]float64
		want   string
	}{
		{"no estimate", nil, string(Local)},
		{"estimated", map[string]float64{"file:data.csv": 0.32}, string(Remote)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := 0
			for _, r := range ReplayAll(ev(tt.ratios), s, 1) {
				if r.Policy != "ferry" && r.Policy != "oracle" {
					continue
				}
				seen++
				if len(r.Placement) != 1 || r.Placement[0] != tt.want {
					t.Errorf("%s placed the cell at %v, want %s (%.2f s)", r.Policy, r.Placement, tt.want, r.Seconds)
				}
			}
			if seen != 2 {
				t.Fatalf("ReplayAll gave %d of ferry and oracle, want both", seen)
			}
		})
	}
}
