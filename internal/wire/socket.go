package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ErrClosed is returned by a closed socket.
var ErrClosed = errors.New("socket closed")

var inprocSeq atomic.Uint64

// Socket owns one ZeroMQ socket. libzmq sockets are not thread-safe, so one
// goroutine does every receive and send; other goroutines queue frames and
// wake it through an inproc pipe. Received frames go to an unbounded queue
// so a slow consumer never blocks sends (which could deadlock a relay).
type Socket struct {
	sock *zmq.Socket
	name string

	wakeMu sync.Mutex
	wake   *zmq.Socket // PUSH side, guarded by wakeMu
	pipe   *zmq.Socket // PULL side, owned by the loop

	outMu sync.Mutex
	out   [][][]byte

	inMu   sync.Mutex
	in     [][][]byte
	inSig  chan struct{}
	done   chan struct{}
	closed atomic.Bool
	err    error
}

// Kind is a ZeroMQ socket type.
type Kind = zmq.Type

// Socket kinds used by Jupyter.
const (
	ROUTER = zmq.ROUTER
	DEALER = zmq.DEALER
	PUB    = zmq.PUB
	SUB    = zmq.SUB
	REP    = zmq.REP
	REQ    = zmq.REQ
)

// Option configures a socket before it binds or connects.
type Option func(*zmq.Socket) error

// WithIdentity sets the routing id (DEALER sockets of one client share it so
// the kernel can route stdin requests to the same client).
func WithIdentity(id string) Option {
	return func(s *zmq.Socket) error { return s.SetIdentity(id) }
}

// Subscribe sets a SUB socket's subscription.
func Subscribe(prefix string) Option {
	return func(s *zmq.Socket) error { return s.SetSubscribe(prefix) }
}

// Bind creates a socket bound to addr.
func Bind(kind Kind, addr, name string, opts ...Option) (*Socket, error) {
	return open(kind, addr, name, true, opts)
}

// Connect creates a socket connected to addr.
func Connect(kind Kind, addr, name string, opts ...Option) (*Socket, error) {
	return open(kind, addr, name, false, opts)
}

func open(kind Kind, addr, name string, bind bool, opts []Option) (*Socket, error) {
	s, err := zmq.NewSocket(kind)
	if err != nil {
		return nil, fmt.Errorf("creating %s socket: %w", name, err)
	}
	fail := func(what string, err error) (*Socket, error) {
		s.Close()
		return nil, fmt.Errorf("%s %s socket on %s: %w", what, name, addr, err)
	}
	_ = s.SetLinger(500 * 1e6) // flush pending output for up to 0.5 s on close
	_ = s.SetRcvhwm(0)
	_ = s.SetSndhwm(0)
	if kind == ROUTER {
		_ = s.SetRouterHandover(true)
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return fail("configuring", err)
		}
	}
	if bind {
		err = s.Bind(addr)
	} else {
		err = s.Connect(addr)
	}
	if err != nil {
		return fail(map[bool]string{true: "binding", false: "connecting"}[bind], err)
	}
	ep := fmt.Sprintf("inproc://ferry-wake-%d", inprocSeq.Add(1))
	pipe, err := zmq.NewSocket(zmq.PULL)
	if err != nil {
		return fail("creating wake pipe for", err)
	}
	wake, err := zmq.NewSocket(zmq.PUSH)
	if err != nil {
		pipe.Close()
		return fail("creating wake pipe for", err)
	}
	_ = wake.SetLinger(0)
	_ = pipe.SetLinger(0)
	if err := pipe.Bind(ep); err != nil {
		pipe.Close()
		wake.Close()
		return fail("binding wake pipe for", err)
	}
	if err := wake.Connect(ep); err != nil {
		pipe.Close()
		wake.Close()
		return fail("connecting wake pipe for", err)
	}
	w := &Socket{sock: s, name: name, wake: wake, pipe: pipe, inSig: make(chan struct{}, 1), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

// Send queues frames for sending. It never blocks on the network.
func (w *Socket) Send(frames [][]byte) error {
	if w.closed.Load() {
		return ErrClosed
	}
	w.outMu.Lock()
	w.out = append(w.out, frames)
	w.outMu.Unlock()
	return w.poke()
}

func (w *Socket) poke() error {
	w.wakeMu.Lock()
	defer w.wakeMu.Unlock()
	if w.wake == nil {
		return ErrClosed
	}
	_, err := w.wake.SendBytes(nil, zmq.DONTWAIT)
	if err != nil && zmq.AsErrno(err) == zmq.Errno(11) { // EAGAIN: a wake is already pending
		return nil
	}
	return err
}

// Recv returns the next received multipart message.
func (w *Socket) Recv(ctx context.Context) ([][]byte, error) {
	for {
		w.inMu.Lock()
		if len(w.in) > 0 {
			f := w.in[0]
			w.in[0] = nil
			w.in = w.in[1:]
			w.inMu.Unlock()
			return f, nil
		}
		w.inMu.Unlock()
		select {
		case <-w.inSig:
		case <-w.done:
			w.inMu.Lock()
			n := len(w.in)
			w.inMu.Unlock()
			if n == 0 {
				return nil, ErrClosed
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the loop and closes the socket, flushing queued sends.
func (w *Socket) Close() {
	if w.closed.Swap(true) {
		<-w.done
		return
	}
	_ = w.poke()
	<-w.done
}

func (w *Socket) loop() {
	defer close(w.done)
	poller := zmq.NewPoller()
	poller.Add(w.sock, zmq.POLLIN)
	poller.Add(w.pipe, zmq.POLLIN)
	for {
		// With sends held back (a DEALER with no peer yet), retry soon.
		timeout := time.Duration(-1)
		if w.held() {
			timeout = 10 * time.Millisecond
		}
		polled, err := poller.PollAll(timeout)
		if err != nil {
			if zmq.AsErrno(err) == zmq.Errno(4) { // EINTR
				continue
			}
			w.err = err
			break
		}
		if polled[1].Events&zmq.POLLIN != 0 {
			for {
				if _, err := w.pipe.RecvBytes(zmq.DONTWAIT); err != nil {
					break
				}
			}
		}
		w.flush()
		if polled[0].Events&zmq.POLLIN != 0 {
			w.drain()
		}
		if w.closed.Load() {
			// Close flushes what can go now; a message for a peer that
			// never came is dropped rather than hanging the close.
			w.flush()
			break
		}
	}
	w.wakeMu.Lock()
	w.wake.Close()
	w.wake = nil
	w.wakeMu.Unlock()
	w.pipe.Close()
	w.sock.Close()
}

// held reports whether sends are waiting for the socket to accept them.
func (w *Socket) held() bool {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	return len(w.out) > 0
}

// flush sends queued messages without blocking: a DEALER with no peer (a
// kernel that is not up yet, or died) would block a plain send forever and
// with it the whole socket. What cannot go now stays queued, in order.
func (w *Socket) flush() {
	w.outMu.Lock()
	out := w.out
	w.out = nil
	w.outMu.Unlock()
	for i, f := range out {
		if len(f) == 0 {
			continue
		}
		if _, err := w.sock.SendBytes(f[0], zmq.DONTWAIT|sndmore(len(f) > 1)); err != nil {
			if zmq.AsErrno(err) == zmq.Errno(11) { // EAGAIN: try again later
				w.outMu.Lock()
				w.out = append(out[i:], w.out...)
				w.outMu.Unlock()
				return
			}
			continue // this message cannot be sent at all; go on with the next
		}
		// The rest of a multipart message cannot block once the first
		// part was accepted.
		for j, p := range f[1:] {
			_, _ = w.sock.SendBytes(p, sndmore(j < len(f)-2))
		}
	}
}

func sndmore(more bool) zmq.Flag {
	if more {
		return zmq.SNDMORE
	}
	return 0
}

func (w *Socket) drain() {
	var got [][][]byte
	for {
		f, err := w.sock.RecvMessageBytes(zmq.DONTWAIT)
		if err != nil {
			break
		}
		got = append(got, f)
	}
	if len(got) == 0 {
		return
	}
	w.inMu.Lock()
	w.in = append(w.in, got...)
	w.inMu.Unlock()
	select {
	case w.inSig <- struct{}{}:
	default:
	}
}

// Flush waits, at most timeout, until what closed sockets still hold has
// gone out, by terminating ZeroMQ's context. Call it once, after closing
// every socket and before the process exits: exiting right away drops
// messages a closed socket has not sent yet (a kernel's last shutdown_reply
// and idle status). No socket can be opened after it.
func Flush(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- zmq.Term() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("ZeroMQ did not flush within %s (a socket is still open)", timeout)
	}
}

// Heartbeat echoes every ping on a REP socket until ctx ends. It runs in its
// own goroutine so it answers even while a cell is busy.
func Heartbeat(ctx context.Context, addr string) error {
	s, err := zmq.NewSocket(zmq.REP)
	if err != nil {
		return fmt.Errorf("creating heartbeat socket: %w", err)
	}
	_ = s.SetLinger(0)
	if err := s.Bind(addr); err != nil {
		s.Close()
		return fmt.Errorf("binding heartbeat socket on %s: %w", addr, err)
	}
	go func() {
		defer s.Close()
		poller := zmq.NewPoller()
		poller.Add(s, zmq.POLLIN)
		for ctx.Err() == nil {
			p, err := poller.Poll(200 * 1e6)
			if err != nil || len(p) == 0 {
				continue
			}
			msg, err := s.RecvMessageBytes(0)
			if err != nil {
				continue
			}
			parts := make([]any, len(msg))
			for i, m := range msg {
				parts[i] = m
			}
			_, _ = s.SendMessage(parts...)
		}
	}()
	return nil
}

// Ping sends one heartbeat to addr and waits for the echo.
func Ping(addr string, payload []byte, timeout time.Duration) error {
	s, err := zmq.NewSocket(zmq.REQ)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetLinger(0)
	_ = s.SetRcvtimeo(timeout)
	_ = s.SetSndtimeo(timeout)
	if err := s.Connect(addr); err != nil {
		return err
	}
	if _, err := s.SendBytes(payload, 0); err != nil {
		return fmt.Errorf("sending heartbeat: %w", err)
	}
	got, err := s.RecvBytes(0)
	if err != nil {
		return fmt.Errorf("no heartbeat echo within %s: %w", timeout, err)
	}
	if string(got) != string(payload) {
		return fmt.Errorf("heartbeat echoed %q, sent %q", got, payload)
	}
	return nil
}
