package kernel_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

// TestWarmStartBeforeTheExpectedCell: a cell pinned to the cloud follows
// a laptop cell, the user thinking a second before it; the cloud kernel
// (a 300 ms start) is let go after idle in between. Once Ferry has seen
// the pattern, it starts the kernel again while the user thinks, before
// that cell comes and without any request: the cell waits for no start,
// and its one line says the kernel was started while the user thought.
// A kernel warmed for a cell that does not come is let go again.
func TestWarmStartBeforeTheExpectedCell(t *testing.T) {
	const think = time.Second // the user's, not a synchronisation
	local := backendtest.New(location.Local)
	remote := backendtest.New(location.Remote, backendtest.WithStartDelay(300*time.Millisecond))
	tr := trace.NewMemory()
	sess := fakeSession(t, kernel.Config{Policy: "ferry", CloudIdle: 100 * time.Millisecond, Trace: tr}, local, remote)
	cloud, laptop := "%%ferry remote\nn = n + 1", "print(n)"
	run(t, sess, "n = 0")
	for i := range 2 {
		time.Sleep(think)
		run(t, sess, cloud)
		run(t, sess, laptop)
		waitReleased(t, remote, i+1)
	}
	// Seen twice: the laptop cell is followed by the cloud cell, after
	// about a second. The kernel starts a third time with no cell sent.
	deadline := time.Now().Add(10 * time.Second)
	for remote.Starts() < 3 || !remote.Alive() {
		if time.Now().After(deadline) {
			t.Fatalf("the cloud kernel was not started again in think time (%d starts, alive %v)", remote.Starts(), remote.Alive())
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := run(t, sess, cloud)
	if r.Stream("stdout") != "" || r.EName != "" {
		t.Fatalf("the cloud cell after the warm start: %s %s %q", r.EName, r.EValue, r.Text())
	}
	if got := r.Stream("stderr"); !strings.Contains(got, "a new one started while you thought, for this cell, 1 values brought to it") {
		t.Fatalf("the cloud cell after the warm start said %q; want that its kernel was started while the user thought", got)
	}
	if out := run(t, sess, laptop).Stream("stdout"); out != "3\n" {
		t.Fatalf("print(n) after three cloud increments: %q", out)
	}
	evs := tr.Events()
	if e := evs[len(evs)-2]; e.Loc != location.Remote || e.StartSeconds > 0 {
		t.Errorf("the cloud cell after the warm start ran at %s and waited %.2f s for a start; want the cloud and none", e.Loc, e.StartSeconds)
	}
	if tot := sess.Kernel.Stats.Totals(); tot.WarmStarts != 1 || remote.Starts() != 3 {
		t.Fatalf("%d warm starts, %d starts; want 1 and 3", tot.WarmStarts, remote.Starts())
	}
	if st := run(t, sess, "%ferry status").Text(); !strings.Contains(st, "started again while you thought") {
		t.Fatalf("%%ferry status does not count the start in think time:\n%s", st)
	}
	// The user does not come back: the kernel is let go after the laptop
	// cell, started again for the cloud cell expected next, and, when that
	// does not come either, let go again by its own idle clock, with no
	// request to wake Ferry.
	deadline = time.Now().Add(20 * time.Second)
	for remote.Starts() < 4 || remote.Releases() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("after the last cells: %d starts, %d releases; want the kernel warmed again and let go again (4, 4)", remote.Starts(), remote.Releases())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if remote.Alive() {
		t.Fatal("the kernel warmed for a cell that never came is still running")
	}
}
