package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func pair(t *testing.T) (router, dealer *Socket, addr string) {
	t.Helper()
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	addr = ConnInfo{Transport: "tcp", IP: "127.0.0.1"}.Addr(ports[0])
	router, err = Bind(ROUTER, addr, "router")
	if err != nil {
		t.Fatal(err)
	}
	dealer, err = Connect(DEALER, addr, "dealer", WithIdentity("d"))
	if err != nil {
		router.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { dealer.Close(); router.Close() })
	return router, dealer, addr
}

// echo sends back everything r receives until ctx ends or r closes.
func echo(ctx context.Context, r *Socket) {
	for {
		f, err := r.Recv(ctx)
		if err != nil {
			return
		}
		_ = r.Send(f)
	}
}

// Sends from several goroutines while the same sockets receive: a send
// settles libzmq's pending commands and can swallow the edge that wakes
// the reader, so every message must still arrive, in each sender's order.
func TestSocketConcurrentTraffic(t *testing.T) {
	router, dealer, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const senders, each = 4, 2000
	// A ROUTER drops messages to a peer it has not heard from yet: hear
	// from the dealer first.
	if err := dealer.Send([][]byte{[]byte("hello")}); err != nil {
		t.Fatal(err)
	}
	if _, err := router.Recv(ctx); err != nil {
		t.Fatalf("the dealer's first message never arrived: %v", err)
	}
	// The router echoes everything and also sends its own messages.
	go echo(ctx, router)
	go func() {
		for i := range each {
			_ = router.Send([][]byte{[]byte("d"), []byte(fmt.Sprintf("own %d", i))})
		}
	}()
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := dealer.Send([][]byte{[]byte(fmt.Sprintf("echo %d %d", g, i))}); err != nil {
					return // closed: the test has already failed
				}
			}
		}()
	}
	next := map[string]int{}
	for got := 0; got < senders*each+each; got++ {
		f, err := dealer.Recv(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", got, senders*each+each, err)
		}
		var key string
		var n int
		if _, err := fmt.Sscanf(string(f[0]), "echo %s %d", &key, &n); err != nil {
			if _, err := fmt.Sscanf(string(f[0]), "own %d", &n); err != nil {
				t.Fatalf("unexpected message %q", f[0])
			}
			key = "own"
		}
		if n != next[key] {
			t.Fatalf("stream %s: got message %d, want %d", key, n, next[key])
		}
		next[key]++
	}
	wg.Wait()
}

// A DEALER whose peer is not there yet holds its sends and delivers them,
// in order, once the peer binds.
func TestSocketHoldsUntilPeer(t *testing.T) {
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := ConnInfo{Transport: "tcp", IP: "127.0.0.1"}.Addr(ports[0])
	dealer, err := Connect(DEALER, addr, "dealer", WithIdentity("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer dealer.Close()
	for i := range 3 {
		if err := dealer.Send([][]byte{[]byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	router, err := Bind(ROUTER, addr, "router")
	if err != nil {
		t.Fatal(err)
	}
	defer router.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		f, err := router.Recv(ctx)
		if err != nil {
			t.Fatalf("message %d never arrived: %v", i, err)
		}
		if len(f) != 2 || string(f[1]) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, f)
		}
	}
}

// Close wakes a Recv waiting for input, and sends after it fail.
func TestSocketCloseWakesRecv(t *testing.T) {
	_, dealer, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := dealer.Recv(context.Background())
		errc <- err
	}()
	time.AfterFunc(50*time.Millisecond, dealer.Close)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Recv still waiting 10 s after Close")
	}
	if err := dealer.Send([][]byte{[]byte("x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v, want ErrClosed", err)
	}
}

// TestIsAddrInUse: a second bind of a taken port is told apart from other
// failures, so callers can pick new ports.
func TestIsAddrInUse(t *testing.T) {
	ps, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("tcp://127.0.0.1:%d", ps[0])
	a, err := Bind(ROUTER, addr, "first")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = Bind(ROUTER, addr, "second")
	if err == nil || !IsAddrInUse(err) {
		t.Fatalf("second bind of %s: %v; IsAddrInUse = %v, want true", addr, err, IsAddrInUse(err))
	}
	if IsAddrInUse(errors.New("something else")) {
		t.Fatal("IsAddrInUse true for an unrelated error")
	}
}

// A bounded SUB socket whose consumer falls behind stops taking input at its
// queue's limit, so the publisher holds the rest, and nothing is lost:
// once the consumer reads, every message arrives, in order.
func TestSubQueueIsBounded(t *testing.T) {
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	addr := ConnInfo{Transport: "tcp", IP: "127.0.0.1"}.Addr(ports[0])
	pub, err := Bind(PUB, addr, "pub")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := Connect(SUB, addr, "sub", Subscribe(""), BoundInput())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A PUB drops what it sends before the subscription reaches it: ping
	// until one arrives.
	for i := 0; ; i++ {
		if i == 500 {
			t.Fatal("no ping reached the subscriber in 5 s")
		}
		_ = pub.Send([][]byte{[]byte("ping")})
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Millisecond)
		_, err := sub.Recv(pctx)
		pcancel()
		if err == nil {
			break
		}
	}
	for { // the pings still on their way
		pctx, pcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err := sub.Recv(pctx)
		pcancel()
		if err != nil {
			break
		}
	}
	const n, size = 64, 1 << 20 // 64 MiB, eight times the queue's limit
	for i := range n {
		b := make([]byte, size)
		b[0] = byte(i)
		if err := pub.Send([][]byte{[]byte(fmt.Sprint(i)), b}); err != nil {
			t.Fatal(err)
		}
	}
	for !sub.paused.Load() {
		if ctx.Err() != nil {
			t.Fatalf("the reader never stopped: %d bytes queued", sub.inBytes.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if q := sub.inBytes.Load(); q > boundedQueue+size+64 {
		t.Fatalf("the reader stopped with %d bytes queued, over the limit of %d and one message", q, boundedQueue)
	}
	for i := range n {
		f, err := sub.Recv(ctx)
		if err != nil {
			t.Fatalf("message %d of %d never arrived: %v", i, n, err)
		}
		if len(f) != 2 || string(f[0]) != fmt.Sprint(i) || len(f[1]) != size || f[1][0] != byte(i) {
			t.Fatalf("message %d: got %d frames, first %q", i, len(f), f[0])
		}
		if q := sub.inBytes.Load(); q > boundedQueue+size+64 {
			t.Fatalf("after message %d, %d bytes queued, over the limit", i, q)
		}
	}
}
