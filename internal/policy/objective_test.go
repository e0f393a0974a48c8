package policy

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

func TestParseObjective(t *testing.T) {
	tests := []struct {
		in   string
		want Objective
		err  string
	}{
		{"", ObjectiveTime, ""},
		{"time", ObjectiveTime, ""},
		{"balanced", ObjectiveBalanced, ""},
		{"cost", ObjectiveCost, ""},
		{"money", "", `--objective "money": want time`},
	}
	for _, tt := range tests {
		got, err := ParseObjective(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// With the cloud kernel not running (a 10 s start) and a 4x cloud, a
// cell that gains 3 s stays on the laptop under every objective; one that
// gains 12 s goes to the cloud under time only, one that gains 24 s also
// under balanced, and one that gains 75 s under cost too: cost weighs the
// billed start and the cell's cloud time (objective.go).
func TestObjectivePlacesColdCloudCells(t *testing.T) {
	tests := []struct {
		name  string
		local float64 // seconds on the laptop; the cloud is 4x
		want  map[Objective]location.Location
	}{
		{"gains 3 s", 4, map[Objective]location.Location{ObjectiveTime: Local, ObjectiveBalanced: Local, ObjectiveCost: Local}},
		{"gains 12 s", 16, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveBalanced: Local, ObjectiveCost: Local}},
		{"gains 24 s", 32, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveBalanced: Remote, ObjectiveCost: Local}},
		{"gains 75 s", 100, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveBalanced: Remote, ObjectiveCost: Remote}},
	}
	for _, tt := range tests {
		for obj, want := range tt.want {
			t.Run(tt.name+"/"+string(obj), func(t *testing.T) {
				m := NewModel(testLink.Link)
				m.Objective = obj
				m.SpeedPrior = 4
				m.ObserveStart(Remote, 10)
				m.Cold = func(location.Location) bool { return true }
				m.ObserveRuntime(Observation{Cell: "fit", Loc: Local, Runtime: tt.local})
				d := NewFerry().Decide(Cell{Hash: "fit"}, simState{}, m)
				if d.Loc != want {
					t.Fatalf("placed %s, want %s (%s)", d.Loc, want, d.Reason)
				}
				if obj != ObjectiveTime && d.Loc == Local && !strings.Contains(d.Reason, "--objective "+string(obj)) {
					t.Errorf("the reason does not name the objective: %s", d.Reason)
				}
			})
		}
	}
}

// A cloud kernel that runs is billed whatever runs where until its idle
// release: a cell 3 s on the laptop and 1.6 s in the cloud goes there
// under cost while the kernel would stay up through the laptop's 3 s
// (keeping it off saves nothing), stays on the laptop when the release
// is due before (it then saves what the idle kernel would bill) or the
// kernel is not running, and goes there under time in every case.
func TestObjectiveBillsARunningKernel(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name         string
		cold         bool
		untilRelease float64
		want         map[Objective]location.Location
	}{
		{"kept up", false, inf, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveCost: Remote}},
		{"released in a minute", false, 60, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveCost: Remote}},
		{"release due now", false, 0, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveCost: Local}},
		{"not running", true, 0, map[Objective]location.Location{ObjectiveTime: Remote, ObjectiveCost: Local}},
	}
	for _, tt := range tests {
		for obj, want := range tt.want {
			t.Run(tt.name+"/"+string(obj), func(t *testing.T) {
				m := NewModel(Link{Bandwidth: 1e9, RTT: 0.001, Compression: 1})
				m.Objective = obj
				m.Cold = func(location.Location) bool { return tt.cold }
				m.UntilRelease = func(location.Location) float64 { return tt.untilRelease }
				m.ObserveRuntime(Observation{Cell: "fit", Loc: Local, Runtime: 3})
				m.ObserveRuntime(Observation{Cell: "fit", Loc: Remote, Runtime: 1.6})
				d := NewFerry().Decide(Cell{Hash: "fit"}, simState{}, m)
				if d.Loc != want {
					t.Fatalf("placed %s, want %s (%s)", d.Loc, want, d.Reason)
				}
			})
		}
	}
}

// Without --cloud-idle, balanced and cost let an idle kernel go at their
// break-even (restart x (1 + 1/w)), never before ObjectiveIdleFloor; time
// never does.
func TestObjectiveRelease(t *testing.T) {
	for _, tt := range []struct {
		obj   Objective
		start float64
		want  time.Duration
	}{
		{ObjectiveBalanced, 20, 100 * time.Second},
		{ObjectiveCost, 20, time.Minute}, // the break-even, 40 s, is under the floor
		{ObjectiveCost, 50, 100 * time.Second},
	} {
		m := NewModel(testLink.Link)
		m.Objective = tt.obj
		m.ObserveStart(Remote, tt.start)
		if !m.Releases() {
			t.Fatalf("%s does not release", tt.obj)
		}
		if got := m.ReleaseAfter(Remote, 0, 0); got != tt.want {
			t.Errorf("%s, %g s start: release after %s, want %s", tt.obj, tt.start, got, tt.want)
		}
		// --cloud-idle given wins, as before.
		if got := m.ReleaseAfter(Remote, 5*time.Minute, 0); got != 5*time.Minute {
			t.Errorf("%s with --cloud-idle 5m: %s", tt.obj, got)
		}
	}
	if NewModel(testLink.Link).Releases() {
		t.Error("the time objective releases without --cloud-idle")
	}
}

// In a replay with minutes of think time between cloud cells, cost mode
// bills far fewer kernel-seconds than time mode, and the oracle under cost
// keeps cells that gain too little for it on the laptop.
func TestObjectiveCostReplay(t *testing.T) {
	var evs []trace.Event
	for i := range 6 {
		evs = append(evs, trace.Event{Seq: i, Cell: "fit", Loc: Local, Runtime: 200, Think: 300, Writes: []string{"m"}, Sizes: map[string]int64{"m": 1e4}})
		evs = append(evs, trace.Event{Seq: i, Cell: "peek", Loc: Local, Runtime: 0.4, Think: 5, Reads: []string{"m"}})
	}
	s := Settings{Link: testLink.Link, RemoteSpeed: 10, CloudStart: 20}
	timeRes := Replay(evs, NewFerry(), s)
	s.Objective = ObjectiveCost
	costRes := Replay(evs, NewFerry(), s)
	if costRes.CloudKernelSeconds > 0.7*timeRes.CloudKernelSeconds {
		t.Fatalf("cost mode billed %.0f kernel-s, time mode %.0f: want at least 30%% fewer", costRes.CloudKernelSeconds, timeRes.CloudKernelSeconds)
	}
	if costRes.CellsRemote == 0 {
		t.Fatalf("cost mode ran nothing in the cloud (%v): the 200 s cells gain 180 s", costRes.Placement)
	}
	// A 1.6x cloud: the oracle under time sends the 200 s cells there,
	// under cost (a cloud cell costs 2x its cloud time) it keeps them.
	s = Settings{Link: testLink.Link, RemoteSpeed: 1.6}
	if o := Replay(evs, Oracle(evs, s), s); o.CellsRemote == 0 {
		t.Fatalf("the time oracle ran nothing in a 1.6x cloud: %v", o.Placement)
	}
	s.Objective = ObjectiveCost
	if o := Replay(evs, Oracle(evs, s), s); o.CellsRemote != 0 {
		t.Fatalf("the cost oracle ran cells in a 1.6x cloud: %v", o.Placement)
	}
}

// An unseen cell is expected to take the middle of the range of laptop
// runtimes seen so far (minimax regret), not their mean or median. Each
// row is a session's cells so far, then a new cell reading 1.1 MB of
// features over a 20 Mbit/s link: it must go to the cloud. The first is a
// replayed session where the median (0.31 s) kept a 26 s training cell on
// the laptop; the second the live raster session on the home link, where
// the mean (1.00 s) did, with a cloud calibrated 2x (its single-threaded
// loop) that ran the cell 6x faster.
func TestUnseenCellExpectsTheMiddleOfTheRange(t *testing.T) {
	link := Link{Bandwidth: 20e6 / 8, RTT: 0.04, Compression: 1}
	for _, tt := range []struct {
		name  string
		seen  []float64
		speed float64
	}{
		{"median would keep it", []float64{0.04, 1.41, 0.31, 3.07, 0.31}, 4},
		{"mean would keep it", []float64{2.33, 0.09, 1.50, 0.09}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := NewModel(link)
			m.SpeedPrior = tt.speed
			for i, rt := range tt.seen {
				m.ObserveRuntime(Observation{Cell: fmt.Sprint("c", i), Loc: Local, Runtime: rt})
			}
			if got, want := m.typicalLocal(), (slices.Min(tt.seen)+slices.Max(tt.seen))/2; math.Abs(got-want) > 1e-9 {
				t.Fatalf("typical laptop runtime %.3f, want the middle of the range seen, %.3f", got, want)
			}
			st := simState{"features": &Var{Size: 1.1e6, At: []location.Location{Local}, Movable: true}}
			if d := NewFerry().Decide(Cell{Hash: "fit", Reads: []string{"features"}}, st, m); d.Loc != Remote {
				t.Fatalf("the unseen cell went to %s: %s", d.Loc, d.Reason)
			}
		})
	}
}
