package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
)

// StateResult compares Ferry's migrations on one notebook under pingpong
// placement with dump-the-session migration at the same points.
type StateResult struct {
	Notebook       string
	Migrations     int
	FerryBytes     int64
	FullBytes      int64
	Reduction      float64 // FullBytes / FerryBytes
	FerrySeconds   float64 // measured: pack, hash, move, verify, load
	DumpSeconds    float64 // measured: dill dump of the whole session
	MigrationRatio map[string]float64
}

// Links the migration times are compared at: bytes per second.
var Links = []struct {
	Name string
	BPS  float64
}{{"1 Gbit", 1e9 / 8}, {"100 Mbit", 100e6 / 8}}

// State runs each notebook under pingpong placement with a second local
// kernel as the remote and the full-session baseline measured at every
// migration. Migration time at a link rate is, for dump-the-session:
// dump + bytes/rate + load (load taken equal to dump); for Ferry: the
// measured move + its bytes/rate.
func State(ctx context.Context, python string, notebooks []string, out io.Writer) ([]StateResult, error) {
	var res []StateResult
	for _, path := range notebooks {
		nb, err := notebook.Read(path)
		if err != nil {
			return nil, err
		}
		remote := backend.NewStandIn(python)
		an := analysis.New(python)
		sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(python), location.Remote: remote},
			Policy: "pingpong", Analyzer: an, BaselineDump: true})
		if err != nil {
			an.Close()
			return nil, err
		}
		_, runErr := notebook.Run(ctx, nb, sess, notebook.RunOptions{})
		tot := sess.Kernel.Stats.Totals()
		sess.Close(context.Background())
		an.Close()
		if runErr != nil {
			return nil, fmt.Errorf("%s: %w", path, runErr)
		}
		r := StateResult{Notebook: strings.TrimSuffix(filepath.Base(path), ".ipynb"), Migrations: tot.Migrations, FerryBytes: tot.BytesMoved,
			FullBytes: tot.FullStateBytes, FerrySeconds: tot.TransferSeconds, DumpSeconds: tot.FullStateSeconds, MigrationRatio: map[string]float64{}}
		if r.FerryBytes > 0 {
			r.Reduction = float64(r.FullBytes) / float64(r.FerryBytes)
		}
		for _, l := range Links {
			base := 2*r.DumpSeconds + float64(r.FullBytes)/l.BPS
			ferry := r.FerrySeconds + float64(r.FerryBytes)/l.BPS
			r.MigrationRatio[l.Name] = base / ferry
		}
		res = append(res, r)
	}
	fmt.Fprintf(out, "%-18s %5s %12s %12s %9s %9s %9s %13s %13s\n", "notebook", "moves", "ferry bytes", "dump bytes", "reduction", "ferry s", "dump s", "faster@1Gbit", "faster@100Mbit")
	var reds []float64
	for _, r := range res {
		fmt.Fprintf(out, "%-18s %5d %12d %12d %8.1fx %9.3f %9.3f %12.1fx %13.1fx\n", r.Notebook, r.Migrations, r.FerryBytes, r.FullBytes, r.Reduction,
			r.FerrySeconds, r.DumpSeconds, r.MigrationRatio["1 Gbit"], r.MigrationRatio["100 Mbit"])
		reds = append(reds, r.Reduction)
	}
	if len(reds) > 0 {
		sort.Float64s(reds)
		med := reds[len(reds)/2]
		if len(reds)%2 == 0 {
			med = (reds[len(reds)/2-1] + reds[len(reds)/2]) / 2
		}
		fmt.Fprintf(out, "state reduction: max %.1fx, median %.1fx\n", reds[len(reds)-1], med)
	}
	return res, nil
}

// Serialisation measures moving one large numpy array between two kernels:
// the agent's serialisation (pickle with out-of-band buffers, chunking,
// hashing) and the whole move through Ferry, in GB/s.
func Serialisation(ctx context.Context, python string, gib float64, out io.Writer) error {
	remote := backend.NewStandIn(python)
	an := analysis.New(python)
	defer an.Close()
	sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(python), location.Remote: remote},
		Policy: "local", Analyzer: an})
	if err != nil {
		return err
	}
	defer sess.Close(context.Background())
	n := int64(gib * (1 << 30) / 8)
	if _, err := sess.Execute(ctx, fmt.Sprintf("import numpy as np\nbig = np.random.default_rng().random(%d)  # unseeded: moved, not recomputed", n), client.ExecOptions{}); err != nil {
		return err
	}
	t0 := time.Now()
	r, err := sess.Execute(ctx, "%%ferry remote\nbig[0] = 1.0", client.ExecOptions{})
	if err != nil || r.Status != "ok" {
		return fmt.Errorf("moving the array: %v %s", err, r.EValue)
	}
	total := time.Since(t0).Seconds()
	tot := sess.Kernel.Stats.Totals()
	// The agent's own serialisation time, in the source kernel.
	ser, err := sess.Execute(ctx, `import time as _t, hashlib as _h
_a = __import__("_ferry_agent")
_t0 = _t.perf_counter()
_f, _, _ = _a.pack(["big"])
_hh = _a._Hasher()
for _c, _p, _ in _a._chunks(_f, False):
    _hh.update(_c, _p)
_hh.hexdigest()
print(_t.perf_counter() - _t0)
del _t, _h, _a, _t0, _f, _hh, _c, _p`, client.ExecOptions{})
	if err != nil {
		return err
	}
	var serSecs float64
	fmt.Sscan(strings.TrimSpace(ser.Text()), &serSecs)
	gb := float64(n*8) / 1e9
	fmt.Fprintf(out, "1 array of %.2f GB: serialisation (pickle 5 out-of-band + chunk + the agent's SHA-256 tree hash) %.2f GB/s; whole move local->remote through Ferry %.2f GB/s (%.2fs, %d bytes sent)\n",
		gb, gb/serSecs, gb/tot.TransferSeconds, tot.TransferSeconds, tot.BytesMoved)
	_ = total
	return nil
}
