package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Channel names a Jupyter channel.
type Channel string

// The Jupyter channels.
const (
	Shell   Channel = "shell"
	Control Channel = "control"
	Stdin   Channel = "stdin"
	IOPub   Channel = "iopub"
)

// Incoming is a message received on a channel.
type Incoming struct {
	Channel Channel
	Msg     *Message
}

// ClientConn is the client side of a kernel's sockets: DEALERs for shell,
// control and stdin (sharing one routing id, so the kernel routes stdin
// requests back to us) and a SUB for IOPub. Every received message is
// verified and delivered, in arrival order per socket, on Incoming.
type ClientConn struct {
	Info    ConnInfo
	Session string
	signer  *Signer
	socks   map[Channel]*Socket
	in      chan Incoming
	dst     atomic.Pointer[chan Incoming]  // where read delivers: in, or DeliverTo's
	handler atomic.Pointer[func(Incoming)] // HandleWith's, called instead
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// Rejected counts messages dropped for a bad signature or bad frames.
	Rejected atomic.Int64
}

// Dial connects to the kernel described by info; iopub are options for
// the IOPub socket (BoundInput for a relay).
func Dial(info ConnInfo, session string, iopub ...Option) (*ClientConn, error) {
	signer, err := NewSigner(info.SignatureScheme, []byte(info.Key))
	if err != nil {
		return nil, err
	}
	c := &ClientConn{Info: info, Session: session, signer: signer, socks: map[Channel]*Socket{}, in: make(chan Incoming, 256)}
	ports := map[Channel]int{Shell: info.ShellPort, Control: info.ControlPort, Stdin: info.StdinPort, IOPub: info.IOPubPort}
	for _, ch := range []Channel{Shell, Control, Stdin, IOPub} {
		kind, opts := DEALER, []Option{WithIdentity(session)}
		if ch == IOPub {
			kind, opts = SUB, append([]Option{Subscribe("")}, iopub...)
		}
		s, err := Connect(kind, info.Addr(ports[ch]), string(ch), opts...)
		if err != nil {
			c.closeSockets()
			return nil, err
		}
		c.socks[ch] = s
	}
	c.dst.Store(&c.in)
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for ch, s := range c.socks {
		c.wg.Add(1)
		go c.read(ctx, ch, s)
	}
	go func() { c.wg.Wait(); close(c.in) }()
	return c, nil
}

func (c *ClientConn) read(ctx context.Context, ch Channel, s *Socket) {
	defer c.wg.Done()
	for {
		frames, err := s.Recv(ctx)
		if err != nil {
			return
		}
		m, err := Decode(frames, c.signer)
		if err != nil {
			c.Rejected.Add(1)
			slog.Warn("dropped message from kernel", "channel", ch, "err", err)
			continue
		}
		if h := c.handler.Load(); h != nil {
			(*h)(Incoming{Channel: ch, Msg: m})
			continue
		}
		select {
		case *c.dst.Load() <- Incoming{Channel: ch, Msg: m}:
		case <-ctx.Done():
			return
		}
	}
}

// Incoming delivers every verified message from the kernel. It is closed
// when the connection is closed.
func (c *ClientConn) Incoming() <-chan Incoming { return c.in }

// DeliverTo sends what arrives from now on to ch instead of Incoming
// (which then stays open and silent until Close); ch is never closed. A
// backend that outlives its connections passes its own stable channel, so
// no goroutine copies every message from one channel to the other: one
// hand-off less on each message a kernel sends.
func (c *ClientConn) DeliverTo(ch chan Incoming) { c.dst.Store(&ch) }

// HandleWith has f called with each message from now on, on the reader
// goroutine of the socket it came on (so in order per socket, and
// concurrently across sockets), instead of delivering it on a channel: a
// relay then forwards each message from the goroutine that received it,
// with no hand-off. f must not block for long: its socket is not read
// meanwhile (what arrives queues in the socket).
func (c *ClientConn) HandleWith(f func(Incoming)) { c.handler.Store(&f) }

// Send signs and sends m on ch (shell, control or stdin).
func (c *ClientConn) Send(ch Channel, m *Message) error {
	s := c.socks[ch]
	if s == nil || ch == IOPub {
		return fmt.Errorf("cannot send on channel %q", ch)
	}
	frames, err := Encode(m, c.signer)
	if err != nil {
		return err
	}
	if err := s.Send(frames); err != nil {
		return fmt.Errorf("sending %s on %s: %w", m.Header.MsgType, ch, err)
	}
	return nil
}

// NewMessage makes a message from this client's session.
func (c *ClientConn) NewMessage(msgType string, content any) (*Message, error) {
	return New(msgType, c.Session, "ferry", nil, content)
}

// Close closes all sockets.
func (c *ClientConn) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.closeSockets()
}

func (c *ClientConn) closeSockets() {
	for _, s := range c.socks {
		s.Close()
	}
}

// ErrNoReply is returned when a kernel does not answer in time.
var ErrNoReply = errors.New("kernel did not reply")
