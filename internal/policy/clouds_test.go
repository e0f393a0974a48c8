package policy

import (
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
)

// Three locations: the laptop, a fast GPU cloud far away and a modest CPU
// cloud next door (issue 18's several clouds).
const (
	gpu location.Location = "gpu"
	cpu location.Location = "cpu"
)

var three = location.NewSet(Local, gpu, cpu)

func threeClouds() *Model {
	m := NewModel(Link{Bandwidth: 1e9 / 8, RTT: 0.001, Compression: 1})
	m.SpeedPriors = map[location.Location]float64{gpu: 10, cpu: 2}
	m.SetLink(gpu, Link{Bandwidth: 20e6 / 8, RTT: 0.08, Compression: 1})
	m.SetLink(cpu, Link{Bandwidth: 1e9 / 8, RTT: 0.001, Compression: 1})
	return m
}

// Each cloud has its own speed: configured until measured, then the
// measurement (directly against the laptop, or through a cloud that was).
func TestSpeedPerCloud(t *testing.T) {
	m := threeClouds()
	if s := m.Speed(gpu); s != 10 {
		t.Fatalf("gpu prior speed %.1f, want 10", s)
	}
	if s := m.Speed(cpu); s != 2 {
		t.Fatalf("cpu prior speed %.1f, want 2", s)
	}
	if s := m.Speed(Local); s != 1 {
		t.Fatalf("laptop speed %.1f, want 1", s)
	}
	// A cell measured on the laptop and at cpu: cpu is 3x.
	m.ObserveRuntime(Observation{Cell: "a", Loc: Local, Runtime: 3, Think: -1})
	m.ObserveRuntime(Observation{Cell: "a", Loc: cpu, Runtime: 1})
	if s := m.Speed(cpu); s < 2.99 || s > 3.01 {
		t.Fatalf("cpu measured speed %.2f, want 3", s)
	}
	if s := m.Speed(gpu); s != 10 {
		t.Fatalf("gpu speed %.1f before any gpu run, want its prior", s)
	}
	// A cell measured at cpu and gpu only: gpu is 4x cpu, so 12x the laptop.
	m.ObserveRuntime(Observation{Cell: "b", Loc: cpu, Runtime: 2})
	m.ObserveRuntime(Observation{Cell: "b", Loc: gpu, Runtime: 0.5})
	if s := m.Speed(gpu); s < 11.99 || s > 12.01 {
		t.Fatalf("gpu speed through cpu %.2f, want 12", s)
	}
	// An unseen cell's estimate at each place follows the speeds.
	rc, _ := m.Runtime("a", gpu)
	if rc < 0.24 || rc > 0.26 {
		t.Fatalf("cell a at gpu estimated %.3f s, want 3 s / 12", rc)
	}
}

// A move between two clouds passes through Ferry: it pays both round
// trips and the slower link; each cloud's own link learns only from moves
// between it and the laptop.
func TestMoveTimeBetweenClouds(t *testing.T) {
	m := threeClouds()
	n := int64(10 << 20)
	toGPU, toCPU, across := m.MoveTime(Local, gpu, n), m.MoveTime(Local, cpu, n), m.MoveTime(cpu, gpu, n)
	if across < toGPU || across < toCPU {
		t.Fatalf("cpu->gpu %.3f s is cheaper than a leg (laptop->gpu %.3f s, laptop->cpu %.3f s)", across, toGPU, toCPU)
	}
	if m.MoveTime(gpu, gpu, n) != 0 {
		t.Fatal("a move to where the value is costs something")
	}
	before := m.LinkTo(cpu)
	m.ObserveTransfer(cpu, gpu, 100<<20, 60)
	if m.LinkTo(cpu) != before || m.LinkTo(gpu).Bandwidth != 20e6/8 {
		t.Fatal("a cloud-to-cloud move taught a single link")
	}
	m.ObserveTransfer(Local, gpu, 100<<20, 2)
	if m.LinkTo(gpu).Bandwidth == 20e6/8 || m.LinkTo(cpu) != before {
		t.Fatalf("a laptop->gpu move did not teach gpu's link alone: gpu %+v, cpu %+v", m.LinkTo(gpu), m.LinkTo(cpu))
	}
	m.ObserveRTT(cpu, 0.05)
	if m.LinkTo(cpu).RTT <= before.RTT || m.LinkTo(gpu).RTT != 0.08 {
		t.Fatal("a probe of cpu changed the wrong link")
	}
	// Compression is the payload's: measured once, every link has it.
	m.ObserveCompression(10<<20, 5<<20)
	if m.LinkTo(gpu).Compression != 0.5 || m.LinkTo(cpu).Compression != 0.5 {
		t.Fatal("compression not shared by the links")
	}
}

// The ferry policy places among all three by their own speeds and links.
func TestFerryPlacesAmongThree(t *testing.T) {
	tests := []struct {
		name   string
		cell   string
		local  float64 // measured laptop runtime
		input  int64   // size of the laptop value it reads
		want   location.Location
		reason string
	}{
		{"heavy compute, small input", "train", 20, 1 << 10, gpu, "gpu's 10x outweighs its far link"},
		{"moderate compute, large input", "features", 2, 50 << 20, cpu, "50 MB over gpu's 20 Mbit costs 21 s; cpu next door halves 2 s for 0.4 s of moving"},
		{"trivial", "head", 0.002, 1 << 10, Local, "round trips cost more than they save"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := threeClouds()
			m.ObserveRuntime(Observation{Cell: tt.cell, Loc: Local, Runtime: tt.local, Think: -1})
			st := simState{"x": {Size: tt.input, At: []location.Location{Local}, Movable: true}}
			c := Cell{Hash: tt.cell, Reads: []string{"x"}, Writes: []string{"y"}, Locs: three}
			d := NewFerry().Decide(c, st, m)
			if d.Loc != tt.want {
				t.Fatalf("%s at %s, want %s (%s): %s", tt.cell, d.Loc, tt.want, tt.reason, d.Reason)
			}
			if len(d.Costs) != 3 {
				t.Fatalf("costs for %d locations, want all three: %v", len(d.Costs), d.Costs)
			}
		})
	}
}

// A value at two places moves from the cheaper one: one the laptop holds
// does not travel to cpu through Ferry from gpu.
func TestMovesFromTheCheapestHolder(t *testing.T) {
	m := threeClouds()
	x := Var{Size: 50 << 20, At: []location.Location{gpu, Local}, Movable: true}
	if src := cheapestSource(x, m, cpu); src != Local {
		t.Fatalf("source for cpu %s, want the laptop", src)
	}
	st := simState{"x": &x}
	if got, want := inputCost([]string{"x"}, st, m, cpu), m.MoveTime(Local, cpu, x.Size); got != want {
		t.Fatalf("input cost %.3f s, want the laptop's move %.3f s", got, want)
	}
}

// The fixed and cycling policies know only the configured locations:
// --policy remote with only named clouds takes the first; pingpong visits
// every location in turn.
func TestFixedAndCyclingWithNamedClouds(t *testing.T) {
	m := threeClouds()
	named := location.NewSet(Local, gpu, cpu) // cpu sorts first
	p, _ := New("remote", 1)
	if d := p.Decide(Cell{Hash: "a", Locs: named}, simState{}, m); d.Loc != cpu {
		t.Fatalf("--policy remote with clouds %s ran at %s, want the first cloud", named.Clouds(), d.Loc)
	}
	pp, _ := New("pingpong", 1)
	seen := map[location.Location]int{}
	for i := range 6 {
		d := pp.Decide(Cell{Hash: string(rune('a' + i)), Locs: named}, simState{}, m)
		seen[d.Loc]++
	}
	for _, l := range named {
		if seen[l] != 2 {
			t.Fatalf("pingpong over 6 cells: %v, want each of %s twice", seen, named)
		}
	}
	pin := Cell{Hash: "p", Pin: gpu, Locs: named}
	if d := NewFerry().Decide(pin, simState{}, m); d.Loc != gpu {
		t.Fatalf("a cell pinned to gpu ran at %s", d.Loc)
	}
}

// Where a cloud's speed comes from, in order: cells measured at both
// places, --remote-speed (per cloud, then shared), the calibration, else
// 1. The calibration never overrides a configured speed (issue 16:
// --remote-speed stays as an override), and nonsense figures are ignored.
func TestSpeedPrecedence(t *testing.T) {
	cases := []struct {
		name      string
		perCloud  float64
		shared    float64
		calibrate []float64
		measured  bool
		want      float64
		why       string
	}{
		{name: "nothing known", want: 1, why: "assumed"},
		{name: "calibrated", calibrate: []float64{3.5}, want: 3.5, why: "calibrated"},
		{name: "recalibrated", calibrate: []float64{3.5, 2}, want: 2, why: "calibrated"},
		{name: "bad figures ignored", calibrate: []float64{0, -1}, want: 1, why: "assumed"},
		{name: "shared prior beats calibration", shared: 4, calibrate: []float64{3.5}, want: 4, why: "configured"},
		{name: "per-cloud prior beats shared", perCloud: 6, shared: 4, calibrate: []float64{3.5}, want: 6, why: "configured"},
		{name: "measurement beats all", perCloud: 6, calibrate: []float64{3.5}, measured: true, want: 5, why: "measured"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewModel(Link{Bandwidth: 1e9 / 8, RTT: 0.001, Compression: 1})
			m.SpeedPrior = c.shared
			if c.perCloud > 0 {
				m.SpeedPriors = map[location.Location]float64{gpu: c.perCloud}
			}
			for _, v := range c.calibrate {
				m.ObserveCalibration(gpu, v)
			}
			m.ObserveCalibration(Local, 9) // the laptop is 1 by definition
			if c.measured {
				m.ObserveRuntime(Observation{Cell: "a", Loc: Local, Runtime: 5, Think: -1})
				m.ObserveRuntime(Observation{Cell: "a", Loc: gpu, Runtime: 1, Think: -1})
			}
			v, why := m.SpeedWhy(gpu)
			if v != c.want || why != c.why {
				t.Fatalf("speed %.2f (%s), want %.2f (%s)", v, why, c.want, c.why)
			}
			if l, _ := m.SpeedWhy(Local); l != 1 {
				t.Fatalf("laptop speed %.2f, want 1", l)
			}
		})
	}
}
