package kernel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// TestRebuildIsLazy: after the cloud kernel died, a laptop cell rebuilds
// only what it reads; a value nobody read yet is not rebuilt (its cell does
// not run again) until a cell reads it.
func TestRebuildIsLazy(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	run(t, sess, "%%ferry remote\na = 1")
	run(t, sess, "%%ferry remote\nb = 2")
	died := remote.Died()
	remote.Kill()
	<-died
	if r := run(t, sess, "print(a)"); r.Stream("stdout") != "1\n" {
		t.Fatalf("print(a) after the death: %s %q", r.Status, r.Text())
	}
	if n := local.Executed("b = 2") + remote.Executed("b = 2"); n != 1 {
		t.Fatalf("b = 2 ran %d times; a cell that reads only a re-ran it", n)
	}
	if r := run(t, sess, "print(7)"); strings.Contains(r.Text(), "rebuil") {
		t.Fatalf("a cell that reads nothing lost rebuilt something: %q", r.Text())
	}
	r := run(t, sess, "print(b)")
	if r.Stream("stdout") != "2\n" || !strings.Contains(r.Stream("stderr"), "Ferry: rebuilding b on the laptop") {
		t.Fatalf("print(b), once needed: %s %q", r.Status, r.Text())
	}
	if tot := sess.Kernel.Stats.Totals(); tot.VarsLost != 2 || tot.VarsRebuilt != 2 {
		t.Fatalf("lost %d, rebuilt %d; want 2 and 2", tot.VarsLost, tot.VarsRebuilt)
	}
}

// TestRebuildNeverReplaysUnfinishedCells: a value made by a cell that was
// interrupted, raised, or read stdin is not rebuilt by running that cell
// again, hidden, after its kernel died (the issue: a local cell waited
// 63 s while Ferry re-ran an interrupted 60 s sleep and an input()). The
// death is told in one line naming the value and why; a cell reading it
// fails without running, naming the value and the cell to run again;
// other values are rebuilt; re-running the cell makes the value again.
func TestRebuildNeverReplaysUnfinishedCells(t *testing.T) {
	tests := []struct {
		name, code string
		opts       client.ExecOptions
		interrupt  bool
		why        string
	}{
		{"interrupted", "x = 1\nsleep(60)", client.ExecOptions{}, true, "was interrupted"},
		{"raised", "x = 1\nraise ValueError(\"no\")", client.ExecOptions{}, false, "raised an error"},
		{"read stdin", "x = input(\"name? \")", client.ExecOptions{Input: func(string, bool) (string, error) { return "ann", nil }}, false, "read input from you"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
			sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
			run(t, sess, "%%ferry remote\nz = 3")
			code := "%%ferry remote\n" + tt.code
			if tt.interrupt {
				runInterrupted(t, sess, remote, code, tt.code)
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := sess.Execute(ctx, code, tt.opts); err != nil {
					t.Fatal(err)
				}
			}
			died := remote.Died()
			remote.Kill()
			<-died
			t0 := time.Now()
			r := run(t, sess, "print(z)")
			if r.Stream("stdout") != "3\n" {
				t.Fatalf("z was not rebuilt: %s %q", r.Status, r.Text())
			}
			if d := time.Since(t0); d > 20*time.Second {
				t.Fatalf("print(z) took %s", d)
			}
			death := r.Stream("stderr")
			for _, w := range []string{"Ferry: the cloud kernel died; lost with it: z (", "for good: x (the cell that made it (In [2]: ", tt.why, "re-run In [2] to make it again)"} {
				if !strings.Contains(death, w) {
					t.Errorf("the death notice lacks %q:\n%s", w, death)
				}
			}
			if n := strings.Count(death, "the cloud kernel died;"); n != 1 {
				t.Errorf("the death told %d times:\n%s", n, death)
			}
			if n := local.Executed(tt.code) + remote.Executed(tt.code); n != 1 {
				t.Fatalf("the %s cell ran %d times; it must never be re-run hidden", tt.name, n)
			}
			r = run(t, sess, "y = x + 1")
			if r.Status != "error" || r.EName != "FerryError" {
				t.Fatalf("a cell reading x: %s %s %q", r.Status, r.EName, r.EValue)
			}
			for _, w := range []string{"this cell reads x, lost when the cloud kernel died", tt.why, "re-run In [2] to make it again", "this cell did not run"} {
				if !strings.Contains(r.EValue, w) {
					t.Errorf("the error lacks %q: %s", w, r.EValue)
				}
			}
			if local.Executed("y = x + 1")+remote.Executed("y = x + 1") != 0 {
				t.Error("the cell reading the lost x ran")
			}
			if n := local.Executed(tt.code) + remote.Executed(tt.code); n != 1 {
				t.Fatalf("the %s cell ran %d times", tt.name, n)
			}
			// The user makes x again: the loss is over.
			run(t, sess, "x = 10")
			if r := run(t, sess, "print(x + 1)"); r.Stream("stdout") != "11\n" || r.Status != "ok" {
				t.Fatalf("after x was bound again: %s %q %s", r.Status, r.Text(), r.EValue)
			}
		})
	}
}

// runInterrupted runs code and interrupts it once it runs at k (body is
// the code k sees), returning when the cell ended.
func runInterrupted(t *testing.T, sess *client.Session, k *backendtest.Kernel, code, body string) {
	t.Helper()
	res := make(chan *client.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := sess.Execute(ctx, code, client.ExecOptions{})
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case r := <-res:
			if r == nil || r.EName != "KeyboardInterrupt" {
				t.Fatalf("the interrupted cell ended %+v", r)
			}
			return
		case <-deadline:
			t.Fatal("the cell was not interrupted")
		case <-tick.C:
			// An interrupt before the cell runs does nothing, so it is
			// sent until the cell ends.
			if k.Executed(body) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := sess.Interrupt(ctx); err != nil {
					t.Error(err)
				}
				cancel()
			}
		}
	}
}
