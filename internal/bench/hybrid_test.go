package bench

import (
	"math"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// A bench run is billed from its first cloud cell to the end, not from
// the warm-up that starts the kernel before timing; a run with no cloud
// cell is billed nothing.
func TestBilledFromFirstCloudCell(t *testing.T) {
	ev := func(loc location.Location, cloudS float64) trace.Event {
		return trace.Event{Loc: loc, CloudSeconds: cloudS}
	}
	cases := []struct {
		name string
		evs  []trace.Event
		want float64
	}{
		{"all local after the warm-up", []trace.Event{ev("remote", 1), ev("local", 5), ev("local", 9)}, 0},
		{"cloud from the first cell", []trace.Event{ev("remote", 1), ev("remote", 5), ev("local", 9)}, 8},
		{"cloud from the third cell", []trace.Event{ev("remote", 1), ev("local", 5), ev("local", 9), ev("remote", 12), ev("local", 20)}, 11},
		{"warm-up only", []trace.Event{ev("remote", 1)}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := billedFromFirstCloudCell(c.evs); math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("billed %.2f s, want %.2f", got, c.want)
			}
		})
	}
}

// A ferry run starts with the cloud cold: it is billed from the kernel's
// start to the end, less the wait of the start its first cloud cell made
// (put aside as the other runs' starts are); a restart after a release
// stays in, and a run with no cloud cell is billed nothing.
func TestBilledFromStart(t *testing.T) {
	ev := func(loc location.Location, cloudS, startS float64) trace.Event {
		return trace.Event{Loc: loc, CloudSeconds: cloudS, StartSeconds: startS}
	}
	cases := []struct {
		name         string
		evs          []trace.Event
		billed, wait float64
	}{
		{"all local", []trace.Event{ev("local", 0, 0), ev("local", 0, 0), ev("local", 0, 0)}, 0, 0},
		{"started by the third cell", []trace.Event{ev("local", 0, 0), ev("local", 0, 0), ev("remote", 5, 3), ev("local", 9, 0)}, 6, 3},
		{"started in think time, the rest waited", []trace.Event{ev("local", 0, 0), ev("local", 2, 0), ev("remote", 6, 1), ev("local", 9, 0)}, 8, 1},
		{"a restart after a release stays in", []trace.Event{ev("local", 0, 0), ev("remote", 5, 3), ev("local", 70, 0), ev("remote", 78, 3)}, 75, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			billed, wait := billedFromStart(c.evs)
			if math.Abs(billed-c.billed) > 1e-9 || math.Abs(wait-c.wait) > 1e-9 {
				t.Fatalf("billed %.2f s with a first start of %.2f s, want %.2f and %.2f", billed, wait, c.billed, c.wait)
			}
		})
	}
}

// The table shows each row's cloud kernel-seconds and cost for remote,
// ferry and ferry under --objective cost beside the times, and the share
// of ferry's bytes moved in think time.
func TestWriteHybridCostColumns(t *testing.T) {
	rows := []HybridRow{
		{Setting: "s", Notebook: "n", Policy: "local", Seconds: 10},
		{Setting: "s", Notebook: "n", Policy: "remote", Seconds: 4, CloudSeconds: 3600, CloudCost: 2.48},
		{Setting: "s", Notebook: "n", Policy: "paper", Seconds: 5},
		{Setting: "s", Notebook: "n", Policy: "ferry", Seconds: 4, CloudSeconds: 1800, CloudCost: 1.24, HiddenShare: 0.25, BytesMoved: 1e6, DumpBytes: 300e6},
		{Setting: "s", Notebook: "n", Policy: "ferry-again", Seconds: 3.6},
		{Setting: "s", Notebook: "n", Policy: "ferry-cost", Seconds: 4.5, CloudSeconds: 900, CloudCost: 0.62},
		{Setting: "s", Notebook: "n", Policy: "oracle", Seconds: 4},
	}
	var b strings.Builder
	if err := WriteHybrid(rows, "", "", &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 1.0 | 300x smaller | 25% | 3.60 | -10.0% | 4.50 | 3600 / 1800 / 900 | $2.4800 / $1.2400 / $0.6200 |") {
		t.Fatalf("no cost columns in:\n%s", b.String())
	}
}

// Session dumps count, at each execution that moved state, every variable
// alive then, not files.
func TestSessionDumps(t *testing.T) {
	evs := []trace.Event{
		{Sizes: map[string]int64{"scene": 200, "__ferry_file__:a.npy": 1000}},
		{Sizes: map[string]int64{"ndvi": 30}},
		{BytesMoved: 5, Sizes: map[string]int64{"model": 7}},
		{},
		{BytesMoved: 1, Sizes: map[string]int64{"scene": 100}},
	}
	if got, want := sessionDumps(evs), int64(230+237); got != want {
		t.Fatalf("session dumps %d bytes, want %d", got, want)
	}
}
