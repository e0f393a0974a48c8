// Package bench holds Ferry's benchmarks: each measures Ferry side by side
// with the baseline in one run and reports ratios, never pass/fail times.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
)

// Stats summarises round-trip samples.
type Stats struct {
	Median, P95 time.Duration
}

func summarise(d []time.Duration) Stats {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return Stats{Median: s[len(s)/2], P95: s[(len(s)*95)/100]}
}

// OverheadResult compares a cell through Ferry with the same cell sent
// straight to ipykernel.
type OverheadResult struct {
	Cell          string
	Ferry, Direct Stats
	Ratio         float64 // median Ferry / median direct
	// Proxy and Relay are the same cell through a hop that only forwards
	// (floor.go): libzmq's zmq_proxy and a verbatim relay on Ferry's
	// sockets. Their ratios to direct are the floor under Ratio.
	Proxy, Relay           Stats
	ProxyRatio, RelayRatio float64
}

// Overhead runs each cell rounds times through Ferry (all-local, with
// analysis and state tracking on, as users run it), straight to a plain
// ipykernel, and through the two forwarding-only hops of floor.go, each
// in front of its own ipykernel, interleaved so all see the same machine
// load.
func Overhead(ctx context.Context, python string, rounds int, out io.Writer) ([]OverheadResult, error) {
	sess, stopFerry, err := startFerryLocal(ctx, python)
	if err != nil {
		return nil, err
	}
	defer stopFerry()
	direct, stopDirect, err := startDirect(ctx, python)
	if err != nil {
		return nil, err
	}
	defer stopDirect()
	proxy, stopProxy, err := startFloor(ctx, python, floorProxy)
	if err != nil {
		return nil, err
	}
	defer stopProxy()
	relay, stopRelay, err := startFloor(ctx, python, floorRelay)
	if err != nil {
		return nil, err
	}
	defer stopRelay()

	cells := []struct{ name, code string }{
		{"trivial (pass)", "pass"},
		{"1 MB output", "print('x' * 1_000_000)"},
	}
	var res []OverheadResult
	for _, c := range cells {
		var tf, td, tp, tr []time.Duration
		for i := 0; i < rounds+5; i++ {
			for _, side := range []struct {
				cl  *client.Client
				acc *[]time.Duration
			}{{sess.Client, &tf}, {direct, &td}, {proxy, &tp}, {relay, &tr}} {
				t0 := time.Now()
				r, err := side.cl.Execute(ctx, c.code, client.ExecOptions{})
				if err != nil {
					return nil, fmt.Errorf("%s: %w", c.name, err)
				}
				if r.Status != "ok" {
					return nil, fmt.Errorf("%s: cell failed: %s", c.name, r.EValue)
				}
				if i >= 5 { // warm-up rounds are not counted
					*side.acc = append(*side.acc, time.Since(t0))
				}
			}
		}
		r := OverheadResult{Cell: c.name, Ferry: summarise(tf), Direct: summarise(td), Proxy: summarise(tp), Relay: summarise(tr)}
		r.Ratio = float64(r.Ferry.Median) / float64(r.Direct.Median)
		r.ProxyRatio = float64(r.Proxy.Median) / float64(r.Direct.Median)
		r.RelayRatio = float64(r.Relay.Median) / float64(r.Direct.Median)
		res = append(res, r)
	}
	fmt.Fprintf(out, "%-16s %12s %12s %12s %12s %8s %11s %11s\n", "cell", "ferry med", "ferry p95", "direct med", "direct p95", "ratio", "zmq_proxy", "bare relay")
	for _, r := range res {
		fmt.Fprintf(out, "%-16s %12s %12s %12s %12s %8.3f %11.3f %11.3f\n", r.Cell, r.Ferry.Median.Round(time.Microsecond), r.Ferry.P95.Round(time.Microsecond),
			r.Direct.Median.Round(time.Microsecond), r.Direct.P95.Round(time.Microsecond), r.Ratio, r.ProxyRatio, r.RelayRatio)
	}
	fmt.Fprintf(out, "(zmq_proxy, bare relay: the same cells through a hop that only forwards, libzmq's own proxy and one on Ferry's sockets, each before its own ipykernel; their ratios are the floor under Ferry's)\n")
	return res, nil
}

// NotebookOverheadResult compares a whole notebook run all-local through
// Ferry (analysis and state tracking on) with the same notebook sent
// straight to ipykernel.
type NotebookOverheadResult struct {
	Notebook      string
	Ferry, Direct time.Duration // median over the rounds
	Ratio         float64
	// FerryRSS and DirectRSS are the kernel's peak resident memory after
	// the run (VmHWM, bytes; the largest over the rounds): what the
	// agent's tracking adds to the user's kernel.
	FerryRSS, DirectRSS int64
}

// Named is a notebook with the name its figures go under.
type Named struct {
	Name string
	NB   *notebook.Notebook
}

// ArrayNotebook is issue 15's array-heavy notebook, built in: most cells
// rebind or mutate in place arrays of 30-80 MB with little arithmetic, so
// the work per byte is small and any per-byte cost of tracking (a content
// hash after each cell) shows. Through Ferry it ran 1.4-2.1x as long as
// straight on ipykernel while every changed value was hashed after its
// cell.
func ArrayNotebook() Named {
	return Named{Name: "arrays (built in)", NB: notebook.FromCode(
		"import numpy as np\nrng = np.random.default_rng(0)\na = rng.random((5000, 2000))  # 80 MB",
		"b = a * 2.0  # a new 80 MB array",
		"a += 1.0  # in place",
		"c = np.sqrt(b).astype(np.float32)  # 40 MB",
		"b[::2] = 0.0",
		"a = a - b",
		"d = np.concatenate([c, c])  # 80 MB",
		"c *= 3.0",
		"m = a.mean(axis=0)\nprint(round(float(m.sum()), 3))",
		"e = a[:, :1000].copy()  # 40 MB",
		"a[:, 0] = m[0]",
		"f = (e > 1.0).astype(np.float64)  # 40 MB",
		"b = np.clip(b, 0.5, 2.5)",
		"print(d.shape, e.shape, round(float(f.mean()), 4), round(float(b.sum()), 1))",
	)}
}

// NotebookOverhead runs each notebook (the files at paths, then extra)
// rounds times on each side, in fresh kernels, alternating which side
// goes first; kernel start-up is not timed. It prints a table and the
// ratio of the sums.
func NotebookOverhead(ctx context.Context, python string, paths []string, extra []Named, rounds int, out io.Writer) ([]NotebookOverheadResult, error) {
	var nbs []Named
	for _, p := range paths {
		nb, err := notebook.Read(p)
		if err != nil {
			return nil, err
		}
		nbs = append(nbs, Named{Name: filepath.Base(p), NB: nb})
	}
	nbs = append(nbs, extra...)
	var res []NotebookOverheadResult
	var sumF, sumD time.Duration
	for _, nb := range nbs {
		var tf, td []time.Duration
		var rss [2]int64
		for r := range rounds {
			sides := []func() (time.Duration, int64, error){
				func() (time.Duration, int64, error) { return runThroughFerry(ctx, python, nb.NB) },
				func() (time.Duration, int64, error) { return runDirect(ctx, python, nb.NB) },
			}
			accs := []*[]time.Duration{&tf, &td}
			for i := range 2 {
				k := (i + r) % 2
				d, peak, err := sides[k]()
				if err != nil {
					return res, fmt.Errorf("%s: %w", nb.Name, err)
				}
				*accs[k] = append(*accs[k], d)
				rss[k] = max(rss[k], peak)
			}
		}
		x := NotebookOverheadResult{Notebook: strings.TrimSuffix(nb.Name, ".ipynb"), Ferry: summarise(tf).Median, Direct: summarise(td).Median,
			FerryRSS: rss[0], DirectRSS: rss[1]}
		x.Ratio = float64(x.Ferry) / float64(x.Direct)
		sumF, sumD = sumF+x.Ferry, sumD+x.Direct
		res = append(res, x)
	}
	fmt.Fprintf(out, "%-20s %12s %12s %8s %12s %12s\n", "whole notebook", "ferry med", "direct med", "ratio", "ferry peak", "direct peak")
	for _, r := range res {
		fmt.Fprintf(out, "%-20s %12s %12s %8.3f %12s %12s\n", r.Notebook, r.Ferry.Round(time.Millisecond), r.Direct.Round(time.Millisecond), r.Ratio,
			mib(r.FerryRSS), mib(r.DirectRSS))
	}
	if sumD > 0 {
		fmt.Fprintf(out, "%-20s %12s %12s %8.3f\n", "all", sumF.Round(time.Millisecond), sumD.Round(time.Millisecond), float64(sumF)/float64(sumD))
	}
	return res, nil
}

func mib(b int64) string {
	if b <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// peakRSSExpr is the kernel's peak resident memory in KiB: VmHWM (Linux),
// not ru_maxrss, which keeps the high-water mark of the process that
// forked the kernel (the benchmark itself) across exec.
const peakRSSExpr = `[int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]`

// timedRun runs every code cell of nb after an untimed warm-up cell (so
// start-up, Ferry's analysis helper included, is not counted), then asks
// the kernel its peak memory (0 if it does not say).
func timedRun(ctx context.Context, ex notebook.Executor, nb *notebook.Notebook) (time.Duration, int64, error) {
	if _, err := ex.Execute(ctx, "pass", client.ExecOptions{}); err != nil {
		return 0, 0, fmt.Errorf("warm-up cell: %w", err)
	}
	t0 := time.Now()
	if _, err := notebook.Run(ctx, nb, ex, notebook.RunOptions{}); err != nil {
		return 0, 0, err
	}
	d := time.Since(t0)
	r, err := ex.Execute(ctx, "pass", client.ExecOptions{UserExpressions: map[string]string{"rss": peakRSSExpr}})
	if err != nil {
		return d, 0, nil
	}
	var kib int64
	if ue, ok := r.Reply["user_expressions"].(map[string]any); ok {
		if e, ok := ue["rss"].(map[string]any); ok {
			if data, ok := e["data"].(map[string]any); ok {
				if txt, ok := data["text/plain"].(string); ok {
					kib, _ = strconv.ParseInt(strings.TrimSpace(txt), 10, 64)
				}
			}
		}
	}
	return d, kib << 10, nil
}

func runThroughFerry(ctx context.Context, python string, nb *notebook.Notebook) (time.Duration, int64, error) {
	sess, stop, err := startFerryLocal(ctx, python)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	return timedRun(ctx, sess, nb)
}

func runDirect(ctx context.Context, python string, nb *notebook.Notebook) (time.Duration, int64, error) {
	c, stop, err := startDirect(ctx, python)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	return timedRun(ctx, c, nb)
}

// startFerryLocal starts an all-local Ferry kernel with analysis and state
// tracking on, as users run it; FERRY_BENCH_NOSTATE=1 leaves them off, to
// measure relaying alone.
func startFerryLocal(ctx context.Context, python string) (*client.Session, func(), error) {
	cfg := kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(python)}, Policy: "local"}
	var an *analysis.Analyzer
	if os.Getenv("FERRY_BENCH_NOSTATE") == "" {
		an = analysis.New(python)
		cfg.Analyzer = an
	}
	closeAn := func() {
		if an != nil {
			an.Close()
		}
	}
	sess, err := client.StartFerry(ctx, cfg)
	if err != nil {
		closeAn()
		return nil, nil, err
	}
	return sess, func() { sess.Close(context.Background()); closeAn() }, nil
}

// startDirect starts a plain ipykernel and a client connected to it.
func startDirect(ctx context.Context, python string) (*client.Client, func(), error) {
	plain := backend.NewLocal(python)
	if err := plain.Start(ctx); err != nil {
		return nil, nil, err
	}
	info, _ := plain.ConnInfo()
	c, err := client.Connect(info)
	if err != nil {
		plain.Shutdown(context.Background())
		return nil, nil, err
	}
	stop := func() { c.Close(); plain.Shutdown(context.Background()) }
	if _, err := c.WaitReady(ctx); err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}
