package recovery

import (
	"reflect"
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
