package kernel_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// errCloudDown is what a cloud that cannot be reached answers a start.
var errCloudDown = errors.New("cannot reach remote server http://127.0.0.1:9: dial tcp 127.0.0.1:9: connect: connection refused")

// mustFailPinned checks a %%ferry remote cell failed with one clear
// FerryError naming want, and that nothing ran on the laptop in its place.
func mustFailPinned(t *testing.T, r *client.Result, local *backendtest.Kernel, body string, want ...string) {
	t.Helper()
	if r.Status != "error" || r.EName != "FerryError" {
		t.Fatalf("a %%%%ferry remote cell whose cloud cannot be used: status %s, %s: %s, output %q; want a FerryError", r.Status, r.EName, r.EValue, r.Text())
	}
	for _, w := range want {
		if !strings.Contains(r.EValue, w) {
			t.Errorf("the error does not say %q: %s", w, r.EValue)
		}
	}
	if n := local.Executed(body); n != 0 {
		t.Errorf("the laptop ran the %%%%ferry remote cell's body %d times in its place", n)
	}
	var errs int
	for _, o := range r.Outputs {
		if o["output_type"] == "error" {
			errs++
		}
	}
	if errs != 1 {
		t.Errorf("%d error outputs, want one: %v", errs, r.Outputs)
	}
}

// A %%ferry remote cell never runs on the laptop: when its inputs cannot
// reach the cloud because the cloud kernel cannot start, the cell fails
// with one error saying so and how to fix it, nothing runs in its place,
// and it is counted neither as remote nor as local. Before, the moves'
// failure sent the cell to "where the data is", the laptop.
func TestPinnedRemoteCloudDownWithState(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote, backendtest.WithFailStart(errCloudDown))
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	run(t, sess, "x = 41")
	const body = "y = x + 1\nprint(y)"
	r := run(t, sess, "%%ferry remote\n"+body)
	mustFailPinned(t, r, local, body, "remote kernel could not start", "connection refused", "--remote", "FERRY_TOKEN")
	if _, ok := local.Value("y"); ok {
		t.Error("y is bound on the laptop: the cell ran there")
	}
	if tot := sess.Kernel.Stats.Totals(); tot.CellsRemote != 0 || tot.CellsLocal != 1 {
		t.Errorf("counted %d local and %d remote cells; want the first cell local and the failed one nowhere", tot.CellsLocal, tot.CellsRemote)
	}
	// The session goes on, on the laptop, with x intact.
	if got := run(t, sess, "print(x)").Text(); got != "41\n" {
		t.Errorf("after the failed cell print(x) gave %q", got)
	}
}

// The same with nothing to move: the cloud start fails when the cell is
// forwarded, and the message says what failed and how to fix it.
func TestPinnedRemoteCloudDownNoState(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote, backendtest.WithFailStart(errCloudDown))
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	const body = "print(1)"
	r := run(t, sess, "%%ferry remote\n"+body)
	mustFailPinned(t, r, local, body, "remote kernel could not start", "connection refused", "--remote", "FERRY_TOKEN")
	if tot := sess.Kernel.Stats.Totals(); tot.CellsRemote != 0 || tot.CellsLocal != 0 {
		t.Errorf("counted %d local and %d remote cells; want the failed cell counted nowhere", tot.CellsLocal, tot.CellsRemote)
	}
}

// An input that cannot be pickled does not send a %%ferry remote cell to
// the laptop either: the pin is the user's word.
func TestPinnedRemoteUnmovableInput(t *testing.T) {
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	run(t, sess, "f = opened()")
	const body = "g = f"
	r := run(t, sess, "%%ferry remote\n"+body)
	mustFailPinned(t, r, local, body, "f (open file)", "%%ferry remote")
	if _, ok := local.Value("g"); ok {
		t.Error("g is bound on the laptop: the cell ran there")
	}
	if tot := sess.Kernel.Stats.Totals(); tot.CellsRemote != 0 || tot.CellsLocal != 1 {
		t.Errorf("counted %d local and %d remote cells; want the first cell local and the failed one nowhere", tot.CellsLocal, tot.CellsRemote)
	}
}
