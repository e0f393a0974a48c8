package kernel_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// lossyKernel answers every execute_request with busy, one stream output
// and the reply; the idle status of the first dropIdle requests is lost,
// as a kernel's IOPub socket drops messages past its high-water mark when
// a busy jupyter-server reads them too slowly.
type lossyKernel struct {
	in       chan wire.Incoming
	died     chan struct{}
	dropIdle atomic.Int32
}

func (k *lossyKernel) Location() location.Location     { return location.Local }
func (k *lossyKernel) Start(context.Context) error     { return nil }
func (k *lossyKernel) Incoming() <-chan wire.Incoming  { return k.in }
func (k *lossyKernel) Died() <-chan struct{}           { return k.died }
func (k *lossyKernel) Alive() bool                     { return true }
func (k *lossyKernel) Interrupt(context.Context) error { return nil }
func (k *lossyKernel) Shutdown(context.Context) error  { return nil }
func (k *lossyKernel) Status() backend.Status {
	return backend.Status{Location: "local", State: "running"}
}
func (k *lossyKernel) KernelInfo() json.RawMessage {
	return json.RawMessage(`{"language_info": {"name": "python"}}`)
}

func (k *lossyKernel) Send(_ context.Context, ch wire.Channel, m *wire.Message) error {
	if m.Header.MsgType != "execute_request" {
		return nil
	}
	emit := func(ch wire.Channel, t string, content any) {
		msg, err := wire.New(t, "lossy", "k", m.HeaderJSON(), content)
		if err != nil {
			panic(err)
		}
		k.in <- wire.Incoming{Channel: ch, Msg: msg}
	}
	drop := k.dropIdle.Add(-1) >= 0
	go func() {
		emit(wire.IOPub, "status", map[string]string{"execution_state": "busy"})
		emit(wire.IOPub, "stream", map[string]string{"name": "stdout", "text": "out\n"})
		emit(wire.Shell, "execute_reply", map[string]any{"status": "ok", "execution_count": 1, "user_expressions": map[string]any{}})
		if !drop {
			emit(wire.IOPub, "status", map[string]string{"execution_state": "idle"})
		}
	}()
	return nil
}

// TestLostIdleStatusDoesNotStallTheKernel: a backend whose idle status
// never comes after its reply must not hang the cell, nor every cell after
// it: once its IOPub stays silent for the grace period Ferry goes on, with
// the output and the reply relayed.
func TestLostIdleStatusDoesNotStallTheKernel(t *testing.T) {
	const grace = 400 * time.Millisecond
	defer kernel.SetIdleGrace(grace)()
	k := &lossyKernel{in: make(chan wire.Incoming, 64), died: make(chan struct{})}
	k.dropIdle.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := client.StartFerry(ctx, kernel.Config{Backends: map[location.Location]backend.Backend{"local": k}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(context.Background())
	for i, lost := range []bool{true, false} {
		t0 := time.Now()
		r, err := sess.Execute(ctx, "print('out')", client.ExecOptions{})
		d := time.Since(t0)
		if err != nil {
			t.Fatalf("cell %d (idle lost: %v): %v", i, lost, err)
		}
		if r.Status != "ok" || r.Text() != "out\n" {
			t.Fatalf("cell %d: status %q, output %q", i, r.Status, r.Text())
		}
		if lost && (d < grace || d > grace+5*time.Second) {
			t.Errorf("cell with a lost idle status took %s, want the grace period %s and a little", d, grace)
		}
		if !lost && d > grace {
			t.Errorf("cell after it took %s: should not wait for a grace period", d)
		}
	}
}
