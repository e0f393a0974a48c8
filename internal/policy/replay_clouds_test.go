package policy

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// twoClouds are replay settings for a fast GPU cloud behind a slow link
// and a modest CPU cloud next door, each with its own price.
var twoClouds = Settings{
	Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1},
	Clouds: map[location.Location]CloudSettings{
		gpu: {Speed: 10, Price: 3.6, Link: Link{Bandwidth: 20e6 / 8, RTT: 0.08, Compression: 1}},
		cpu: {Speed: 2, Price: 0.36, Link: Link{Bandwidth: 1e9 / 8, RTT: 0.001, Compression: 1}},
	},
}

// A recorded session over the laptop and two clouds replays with each
// cloud's own speed, link, kernel and price: a value made at gpu crosses
// to cpu through Ferry (both round trips, the slower link's rate) and
// comes home from cpu, the cheaper holder.
func TestReplaySeveralClouds(t *testing.T) {
	evs := []trace.Event{
		{Seq: 1, Cell: "make", Loc: gpu, Runtime: 1, Writes: []string{"x"}, Sizes: map[string]int64{"x": 100e6}},
		{Seq: 2, Cell: "use", Loc: cpu, Runtime: 2, Reads: []string{"x"}, Writes: []string{"y"}, Sizes: map[string]int64{"y": 1e3}},
		{Seq: 3, Cell: "show", Loc: Local, Runtime: 0.5, Reads: []string{"x"}},
	}
	got := Replay(evs, Recorded(evs), twoClouds)
	if want := []string{"gpu", "cpu", "local"}; !reflect.DeepEqual(got.Placement, want) {
		t.Fatalf("placement %v, want %v", got.Placement, want)
	}
	// make: gpu's round trip + 1 s. use: x from gpu through Ferry
	// (0.08+0.001 s, 100 MB at 20 Mbit/s = 40 s) + cpu's round trip + 2 s.
	// show: x from cpu (0.001 s + 0.8 s at 1 Gbit/s) + 0.5 s.
	mk, use, show := 0.08+1, 0.081+40+0.001+2, 0.001+0.8+0.5
	want := mk + use + show
	if math.Abs(got.Seconds-want) > 1e-6 {
		t.Fatalf("seconds %.6f, want %.6f", got.Seconds, want)
	}
	if got.BytesMoved != 200e6 || got.Migrations != 2 || got.CellsRemote != 2 {
		t.Fatalf("moved %d bytes in %d migrations, %d cloud cells; want 200 MB, 2, 2", got.BytesMoved, got.Migrations, got.CellsRemote)
	}
	// gpu's kernel from the first cell to the end, cpu's from the second.
	gpuS, cpuS := want, want-mk
	if math.Abs(got.CloudKernelSeconds-(gpuS+cpuS)) > 1e-6 || got.CloudStarts != 2 {
		t.Fatalf("cloud kernel-s %.4f in %d starts, want %.4f in 2", got.CloudKernelSeconds, got.CloudStarts, gpuS+cpuS)
	}
	if c := (gpuS*3.6 + cpuS*0.36) / 3600; math.Abs(got.CloudCost-c) > 1e-9 {
		t.Fatalf("cost $%.6f, want $%.6f (each cloud at its own price)", got.CloudCost, c)
	}
	// All-local runs each cell at its laptop time: 10 s, 4 s, 0.5 s.
	local := Replay(evs, fixed(Local), twoClouds)
	if math.Abs(local.Seconds-14.5) > 1e-6 || local.CloudKernelSeconds != 0 {
		t.Fatalf("all-local %.4f s, %.1f kernel-s; want 14.5 s and none", local.Seconds, local.CloudKernelSeconds)
	}
}

// Without a configured speed, each cloud's comes from the trace: against
// the laptop where a cell ran at both, else through another cloud.
func TestMeasuredSpeedPerCloud(t *testing.T) {
	evs := []trace.Event{
		{Seq: 1, Cell: "a", Loc: Local, Runtime: 3},
		{Seq: 2, Cell: "a", Loc: cpu, Runtime: 1},
		{Seq: 3, Cell: "b", Loc: cpu, Runtime: 2},
		{Seq: 4, Cell: "b", Loc: gpu, Runtime: 0.5},
	}
	for _, c := range []struct {
		loc  location.Location
		want float64
	}{{cpu, 3}, {gpu, 12}, {"other", 1}} {
		if got := measuredSpeed(evs, c.loc); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("speed at %s %.3f, want %.3f", c.loc, got, c.want)
		}
	}
}

// With several clouds the oracle searches (a multiway cut has no exact
// polynomial form): on small traces it must equal or come within 5% of
// the best of all 3^n placements, find the best on most, and never lose
// to a fixed placement or the online policies that do not prefetch.
func TestSeveralCloudsOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	locs := location.NewSet(Local, gpu, cpu)
	const trials = 24
	exact := 0
	worst := 0.0
	for trial := range trials {
		evs := synthetic(r, 2+r.IntN(5))
		if trial%4 == 0 {
			evs[0].Pinned, evs[0].Loc = true, cpu
			evs[0].Runtime /= 2 // recorded at cpu's speed
		}
		got := Replay(evs, Oracle(evs, twoClouds), twoClouds).Seconds
		best := math.Inf(1)
		pl := make([]location.Location, len(evs))
		var walk func(i int)
		walk = func(i int) {
			if i == len(evs) {
				best = math.Min(best, Replay(evs, Fixed("x", pl), twoClouds).Seconds)
				return
			}
			for _, l := range locs {
				if evs[i].Pinned && l != evs[i].Loc {
					continue
				}
				pl[i] = l
				walk(i + 1)
			}
		}
		walk(0)
		if got < best-1e-6 {
			t.Fatalf("trial %d: oracle %.4f below the exhaustive best %.4f: the search's replay differs from the brute force's", trial, got, best)
		}
		gap := got/best - 1
		worst = math.Max(worst, gap)
		if gap > 0.05 {
			t.Errorf("trial %d (%d cells): oracle %.4f s, best %.4f s (+%.1f%%)", trial, len(evs), got, best, 100*gap)
		}
		if gap < 1e-9 {
			exact++
		}
		for _, name := range []string{"local", "remote", "pingpong"} {
			p, _ := New(name, 1)
			if o := Replay(evs, p, twoClouds).Seconds; got > o+1e-6 {
				t.Errorf("trial %d: oracle %.4f s behind %s's %.4f s", trial, got, name, o)
			}
		}
	}
	t.Logf("oracle optimal on %d of %d traces, worst gap +%.2f%%", exact, trials, 100*worst)
	if exact < trials*3/4 {
		t.Fatalf("oracle optimal on only %d of %d traces", exact, trials)
	}
}

// The paper policy, written for one remote, migrates a candidate to the
// cloud where that pays most when there are several (and none is called
// remote).
func TestPaperOverSeveralClouds(t *testing.T) {
	var evs []trace.Event
	for i := range 3 {
		evs = append(evs, trace.Event{Seq: i + 1, Cell: "fit", Loc: Local, Runtime: 10, Reads: []string{"x"}, Writes: []string{"m"}, Sizes: map[string]int64{"m": 1e3}})
	}
	evs[0].Writes = []string{"x", "m"}
	evs[0].Sizes = map[string]int64{"x": 1e3, "m": 1e3}
	got := Replay(evs, NewPaper(), twoClouds)
	// First run measured at home; then gpu (1 s + its round trip) beats
	// cpu (5 s) and the laptop (10 s).
	if want := []string{"local", "gpu", "gpu"}; !reflect.DeepEqual(got.Placement, want) {
		t.Fatalf("paper placed %v, want %v", got.Placement, want)
	}
}
