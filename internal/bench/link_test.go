package bench

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// A move over the rate-limited link is whole, and cannot beat the link:
// random bytes do not compress, so a share over the rate would mean the
// link was not limited or the bytes were miscounted.
func TestLinkUse(t *testing.T) {
	requireTestbed(t, "a jupyter-server in a network namespace behind tc, 11-20 s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := LinkUse(ctx, testenv.Python(), "50mbit", 10*time.Millisecond, 8, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("got %d moves, want one each way: %+v", len(res), res)
	}
	for _, r := range res {
		if r.Bytes < 8<<20 || r.Share <= 0 || r.Share > 1.02 {
			t.Errorf("%s: %d bytes at %.1f%% of the link; want the whole 8 MiB at no more than the link's rate", r.Direction, r.Bytes, 100*r.Share)
		}
	}
}

// requireTestbed skips in -short mode (saying why: what the test starts)
// and fails without root or jupyter-server, which the test bed needs.
func requireTestbed(t *testing.T, why string) {
	t.Helper()
	testenv.SkipIfShort(t, why)
	testenv.RequireRoot(t, "the test bed's network namespaces, cgroup and tc")
	testenv.RequireJupyterServer(t)
}
