package state

import (
	"github.com/ferry-nb/ferry/internal/location"
	"reflect"
	"testing"
)

func TestStaleAndArrived(t *testing.T) {
	m := New()
	m.Ran("local", "c1", map[string]Change{"x": {Size: 10, Movable: true}, "y": {Size: 5, Movable: true}}, nil)
	m.Ran("remote", "c2", map[string]Change{"z": {Size: 7, Movable: true}}, nil)

	tests := []struct {
		loc   location.Location
		names []string
		want  map[location.Location][]string
	}{
		{"remote", []string{"x", "z"}, map[location.Location][]string{"local": {"x"}}},
		{"local", []string{"x", "y", "z"}, map[location.Location][]string{"remote": {"z"}}},
		{"local", []string{"unknown"}, map[location.Location][]string{}},
	}
	for _, tt := range tests {
		if got := m.Stale(tt.loc, tt.names); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Stale(%s, %v) = %v, want %v", tt.loc, tt.names, got, tt.want)
		}
	}
	m.Arrived("remote", m.Versions([]string{"x"}))
	if got := m.Stale("remote", []string{"x"}); len(got) != 0 {
		t.Errorf("x still stale at remote after arriving: %v", got)
	}
	// A copy of an older version does not count.
	old := m.Versions([]string{"y"})
	if wrote := m.Ran("local", "c3", map[string]Change{"y": {Size: 6, Movable: true}}, nil); !reflect.DeepEqual(wrote, map[string]int{"y": old["y"] + 1}) {
		t.Errorf("Ran says it wrote %v, want y at version %d", wrote, old["y"]+1)
	}
	m.Arrived("remote", old)
	if got := m.Stale("remote", []string{"y"}); !reflect.DeepEqual(got, map[location.Location][]string{"local": {"y"}}) {
		t.Errorf("old copy of y counted as current: %v", got)
	}
}

func TestWritesInvalidateOtherCopies(t *testing.T) {
	m := New()
	m.Ran("local", "c1", map[string]Change{"x": {Movable: true}}, nil)
	m.Arrived("remote", m.Versions([]string{"x"}))
	m.Ran("remote", "c2", map[string]Change{"x": {Movable: true}}, nil)
	v, _ := m.Get("x")
	if !reflect.DeepEqual(v.Locations(), []location.Location{"remote"}) || v.Version != 2 {
		t.Fatalf("after a remote write x is at %v version %d", v.Locations(), v.Version)
	}
	if got := m.Gone("local"); !reflect.DeepEqual(got, []string{"x"}) {
		t.Fatalf("stale local copy of x not scheduled for deletion: %v", got)
	}
	if got := m.Gone("local"); len(got) != 0 {
		t.Fatalf("Gone does not clear: %v", got)
	}
}

func TestDeleteSchedulesDeletionElsewhere(t *testing.T) {
	m := New()
	m.Ran("local", "c1", map[string]Change{"x": {Movable: true}}, nil)
	m.Arrived("remote", m.Versions([]string{"x"}))
	m.Ran("local", "c2", nil, []string{"x"})
	if _, ok := m.Get("x"); ok {
		t.Fatal("deleted x still known")
	}
	if got := m.Gone("remote"); !reflect.DeepEqual(got, []string{"x"}) {
		t.Fatalf("Gone(remote) = %v, want [x]", got)
	}
	if got := m.Gone("local"); len(got) != 0 {
		t.Fatalf("Gone(local) = %v, want none", got)
	}
}

func TestNeedsFollowsUsesAndGroups(t *testing.T) {
	m := New()
	m.Ran("local", "c1", map[string]Change{
		"f":    {Movable: true, Uses: []string{"g", "k"}},
		"g":    {Movable: true, Uses: []string{"data"}},
		"k":    {Movable: true},
		"data": {Movable: true},
		"a":    {Movable: true, Group: "g1"},
		"b":    {Movable: true, Group: "g1"},
		"c":    {Movable: true},
	}, nil)
	tests := []struct {
		reads, want []string
	}{
		{[]string{"f"}, []string{"data", "f", "g", "k"}},
		{[]string{"a"}, []string{"a", "b"}},
		{[]string{"c", "nope"}, []string{"c"}},
	}
	for _, tt := range tests {
		if got := m.Needs(tt.reads); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Needs(%v) = %v, want %v", tt.reads, got, tt.want)
		}
	}
}

func TestPinnedAndLost(t *testing.T) {
	m := New()
	m.Ran("remote", "c1", map[string]Change{"gen": {Movable: false, Reason: "generator"}, "x": {Movable: true}}, nil)
	m.Ran("local", "c2", map[string]Change{"y": {Movable: true}}, nil)
	loc, why, ok := m.Pinned([]string{"x", "gen"})
	if !ok || loc != "remote" || !reflect.DeepEqual(why, []string{"gen (generator)"}) {
		t.Fatalf("Pinned = %q %v %v", loc, why, ok)
	}
	m.Arrived("local", m.Versions([]string{"x"}))
	lost := m.Lost("remote")
	if len(lost) != 1 || lost[0].Name != "gen" || lost[0].Version != 1 || lost[0].Producer != "c1" {
		t.Fatalf("Lost(remote) = %+v, want gen at version 1 made by c1", lost)
	}
	if m.Have("gen", 1) || !m.Have("x", 1) || m.Have("x", 2) {
		t.Fatal("Have does not follow the lost copies")
	}
	if !m.Restore(lost[0], "local") || m.Restore(lost[0], "local") {
		t.Fatal("Restore must put a lost name back once")
	}
	if v, _ := m.Get("gen"); v.Version != 1 || !reflect.DeepEqual(v.Locations(), []location.Location{"local"}) {
		t.Fatalf("restored gen: %+v", v)
	}
	if v, ok := m.Get("x"); !ok || !reflect.DeepEqual(v.Locations(), []location.Location{"local"}) {
		t.Fatalf("x after losing remote: %v %v", v.Locations(), ok)
	}
}

// A hash the agent computed later lands only on a version the reporting
// location holds and only where none is known; Shared names the versions
// held elsewhere too.
func TestSetHashesAndShared(t *testing.T) {
	m := New()
	m.Ran("local", "c1", map[string]Change{"x": {Movable: true}, "y": {Movable: true, Hash: "h-y"}, "z": {Movable: true}}, nil)
	m.Arrived("remote", m.Versions([]string{"x"}))
	if got := m.Shared("local", []string{"x", "y", "nope"}); !reflect.DeepEqual(got, []string{"x"}) {
		t.Errorf("Shared(local) = %v, want [x]", got)
	}
	if got := m.Shared("remote", []string{"x", "y"}); !reflect.DeepEqual(got, []string{"x"}) {
		t.Errorf("Shared(remote) = %v, want [x] (held at local too)", got)
	}
	m.SetHashes("remote", map[string]string{"z": "h-z"})
	m.SetHashes("local", map[string]string{"x": "h-x", "y": "other", "gone": "h"})
	for n, want := range map[string]string{"x": "h-x", "y": "h-y", "z": ""} {
		if v, _ := m.Get(n); v.Hash != want {
			t.Errorf("%s's hash = %q, want %q", n, v.Hash, want)
		}
	}
}

// A version carries the agent's compression estimate; the next version
// has its own (none when the agent gave none), never the old one's.
func TestRatioIsPerVersion(t *testing.T) {
	m := New()
	m.Ran(location.Local, "c1", map[string]Change{"df": {Size: 10 << 20, Movable: true, Ratio: 0.35}}, nil)
	if v, _ := m.Get("df"); v.Ratio != 0.35 {
		t.Fatalf("ratio %g after the first version, want 0.35", v.Ratio)
	}
	m.Ran(location.Local, "c2", map[string]Change{"df": {Size: 10 << 20, Movable: true}}, nil)
	if v, _ := m.Get("df"); v.Ratio != 0 {
		t.Fatalf("ratio %g after a version with none, want 0", v.Ratio)
	}
}
