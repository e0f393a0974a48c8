package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"

	zmq "github.com/pebbe/zmq4"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/wire"
)

// The floor of a relaying kernel (issue 15): what one more hop costs a
// cell before Ferry does anything with it. Ferry is a kernel in front of
// the user's kernels, so every message crosses one more process; these two
// hops cross it and do nothing else, forwarding every frame verbatim
// (same key, so nothing is verified or signed again), in front of their
// own plain ipykernel. Measured side by side with Ferry and with the
// client straight on ipykernel, they split Ferry's overhead into the
// hop's and Ferry's own.
//
//   - proxy is libzmq's zmq_proxy, in C, one per channel: the least any
//     ZeroMQ relay can cost.
//   - relay is the same relay built on Ferry's wire.Socket (a reader
//     goroutine per socket waiting in Go's netpoller, sends under a lock):
//     what Ferry's transport costs before its routing.
type floorKind int

const (
	floorProxy floorKind = iota
	floorRelay
)

func (k floorKind) String() string {
	if k == floorProxy {
		return "zmq_proxy"
	}
	return "bare relay"
}

// startFloor starts a plain ipykernel with a verbatim relay of kind in
// front of it and a client connected to the relay; stop undoes all three.
func startFloor(ctx context.Context, python string, kind floorKind) (*client.Client, func(), error) {
	plain := backend.NewLocal(python)
	if err := plain.Start(ctx); err != nil {
		return nil, nil, err
	}
	kinfo, _ := plain.ConnInfo()
	front, err := wire.NewLocalConnInfo()
	if err != nil {
		plain.Shutdown(context.Background())
		return nil, nil, err
	}
	front.Key, front.SignatureScheme = kinfo.Key, kinfo.SignatureScheme
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var closers []func()
	stop := func() {
		cancel()
		for _, c := range closers {
			c()
		}
		wg.Wait()
		plain.Shutdown(context.Background())
	}
	chans := []struct {
		front, back int
		iopub       bool
	}{{front.ShellPort, kinfo.ShellPort, false}, {front.ControlPort, kinfo.ControlPort, false},
		{front.StdinPort, kinfo.StdinPort, false}, {front.IOPubPort, kinfo.IOPubPort, true}}
	for _, c := range chans {
		var err error
		if kind == floorProxy {
			err = proxyPair(front.Addr(c.front), kinfo.Addr(c.back), c.iopub, &wg, &closers)
		} else {
			err = relayPair(rctx, front.Addr(c.front), kinfo.Addr(c.back), c.iopub, &wg, &closers)
		}
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("%s in front of ipykernel: %w", kind, err)
		}
	}
	if err := wire.Heartbeat(rctx, front.Addr(front.HBPort)); err != nil {
		stop()
		return nil, nil, err
	}
	cl, err := client.Connect(front)
	if err != nil {
		stop()
		return nil, nil, err
	}
	stopAll := func() { cl.Close(); stop() }
	if _, err := cl.WaitReady(ctx); err != nil {
		stopAll()
		return nil, nil, fmt.Errorf("%s in front of ipykernel: %w", kind, err)
	}
	return cl, stopAll, nil
}

// proxyPair runs zmq_proxy between a bound front socket and one connected
// to the kernel (ROUTER-DEALER, or XPUB-XSUB for IOPub, so subscriptions
// pass through). zmq_proxy returns once the context terminates or a socket
// is closed under it; libzmq sockets are not thread-safe, so they are
// closed from the proxy's own goroutine, after a control socket says
// TERMINATE.
func proxyPair(frontAddr, backAddr string, iopub bool, wg *sync.WaitGroup, closers *[]func()) error {
	fk, bk := zmq.ROUTER, zmq.DEALER
	if iopub {
		fk, bk = zmq.XPUB, zmq.XSUB
	}
	f, err := zmq.NewSocket(fk)
	if err != nil {
		return err
	}
	b, err := zmq.NewSocket(bk)
	if err != nil {
		f.Close()
		return err
	}
	ctlAddr := fmt.Sprintf("inproc://floor-%p", f)
	ctl, err := zmq.NewSocket(zmq.PAIR)
	if err != nil {
		f.Close()
		b.Close()
		return err
	}
	ctlPeer, err := zmq.NewSocket(zmq.PAIR)
	if err != nil {
		f.Close()
		b.Close()
		ctl.Close()
		return err
	}
	closeAll := func() {
		for _, s := range []*zmq.Socket{f, b, ctl} {
			s.SetLinger(0)
			s.Close()
		}
	}
	if err := errors.Join(f.Bind(frontAddr), b.Connect(backAddr), ctl.Bind(ctlAddr), ctlPeer.Connect(ctlAddr)); err != nil {
		closeAll()
		ctlPeer.Close()
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer closeAll()
		_ = zmq.ProxySteerable(f, b, nil, ctl)
	}()
	*closers = append(*closers, func() {
		_, _ = ctlPeer.Send("TERMINATE", 0)
		ctlPeer.Close()
	})
	return nil
}

// relayPair forwards frames both ways between wire sockets, one goroutine
// per direction, as Ferry's transport would without its routing.
func relayPair(ctx context.Context, frontAddr, backAddr string, iopub bool, wg *sync.WaitGroup, closers *[]func()) error {
	fk, bk, opts := wire.ROUTER, wire.DEALER, []wire.Option(nil)
	if iopub {
		fk, bk, opts = wire.PUB, wire.SUB, []wire.Option{wire.Subscribe("")}
	}
	f, err := wire.Bind(fk, frontAddr, "floor-front")
	if err != nil {
		return err
	}
	b, err := wire.Connect(bk, backAddr, "floor-back", opts...)
	if err != nil {
		f.Close()
		return err
	}
	pump := func(from, to *wire.Socket) {
		defer wg.Done()
		for {
			m, err := from.Recv(ctx)
			if err != nil {
				return
			}
			_ = to.Send(m)
		}
	}
	wg.Add(1)
	go pump(b, f)
	if !iopub { // a PUB takes no input
		wg.Add(1)
		go pump(f, b)
	}
	*closers = append(*closers, func() { f.Close(); b.Close() })
	return nil
}
