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
	testenv.SkipIfShort(t, "a jupyter-server in a network namespace behind tc, 11-20 s")
	testenv.RequireRoot(t, "the link bench's network namespaces and tc")
	testenv.RequireJupyterServer(t)
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
