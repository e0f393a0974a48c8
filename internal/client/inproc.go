package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// Session is a Ferry kernel served in this process on fresh loopback ports,
// with a client connected to it: the same kernel code Jupyter would start,
// minus a process boundary. ferry run and ferry demo use it.
type Session struct {
	*Client
	Kernel *kernel.Server
	errc   chan error
	// closeOnce makes Close safe to call again (a test's own Close and
	// its cleanup's): the second returns the first's result instead of
	// waiting for a kernel that already ended.
	closeOnce sync.Once
	closeErr  error
}

// StartFerry starts a Ferry kernel with cfg (its Conn is filled in) and
// connects to it, returning once the kernel answers.
func StartFerry(ctx context.Context, cfg kernel.Config) (*Session, error) {
	if cfg.Backends == nil {
		cfg.Backends = map[location.Location]backend.Backend{location.Local: backend.NewLocal("")}
	}
	// The free ports are found, then bound: another process may take one
	// in between (seen under a loaded make test), so a bind that finds its
	// port taken is tried again with new ones.
	var srv *kernel.Server
	var info wire.ConnInfo
	for attempt := 1; ; attempt++ {
		var err error
		if info, err = wire.NewLocalConnInfo(); err != nil {
			return nil, err
		}
		cfg.Conn = info
		srv, err = kernel.New(cfg)
		if err == nil {
			break
		}
		if attempt == 5 || !wire.IsAddrInUse(err) {
			return nil, err
		}
	}
	s := &Session{Kernel: srv, errc: make(chan error, 1)}
	go func() { s.errc <- srv.Serve(context.WithoutCancel(ctx)) }()
	c, err := Connect(info)
	if err != nil {
		srv.Stop()
		<-s.errc
		return nil, err
	}
	s.Client = c
	if _, err := c.WaitReady(ctx); err != nil {
		s.Close(context.Background())
		return nil, fmt.Errorf("ferry kernel did not answer: %w", err)
	}
	return s, nil
}

// Close shuts the kernel and its backends down and waits for it.
//
// It asks the kernel to shut down first, as a front end does, so the
// kernel can copy files written in a cloud home before its kernels stop;
// if that takes more than a minute (or ctx ends), it is stopped outright.
func (s *Session) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Session) close(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if s.Client != nil && s.Client.Shutdown(sctx, false) == nil {
		select {
		case err := <-s.errc:
			s.Client.Close()
			return err
		case <-sctx.Done():
		}
	}
	s.Kernel.Stop()
	err := <-s.errc
	if s.Client != nil {
		s.Client.Close()
	}
	return err
}
