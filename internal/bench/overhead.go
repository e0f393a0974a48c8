// Package bench holds Ferry's benchmarks: each measures Ferry side by side
// with the baseline in one run and reports ratios, never pass/fail times.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
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
}

// Overhead runs each cell rounds times through Ferry (all-local, with
// analysis and state tracking on, as users run it) and straight to a plain
// ipykernel, interleaved so both see the same machine load.
func Overhead(ctx context.Context, python string, rounds int, out io.Writer) ([]OverheadResult, error) {
	an := analysis.New(python)
	defer an.Close()
	sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[string]backend.Backend{"local": backend.NewLocal(python)}, Policy: "local", Analyzer: an})
	if os.Getenv("FERRY_BENCH_NOSTATE") != "" {
		sess.Close(context.Background())
		sess, err = client.StartFerry(ctx, kernel.Config{Backends: map[string]backend.Backend{"local": backend.NewLocal(python)}, Policy: "local"})
	}
	if err != nil {
		return nil, err
	}
	defer sess.Close(context.Background())

	plain := backend.NewLocal(python)
	if err := plain.Start(ctx); err != nil {
		return nil, err
	}
	defer plain.Shutdown(context.Background())
	info, _ := plain.ConnInfo()
	direct, err := client.Connect(info)
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	if _, err := direct.WaitReady(ctx); err != nil {
		return nil, err
	}

	cells := []struct{ name, code string }{
		{"trivial (pass)", "pass"},
		{"1 MB output", "print('x' * 1_000_000)"},
	}
	var res []OverheadResult
	for _, c := range cells {
		var tf, td []time.Duration
		for i := 0; i < rounds+5; i++ {
			for _, side := range []struct {
				cl  *client.Client
				acc *[]time.Duration
			}{{sess.Client, &tf}, {direct, &td}} {
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
		r := OverheadResult{Cell: c.name, Ferry: summarise(tf), Direct: summarise(td)}
		r.Ratio = float64(r.Ferry.Median) / float64(r.Direct.Median)
		res = append(res, r)
	}
	fmt.Fprintf(out, "%-16s %12s %12s %12s %12s %8s\n", "cell", "ferry med", "ferry p95", "direct med", "direct p95", "ratio")
	for _, r := range res {
		fmt.Fprintf(out, "%-16s %12s %12s %12s %12s %8.3f\n", r.Cell, r.Ferry.Median.Round(time.Microsecond), r.Ferry.P95.Round(time.Microsecond),
			r.Direct.Median.Round(time.Microsecond), r.Direct.P95.Round(time.Microsecond), r.Ratio)
	}
	return res, nil
}
