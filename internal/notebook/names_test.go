package notebook

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
)

// withMarkdown makes a notebook of cells, those starting with "#md " being
// markdown.
func withMarkdown(cells ...string) *Notebook {
	nb := FromCode(cells...)
	for _, c := range nb.Cells {
		if src := c.Source(); strings.HasPrefix(src, "#md ") {
			c["cell_type"] = "markdown"
			delete(c, "outputs")
			delete(c, "execution_count")
		}
	}
	return nb
}

func TestFirstLine(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"x = 1\ny = 2", "x = 1"},
		{"\n\n   import numpy as np  \nx", "import numpy as np"},
		{"", ""},
		{"model = RandomForestClassifier(n_estimators=100).fit(X, y)", "model = RandomForestClassifier(n_estima…"},
		{strings.Repeat("é", 50), strings.Repeat("é", 39) + "…"},
	} {
		if got := FirstLine(c.src); got != c.want {
			t.Errorf("FirstLine(%q) = %q; want %q", c.src, got, c.want)
		}
	}
}

// Markdown cells are not counted: "cell 2 of 3" is the second cell that
// runs, whatever prose stands between.
func TestCellNamesCountCodeCells(t *testing.T) {
	nb := withMarkdown("#md intro", "import os", "#md more", "x = 1", "", "print(x)")
	got := nb.CellNames()
	want := map[int]string{1: "cell 1 of 4 `import os`", 3: "cell 2 of 4 `x = 1`", 4: "cell 3 of 4", 5: "cell 4 of 4 `print(x)`"}
	if len(got) != len(want) {
		t.Fatalf("names %v; want %v", got, want)
	}
	for i, w := range want {
		if got[i].Long() != w {
			t.Errorf("cell at %d is named %q; want %q", i, got[i].Long(), w)
		}
	}
}

// The progress lines and the error of a run name a cell the same way.
func TestRunNamesCellsOneWay(t *testing.T) {
	nb := withMarkdown("#md intro", "a", "#md why", "raise", "never")
	var prog bytes.Buffer
	_, err := Run(context.Background(), nb, &fakeKernel{}, RunOptions{Progress: &prog})
	var ce *CellError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v; want a CellError", err)
	}
	if want := "cell 2 of 3 `raise` raised ZeroDivisionError: division by zero"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q; want it to start %q", err, want)
	}
	if ce.Index != 3 || ce.Name.String() != "cell 2 of 3" {
		t.Errorf("error at index %d named %q; want index 3, cell 2 of 3", ce.Index, ce.Name)
	}
	if want := "cell 1 of 3 `a`\ncell 2 of 3 `raise`\n"; prog.String() != want {
		t.Errorf("progress (not a terminal) %q; want %q", prog.String(), want)
	}
}

// events is a writer that hands each write to the test, so the test can
// wait for a redraw instead of sleeping.
type events chan string

func (e events) Write(b []byte) (int, error) { e <- string(b); return len(b), nil }

// blockingKernel runs every cell until release is closed.
type blockingKernel struct{ release chan struct{} }

func (k blockingKernel) Execute(ctx context.Context, code string, _ client.ExecOptions) (*client.Result, error) {
	<-k.release
	return &client.Result{Status: "ok", Count: 1}, nil
}

func (blockingKernel) Interrupt(context.Context) error { return nil }

// On a terminal the bar's clock ticks while a long cell runs; elsewhere
// nothing is written between cells.
func TestProgressClockTicksDuringACell(t *testing.T) {
	for _, terminal := range []bool{true, false} {
		var mu sync.Mutex
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		clockNow := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(d); return now }
		ticks := make(chan time.Time)
		tickerMade := make(chan time.Duration, 1)
		out := make(events, 16)
		k := blockingKernel{release: make(chan struct{})}
		opt := RunOptions{Progress: out, Terminal: terminal, now: clockNow,
			ticker: func(d time.Duration) (<-chan time.Time, func()) { tickerMade <- d; return ticks, func() {} }}
		done := make(chan error)
		go func() {
			_, err := Run(context.Background(), FromCode("train()"), k, opt)
			done <- err
		}()
		first := recv(t, out)
		if !strings.Contains(first, "cell 1 of 1 `train()`") {
			t.Errorf("terminal %v: first draw %q; want the cell named", terminal, first)
		}
		if terminal {
			select {
			case d := <-tickerMade:
				if d != time.Second {
					t.Errorf("the clock ticks every %s; want every second", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no ticker was started for the running cell")
			}
			for _, want := range []string{"0:01", "0:02", "1:05"} {
				step := time.Second
				if want == "1:05" {
					step = 63 * time.Second
				}
				select {
				case ticks <- advance(step):
				case <-time.After(10 * time.Second):
					t.Fatal("nobody took the tick: the bar does not tick during a cell")
				}
				if got := recv(t, out); !strings.Contains(got, want+"  cell 1 of 1 `train()`") || !strings.HasPrefix(got, "\r\x1b[K") {
					t.Errorf("redraw %q; want it in place, at %s, still naming the cell", got, want)
				}
			}
		}
		close(k.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		close(out)
		var rest []string
		for s := range out {
			rest = append(rest, s)
		}
		if terminal {
			if len(rest) != 2 || !strings.Contains(rest[0], "1 of 1 done") || rest[1] != "\n" {
				t.Errorf("after the cell: %q; want the full bar and the line ended", rest)
			}
		} else if len(rest) != 0 {
			t.Errorf("not a terminal: wrote %q after the cell's line; want nothing (no ticking in logs)", rest)
		}
		select {
		case d := <-tickerMade:
			t.Errorf("terminal %v: a ticker of %s was made", terminal, d)
		default:
		}
	}
}

// recv is the next write, failing the test if none comes (a guard, not
// a synchronisation: the write normally comes at once).
func recv(t *testing.T, out events) string {
	t.Helper()
	select {
	case s := <-out:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no progress was drawn")
		return ""
	}
}

func TestClock(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0:00", 1400 * time.Millisecond: "0:01", 65 * time.Second: "1:05", 3723 * time.Second: "1:02:03"} {
		if got := clock(d); got != want {
			t.Errorf("clock(%s) = %q; want %q", d, got, want)
		}
	}
}
