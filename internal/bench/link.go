package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/testbed"
)

// LinkResult is one large move over the emulated link.
type LinkResult struct {
	Direction string
	Bytes     int64
	Seconds   float64
	// Share is the goodput (payload bits per second) over the link's rate.
	Share float64
}

// LinkUse moves mb MiB of incompressible bytes from the laptop kernel to
// the cloud kernel and back through Ferry, over the test bed's link (tc
// tbf at rate, rtt added by the latency proxy), and reports what share of
// the link's rate each move reached. The rate counts IP packets, so TCP's
// headers alone keep the share near 95% at best.
func LinkUse(ctx context.Context, python, rate string, rtt time.Duration, mb int, out io.Writer) ([]LinkResult, error) {
	bw, err := policy.ParseBandwidth(rate)
	if err != nil {
		return nil, err
	}
	tb, err := testbed.Up(testbed.Config{Rate: rate, RTT: rtt})
	if err != nil {
		return nil, err
	}
	defer tb.Down()
	for _, n := range tb.Notes {
		fmt.Fprintln(out, n)
	}
	if tb.NS == "" {
		return nil, fmt.Errorf("the link could not be rate-limited, so its use cannot be measured (run as root on a machine with network namespaces and tc)")
	}
	n0 := len(tb.Notes)
	cloud, err := tb.StartCloud(ctx, python)
	if err != nil {
		return nil, err
	}
	defer cloud.Close()
	for _, n := range tb.Notes[n0:] {
		fmt.Fprintln(out, n)
	}
	remote, err := backend.NewRemote(backend.RemoteConfig{URL: cloud.URL(), Token: cloud.Server.Token})
	if err != nil {
		return nil, err
	}
	an := analysis.New(python)
	defer an.Close()
	sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(python), location.Remote: remote},
		Policy: "local", Analyzer: an, Link: policy.Link{Bandwidth: bw, RTT: rtt.Seconds(), Compression: 1}, RemoteSpeed: 1})
	if err != nil {
		return nil, err
	}
	defer sess.Close(context.Background())
	// Unseeded random bytes: nothing to compress, nothing to recompute.
	cells := []struct{ dir, code string }{
		{"", "%%ferry remote\npass"},
		{"", fmt.Sprintf("%%%%ferry local\nimport numpy as np\nblob = np.frombuffer(np.random.default_rng().bytes(%d), dtype=np.uint8).copy()", mb<<20)},
		{"laptop -> cloud", "%%ferry remote\nblob[0] = 1"},
		{"cloud -> laptop", "%%ferry local\nblob[1] = 2"},
	}
	var res []LinkResult
	for _, c := range cells {
		before := sess.Kernel.Stats.Totals()
		r, err := sess.Execute(ctx, c.code, client.ExecOptions{})
		if err != nil {
			return res, err
		}
		if r.Status != "ok" {
			return res, fmt.Errorf("cell failed: %s: %s", r.EName, r.EValue)
		}
		if c.dir == "" {
			continue
		}
		after := sess.Kernel.Stats.Totals()
		x := LinkResult{Direction: c.dir, Bytes: after.BytesMoved - before.BytesMoved, Seconds: after.TransferSeconds - before.TransferSeconds}
		if x.Bytes < int64(mb)<<20 || x.Seconds <= 0 {
			return res, fmt.Errorf("%s: %d bytes moved in %.2f s; want the whole %d MiB array moved", c.dir, x.Bytes, x.Seconds, mb)
		}
		x.Share = float64(x.Bytes) / x.Seconds / bw
		res = append(res, x)
		fmt.Fprintf(out, "%-16s %8.1f MB in %6.2f s  %7.1f Mbit/s  %5.1f%% of %s\n", c.dir, float64(x.Bytes)/1e6, x.Seconds,
			float64(x.Bytes)*8/x.Seconds/1e6, 100*x.Share, rate)
	}
	return res, nil
}
