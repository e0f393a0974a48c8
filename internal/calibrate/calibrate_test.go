package calibrate

import (
	"errors"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// The expression runs in a real interpreter, binds nothing, imports no
// numpy into it, and yields figures Parse reads.
func TestExprInPython(t *testing.T) {
	testenv.RequirePython(t)
	code := "import sys\nbefore, mods = set(globals()), set(sys.modules)\nv = " + Expr() + "\nprint(repr(v))\nprint(sorted(set(globals()) - before - {'v', 'before', 'mods'}))\nprint('numpy' in sys.modules)"
	out, err := exec.Command(testenv.Python(), "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || lines[1] != "[]" {
		t.Fatalf("the calibration bound names in the namespace: %q", out)
	}
	if lines[2] != "False" {
		t.Fatalf("the calibration imported numpy into the kernel's process (its global random state then looks like the user's): %q", out)
	}
	r, err := Parse(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if r.Single <= 0 || r.Single > 30 || r.Cores < 1 {
		t.Fatalf("figures %+v", r)
	}
	if testenv.CheckModules("numpy") == nil && r.Multi <= 0 {
		t.Fatalf("numpy is installed but no BLAS figure: %+v", r)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		text    string
		single  float64
		multi   float64
		wantErr bool
	}{
		{`'{"single": 0.03, "multi": 0.02, "cores": 2}'`, 0.03, 0.02, false},
		{`'{"single": 0.03, "multi": null, "cores": 1}'`, 0.03, 0, false},
		{`'{"single": 0, "multi": 0.02, "cores": 1}'`, 0, 0, true},
		{`{"single": 0.03}`, 0, 0, true}, // not a str repr
		{`'not json'`, 0, 0, true},
		{``, 0, 0, true},
	}
	for _, tt := range tests {
		r, err := Parse(tt.text)
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%q) = %+v, %v; want ErrMalformed", tt.text, r, err)
			}
			continue
		}
		if err != nil || r.Single != tt.single || r.Multi != tt.multi {
			t.Errorf("Parse(%q) = %+v, %v", tt.text, r, err)
		}
	}
}

func TestSpeed(t *testing.T) {
	laptop := Result{Single: 0.12, Multi: 0.4}
	tests := []struct {
		name  string
		there Result
		want  float64
	}{
		{"4x single, 16x multi", Result{Single: 0.03, Multi: 0.025}, 8},
		{"no numpy there: single only", Result{Single: 0.06}, 2},
		{"slower cloud", Result{Single: 0.24, Multi: 0.8}, 0.5},
		{"nothing measured", Result{}, 0},
	}
	for _, tt := range tests {
		if got := Speed(laptop, tt.there); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("%s: speed %.3f, want %.3f", tt.name, got, tt.want)
		}
	}
}

func TestCache(t *testing.T) {
	c := &Cache{Path: filepath.Join(t.TempDir(), "sub", "calibration.json")}
	if _, ok := c.Load("gpu"); ok {
		t.Fatal("an empty cache had figures")
	}
	r := Result{Single: 0.03, Multi: 0.02, Cores: 8, When: time.Now()}
	if err := c.Store("https://gpu.example/|python3", r); err != nil {
		t.Fatal(err)
	}
	got, ok := c.Load("https://gpu.example/|python3")
	if !ok || got.Single != r.Single || got.Cores != 8 {
		t.Fatalf("loaded %+v, %v", got, ok)
	}
	old := Result{Single: 0.03, When: time.Now().Add(-60 * 24 * time.Hour)}
	if err := c.Store("old", old); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Load("old"); ok {
		t.Fatal("figures two months old were used")
	}
	if err := c.StoreStart("https://gpu.example/|python3", 12); err != nil {
		t.Fatal(err)
	}
	if err := c.Store("https://gpu.example/|python3", r); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Load("https://gpu.example/|python3"); got.StartSeconds != 12 || got.Single != r.Single {
		t.Fatalf("after a start and new figures: %+v", got)
	}
	if _, ok := (&Cache{}).Load("gpu"); ok {
		t.Fatal("a cache without a path had figures")
	}
}
