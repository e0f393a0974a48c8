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
	// The cloud starts with its first cell (pingpong does not start it at
	// connect): the trace records the wait, which the replay prices.
	start := policy.RecordedStart(evs)
	if start <= 0 {
		t.Fatalf("the trace records no wait for the cloud's start, though its first cell started it")
	}
	pred := policy.Replay(evs, policy.Recorded(evs), policy.Settings{Link: link, CloudStart: start}).Seconds
	if math.Abs(pred-measured)/measured > 0.15 {
		t.Fatalf("replay predicts %.3fs, the run measured %.3fs (%+.0f%%)", pred, measured, 100*(pred-measured)/measured)
	}
	t.Logf("replay %.3fs vs measured %.3fs (cloud start %.2fs)", pred, measured, start)
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

// A fitted random forest is a few dozen bytes to sys.getsizeof and
// hundreds of KiB on the link: the trace must carry what moved, so that a
// replay under the run's own placement moves what the run moved.
func TestTraceCarriesTheSizesThatMoved(t *testing.T) {
	testenv.SkipIfShort(t, "ferry run on real kernels and a jupyter-server")
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "forest.ipynb", []string{
		"import numpy as np\nfrom sklearn.ensemble import RandomForestClassifier\nrng = np.random.RandomState(0)\nX, y = rng.rand(400, 6), rng.randint(0, 2, 400)",
		"forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(X, y)",
		"score = forest.score(X, y)",
	})
	tr, sum := filepath.Join(dir, "t.jsonl"), filepath.Join(dir, "s.json")
	// pingpong runs the fit on the laptop and the score in the cloud, so
	// the forest moves.
	out, err := exec.Command(ferryBin, "run", nb, "-o", filepath.Join(dir, "o.ipynb"), "--local-remote", "--policy", "pingpong",
		"--trace", tr, "--summary", sum, "--python", testenv.Python()).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry run: %v\n%s", err, out)
	}
	var s struct {
		BytesMoved int64 `json:"bytes_moved"`
	}
	if b, _ := os.ReadFile(sum); json.Unmarshal(b, &s) != nil || s.BytesMoved < 50_000 {
		t.Fatalf("the run moved %d bytes; want the forest's hundreds of KiB", s.BytesMoved)
	}
	evs, err := trace.ReadFile(tr)
	if err != nil {
		t.Fatal(err)
	}
	var fit, score trace.Event
	for _, e := range evs {
		for _, w := range e.Writes {
			if w == "forest" {
				fit = e
			}
		}
		for _, m := range e.Moved {
			if m == "forest" {
				score = e
			}
		}
	}
	if fit.Sizes["forest"] < 50_000 {
		t.Errorf("the trace records the fitted forest as %d B; want what it pickles to (over 50 kB)", fit.Sizes["forest"])
	}
	var shares int64
	for _, b := range score.MovedSizes {
		shares += b
	}
	if score.MovedSizes["forest"] < 20_000 || shares != score.BytesMoved {
		t.Errorf("the move before the score records %v (sum %d); want the forest's share, summing to the %d bytes moved", score.MovedSizes, shares, score.BytesMoved)
	}
	rep, err := exec.Command(ferryBin, "replay", tr, "--policy", "recorded", "--json").Output()
	if err != nil {
		t.Fatalf("ferry replay: %v", err)
	}
	var rs []policy.Result
	if err := json.Unmarshal(rep, &rs); err != nil || len(rs) != 1 {
		t.Fatalf("replay answered %s", rep)
	}
	if rs[0].BytesMoved != s.BytesMoved {
		t.Errorf("replay --policy recorded moves %d bytes; the run moved %d", rs[0].BytesMoved, s.BytesMoved)
		for _, e := range evs {
			t.Logf("trace: %+v", e)
		}
	}
}

// ferry replay re-costs a session over several clouds, each described by
// its own flags, and places an all-local trace over clouds named with
// --clouds; a flag naming a cloud the replay lacks is one line saying how
// to name it.
func TestReplaySeveralClouds(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "t.jsonl")
	lines := `{"seq":1,"cell":"make","loc":"gpu","runtime_s":1,"writes":["x"],"sizes":{"x":100000000}}
{"seq":2,"cell":"use","loc":"cpu","runtime_s":2,"reads":["x"],"writes":["y"],"sizes":{"y":1000}}
{"seq":3,"cell":"show","loc":"local","runtime_s":0.5,"reads":["x"]}
`
	if err := os.WriteFile(tr, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	clouds := []string{"--remote-speed", "gpu=10x,cpu=2x", "--bandwidth", "gpu=20Mbit,cpu=1Gbit", "--rtt", "gpu=80ms,cpu=1ms", "--cloud-price", "gpu=3.6,cpu=0.36"}
	replay := func(args ...string) []policy.Result {
		t.Helper()
		out, err := exec.Command(ferryBin, append(append([]string{"replay", tr, "--json"}, clouds...), args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ferry replay %v: %v\n%s", args, err, out)
		}
		var rs []policy.Result
		if err := json.Unmarshal(out, &rs); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return rs
	}
	r := replay("--policy", "recorded")[0]
	// As TestReplaySeveralClouds in internal/policy: x crosses gpu to cpu
	// through Ferry at 20 Mbit/s, then comes home from cpu.
	want := (0.08 + 1) + (0.081 + 40 + 0.001 + 2) + (0.001 + 0.8 + 0.5)
	if math.Abs(r.Seconds-want) > 1e-3 || r.CloudStarts != 2 {
		t.Fatalf("recorded: %.4f s, %d starts; want %.4f s, 2", r.Seconds, r.CloudStarts, want)
	}
	if c := (want*3.6 + (want-1.08)*0.36) / 3600; math.Abs(r.CloudCost-c) > 1e-6 {
		t.Fatalf("cost $%.6f, want $%.6f", r.CloudCost, c)
	}
	// The oracle over the three places is no slower than the recording.
	if o := replay("--policy", "oracle")[0]; o.Seconds > r.Seconds+1e-6 {
		t.Fatalf("oracle %.3f s behind the recorded %.3f s", o.Seconds, r.Seconds)
	}
	// An all-local trace placed over two clouds named with --clouds.
	local := filepath.Join(dir, "local.jsonl")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(strings.ReplaceAll(lines, `"gpu"`, `"local"`), `"cpu"`, `"local"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ferryBin, append([]string{"replay", local, "--policy", "remote", "--clouds", "gpu,cpu", "--json"}, clouds...)...).CombinedOutput()
	var rs []policy.Result
	if err != nil || json.Unmarshal(out, &rs) != nil || len(rs) != 1 {
		t.Fatalf("replay over --clouds: %v\n%s", err, out)
	}
	if rs[0].CellsRemote != 3 || rs[0].CloudKernelSeconds <= 0 {
		t.Fatalf("--policy remote over --clouds gpu,cpu: %d cloud cells, %.1f kernel-s; want 3 and some", rs[0].CellsRemote, rs[0].CloudKernelSeconds)
	}
	// A cloud the replay lacks.
	out, err = exec.Command(ferryBin, "replay", local, "--remote-speed", "tpu=8x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `no cloud called "tpu"`) || !strings.Contains(string(out), "--clouds") {
		t.Fatalf("unknown cloud: err %v, output %s", err, out)
	}
}
