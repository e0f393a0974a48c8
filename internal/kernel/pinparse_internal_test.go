package kernel

import (
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
)

// %%ferry NAME pins to any configured location; "remote" and "cloud" name
// the only cloud when there is one; an unknown name is an error for the
// user, never a cell run somewhere else.
func TestParseFerryPins(t *testing.T) {
	one := location.NewSet(location.Local, location.Remote)
	named := location.NewSet(location.Local, "gpu", "cpu")
	single := location.NewSet(location.Local, "gpu")
	none := location.NewSet(location.Local)
	tests := []struct {
		code string
		locs location.Set
		pin  location.Location
		cmd  []string
	}{
		{"%%ferry local\nx = 1", one, location.Local, nil},
		{"%%ferry remote\nx = 1", one, location.Remote, nil},
		{"%%ferry gpu\nx = 1", named, "gpu", nil},
		{"%%ferry cpu\nx = 1", named, "cpu", nil},
		{"%%ferry remote\nx = 1", single, "gpu", nil},
		{"%%ferry cloud\nx = 1", single, "gpu", nil},
		{"%%ferry remote\nx = 1", none, location.Remote, nil}, // the policy says it is not configured
		{"%%ferry remote\nx = 1", named, "", []string{"__unknown_location__", "remote"}},
		{"%%ferry tpu\nx = 1", named, "", []string{"__unknown_location__", "tpu"}},
		{"%%ferry status", named, "", []string{"status"}},
		{"%ferry why", named, "", []string{"why"}},
		{"x = 1", named, "", nil},
	}
	for _, tt := range tests {
		cmd, pin, body := parseFerry(tt.code, tt.locs)
		if pin != tt.pin || len(cmd) != len(tt.cmd) {
			t.Fatalf("%q over %s: pin %q, cmd %q; want pin %q, cmd %q", tt.code, tt.locs, pin, cmd, tt.pin, tt.cmd)
		}
		for i := range cmd {
			if cmd[i] != tt.cmd[i] {
				t.Fatalf("%q over %s: cmd %q, want %q", tt.code, tt.locs, cmd, tt.cmd)
			}
		}
		if pin != "" && body != "x = 1" {
			t.Fatalf("%q: body %q", tt.code, body)
		}
	}
}
