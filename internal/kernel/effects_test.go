package kernel_test

import (
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
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
