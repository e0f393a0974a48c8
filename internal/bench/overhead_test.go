package bench

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

func writeNotebook(t *testing.T, cells ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.ipynb")
	if err := notebook.FromCode(cells...).Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// The whole-notebook figure times both sides, and a cell that raises on
// either side is an error naming the notebook, not a figure.
func TestNotebookOverhead(t *testing.T) {
	testenv.RequirePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ok := writeNotebook(t, "import time\nx = list(range(1000))", "time.sleep(0.2)\ny = len(x)")
	res, err := NotebookOverhead(ctx, testenv.Python(), []string{ok}, nil, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Ferry < 200*time.Millisecond || res[0].Direct < 200*time.Millisecond || res[0].Ratio <= 0 {
		t.Fatalf("got %+v; want both sides timed over the 0.2 s sleep", res)
	}
	if res[0].FerryRSS < 1<<20 || res[0].DirectRSS < 1<<20 {
		t.Fatalf("got %+v; want both kernels' peak memory", res)
	}
	bad := writeNotebook(t, "x = 1", "1/0")
	if _, err := NotebookOverhead(ctx, testenv.Python(), []string{bad}, nil, 1, io.Discard); err == nil || !strings.Contains(err.Error(), "t.ipynb") {
		t.Fatalf("a raising cell gave %v; want an error naming the notebook", err)
	}
}

// Both floor hops carry a cell and its output to their own ipykernel and
// back, and Overhead reports all four sides of every cell.
func TestOverheadFloor(t *testing.T) {
	testenv.RequirePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, kind := range []floorKind{floorProxy, floorRelay} {
		cl, stop, err := startFloor(ctx, testenv.Python(), kind)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		r, err := cl.Execute(ctx, "import os\nprint(41 + 1)", client.ExecOptions{})
		stop()
		if err != nil || r.Status != "ok" || r.Stream("stdout") != "42\n" {
			t.Fatalf("%s: got %+v, %v; want the cell's output through the hop", kind, r, err)
		}
	}
	res, err := Overhead(ctx, testenv.Python(), 3, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Ferry.Median <= 0 || r.Direct.Median <= 0 || r.Proxy.Median <= 0 || r.Relay.Median <= 0 || r.ProxyRatio <= 0 || r.RelayRatio <= 0 {
			t.Fatalf("%s: got %+v; want every side timed", r.Cell, r)
		}
	}
}
