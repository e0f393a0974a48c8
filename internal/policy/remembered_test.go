package policy

import (
	"testing"

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
