package kernel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/wire"
)

// TestCellWithEffectIsNotRecomputed: the same large, cheap value as in
// TestPlanRecomputesInsteadOfMoving, but the cell that made it also had a
// side effect (it posted somewhere): it is not re-run hidden to make the
// value at the cloud; the value moves, and the effect happened once.
func TestCellWithEffectIsNotRecomputed(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
	sess := fakeSession(t, kernel.Config{Policy: "local", Link: policy.Link{Bandwidth: 1e6, RTT: 0.001}}, local, remote)
	run(t, sess, "x = blob(4000000)\neffect(\"post\")")
	r := run(t, sess, "%%ferry remote\nprint(len(x))")
	if r.Stream("stdout") != "4000000\n" {
		t.Fatalf("cloud cell printed %q (%s), want 4000000", r.Text(), r.Status)
	}
	if n := local.Effects("post") + remote.Effects("post"); n != 1 {
		t.Fatalf("the effect ran %d times, want once: the cell was re-run behind the user's back", n)
	}
	if tot := sess.Kernel.Stats.Totals(); tot.Recomputed != 0 || tot.BytesMoved < 4000000 {
		t.Fatalf("recomputed %d, moved %d bytes; want x moved, nothing recomputed", tot.Recomputed, tot.BytesMoved)
	}
}

// TestRebuildSkipsCellWithEffect: after the cloud kernel died, a value made
// by a cell with a side effect is not rebuilt by running that cell again;
// the user is told it is lost and why, and the effect happened once.
func TestRebuildSkipsCellWithEffect(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	run(t, sess, "%%ferry remote\ny = 5\neffect(\"post\")")
	run(t, sess, "%%ferry remote\nz = 7")
	died := remote.Died()
	remote.Kill()
	<-died
	r := run(t, sess, "print(z)")
	if got := r.Stream("stdout"); got != "7\n" {
		t.Fatalf("z (no effect) was not rebuilt: %q (%s)", got, r.Status)
	}
	if e := r.Stream("stderr"); !strings.Contains(e, "y") || !strings.Contains(e, "side effects") {
		t.Fatalf("the cell's notice does not say y is lost for its side effects: %q", e)
	}
	if n := local.Effects("post") + remote.Effects("post"); n != 1 {
		t.Fatalf("the effect ran %d times, want once", n)
	}
}

// A request ipykernel aborts (it arrived while the kernel cleared its
// queue after an error) did not run: as on ipykernel it takes no
// execution count and leaves no history, and the same cell sent again
// gets the number it would have had.
func TestAbortedCellTakesNoNumber(t *testing.T) {
	local, remote := backendtest.New(location.Local, backendtest.WithAbortOnce("y = 2")), backendtest.New(location.Remote)
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	if r := run(t, sess, "x = 1"); r.Count != 1 {
		t.Fatalf("first cell count %d, want 1", r.Count)
	}
	// ipykernel's aborted reply carries no execution_count.
	if r := run(t, sess, "y = 2"); r.Status != "aborted" || r.Reply["execution_count"] != nil {
		t.Fatalf("aborted cell: status %q, execution_count %v; want aborted and none", r.Status, r.Reply["execution_count"])
	}
	if r := run(t, sess, "y = 2"); r.Status != "ok" || r.Count != 2 {
		t.Fatalf("the cell sent again: status %q count %d, want ok and 2", r.Status, r.Count)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := sess.Request(ctx, wire.Shell, "history_request", map[string]any{"hist_access_type": "tail", "n": 10, "output": false, "raw": true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		History [][]any `json:"history"`
	}
	if err := json.Unmarshal(reply.Content, &c); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range c.History {
		got = append(got, fmt.Sprint(h[1], " ", h[2]))
	}
	if want := []string{"1 x = 1", "2 y = 2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history %q, want %q", got, want)
	}
}
