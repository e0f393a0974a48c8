package kernel_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recall"
)

// TestRecallPlacesTheSecondSession: a cell that sleeps 2 s reads a value
// that takes 0.4 s to move (random bytes made on the laptop: not made again
// elsewhere). Its first run gives nothing to go on, so it
// runs on the laptop where the value is; the next session, recalling what
// it took (package recall, through the file), sends it to the 4x cloud.
func TestRecallPlacesTheSecondSession(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recall.json")
	root := t.TempDir()
	const load, slow = "%%ferry local\nx = noise(400000)", "sleep(2)\ny = len(x)"
	session := func() (remoteRuns int, remembered int) {
		st, err := recall.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		remembered = st.Len()
		local, remote := backendtest.New(location.Local), backendtest.New(location.Remote)
		cfg := kernel.Config{Policy: "ferry", RemoteSpeed: 4, Recall: st, Root: root,
			Link: policy.Link{Bandwidth: 1e6, RTT: 0.001, Compression: 1}}
		sess := fakeSession(t, cfg, local, remote)
		run(t, sess, load)
		run(t, sess, slow)
		n := remote.Executed(slow)
		if err := sess.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		return n, remembered
	}
	first, known := session()
	if known != 0 || first != 0 {
		t.Fatalf("first session: %d cells recalled, the slow cell ran %d times in the cloud; want 0 and 0 (the test needs it on the laptop to prove anything)", known, first)
	}
	second, known := session()
	if known != 2 {
		t.Fatalf("the second session recalled %d cells, want both of the first's (saved at shutdown)", known)
	}
	if second != 1 {
		t.Fatalf("second session: the slow cell ran %d times in the cloud, want once: its 2 s were recalled", second)
	}
}
