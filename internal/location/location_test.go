package location

import (
	"slices"
	"testing"
)

func TestSet(t *testing.T) {
	s := NewSet("gpu", Remote, Local, "gpu")
	if want := (Set{Local, "gpu", Remote}); !slices.Equal(s, want) {
		t.Fatalf("NewSet = %v, want %v", s, want)
	}
	if !slices.Equal(s.Clouds(), Set{"gpu", Remote}) {
		t.Fatalf("Clouds = %v", s.Clouds())
	}
	if !slices.Equal(s.Except(Remote), Set{Local, "gpu"}) {
		t.Fatalf("Except = %v", s.Except(Remote))
	}
	if _, err := Parse("cpu", s); err == nil {
		t.Fatal("Parse accepted an unknown location")
	}
	if l, err := Parse("gpu", s); err != nil || l != "gpu" {
		t.Fatalf("Parse(gpu) = %v, %v", l, err)
	}
	for l, want := range map[Location]string{Local: "the laptop", Remote: "the cloud", "gpu": "the cloud gpu"} {
		if got := l.Describe(); got != want {
			t.Errorf("%s.Describe() = %q, want %q", l, got, want)
		}
	}
}
