package policy

import (
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// warmModel is a model that has seen "look" followed by "fit" (local
// runtime fitLocal, the cloud 4x faster), 300 s of think before "fit",
// and a 20 s cloud start; the cloud is cold when cold is set.
func warmModel(fitLocal float64, pin location.Location, cold *bool) *Model {
	m := NewModel(Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1})
	m.SpeedPrior = 4
	m.Cold = func(l location.Location) bool { return l != Local && *cold }
	m.ObserveStart(Remote, 20)
	for range 2 {
		m.ObserveRuntime(Observation{Cell: "fit", Loc: Local, Runtime: fitLocal, Think: 300, Pin: pin})
		m.ObserveRuntime(Observation{Cell: "look", Loc: Local, Runtime: 1, Think: 10})
	}
	return m
}

// TestWarm: a cold cloud kernel is started in think time only for a cell
// that pays for its start, or is pinned there; its time (After) is the
// think time taken before that cell less the start.
func TestWarm(t *testing.T) {
	tests := []struct {
		name     string
		fitLocal float64
		pin      location.Location
		cold     bool
		want     bool
	}{
		{"a long cell gains more than the start bills", 60, "", true, true},
		{"a short cell gains less than the start bills", 8, "", true, false},
		{"a running kernel needs no start", 60, "", false, false},
		{"a cell pinned to the cloud is warmed whatever it gains", 0.1, Remote, true, true},
		{"a cell pinned to the laptop never", 60, Local, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cold := tt.cold
			m := warmModel(tt.fitLocal, tt.pin, &cold)
			w, ok := NewFerry().Warm("look", simState{}, m, nil)
			if ok != tt.want {
				t.Fatalf("Warm = %+v, %v; want %v", w, ok, tt.want)
			}
			if !ok {
				return
			}
			if w.Loc != Remote || w.Cell != "fit" || w.After != 280 || w.Due != 300 || w.Reason == "" {
				t.Fatalf("Warm = %+v; want the cloud for fit, 280 s after look ended (due at 300 s), with a reason", w)
			}
			if !w.Dropped(281) || w.Dropped(279) {
				t.Fatal("a warm must be dropped once a release came past its time, and only then")
			}
			nw := NewFerry()
			nw.NoWarm = true
			if _, ok := nw.Warm("look", simState{}, m, nil); ok {
				t.Fatal("NoWarm still warmed")
			}
		})
	}
}

// TestReplayWarmsAfterRelease: a training cell run every five minutes, its
// cloud kernel let go after a minute idle in between: without warming,
// each run after a release waits for a 20 s start; warmed in think time
// once the pattern is known, the start is hidden and billed no more.
func TestReplayWarmsAfterRelease(t *testing.T) {
	const mb = 1 << 20
	evs := []trace.Event{{Seq: 1, Cell: "load", Loc: Local, Writes: []string{"x"}, Sizes: map[string]int64{"x": mb}, Runtime: 1}}
	for i := range 4 {
		evs = append(evs,
			trace.Event{Seq: 2 + 2*i, Cell: "fit", Loc: Local, Reads: []string{"x"}, Writes: []string{"model"}, Sizes: map[string]int64{"model": mb}, Runtime: 60, Think: 300},
			trace.Event{Seq: 3 + 2*i, Cell: "look", Loc: Local, Reads: []string{"model"}, Runtime: 0.1, Think: 10})
	}
	s := Settings{Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}, RemoteSpeed: 4, CloudIdle: 60, CloudStart: 20}
	warm := Replay(evs, NewFerry(), s)
	s.NoWarm = true
	cold := Replay(evs, NewFerry(), s)
	if cold.CloudWarmStarts != 0 || cold.CloudStarts < 3 {
		t.Fatalf("without warming: %d starts (%d in think time); want one per fit after a release", cold.CloudStarts, cold.CloudWarmStarts)
	}
	// The first fit starts the kernel; the second comes before the model
	// has seen fit follow look; the last two find it warm.
	if warm.CloudWarmStarts != 2 || warm.CloudStarts != cold.CloudStarts {
		t.Fatalf("warming: %d starts, %d in think time; want %d, 2", warm.CloudStarts, warm.CloudWarmStarts, cold.CloudStarts)
	}
	if saved := cold.Seconds - warm.Seconds; saved < 2*20-1 {
		t.Fatalf("warming saved %.1f s of wait (%.1f against %.1f); want the two hidden starts, 40 s", saved, warm.Seconds, cold.Seconds)
	}
	if warm.CloudKernelSeconds > cold.CloudKernelSeconds+1 {
		t.Fatalf("warming billed %.1f kernel-s against %.1f; a start timed to the cell bills what the cell's own start would", warm.CloudKernelSeconds, cold.CloudKernelSeconds)
	}
	if warm.CellsRemote < 4 || warm.CellsRemote != cold.CellsRemote {
		t.Fatalf("cells in the cloud: %d warmed, %d cold; want the same, every fit among them", warm.CellsRemote, cold.CellsRemote)
	}
}
