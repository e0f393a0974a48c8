package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/trace"
)

// A replay of a recorded run under its own placement and the link
// calibrated from its transfers predicts the run's measured time within
// 15%.
func TestReplayPredictsRecordedRun(t *testing.T) {
	testenv.SkipIfShort(t, "ferry run on real kernels and a jupyter-server, 22 s")
	dir := t.TempDir()
	tr, sum := filepath.Join(dir, "t.jsonl"), filepath.Join(dir, "s.json")
	nb := filepath.Join("..", "..", "bench", "notebooks", "digits.ipynb")
	sess := filepath.Join("..", "..", "bench", "sessions", "digits.json")
	out, err := exec.Command(ferryBin, "run", nb, "--session", sess, "-o", filepath.Join(dir, "o.ipynb"), "--local-remote",
		"--policy", "pingpong", "--think-scale", "0.1", "--trace", tr, "--summary", sum, "--python", testenv.Python()).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry run: %v\n%s", err, out)
	}
	evs, err := trace.ReadFile(tr)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		CellSeconds []float64 `json:"cell_seconds"`
	}
	b, _ := os.ReadFile(sum)
	if err := json.Unmarshal(b, &s); err != nil || len(s.CellSeconds) != len(evs) {
		t.Fatalf("summary %s, %d events", b, len(evs))
	}
	var measured float64
	for _, c := range s.CellSeconds {
		measured += c
	}
	link := policy.Calibrate(evs, policy.Link{Bandwidth: 1e9, Compression: 1})
	pred := policy.Replay(evs, policy.Recorded(evs), policy.Settings{Link: link}).Seconds
	if math.Abs(pred-measured)/measured > 0.15 {
		t.Fatalf("replay predicts %.3fs, the run measured %.3fs (%+.0f%%)", pred, measured, 100*(pred-measured)/measured)
	}
	t.Logf("replay %.3fs vs measured %.3fs", pred, measured)
}

// Bad arguments to the hybrid bench fail at once, in one line that names
// the problem and the choices, before any test bed is set up.
func TestBenchHybridArgs(t *testing.T) {
	sessions := filepath.Join("..", "..", "bench", "sessions")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--sessions", t.TempDir()}, "no session scripts in"},
		{[]string{"--sessions", sessions, "--notebooks", "nosuch"}, `no session script matches "nosuch"`},
		{[]string{"--sessions", sessions, "--notebooks", "digits", "--settings", "5Gbit/0ms"}, `no link setting matches "5Gbit/0ms"; choose from 1Gbit/1ms,`},
	}
	for _, tt := range tests {
		out, err := exec.Command(ferryBin, append([]string{"bench", "hybrid"}, tt.args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("bench hybrid %v succeeded; want an error containing %q", tt.args, tt.want)
			continue
		}
		if msg := strings.TrimSpace(string(out)); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("bench hybrid %v: got %q, want one line containing %q", tt.args, msg, tt.want)
		}
	}
}
