package state

import (
	"reflect"
	"strings"
	"testing"
)

func TestLineagePlan(t *testing.T) {
	tests := []struct {
		name string
		runs []Run
		lost map[string]int
		have map[string]int // name → the version that still exists
		// steps are the codes replayed, in order; inputs per step.
		steps   []string
		inputs  [][]string
		rebuilt []string
		missing []string
	}{
		{
			name:    "one cell from nothing",
			runs:    []Run{{Code: "x = 1", Writes: map[string]int{"x": 1}}},
			lost:    map[string]int{"x": 1},
			steps:   []string{"x = 1"},
			inputs:  [][]string{nil},
			rebuilt: []string{"x"},
		},
		{
			name: "reads a surviving input",
			runs: []Run{
				{Code: "a = 2", Writes: map[string]int{"a": 1}},
				{Code: "b = a * 2", Reads: map[string]int{"a": 1}, Writes: map[string]int{"b": 1}},
			},
			lost:    map[string]int{"b": 1},
			have:    map[string]int{"a": 1},
			steps:   []string{"b = a * 2"},
			inputs:  [][]string{{"a"}},
			rebuilt: []string{"b"},
		},
		{
			name: "chain through a lost intermediate",
			runs: []Run{
				{Code: "a = 2", Writes: map[string]int{"a": 1}},
				{Code: "b = a * 2", Reads: map[string]int{"a": 1}, Writes: map[string]int{"b": 1}},
				{Code: "c = b + 1", Reads: map[string]int{"b": 1}, Writes: map[string]int{"c": 1}},
			},
			lost:    map[string]int{"b": 1, "c": 1},
			have:    map[string]int{"a": 1},
			steps:   []string{"b = a * 2", "c = b + 1"},
			inputs:  [][]string{{"a"}, nil},
			rebuilt: []string{"b", "c"},
		},
		{
			name: "mutation needs the older version, which was overwritten",
			runs: []Run{
				{Code: "df = load()", Writes: map[string]int{"df": 1}},
				{Code: "df['y'] = 1", Reads: map[string]int{"df": 1}, Writes: map[string]int{"df": 2}},
			},
			lost:    map[string]int{"df": 2},
			steps:   []string{"df = load()", "df['y'] = 1"},
			inputs:  [][]string{nil, nil},
			rebuilt: []string{"df"},
		},
		{
			name: "an input overwritten since is made again",
			runs: []Run{
				{Code: "k = 3", Writes: map[string]int{"k": 1}},
				{Code: "m = k * 10", Reads: map[string]int{"k": 1}, Writes: map[string]int{"m": 1}},
				{Code: "k = 4", Writes: map[string]int{"k": 2}},
			},
			lost:    map[string]int{"m": 1},
			have:    map[string]int{"k": 2},
			steps:   []string{"k = 3", "m = k * 10"},
			inputs:  [][]string{nil, nil},
			rebuilt: []string{"m"},
		},
		{
			name: "no record of the producer",
			runs: []Run{
				{Code: "b = a * 2", Reads: map[string]int{"a": 1}, Writes: map[string]int{"b": 1}},
			},
			lost:    map[string]int{"a": 1, "b": 1},
			missing: []string{"a", "b"},
		},
		{
			name: "one unrebuildable name does not stop the others",
			runs: []Run{
				{Code: "x = 1", Writes: map[string]int{"x": 1}},
				{Code: "y = f(z)", Reads: map[string]int{"z": 4}, Writes: map[string]int{"y": 1}},
			},
			lost:    map[string]int{"x": 1, "y": 1},
			steps:   []string{"x = 1"},
			inputs:  [][]string{nil},
			rebuilt: []string{"x"},
			missing: []string{"y"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLineage(0)
			for _, r := range tt.runs {
				l.Add(r)
			}
			p := l.Plan(tt.lost, func(n string, v int) bool { w, ok := tt.have[n]; return ok && w == v })
			var steps []string
			var inputs [][]string
			for _, s := range p.Steps {
				steps = append(steps, s.Code)
				inputs = append(inputs, s.Inputs)
			}
			if !reflect.DeepEqual(steps, tt.steps) || !reflect.DeepEqual(inputs, tt.inputs) {
				t.Errorf("steps %q inputs %q, want %q %q", steps, inputs, tt.steps, tt.inputs)
			}
			if !reflect.DeepEqual(p.Rebuilt, tt.rebuilt) {
				t.Errorf("rebuilt %v, want %v", p.Rebuilt, tt.rebuilt)
			}
			var missing []string
			for n, why := range p.Missing {
				if why == "" {
					t.Errorf("%s is missing without a reason", n)
				}
				missing = append(missing, n)
			}
			if len(missing) > 1 && missing[0] > missing[1] {
				missing[0], missing[1] = missing[1], missing[0]
			}
			if !reflect.DeepEqual(missing, tt.missing) {
				t.Errorf("missing %v (%v), want %v", missing, p.Missing, tt.missing)
			}
		})
	}
}

func TestLineageKeepsTheNewest(t *testing.T) {
	l := NewLineage(2)
	l.Add(Run{Code: "a = 1", Writes: map[string]int{"a": 1}})
	l.Add(Run{Code: "print(a)"}) // wrote nothing: not kept
	l.Add(Run{Code: "b = 1", Writes: map[string]int{"b": 1}})
	l.Add(Run{Code: "c = 1", Writes: map[string]int{"c": 1}})
	p := l.Plan(map[string]int{"a": 1, "c": 1}, func(string, int) bool { return false })
	if !reflect.DeepEqual(p.Rebuilt, []string{"c"}) || p.Missing["a"] == "" {
		t.Fatalf("with room for 2 runs: rebuilt %v, missing %v", p.Rebuilt, p.Missing)
	}
}

// TestPlanRefusesRunsWithEffects: a value whose producing cell had side
// effects is not planned for a re-run; the reason names the effect. A
// value downstream of it is not rebuilt either.
func TestPlanRefusesRunsWithEffects(t *testing.T) {
	l := NewLineage(0)
	l.Add(Run{Cell: "a", Code: "x = post()", Writes: map[string]int{"x": 1}, Reads: map[string]int{}, Effects: []string{"POST request to http://svc/"}})
	l.Add(Run{Cell: "b", Code: "y = x + 1", Writes: map[string]int{"y": 1}, Reads: map[string]int{"x": 1}})
	l.Add(Run{Cell: "c", Code: "z = 3", Writes: map[string]int{"z": 1}, Reads: map[string]int{}})
	p := l.Plan(map[string]int{"x": 1, "y": 1, "z": 1}, func(string, int) bool { return false })
	if len(p.Rebuilt) != 1 || p.Rebuilt[0] != "z" {
		t.Fatalf("rebuilt %v, want only z", p.Rebuilt)
	}
	for _, n := range []string{"x", "y"} {
		if !strings.Contains(p.Missing[n], "side effects (POST request to http://svc/)") {
			t.Errorf("%s: reason %q does not name the effect", n, p.Missing[n])
		}
	}
}

func TestFirstLine(t *testing.T) {
	for in, want := range map[string]string{"x = 1": "x = 1", "a\nb": "a …", "  y\n": "y"} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%q) = %q, want %q", in, got, want)
		}
	}
}
