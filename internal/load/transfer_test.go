package load

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestGigabyteMoveKeepsHeapBounded moves a 1 GB numpy array from the local
// kernel to the remote one through the jupyter-server, sampling this
// process's memory all the while: Ferry relays the payload chunk by chunk,
// so its Go heap must stay far below the payload, and the array must
// arrive bit for bit (SHA-256 computed in both kernels).
func TestGigabyteMoveKeepsHeapBounded(t *testing.T) {
	testenv.SkipIfShort(t, "1 GB moved between real kernels through a jupyter-server, 1-2 min")
	const size int64 = 1_000_000_000
	const heapLimit = 300 << 20
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	n, err := startNotebook(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			n.close()
		}
	}()
	// Random bytes: zstd does not pay on them, so all of it goes over the
	// wire as it is.
	r, err := n.exec(ctx, fmt.Sprintf("import hashlib, numpy as np\na = np.frombuffer(np.random.default_rng(7).bytes(%d), dtype=np.uint8)\nprint(hashlib.sha256(a).hexdigest(), a.nbytes)", size))
	if err != nil {
		t.Fatal(err)
	}
	want := r.Stream("stdout")
	if !strings.HasSuffix(want, fmt.Sprintf(" %d\n", size)) {
		t.Fatalf("local kernel printed %q", want)
	}
	// Start the remote kernel and its agent before measuring.
	if _, err := n.exec(ctx, "%%ferry remote\nimport hashlib\nprint('ready')"); err != nil {
		t.Fatal(err)
	}
	// local -> remote: the remote kernel hashes what arrived.
	peak, err := measureMove(ctx, t, n, "local->remote", "%%ferry remote\nprint(hashlib.sha256(a).hexdigest(), a.nbytes)", want, size)
	if err != nil {
		t.Fatal(err)
	}
	checkPeak(t, "local->remote", peak, size, heapLimit)
	// remote -> local: a new array made remotely, hashed there, read locally.
	r, err = n.exec(ctx, "%%ferry remote\na = a[::-1].copy()\nprint(hashlib.sha256(a).hexdigest(), a.nbytes)")
	if err != nil {
		t.Fatal(err)
	}
	want = r.Stream("stdout")
	peak, err = measureMove(ctx, t, n, "remote->local", "%%ferry local\nprint(hashlib.sha256(a).hexdigest(), a.nbytes)", want, size)
	if err != nil {
		t.Fatal(err)
	}
	checkPeak(t, "remote->local", peak, size, heapLimit)
	ks := n.kernels()
	closed = true
	if err := n.close(); err != nil {
		t.Error(err)
	}
	checkKernelsGone(t, server, []kernels{ks})
	checkGoroutines(t, before, 20*time.Second)
}

// measureMove runs a cell that reads the big array at the other kernel,
// sampling memory meanwhile, and checks it printed want (the hash the
// source kernel computed).
func measureMove(ctx context.Context, t *testing.T, n *notebook, what, code, want string, size int64) (memPeak, error) {
	t.Helper()
	movedBefore := n.Kernel.Stats.Totals()
	runtime.GC()
	base := sampleMem(5*time.Millisecond, time.Second).Stop()
	s := sampleMem(5*time.Millisecond, 4*time.Minute)
	t0 := time.Now()
	r, err := n.exec(ctx, code)
	cell := time.Since(t0)
	peak := s.Stop()
	if err != nil {
		return peak, err
	}
	if got := r.Stream("stdout"); got != want {
		return peak, fmt.Errorf("%s: the target kernel hashed %q, the source %q: the array did not arrive intact", what, got, want)
	}
	tot := n.Kernel.Stats.Totals()
	moved := tot.BytesMoved - movedBefore.BytesMoved
	secs := tot.TransferSeconds - movedBefore.TransferSeconds
	if moved < size {
		return peak, fmt.Errorf("%s: %d bytes moved, want >= %d (did the cell run at the target with the array moved?)", what, moved, size)
	}
	t.Logf("1 GB %s through jupyter-server: %d bytes in %.2fs transfer (%.0f MB/s), cell %s; before: HeapInuse %.1f MB, RSS %.1f MB; during: %s",
		what, moved, secs, float64(moved)/secs/1e6, cell.Round(time.Millisecond), mb(base.HeapInuse), mb(base.RSS), peak)
	return peak, nil
}

func checkPeak(t *testing.T, what string, peak memPeak, size int64, limit uint64) {
	t.Helper()
	if peak.HeapInuse > limit {
		t.Errorf("%s: peak Go heap in use %.0f MB while moving %d MB: Ferry held the payload (limit %d MB)", what, mb(peak.HeapInuse), size/1_000_000, limit>>20)
	}
	// ZeroMQ queues in C, outside the Go heap: the whole process must stay
	// well below the payload too.
	if rssLimit := 2 * limit; peak.RSS > rssLimit {
		t.Errorf("%s: peak RSS %.0f MB while moving %d MB (limit %d MB)", what, mb(peak.RSS), size/1_000_000, rssLimit>>20)
	}
	if peak.Samples < 10 {
		t.Errorf("%s: only %d memory samples during the move", what, peak.Samples)
	}
}
