package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

var (
	loadNotebooks = flag.Int("load-notebooks", 8, "notebooks at once in TestManyNotebooksThroughOneServer")
	loadCells     = flag.Int("load-cells", 500, "cells per notebook in TestManyNotebooksThroughOneServer")
)

// loadHeapLimit bounds the Go heap of the notebooks' Ferry kernels and
// clients together: their cells move a few kB each.
const loadHeapLimit = 128 << 20

// cellCode is cell i of notebook k: pinned alternately local and remote,
// it reads and writes x and the dict d, so both move at every cell, in
// both directions. It prints what it computed and the pid it ran in.
func cellCode(k, i int) (code string, loc string) {
	loc = "local"
	if i%2 == 1 {
		loc = "remote"
	}
	return fmt.Sprintf("%%%%ferry %s\nx = x + 1\nd[%d] = x * %d\nprint(%d, %d, x, len(d), sum(d.values()), os.getpid())", loc, i, k+1, k, i), loc
}

// cellWant is what cell i of notebook k must print, run in pid.
func cellWant(k, i, pid int) string {
	n := i + 1
	return fmt.Sprintf("%d %d %d %d %d %d\n", k, i, n, n, (k+1)*n*(n+1)/2, pid)
}

// TestManyNotebooksThroughOneServer runs many notebooks at once, each its
// own Ferry kernel with its own local ipykernel and its own kernel on the
// one shared jupyter-server, every cell moving state between the two. No
// cell may hang (the whole run is bounded), every output must be right and
// must come from the kernel it was pinned to, and after shutdown no
// goroutine and no kernel process may be left.
func TestManyNotebooksThroughOneServer(t *testing.T) {
	testenv.SkipIfShort(t, "many notebooks on real kernels and a jupyter-server, 2 min even at 2 x 40 cells")
	nbs, cells := *loadNotebooks, *loadCells
	if cells < 2 {
		t.Fatalf("-load-cells %d: need at least 2 so state moves both ways", cells)
	}
	before := runtime.NumGoroutine()
	budget := 4*time.Minute + time.Duration(nbs*cells)*60*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()

	type outcome struct {
		k       int
		n       *notebook
		ks      kernels
		lat     []time.Duration
		err     error
		remote  int
		moves   int
		started time.Time
	}
	out := make([]outcome, nbs)
	var wg sync.WaitGroup
	runtime.GC()
	ms := sampleMem(20*time.Millisecond, budget)
	t0 := time.Now()
	for k := range nbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &out[k]
			o.k = k
			o.err = func() error {
				n, err := startNotebook(ctx, server)
				if err != nil {
					return fmt.Errorf("starting: %w", err)
				}
				o.n = n
				if _, err := n.exec(ctx, "import os\nx = 0\nd = {}"); err != nil {
					return err
				}
				o.started = time.Now()
				localPID := 0
				remotePID := 0
				for i := range cells {
					code, loc := cellCode(k, i)
					c0 := time.Now()
					r, err := n.exec(ctx, code)
					if err != nil {
						return fmt.Errorf("cell %d (%s): %w", i, loc, err)
					}
					o.lat = append(o.lat, time.Since(c0))
					if i < 2 { // learn the pids from the kernels themselves
						ks := n.kernels()
						localPID, remotePID = ks.localPID, ks.remotePID
						o.ks = ks
					}
					pid := localPID
					if loc == "remote" {
						pid = remotePID
					}
					if pid == 0 {
						return fmt.Errorf("cell %d: no %s kernel process found", i, loc)
					}
					if got, want := r.Stream("stdout"), cellWant(k, i, pid); got != want {
						return fmt.Errorf("cell %d (%s): printed %q, want %q", i, loc, got, want)
					}
				}
				tot := n.Kernel.Stats.Totals()
				o.remote, o.moves = tot.CellsRemote, tot.Migrations
				return nil
			}()
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	peak := ms.Stop()
	if ctx.Err() != nil {
		t.Errorf("the run did not finish within %s (deadlock?); goroutines:\n%s", budget, stacks())
	}

	var lat []time.Duration
	var ks []kernels
	var firstStart time.Time
	for _, o := range out {
		if o.err != nil {
			t.Errorf("notebook %d: %v", o.k, o.err)
		}
		lat = append(lat, o.lat...)
		if o.n != nil {
			ks = append(ks, o.ks)
		}
		if firstStart.IsZero() || (!o.started.IsZero() && o.started.Before(firstStart)) {
			firstStart = o.started
		}
		if o.err == nil {
			// Every cell read state written at the other kernel.
			if o.remote != cells/2 || o.moves < cells-1 {
				t.Errorf("notebook %d: %d remote cells (want %d), %d cells moved state (want >= %d)", o.k, o.remote, cells/2, o.moves, cells-1)
			}
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		cellsWall := time.Since(firstStart)
		t.Logf("%d notebooks x %d cells through one jupyter-server: %d cells in %s (%.1f cells/s over the cell phase, %s with start-up); per-cell latency p50 %s p95 %s p99 %s max %s",
			nbs, cells, len(lat), cellsWall.Round(time.Millisecond), float64(len(lat))/cellsWall.Seconds(), elapsed.Round(time.Millisecond),
			lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*95/100].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	}
	t.Logf("memory of the %d Ferry kernels (with their front ends) while running: %s", nbs, peak)
	if peak.HeapInuse > loadHeapLimit {
		t.Errorf("peak Go heap %.0f MB for %d notebooks of small cells (limit %d MB): something piles up", mb(peak.HeapInuse), nbs, loadHeapLimit>>20)
	}

	// Shut every notebook down at once, as closing a browser's tabs does.
	var cerrs []error
	var mu sync.Mutex
	for _, o := range out {
		if o.n == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o.n.close(); err != nil {
				mu.Lock()
				cerrs = append(cerrs, fmt.Errorf("notebook %d: closing: %w", o.k, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(cerrs...); err != nil {
		t.Error(err)
	}
	checkKernelsGone(t, server, ks)
	checkGoroutines(t, before, 20*time.Second)
	if t.Failed() {
		return
	}
	var sb strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&sb, " [local %d, remote %s pid %d]", k.localPID, k.remoteID[:8], k.remotePID)
	}
	t.Logf("kernels used and gone:%s", sb.String())
}
