package wire

import (
	"context"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// BenchmarkSocketRoundTrip measures one request and its echo through two
// Sockets (DEALER to ROUTER over loopback TCP), the hop Ferry adds.
func BenchmarkSocketRoundTrip(b *testing.B) {
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		b.Fatal(err)
	}
	addr := ConnInfo{Transport: "tcp", IP: "127.0.0.1"}.Addr(ports[0])
	r, err := Bind(ROUTER, addr, "router")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	d, err := Connect(DEALER, addr, "dealer", WithIdentity("d"))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	go echo(ctx, r)
	msg := [][]byte{[]byte("hello")}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.Send(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Recv(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawZMQRoundTrip is the same with blocking libzmq calls, the
// floor for the Socket wrapper.
func BenchmarkRawZMQRoundTrip(b *testing.B) {
	ports, err := FreePorts("127.0.0.1", 1)
	if err != nil {
		b.Fatal(err)
	}
	addr := ConnInfo{Transport: "tcp", IP: "127.0.0.1"}.Addr(ports[0])
	r, _ := zmq.NewSocket(zmq.ROUTER)
	if err := r.Bind(addr); err != nil {
		b.Fatal(err)
	}
	_ = r.SetRcvtimeo(50 * time.Millisecond)
	d, _ := zmq.NewSocket(zmq.DEALER)
	defer d.Close()
	if err := d.Connect(addr); err != nil {
		b.Fatal(err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		defer r.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := r.RecvMessageBytes(0)
			if err != nil {
				continue
			}
			if _, err := r.SendMessage(f); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-stopped }()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := d.SendBytes([]byte("hello"), 0); err != nil {
			b.Fatal(err)
		}
		if _, err := d.RecvMessageBytes(0); err != nil {
			b.Fatal(err)
		}
	}
}
