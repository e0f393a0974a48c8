package bench

import (
	"context"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestArrayNotebookPerCell times each cell of the array notebook alone,
// through Ferry and straight to ipykernel, in 5 fresh kernels per side,
// and logs the per-cell medians and their sums: steadier than whole-run
// medians on a shared machine. A measurement, not a check: it runs only
// with FERRY_BENCH_PERCELL=1 (go test -v -run TestArrayNotebookPerCell).
func TestArrayNotebookPerCell(t *testing.T) {
	if os.Getenv("FERRY_BENCH_PERCELL") == "" {
		t.Skip("a measurement: set FERRY_BENCH_PERCELL=1")
	}
	testenv.RequirePython(t)
	python := testenv.Python()
	ctx := context.Background()
	nb := ArrayNotebook().NB
	n := len(nb.Cells)
	tf := make([][]time.Duration, n)
	td := make([][]time.Duration, n)
	for r := 0; r < 5; r++ {
		for side := 0; side < 2; side++ {
			var ex notebook.Executor
			var stop func()
			if side == 0 {
				s, st, err := startFerryLocal(ctx, python)
				if err != nil {
					t.Fatal(err)
				}
				ex, stop = s, st
			} else {
				c, st, err := startDirect(ctx, python)
				if err != nil {
					t.Fatal(err)
				}
				ex, stop = c, st
			}
			ex.Execute(ctx, "pass", client.ExecOptions{})
			for i := range nb.Cells {
				t0 := time.Now()
				if _, err := ex.Execute(ctx, nb.Cells[i].Source(), client.ExecOptions{}); err != nil {
					t.Fatal(err)
				}
				d := time.Since(t0)
				if side == 0 {
					tf[i] = append(tf[i], d)
				} else {
					td[i] = append(td[i], d)
				}
			}
			stop()
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	var sf, sd time.Duration
	for i := range nb.Cells {
		f, d := med(tf[i]), med(td[i])
		sf, sd = sf+f, sd+d
		src := nb.Cells[i].Source()
		t.Logf("ferry %8.2f direct %8.2f diff %+7.2f ms  %s", f.Seconds()*1e3, d.Seconds()*1e3, (f-d).Seconds()*1e3, src[:min(35, len(src))])
	}
	t.Logf("sum: ferry %v, direct %v, ratio %.3f", sf, sd, float64(sf)/float64(sd))
}
