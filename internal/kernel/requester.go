package kernel

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

// The kernel is the Requester of the rooms it routes for (transfer,
// recovery, think time): they reach kernels only through these methods.

// Start starts loc's backend if it is not running and returns the
// current incarnation's Died channel. Once a shutdown began it refuses.
func (s *Server) Start(ctx context.Context, loc location.Location) (<-chan struct{}, error) {
	b := s.backends[loc]
	if b == nil {
		return nil, fmt.Errorf("no %s backend is configured (pass --remote URL or set FERRY_REMOTE)", loc)
	}
	if s.stopping.Load() {
		return nil, errStopping
	}
	if err := b.Start(ctx); err != nil {
		return nil, &startError{loc: loc, err: err}
	}
	return b.Died(), nil
}

// startError is a backend's failure to start: the request that needed
// the kernel was never sent. Its text is the backend's own, which already
// says what failed; the kernel tells it apart (errors.As) to say that a
// cell did not run and how to fix the set-up.
type startError struct {
	loc location.Location
	err error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// Running reports whether loc's kernel has a live incarnation.
func (s *Server) Running(loc location.Location) bool {
	b := s.backends[loc]
	return b != nil && b.Alive()
}

// Send sends one message to loc's kernel without waiting.
func (s *Server) Send(ctx context.Context, loc location.Location, ch wire.Channel, m *wire.Message) error {
	b := s.backends[loc]
	if b == nil {
		return fmt.Errorf("no %s backend", loc)
	}
	return b.Send(ctx, ch, m)
}

// Request sends a request Ferry makes on its own (installing the agent,
// moving state, replaying, probing). It never reaches the front end: no
// output, no history, no execution count.
func (s *Server) Request(ctx context.Context, loc location.Location, ch wire.Channel, msgType string, content any, wantReply bool, onIOPub func(*wire.Message)) (transfer.Reply, error) {
	b := s.backends[loc]
	if b == nil {
		return transfer.Reply{}, fmt.Errorf("no %s backend", loc)
	}
	m, err := wire.New(msgType, backend.Session, "ferry", nil, content)
	if err != nil {
		return transfer.Reply{}, err
	}
	var res transfer.Reply
	var mu sync.Mutex
	c := &call{reply: make(chan *wire.Message, 1), idle: make(chan struct{})}
	c.sink = func(msg *wire.Message) {
		if msg.Header.MsgType == "status" {
			return
		}
		if onIOPub != nil {
			onIOPub(msg)
			return
		}
		mu.Lock()
		res.IOPub = append(res.IOPub, msg)
		mu.Unlock()
	}
	c.waiter.Store(wantReply)
	id := m.Header.MsgID
	s.register(id, c)
	defer s.forget(id)
	died := b.Died()
	if err := b.Send(ctx, ch, m); err != nil {
		return transfer.Reply{}, err
	}
	reply, err := s.await(ctx, loc, c, msgType, wantReply, died, nil)
	if err != nil {
		if errors.Is(err, backend.ErrDied) {
			return transfer.Reply{}, fmt.Errorf("the %s kernel died during %s: %w", loc, msgType, backend.ErrDied)
		}
		return transfer.Reply{}, err
	}
	mu.Lock()
	defer mu.Unlock()
	res.Msg = reply
	return res, nil
}

// forget drops a hidden call at once: its late messages are of no use.
func (s *Server) forget(id string) {
	s.callsMu.Lock()
	delete(s.calls, id)
	s.callsMu.Unlock()
}

// ready makes sure loc's kernel runs and, when state is tracked, has the
// agent installed in its current incarnation.
func (s *Server) ready(ctx context.Context, loc location.Location) error {
	if s.cfg.Analyzer != nil {
		return s.mover.Ready(ctx, loc)
	}
	_, err := s.Start(ctx, loc)
	return err
}
