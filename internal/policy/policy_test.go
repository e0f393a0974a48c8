package policy

import (
	"fmt"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/state"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/ferry-nb/ferry/internal/trace"
)

// synthetic makes a notebook-like trace: a load cell producing a large
// array, cheap and expensive cells reading it, hot spots re-run.
func synthetic(r *rand.Rand, n int) []trace.Event {
	names := []string{"a", "b", "c", "d", "e"}
	var evs []trace.Event
	for i := range n {
		cell := fmt.Sprintf("c%d", r.IntN(8))
		e := trace.Event{Seq: i, Cell: cell, Loc: Local, Runtime: r.Float64() * 3, Think: r.Float64() * 2, Sizes: map[string]int64{}}
		for _, nm := range names {
			if r.IntN(3) == 0 {
				e.Reads = append(e.Reads, nm)
			}
		}
		w := names[r.IntN(len(names))]
		e.Writes = []string{w}
		e.Sizes[w] = int64(r.IntN(200e6))
		// The notebook's data files, on the laptop from the start and
		// never written: what a cloud reader of them pays for.
		for k, f := range []string{"__ferry_file__:a.csv", "__ferry_file__:b.npy"} {
			if r.IntN(4) == 0 {
				e.Reads = append(e.Reads, f)
				e.ReadSizes = map[string]int64{f: int64(50e6 * (k + 1))}
			}
		}
		evs = append(evs, e)
	}
	return evs
}

var testLink = Settings{Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}, RemoteSpeed: 4}

// The oracle must equal the best of all 2^n placements on small traces.
func TestOracleIsOptimal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 30 {
		evs := synthetic(r, 2+r.IntN(8))
		if trial%3 == 0 {
			evs[0].Pinned = true
		}
		got := Replay(evs, Oracle(evs, testLink), testLink).Seconds
		best := math.Inf(1)
		for mask := 0; mask < 1<<len(evs); mask++ {
			locs := make([]location.Location, len(evs))
			ok := true
			for i := range evs {
				locs[i] = Local
				if mask>>i&1 == 1 {
					locs[i] = Remote
				}
				if evs[i].Pinned && locs[i] != evs[i].Loc {
					ok = false
				}
			}
			if !ok {
				continue
			}
			c := Replay(evs, &assignment{name: "x", locs: locs}, testLink).Seconds
			best = math.Min(best, c)
		}
		if math.Abs(got-best) > 1e-6*math.Max(1, best) {
			t.Fatalf("trial %d (%d cells): oracle %.6f, brute force %.6f", trial, len(evs), got, best)
		}
	}
}

// Data on the laptop's disk before the session costs a cloud reader its
// transfer, in the oracle and in the replay: a cell that reads 500 MB and
// gains 7.5 s in the cloud stays local at 100 Mbit/s (40 s to move).
func TestInputFilesStartOnTheLaptop(t *testing.T) {
	f := "__ferry_file__:scene.npy"
	evs := []trace.Event{
		{Seq: 1, Cell: "load", Loc: Local, Runtime: 10, Reads: []string{f}, ReadSizes: map[string]int64{f: 500e6}, Writes: []string{"x"}, Sizes: map[string]int64{"x": 1e3}},
		{Seq: 2, Cell: "fit", Loc: Local, Runtime: 40, Reads: []string{"x"}, Writes: []string{"m"}, Sizes: map[string]int64{"m": 1e3}},
	}
	got := Replay(evs, Oracle(evs, testLink), testLink)
	if want := []string{"local", "remote"}; !reflect.DeepEqual(got.Placement, want) {
		t.Fatalf("oracle placed %v, want %v", got.Placement, want)
	}
	all := Replay(evs, &assignment{name: "remote", locs: []location.Location{Remote, Remote}}, testLink)
	if all.BytesMoved < 500e6 {
		t.Fatalf("all-remote moved %d bytes, want the 500 MB file", all.BytesMoved)
	}
	if all.Seconds <= got.Seconds {
		t.Fatalf("all-remote %.1f s is not slower than the oracle's %.1f s", all.Seconds, got.Seconds)
	}
}

// No online policy that does not prefetch can beat the oracle.
func TestOracleLowerBound(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		evs := synthetic(r, 60)
		o := Replay(evs, Oracle(evs, testLink), testLink).Seconds
		for _, name := range []string{"local", "remote", "pingpong", "random", "paper"} {
			p, _ := New(name, 1)
			if c := Replay(evs, p, testLink).Seconds; c < o-1e-9 {
				t.Fatalf("%s (%.3f) beat the oracle (%.3f)", name, c, o)
			}
		}
	}
}

func TestPaperMigratesLongCellsWithSmallContext(t *testing.T) {
	tests := []struct {
		name    string
		size    int64
		runtime float64
		want    location.Location
	}{
		{"long cell, small context", 1e6, 20, Remote},
		{"long cell, context over threshold", 4 << 30, 20, Local},
		{"short cell", 1e6, 0.05, Local},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewModel(testLink.Link)
			m.ObserveRuntime(Observation{Cell: "x", Loc: Local, Runtime: tt.runtime})
			m.ObserveRuntime(Observation{Cell: "y", Loc: Local, Runtime: 4})
			m.ObserveRuntime(Observation{Cell: "y", Loc: Remote, Runtime: 1})
			st := simState{"data": &Var{Size: tt.size, At: []location.Location{Local}, Movable: true}}
			d := NewPaper().Decide(Cell{Hash: "x", Reads: []string{"data"}}, st, m)
			if d.Loc != tt.want {
				t.Fatalf("placed %s, want %s (%s)", d.Loc, tt.want, d.Reason)
			}
		})
	}
}

func TestPinsAreHonoured(t *testing.T) {
	st := simState{"f": &Var{Size: 10, At: []location.Location{Remote}}}
	for _, name := range Names {
		p, err := New(name, 1)
		if err != nil {
			t.Fatal(err)
		}
		pl := MakePlan(p, Cell{Hash: "x", Reads: []string{"f"}, Pin: Local}, simFacts{st}, NewModel(testLink.Link))
		if pl.Loc != Local || len(pl.Moves) != 1 || !reflect.DeepEqual(pl.Moves[0].Names, []string{"f"}) || pl.Moves[0].From != Remote {
			t.Fatalf("%s: plan %+v, want local moving f from remote", name, pl)
		}
	}
}

// A developer re-running an expensive training cell on a large array:
// ferry should move the data once and stay remote, not flap.
func TestFerryStaysRemoteForHotBlock(t *testing.T) {
	var evs []trace.Event
	evs = append(evs, trace.Event{Cell: "load", Loc: Local, Runtime: 1, Writes: []string{"X"}, Sizes: map[string]int64{"X": 50e6}})
	for i := range 10 {
		evs = append(evs,
			trace.Event{Seq: 2*i + 1, Cell: "train", Loc: Local, Runtime: 8, Reads: []string{"X"}, Writes: []string{"model"}, Sizes: map[string]int64{"model": 1e5}, Think: 5},
			trace.Event{Seq: 2*i + 2, Cell: "eval", Loc: Local, Runtime: 0.05, Reads: []string{"model", "X"}, Writes: []string{"score"}, Sizes: map[string]int64{"score": 100}, Think: 2})
	}
	local := Replay(evs, fixed(Local), testLink)
	fr := Replay(evs, NewFerry(), testLink)
	or := Replay(evs, Oracle(evs, testLink), testLink)
	// After one local run of each cell (its runtime is unknown before),
	// ferry must settle remote for good.
	for i, loc := range fr.Placement[3:] {
		if loc != string(Remote) {
			t.Fatalf("cell %d placed %s after learning; placement %v", i+3, loc, fr.Placement)
		}
	}
	if or.Seconds > fr.Seconds+5 {
		t.Fatalf("oracle %.2fs is worse than ferry %.2fs by more than prefetch can hide", or.Seconds, fr.Seconds)
	}
	if fr.Seconds >= local.Seconds/2 {
		t.Fatalf("ferry %.2fs is not at least 2x faster than local %.2fs", fr.Seconds, local.Seconds)
	}
}

func TestUnknownPolicy(t *testing.T) {
	_, err := New("fastest", 1)
	if err == nil || err.Error() != `unknown policy "fastest"; choose one of local, remote, pingpong, random, paper, ferry` {
		t.Fatalf("err = %v", err)
	}
}

func BenchmarkFerryDecide200(b *testing.B) {
	evs := synthetic(rand.New(rand.NewPCG(5, 6)), 200)
	b.ResetTimer()
	for range b.N {
		Replay(evs, NewFerry(), testLink)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/200, "us/cell")
}

// A session's first cell, with nothing measured yet, goes where cells run
// fastest unless the link makes that dearer than the prior runtime saves.
func TestFerryFirstCell(t *testing.T) {
	tests := []struct {
		name  string
		link  Link
		speed float64
		want  location.Location
	}{
		{"fast link, faster cloud", Link{Bandwidth: 1e9 / 8, RTT: 0.001}, 4, Remote},
		{"slow link, faster cloud", Link{Bandwidth: 20e6 / 8, RTT: 0.05}, 4, Remote},
		{"cloud no faster", Link{Bandwidth: 1e9 / 8, RTT: 0.001}, 1, Local},
		{"round trip dearer than the prior saves", Link{Bandwidth: 1e9 / 8, RTT: 0.2}, 4, Local},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewModel(tt.link)
			m.SpeedPrior = tt.speed
			d := NewFerry().Decide(Cell{Hash: "first", Writes: []string{"df"}}, simState{}, m)
			if d.Loc != tt.want {
				t.Fatalf("first cell at %s, want %s (%s)", d.Loc, tt.want, d.Reason)
			}
		})
	}
}

// simFacts plans over a replay's state: sources are the first holder,
// nothing travels with a name, nothing can be recomputed.
type simFacts struct{ simState }

func (f simFacts) Sources(loc location.Location, names []string) map[location.Location][]string {
	out := map[location.Location][]string{}
	for _, n := range names {
		if v, ok := f.simState[n]; ok && !v.Has(loc) && len(v.At) > 0 {
			out[v.At[0]] = append(out[v.At[0]], n)
		}
	}
	return out
}
func (f simFacts) Needs(names []string) []string { return names }
func (f simFacts) Size(names []string) int64 {
	var n int64
	for _, x := range names {
		if v, ok := f.simState[x]; ok {
			n += v.Size
		}
	}
	return n
}
func (f simFacts) Recipe([]string, location.Location) (state.Plan, bool) { return state.Plan{}, false }

// TestModelObserveTransfer: only a move's own time teaches the link model;
// a large move measures the bandwidth, a small one the fixed cost per move.
func TestModelObserveTransfer(t *testing.T) {
	m := NewModel(Link{Bandwidth: 100e6 / 8, RTT: 0.02, PerTransfer: 0.01})
	for range 10 {
		m.ObserveTransfer(Local, Remote, 2900, 0.03)
	}
	if m.Link.PerTransfer > 0.02 {
		t.Fatalf("small moves of 30 ms left a fixed cost of %.3f s", m.Link.PerTransfer)
	}
	m.ObserveTransfer(Local, Remote, 2900, 5) // one slow one moves it, but by a blend, not outright
	if m.Link.PerTransfer > 2 || m.Link.PerTransfer < 0.5 {
		t.Fatalf("fixed cost %.3f s after one 5 s move, want a blend", m.Link.PerTransfer)
	}
	m.ObserveTransfer(Local, Remote, 100<<20, 2)
	if m.Link.Bandwidth == 100e6/8 {
		t.Fatal("a 100 MiB move did not measure the bandwidth")
	}
	m.ObserveCompression(10<<20, 5<<20)
	if m.Link.Compression != 0.5 {
		t.Fatalf("first compression measurement gave %.2f, want it to replace the prior (0.5)", m.Link.Compression)
	}
	m.ObserveRTT(Remote, 0.1)
	if m.Link.RTT <= 0.02 || m.Link.RTT >= 0.1 {
		t.Fatalf("rtt %.3f after a 100 ms probe from 20 ms, want a blend", m.Link.RTT)
	}
}

// TestStartCost: a location whose kernel is not running costs its
// measured start on top (once, not again for the predicted cells), so a
// short cell does not wake a cloud kernel that takes a minute to start;
// once it runs, the start costs nothing.
func TestStartCost(t *testing.T) {
	m := NewModel(Link{Bandwidth: 1e9 / 8, RTT: 0.001})
	m.SpeedPrior = 4
	cold := map[location.Location]bool{Remote: true}
	m.Cold = func(l location.Location) bool { return cold[l] }
	c := Cell{Hash: "short", Writes: []string{"x"}}
	if d := NewFerry().Decide(c, simState{}, m); d.Loc != Remote {
		t.Fatalf("with no start measured the first cell went to %s (%s), want the faster cloud", d.Loc, d.Reason)
	}
	m.ObserveStart(Remote, 60)
	if got := m.StartCost(Remote); got != 60 {
		t.Fatalf("StartCost(cold cloud) = %.1f, want the measured 60 s", got)
	}
	if got := m.StartCost(Local); got != 0 {
		t.Fatalf("StartCost(running laptop) = %.1f, want 0", got)
	}
	d := NewFerry().Decide(c, simState{}, m)
	if d.Loc != Local || d.Costs[Remote] < 60 || d.Costs[Remote] > 61 {
		t.Fatalf("cold cloud with a 60 s start: cell at %s, costs %v, want the laptop and the cloud's cost to include the start once", d.Loc, d.Costs)
	}
	if d := place(c, simState{}, m, Remote, "fixed"); d.Costs[Remote] < 60 {
		t.Fatalf("place: the cold cloud's cost %v misses its start", d.Costs)
	}
	cold[Remote] = false
	if d := NewFerry().Decide(c, simState{}, m); d.Loc != Remote || d.Costs[Remote] > 1 {
		t.Fatalf("running cloud: cell at %s, costs %v, want the cloud with no start cost", d.Loc, d.Costs)
	}
	m.ObserveStart(Remote, 20)
	cold[Remote] = true
	if got := m.StartCost(Remote); got != 40 {
		t.Fatalf("StartCost after 60 s and 20 s starts = %.1f, want their blend 40", got)
	}
	m.Cold = nil // replay: nothing is known to be cold
	if got := m.StartCost(Remote); got != 0 {
		t.Fatalf("StartCost without Cold = %.1f, want 0", got)
	}
}

// Replaying a trace under its own placement moves the bytes the run
// moved: a value is costed at the size measured when it moved, not at the
// size the kernel guessed when the cell wrote it.
func TestReplayRecordedMovesWhatTheRunMoved(t *testing.T) {
	const moved = 327 << 10
	evs := []trace.Event{
		{Seq: 1, Cell: "fit", Loc: location.Local, Writes: []string{"forest"}, Sizes: map[string]int64{"forest": 56}, Runtime: 1},
		{Seq: 2, Cell: "score", Loc: location.Remote, Reads: []string{"forest"}, Runtime: 1,
			Moved: []string{"forest"}, BytesMoved: moved, MovedSizes: map[string]int64{"forest": moved}},
	}
	s := Settings{Link: Link{Bandwidth: 100e6 / 8, RTT: 0.02, Compression: 1}}
	if got := Replay(evs, Recorded(evs), s).BytesMoved; got != moved {
		t.Errorf("replay of the recorded placement moved %d bytes; the run moved %d", got, moved)
	}
}
