package wire

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// ErrClosed is returned by a closed socket.
var ErrClosed = errors.New("socket closed")

// Socket owns one ZeroMQ socket. libzmq sockets are not thread-safe, so
// every call on it is made under mu, from whichever goroutine sends; one
// reader goroutine per socket waits for input in Go's own netpoller on the
// socket's ZMQ_FD. No OS thread parks in zmq_poll and no send hops through
// a wake-up pipe (that design took 175 µs a loopback round trip where
// blocking libzmq calls take 58 µs, and cost Ferry 1.20x a plain client on
// a trivial cell; this one 1.12x). Received frames go to a queue so a slow
// consumer never blocks sends (which could deadlock a relay). The queue is
// unbounded unless BoundInput bounds it in bytes (Ferry's SUB on a
// kernel's IOPub).
type Socket struct {
	name string

	mu    sync.Mutex
	sock  *zmq.Socket // nil once closed
	out   [][][]byte  // sends a full or peerless socket held back, in order
	retry *time.Timer // flushes out again while it holds anything

	// fd is a dup of ZMQ_FD: readable (edge-triggered) when the socket may
	// have input, as libzmq documents for event loops.
	fd *os.File
	rc syscall.RawConn

	inMu    sync.Mutex
	in      [][][]byte
	inBytes atomic.Int64 // bytes in in
	// inLimit bounds inBytes (0: unbounded; see BoundInput). Past it the reader stops
	// draining libzmq and sets paused; Recv drains again once the queue
	// is down to half.
	inLimit int64
	paused  atomic.Bool
	inSig   chan struct{}
	done    chan struct{} // closed when the reader has stopped
	closed  atomic.Bool
}

// Kind is a ZeroMQ socket type.
type Kind = zmq.Type

const (
	// boundedQueue bounds a BoundInput socket's queue of received bytes:
	// with boundedHWM messages in libzmq's pipe and the TCP buffers, a
	// relay that falls behind holds some 30-60 MB of a flood of 1 MiB
	// messages (measured: +29 MB in TestIOPubFlood, +41 MB with Ferry
	// stopped for 4 s mid-flood, against +150 MB unbounded), and some
	// 12k small ones before the kernel's own socket holds the rest.
	boundedQueue = 8 << 20
	// boundedHWM is a BoundInput socket's receive high-water mark
	// (messages): libzmq then stops reading TCP, so the publisher holds
	// what the subscriber cannot take yet (zero, unbounded, would pull
	// every byte in).
	boundedHWM = 8
)

// BoundInput bounds what the socket holds of its input: past the limit
// the reader stops taking messages, and TCP pushes back on the sender,
// which holds its output as it would for a slow peer (a kernel's PUB up
// to its own high-water mark). For the SUB on a kernel's IOPub, so a relay
// that falls behind a flood does not pile the flood up in Ferry; a front
// end's SUB stays unbounded and drains Ferry's PUB as fast as it can.
func BoundInput() Option {
	return func(o *options) error {
		o.inLimit = boundedQueue
		return o.sock.SetRcvhwm(boundedHWM)
	}
}

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
type Option func(*options) error

// options are what an Option sets: the libzmq socket's own, and ours.
type options struct {
	sock    *zmq.Socket
	inLimit int64
}

// WithIdentity sets the routing id (DEALER sockets of one client share it so
// the kernel can route stdin requests to the same client).
func WithIdentity(id string) Option {
	return func(o *options) error { return o.sock.SetIdentity(id) }
}

// Subscribe sets a SUB socket's subscription.
func Subscribe(prefix string) Option {
	return func(o *options) error { return o.sock.SetSubscribe(prefix) }
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
	o := options{sock: s}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
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
	zfd, err := s.GetFd()
	if err != nil {
		return fail("reading the event descriptor of", err)
	}
	// The dup is ours to close; libzmq keeps its own. It shares the
	// original's non-blocking flag, so Go's poller can watch it.
	dup, err := syscall.Dup(zfd)
	if err != nil {
		return fail("duplicating the event descriptor of", err)
	}
	syscall.CloseOnExec(dup)
	f := os.NewFile(uintptr(dup), name+"-events")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fail("watching the event descriptor of", err)
	}
	w := &Socket{sock: s, name: name, fd: f, rc: rc, inSig: make(chan struct{}, 1), done: make(chan struct{}), inLimit: o.inLimit}
	go w.readLoop()
	return w, nil
}

// Send sends frames, or queues them if the socket cannot take them now
// (a DEALER with no peer yet). It never blocks on the network.
func (w *Socket) Send(frames [][]byte) error {
	if w.closed.Load() {
		return ErrClosed
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sock == nil {
		return ErrClosed
	}
	w.out = append(w.out, frames)
	w.flushLocked()
	// A send processes libzmq's pending commands, which may consume the
	// edge that would have woken the reader for input that came meanwhile.
	w.drainLocked()
	return nil
}

// Recv returns the next received multipart message.
func (w *Socket) Recv(ctx context.Context) ([][]byte, error) {
	for {
		w.inMu.Lock()
		if len(w.in) > 0 {
			f := w.in[0]
			w.in[0] = nil
			w.in = w.in[1:]
			left := w.inBytes.Add(-frameBytes(f))
			w.inMu.Unlock()
			if w.paused.Load() && left <= w.inLimit/2 {
				w.resume()
			}
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

// resume takes input again after the queue's limit stopped the reader.
func (w *Socket) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.paused.Swap(false) {
		w.drainLocked()
	}
}

func frameBytes(f [][]byte) int64 {
	var n int64
	for _, p := range f {
		n += int64(len(p))
	}
	return n
}

// Close stops the reader and closes the socket, flushing queued sends.
func (w *Socket) Close() {
	if w.closed.Swap(true) {
		<-w.done
		return
	}
	// Closing the descriptor wakes the reader from the poller (the file
	// stays open until the reader's wait lets go of it).
	w.fd.Close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retry != nil {
		w.retry.Stop()
	}
	// What can go now goes (the socket's linger sends it); a message for
	// a peer that never came is dropped rather than hanging the close.
	w.flushLocked()
	w.sock.Close()
	w.sock = nil
	w.out = nil
}

// readLoop moves input to the queue whenever the event descriptor fires.
// RawConn.Read resets readiness and then calls the function before every
// wait, so an edge that comes after a drain is never lost.
func (w *Socket) readLoop() {
	defer close(w.done)
	_ = w.rc.Read(func(uintptr) bool {
		if w.closed.Load() {
			return true
		}
		w.mu.Lock()
		w.drainLocked()
		w.mu.Unlock()
		return false
	})
}

// flushLocked sends queued messages without blocking: a DEALER with no peer
// (a kernel that is not up yet, or died) would block a plain send forever.
// What cannot go now stays queued, in order, and is retried soon.
func (w *Socket) flushLocked() {
	for len(w.out) > 0 {
		f := w.out[0]
		if len(f) > 0 {
			if _, err := w.sock.SendBytes(f[0], zmq.DONTWAIT|sndmore(len(f) > 1)); err != nil {
				if zmq.AsErrno(err) == zmq.Errno(syscall.EAGAIN) {
					w.scheduleRetryLocked()
					return
				}
				// This message cannot be sent at all; go on with the next.
			} else {
				// The rest of a multipart message cannot block once the
				// first part was accepted.
				for j, p := range f[1:] {
					_, _ = w.sock.SendBytes(p, sndmore(j < len(f)-2))
				}
			}
		}
		w.out[0] = nil
		w.out = w.out[1:]
	}
}

func (w *Socket) scheduleRetryLocked() {
	if w.retry != nil {
		w.retry.Reset(10 * time.Millisecond)
		return
	}
	w.retry = time.AfterFunc(10*time.Millisecond, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.sock != nil && !w.closed.Load() {
			w.flushLocked()
			w.drainLocked()
		}
	})
}

func sndmore(more bool) zmq.Flag {
	if more {
		return zmq.SNDMORE
	}
	return 0
}

// drainLocked receives everything the socket holds, or up to the queue's
// limit, and wakes Recv. It ends by reading ZMQ_EVENTS, which settles
// libzmq's pending commands (and so re-arms the event descriptor), going
// round again if that shows more input. Stopped by the limit, it leaves
// paused set: the event descriptor may then stay quiet, so Recv drains
// again itself.
func (w *Socket) drainLocked() {
	if w.sock == nil || w.paused.Load() {
		return
	}
	var got [][][]byte
	var n int64
	for {
		if w.inLimit > 0 && w.inBytes.Load()+n >= w.inLimit {
			// Set before the batch is queued: the Recv that takes
			// it then sees paused and resumes.
			w.paused.Store(true)
			break
		}
		f, err := w.sock.RecvMessageBytes(zmq.DONTWAIT)
		if err == nil {
			got = append(got, f)
			n += frameBytes(f)
			continue
		}
		ev, err := w.sock.GetEvents()
		if err != nil || ev&zmq.POLLIN == 0 {
			break
		}
	}
	if len(got) == 0 {
		return
	}
	w.inMu.Lock()
	w.in = append(w.in, got...)
	w.inBytes.Add(n)
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

// IsAddrInUse reports whether err is a bind that found its port taken
// (EADDRINUSE): ports are found free, then bound, and another process may
// take one in between, so the caller picks new ones.
func IsAddrInUse(err error) bool {
	var zerr zmq.Errno
	if errors.As(err, &zerr) {
		return zerr == zmq.EADDRINUSE
	}
	return errors.Is(err, syscall.EADDRINUSE)
}
