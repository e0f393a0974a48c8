package backendtest_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// cells alternate between the laptop and the cloud under pingpong, so
// each reads something the other side made or changed.
var cells = []string{
	"x = 5",                              // local
	"y = x + 1",                          // remote: x moves there
	"print(y)",                           // local: y moves back
	"items = [x, y]",                     // remote
	"items.append(7)\nprint(len(items))", // local: items moves, then changes
	"effect(\"mail\")\nitems",            // remote: the changed items moves back
}

type session struct {
	outputs []string
	local   *backendtest.Kernel
	remote  *backendtest.Kernel
	stats   kernel.Totals
	// held is what each fake held after the last cell: name -> repr.
	held map[location.Location]map[string]string
}

func holds(k *backendtest.Kernel) map[string]string {
	out := map[string]string{}
	for _, n := range k.Names() {
		out[n], _ = k.Value(n)
	}
	return out
}

// runFerry runs cells through the real Ferry kernel, in process, with two
// fake backends and the real analysis helper.
func runFerry(t *testing.T, policy string) session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	an := analysis.New(backend.DefaultPython)
	defer an.Close()
	s := session{local: backendtest.New(location.Local), remote: backendtest.New(location.Remote)}
	sess, err := client.StartFerry(ctx, kernel.Config{
		Backends: map[location.Location]backend.Backend{"local": s.local, "remote": s.remote},
		Policy:   policy,
		Analyzer: an,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, code := range cells {
		r, err := sess.Execute(ctx, code, client.ExecOptions{})
		if err != nil {
			t.Fatalf("%s: cell %d: %v", policy, i, err)
		}
		if r.Status != "ok" || r.Count != i+1 {
			t.Fatalf("%s: cell %d %q: status %s (%s: %s), count %d", policy, i, code, r.Status, r.EName, r.EValue, r.Count)
		}
		s.outputs = append(s.outputs, r.Text())
	}
	s.stats = sess.Kernel.Stats.Totals()
	s.held = map[location.Location]map[string]string{location.Local: holds(s.local), location.Remote: holds(s.remote)}
	if err := sess.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFerryOnFakes: the real kernel, placing cells by pingpong on two
// fakes, gives the outputs all-local gives, having moved the values each
// cell needed to where it ran, and ran each cell exactly once.
func TestFerryOnFakes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the analysis helper")
	}
	want := runFerry(t, "local")
	got := runFerry(t, "pingpong")
	for i := range cells {
		if got.outputs[i] != want.outputs[i] {
			t.Errorf("cell %d %q: pingpong printed %q, all-local %q", i, cells[i], got.outputs[i], want.outputs[i])
		}
	}
	if want.outputs[2] != "6\n" || want.outputs[4] != "3\n" || want.outputs[5] != "[5, 6, 7]\n" {
		t.Errorf("all-local outputs %q", want.outputs)
	}
	if want.remote.Starts() != 0 || want.stats.CellsRemote != 0 {
		t.Errorf("all-local started the cloud %d times, ran %d cells there", want.remote.Starts(), want.stats.CellsRemote)
	}
	if got.stats.CellsLocal != 3 || got.stats.CellsRemote != 3 || got.stats.Migrations != 4 {
		t.Errorf("pingpong stats %+v: want 3 cells each side, a move before each of cells 2, 3, 5 and 6", got.stats)
	}
	// Each side holds what it made and what moved to it, at its newest.
	wantHeld := map[location.Location]map[string]string{
		location.Remote: {"x": "5", "y": "6", "items": "[5, 6, 7]"},
		location.Local:  {"x": "5", "y": "6", "items": "[5, 6, 7]"},
	}
	if !maps.Equal(got.held[location.Local], wantHeld[location.Local]) || !maps.Equal(got.held[location.Remote], wantHeld[location.Remote]) {
		t.Errorf("the fakes hold %v, want %v", got.held, wantHeld)
	}
	if !maps.Equal(want.held[location.Local], wantHeld[location.Local]) || len(want.held[location.Remote]) != 0 {
		t.Errorf("all-local, the fakes hold %v", want.held)
	}
	for i, code := range cells {
		if n := got.local.Executed(code) + got.remote.Executed(code); n != 1 {
			t.Errorf("cell %d ran %d times", i, n)
		}
	}
	if n := got.local.Effects("mail") + got.remote.Effects("mail"); n != 1 || got.remote.Effects("mail") != 1 {
		t.Errorf("the side effect happened %d times (remote %d), want once, in the cloud", n, got.remote.Effects("mail"))
	}
}
