// Package testbed builds the emulated laptop/cloud set-up of the hybrid
// benchmark from real OS mechanisms: a cgroup v1 CPU quota slows the laptop
// kernel, a network namespace behind a veth pair with tc tbf limits the
// link rate, and a user-space proxy adds latency (tc netem does not work on
// these machines). As root the cloud is also a separate machine (see
// Separate): its own mount namespace, user, HOME, /tmp and environment.
package testbed

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyProxy forwards TCP from a loopback listener to a target, delaying
// every chunk by half the round-trip time in each direction.
type LatencyProxy struct {
	ln     net.Listener
	target string
	half   time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	// Faults: resume is non-nil while stalled (closed to resume); rate
	// limits each direction in bytes per second (0: unlimited).
	resume chan struct{}
	rate   atomic.Int64
	// downUntil: until then the network is gone (Down): connections are
	// refused as they come.
	downUntil time.Time
}

// NewLatencyProxy listens on a free loopback port.
func NewLatencyProxy(target string, rtt time.Duration) (*LatencyProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &LatencyProxy{ln: ln, target: target, half: rtt / 2, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *LatencyProxy) Addr() string { return p.ln.Addr().String() }

func (p *LatencyProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := time.Now().Before(p.downUntil)
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, 10*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, u) {
			return
		}
		p.wg.Add(2)
		go p.pipe(u, c)
		go p.pipe(c, u)
	}
}

func (p *LatencyProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

type chunk struct {
	at   time.Time
	data []byte
}

// pipe copies src to dst, each chunk released half an RTT after it was
// read. The queue is bounded, so a slow reader slows the sender (as TCP
// would) instead of growing memory.
func (p *LatencyProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, 256)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(p.half), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		p.mu.Lock()
		resume := p.resume
		p.mu.Unlock()
		if resume != nil {
			<-resume
		}
		if r := p.rate.Load(); r > 0 {
			// A slow link's serialisation delay.
			time.Sleep(time.Duration(float64(len(c.data)) / float64(r) * float64(time.Second)))
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	for range q { // drain so the reader goroutine ends
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// Faults on demand, for the fault-injection suite.

// Cut closes every connection through the proxy at once, mid-message, and
// returns how many there were.
func (p *LatencyProxy) Cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	n := len(p.conns) / 2
	p.conns = map[net.Conn]struct{}{}
	return n
}

// Down takes the network away for d, as a laptop that sleeps or loses
// its Wi-Fi sees it: every connection is cut and new ones are refused
// until d has passed.
func (p *LatencyProxy) Down(d time.Duration) {
	p.mu.Lock()
	p.downUntil = time.Now().Add(d)
	p.mu.Unlock()
	p.Cut()
}

// Stall stops all traffic for d, then lets it flow again.
func (p *LatencyProxy) Stall(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume != nil {
		return
	}
	ch := make(chan struct{})
	p.resume = ch
	time.AfterFunc(d, func() {
		p.mu.Lock()
		p.resume = nil
		p.mu.Unlock()
		close(ch)
	})
}

// SetRate limits each direction to bytesPerSecond (0: unlimited).
func (p *LatencyProxy) SetRate(bytesPerSecond int64) { p.rate.Store(bytesPerSecond) }

// Close stops the proxy and every connection through it.
func (p *LatencyProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// echo is a helper for tests: an echo server on loopback.
func echo(ctx context.Context) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }, nil
}
