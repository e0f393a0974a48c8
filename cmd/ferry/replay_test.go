package main

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/trace"
)

// A replay of a recorded run under its own placement and the link
// calibrated from its transfers predicts the run's measured time within
// 15%.
func TestReplayPredictsRecordedRun(t *testing.T) {
	dir := t.TempDir()
	tr, sum := filepath.Join(dir, "t.jsonl"), filepath.Join(dir, "s.json")
	nb := filepath.Join("..", "..", "bench", "notebooks", "digits.ipynb")
	sess := filepath.Join("..", "..", "bench", "sessions", "digits.json")
	out, err := exec.Command(ferryBin, "run", nb, "--session", sess, "-o", filepath.Join(dir, "o.ipynb"), "--local-remote",
		"--policy", "pingpong", "--think-scale", "0.1", "--trace", tr, "--summary", sum, "--python", python).CombinedOutput()
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
