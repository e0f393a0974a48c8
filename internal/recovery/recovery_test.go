package recovery

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/transfer"
)

// TestRunReadsTheRNGOnlyWhenAdvanced: a cell reads the random generators'
// state in lineage only if it advanced it; else every cell would chain to
// the last random draw and rebuilding one value would replay them all.
func TestRunReadsTheRNGOnlyWhenAdvanced(t *testing.T) {
	reads := map[string]int{"x": 1, agent.RNG: 4}
	if r := Run("c", "y = x", location.Local, false, reads, map[string]int{"y": 1}); !reflect.DeepEqual(r.Reads, map[string]int{"x": 1}) {
		t.Fatalf("a cell that drew nothing reads %v", r.Reads)
	}
	if r := Run("c", "y = rand()", location.Local, false, reads, map[string]int{"y": 1, agent.RNG: 5}); !reflect.DeepEqual(r.Reads, reads) {
		t.Fatalf("a cell that drew reads %v, want %v", r.Reads, reads)
	}
}

// TestRecordKeepsOnlyConfirmedVersions: a move records only the names the
// target confirmed, at the versions they had when it began, and marks the
// unmovable ones.
func TestRecordKeepsOnlyConfirmedVersions(t *testing.T) {
	st := state.New()
	st.Ran(location.Local, "c1", map[string]state.Change{"a": {Movable: true}, "b": {Movable: true}, "g": {Movable: true}}, nil)
	vers := st.Versions([]string{"a", "b", "g"})
	st.Ran(location.Local, "c2", map[string]state.Change{"b": {Movable: true}}, nil) // b is newer now
	Record(st, nil, location.Remote, vers, transfer.Result{Names: []string{"a", "b"}, Unmovable: map[string]string{"g": "generator"}})
	for n, want := range map[string]bool{"a": true, "b": false, "g": false} {
		v, _ := st.Get(n)
		if v.At[location.Remote] != want {
			t.Errorf("%s at remote: %v, want %v", n, v.At[location.Remote], want)
		}
	}
	if g, _ := st.Get("g"); g.Movable || g.Reason != "generator" {
		t.Errorf("g not marked unmovable: %+v", g)
	}
}

// TestNeededIsWhatTheCellReads: of the values lost with a kernel, a cell
// needs those it reads, the lost globals of lost functions it calls and
// their lost aliases; what the same cells make comes along; a lost value
// that cannot be rebuilt is named; a name bound again since is forgotten.
func TestNeededIsWhatTheCellReads(t *testing.T) {
	tests := []struct {
		name        string
		reads       []string
		all         bool
		want, extra []string
		gone        []string
	}{
		{"nothing lost read", []string{"k"}, false, nil, nil, nil},
		{"a value", []string{"a"}, false, []string{"a"}, nil, nil},
		{"a function and its global", []string{"f"}, false, []string{"df", "f"}, nil, nil},
		{"an alias group", []string{"v"}, false, []string{"v", "w"}, nil, nil},
		{"made by the same cell", []string{"p"}, false, []string{"p"}, []string{"q"}, nil},
		{"cannot be rebuilt", []string{"a", "x"}, false, []string{"a"}, nil, []string{"x"}},
		{"bound again since", []string{"b"}, false, nil, nil, nil},
		{"dynamic cell", nil, true, []string{"a", "df", "f", "p", "q", "v", "w"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, lin := state.New(), state.NewLineage(0)
			add := func(code string, count int, ch map[string]state.Change, mod func(*state.Run)) {
				wrote := st.Ran(location.Remote, code, ch, nil)
				r := state.Run{Code: code, Count: count, Loc: location.Remote, Reads: map[string]int{}, Writes: wrote}
				if mod != nil {
					mod(&r)
				}
				lin.Add(r)
			}
			mv := state.Change{Movable: true}
			add("a = 1", 1, map[string]state.Change{"a": mv}, nil)
			add("df = 2", 2, map[string]state.Change{"df": mv}, nil)
			add("def f(): …", 3, map[string]state.Change{"f": {Movable: true, Uses: []string{"df"}}}, nil)
			add("v = w = []", 4, map[string]state.Change{"v": {Movable: true, Group: "g"}, "w": {Movable: true, Group: "g"}}, nil)
			add("p, q = 1, 2", 5, map[string]state.Change{"p": mv, "q": mv}, nil)
			add("x = input()", 6, map[string]state.Change{"x": mv}, func(r *state.Run) { r.Stdin = true })
			add("b = 1", 7, map[string]state.Change{"b": mv}, nil)
			st.Ran(location.Local, "k = 1", map[string]state.Change{"k": mv}, nil)
			r := New(nil, nil, st, lin, nil, location.NewSet(location.Local, location.Remote), nil)
			note := r.Lost(location.Remote)
			if !strings.Contains(note, "for good: x (the cell that made it (In [6]: x = input()) read input from you; re-run In [6] to make it again)") {
				t.Fatalf("the loss notice: %q", note)
			}
			st.Ran(location.Local, "b = 9", map[string]state.Change{"b": mv}, nil) // bound again
			want, gone, extra := r.needed(Need{Reads: tt.reads, All: tt.all})
			if !reflect.DeepEqual(want, tt.want) || !reflect.DeepEqual(extra, tt.extra) {
				t.Errorf("want %v extra %v; expected %v and %v", want, extra, tt.want, tt.extra)
			}
			var g []string
			for n := range gone {
				g = append(g, n)
			}
			if !reflect.DeepEqual(g, tt.gone) {
				t.Errorf("gone %v, want %v", g, tt.gone)
			}
			if len(gone) > 0 {
				err := r.lostError(gone)
				var le *LostError
				if !errors.As(err, &le) || !errors.Is(err, ErrLost) || !strings.HasPrefix(err.Error(), "this cell reads x, lost when the cloud kernel died, and Ferry cannot rebuild it: x (") {
					t.Errorf("lost error %v", err)
				}
			}
		})
	}
}
