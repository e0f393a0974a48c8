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
	"github.com/ferry-nb/ferry/internal/wire"
)

// Remote compares a trivial cell on a jupyter-server kernel through Ferry
// with the same cell sent by a plain WebSocket client (Ferry's Remote
// backend used directly, no proxy kernel in between), interleaved, and
// measures a large transfer's throughput over loopback.
func Remote(ctx context.Context, python string, rounds int, transferMB int, out io.Writer) error {
	srv, err := backend.StartJupyterServer(ctx, python, 0)
	if err != nil {
		return err
	}
	defer srv.Stop()
	an := analysis.New(python)
	defer an.Close()
	r, err := backend.NewRemote(backend.RemoteConfig{URL: srv.URL, Token: srv.Token})
	if err != nil {
		return err
	}
	sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(python), location.Remote: r},
		Policy: "remote", Analyzer: an})
	if err != nil {
		return err
	}
	defer sess.Close(context.Background())
	plain, err := backend.NewRemote(backend.RemoteConfig{URL: srv.URL, Token: srv.Token})
	if err != nil {
		return err
	}
	if err := plain.Start(ctx); err != nil {
		return err
	}
	defer plain.Shutdown(context.Background())

	var tf, td []time.Duration
	for i := 0; i < rounds+5; i++ {
		t0 := time.Now()
		if res, err := sess.Execute(ctx, "pass", client.ExecOptions{}); err != nil || res.Status != "ok" {
			return fmt.Errorf("cell through Ferry: %v", err)
		}
		d1 := time.Since(t0)
		t0 = time.Now()
		if err := directExecute(ctx, plain, "pass"); err != nil {
			return err
		}
		d2 := time.Since(t0)
		if i >= 5 {
			tf, td = append(tf, d1), append(td, d2)
		}
	}
	f, d := summarise(tf), summarise(td)
	fmt.Fprintf(out, "%-26s %12s %12s\n", "trivial remote cell", "median", "p95")
	fmt.Fprintf(out, "%-26s %12s %12s\n", "through Ferry", f.Median.Round(time.Microsecond), f.P95.Round(time.Microsecond))
	fmt.Fprintf(out, "%-26s %12s %12s\n", "plain WebSocket client", d.Median.Round(time.Microsecond), d.P95.Round(time.Microsecond))
	fmt.Fprintf(out, "ratio (median): %.3f\n", float64(f.Median)/float64(d.Median))

	// Throughput: a state move of transferMB of incompressible data from
	// the laptop kernel to the server's kernel, through Ferry. The RNG is
	// unseeded so the value cannot be recomputed remotely instead.
	n := transferMB << 20 / 8
	if _, err := sess.Execute(ctx, fmt.Sprintf("%%%%ferry local\nimport numpy as np\nblob = np.random.default_rng().random(%d)", n), client.ExecOptions{}); err != nil {
		return err
	}
	before := sess.Kernel.Stats.Totals()
	t0 := time.Now()
	if res, err := sess.Execute(ctx, "%%ferry remote\nblob[0] = 1.0", client.ExecOptions{}); err != nil || res.Status != "ok" {
		return fmt.Errorf("moving %d MB: %v", transferMB, err)
	}
	el := time.Since(t0)
	after := sess.Kernel.Stats.Totals()
	moved := after.BytesMoved - before.BytesMoved
	secs := after.TransferSeconds - before.TransferSeconds
	if moved == 0 {
		return fmt.Errorf("the %d MB value was not moved (recomputed or already there); no throughput to report", transferMB)
	}
	fmt.Fprintf(out, "%d MB state move laptop -> server kernel over loopback: %.1f MB/s (%.2fs transfer, %.2fs cell)\n",
		transferMB, float64(moved)/1e6/secs, secs, el.Seconds())
	return nil
}

// directExecute runs code on a backend with no Ferry kernel in between.
func directExecute(ctx context.Context, b backend.Backend, code string) error {
	m, err := wire.New("execute_request", "bench", "bench", nil, map[string]any{"code": code, "silent": false, "store_history": true,
		"user_expressions": map[string]any{}, "allow_stdin": false})
	if err != nil {
		return err
	}
	if err := b.Send(ctx, wire.Shell, m); err != nil {
		return err
	}
	reply, idle := false, false
	for !reply || !idle {
		select {
		case in := <-b.Incoming():
			if in.Msg.ParentID() != m.Header.MsgID {
				continue
			}
			if in.Channel == wire.Shell {
				reply = true
			} else if in.Msg.Header.MsgType == "status" {
				var st struct {
					S string `json:"execution_state"`
				}
				if in.Msg.Decode(&st) == nil && st.S == "idle" {
					idle = true
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
