package transparency

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testbed"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/trace"
)

// Several clouds (issue 18): the laptop plus two clouds, each a jupyter-
// server on a machine of its own (its own namespace, disk and user as
// root), so a value that goes from one cloud to the other really crosses
// through Ferry.
const (
	gpu location.Location = "gpu"
	cpu location.Location = "cpu"
)

// pinnedClouds is a notebook pinned across all three locations: values
// made at gpu, changed at cpu without passing the laptop's cells, read
// back at gpu and on the laptop; aliases and a function's global go along.
var pinnedClouds = []string{
	"%%ferry gpu\nimport numpy as np\nw = np.arange(12.0).reshape(3, 4)\nrow = w[1]\nlog = [w.shape]",
	"%%ferry cpu\nw *= 2\nlog.append(float(w.sum()))\ndef scale(v):\n    return v * factor\nfactor = 3",
	"%%ferry gpu\nprint(row, row.base is w, log)",
	"%%ferry local\nprint(w.sum(), scale(2), log)",
	"%%ferry cpu\nrow[:] = -1\nprint(w[1], len(log))",
	"print(w.tolist(), row.tolist())",
}

var pinLine = regexp.MustCompile(`^%%ferry \w+\n`)

func TestSeveralClouds(t *testing.T) {
	testenv.SkipIfShort(t, "the laptop and two clouds on jupyter-servers, 11 runs, about 2 min")
	testenv.RequireJupyterServer(t)
	second := startSecondCloud(t)
	clouds := map[location.Location]*backend.JupyterServer{gpu: server, cpu: second}
	// gpu fast and far, cpu modest and near: the ferry policy has a
	// trade-off to make, not one best place for everything.
	settings := map[location.Location]kernel.CloudSettings{gpu: {Speed: 8}, cpu: {Speed: 2}}

	type placement struct {
		policy string
		seed   int64
	}
	tests := []struct {
		name       string
		cells      []string
		placements []placement
	}{
		{"pinned", pinnedClouds, []placement{{"local", 0}, {"pingpong", 0}, {"random", 4}}},
		{"aliasing", caseCells(t, "aliasing"), []placement{{"pingpong", 0}, {"random", 5}}},
		{"numpy_inplace", caseCells(t, "numpy_inplace"), []placement{{"pingpong", 0}, {"random", 6}}},
		{"closures", caseCells(t, "closures"), []placement{{"pingpong", 0}, {"random", 7}}},
		{"function_uses_later_global", caseCells(t, "function_uses_later_global"), []placement{{"pingpong", 0}, {"ferry", 0}}},
	}
	at := map[location.Location]int{}
	crossed := false
	for _, tt := range tests {
		// All-local: the same code with no pins and no cloud.
		var plain []string
		for _, c := range tt.cells {
			plain = append(plain, pinLine.ReplaceAllString(c, ""))
		}
		base := notebook.FromCode(plain...)
		runWith(t, runOpts{dir: t.TempDir(), name: tt.name, nb: base, policy: "local"})
		want := comparable(base)
		if len(want) == 0 {
			t.Fatalf("%s: the all-local run printed nothing; the case checks nothing", tt.name)
		}
		for _, p := range tt.placements {
			nb := notebook.FromCode(tt.cells...)
			tr := trace.NewMemory()
			var mu sync.Mutex
			pairs := map[string]bool{}
			runWith(t, runOpts{dir: t.TempDir(), name: tt.name, nb: nb, policy: p.policy, seed: p.seed,
				clouds: clouds, settings: settings, trace: tr,
				onChunk: func(src, dst location.Location, _ int) {
					mu.Lock()
					pairs[src.String()+">"+dst.String()] = true
					mu.Unlock()
				}})
			if got := comparable(nb); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s under %s seed %d over three locations: outputs differ from all-local\n--- local\n%s\n--- %s\n%s",
					tt.name, p.policy, p.seed, strings.Join(want, "\n"), p.policy, strings.Join(got, "\n"))
			}
			evs := tr.Events()
			for i, e := range evs {
				at[e.Loc]++
				if m := pinLine.FindString(tt.cells[min(i, len(tt.cells)-1)]); m != "" && len(evs) == len(tt.cells) {
					if want := strings.TrimSpace(strings.TrimPrefix(m, "%%ferry ")); e.Loc.String() != want {
						t.Errorf("%s cell %d pinned to %s ran at %s", tt.name, i, want, e.Loc)
					}
				}
			}
			mu.Lock()
			var where []string
			for _, e := range evs {
				where = append(where, e.Loc.String())
			}
			t.Logf("%s under %s seed %d: cells at %s; moves %v", tt.name, p.policy, p.seed, strings.Join(where, " "), pairs)
			if pairs["gpu>cpu"] || pairs["cpu>gpu"] {
				crossed = true
			}
			if tt.name == "pinned" && !(pairs["gpu>cpu"] && pairs["cpu>gpu"]) {
				t.Errorf("pinned under %s: moves %v, want values carried from gpu to cpu and back directly, not only through laptop cells", p.policy, pairs)
			}
			mu.Unlock()
		}
	}
	for _, l := range []location.Location{location.Local, gpu, cpu} {
		if at[l] == 0 {
			t.Errorf("no cell ran at %s over all runs (%v): the test does not place among three locations", l, at)
		}
	}
	if !crossed {
		t.Error("no value went from one cloud to the other")
	}
}

func caseCells(t *testing.T, name string) []string {
	for _, c := range Cases {
		if c.Name == name {
			return c.Cells
		}
	}
	t.Fatalf("no transparency case %q", name)
	return nil
}

// startSecondCloud starts another jupyter-server as the second cloud: a
// machine of its own like the suite's (testbed.StartSeparateServer) where
// the suite's is one, else on this machine, said loudly.
func startSecondCloud(t *testing.T) *backend.JupyterServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if separate != nil {
		sep, err := testbed.StartSeparateServer(ctx, testenv.Python(), testbed.SeparateOptions{})
		if err == nil {
			t.Cleanup(sep.Close)
			return sep.JupyterServer
		}
		if !errors.Is(err, testbed.ErrNotSeparate) {
			t.Fatalf("the second cloud: %v", err)
		}
		fmt.Fprintf(os.Stderr, "TestSeveralClouds: LOUD NOTE: the second cloud shares this machine's disk (%v)\n", err)
	}
	s, err := backend.StartJupyterServer(ctx, testenv.Python(), 0)
	if err != nil {
		t.Fatalf("the second cloud: %v (apt-get install jupyter-server)", err)
	}
	t.Cleanup(s.Stop)
	return s
}
