package kernel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
	if err := s.startBackend(ctx, loc, b); err != nil {
		return nil, &startError{loc: loc, err: err}
	}
	return b.Died(), nil
}

// How a slow kernel start is announced in the running cell's output: a
// cloud kernel on a cold node takes minutes, and the cell shows nothing
// else meanwhile. Variables, so tests can shorten them.
var (
	startNotice = 5 * time.Second  // a start longer than this is announced (a warm kernel takes 1-3 s here, more under load)
	startUpdate = 10 * time.Second // then an update this often
)

// startBackend starts b and, when that is a start (b was not running),
// announces it on the running cell if it takes over startNotice and feeds
// its duration to the policy (Model.ObserveStart). The duration is the
// backend's own (Status().StartTook, from its create request) when it
// reports one, else the wait here. Any goroutine may call it.
func (s *Server) startBackend(ctx context.Context, loc location.Location, b backend.Backend) error {
	if b.Alive() {
		return b.Start(ctx)
	}
	t0 := time.Now()
	cell := s.cell.Load()
	notice, update := startNotice, startUpdate
	done := make(chan struct{})
	announced := make(chan bool, 1)
	if cell != nil {
		go func() { announced <- s.announceStart(cell, loc, b, t0, notice, update, done) }()
	} else {
		announced <- false
	}
	err := b.Start(ctx)
	close(done)
	wasAnnounced := <-announced
	if err != nil {
		return err
	}
	took := time.Since(t0)
	if cell != nil && s.cell.Load() == cell {
		s.startWaited.Add(int64(took)) // the cell waited for it
	}
	if st := b.Status(); st.StartTook > 0 {
		took = st.StartTook
	}
	s.model.ObserveStart(loc, took.Seconds())
	if loc != location.Local {
		if err := s.cfg.Calibration.StoreStart(s.cfg.Clouds[loc].Key, took.Seconds()); err != nil {
			s.log.Debug("start time not kept", "err", err)
		}
	}
	if wasAnnounced {
		s.startNote(cell, fmt.Sprintf("Ferry: %s kernel started in %s\n", loc.Describe(), roundSeconds(took)))
	}
	return nil
}

// spawnPoll is how often a start is asked for a JupyterHub's spawn
// progress (backend.Status.Spawn), which is shown as it changes.
const spawnPoll = 250 * time.Millisecond

// announceStart tells the cell that loc's kernel is starting, once the
// start took notice, then every update until done; a JupyterHub's spawn
// progress (the user's server is being started) is shown at once, each
// new message on its own line. It reports whether it said anything.
func (s *Server) announceStart(cell *wire.Message, loc location.Location, b backend.Backend, t0 time.Time, notice, update time.Duration, done <-chan struct{}) bool {
	since := func() time.Duration {
		// A start another goroutine began earlier (the kernel's own
		// pre-start) is older than this wait.
		if st := b.Status(); !st.Starting.IsZero() && st.Starting.Before(t0) {
			return time.Since(st.Starting)
		}
		return time.Since(t0)
	}
	first := time.NewTimer(notice)
	defer first.Stop()
	poll := time.NewTicker(spawnPoll)
	defer poll.Stop()
	var ticker *time.Ticker
	var tick <-chan time.Time // nil until something was said
	announced, lastSpawn := false, ""
	said := func() {
		if !announced {
			announced = true
			ticker = time.NewTicker(update)
			tick = ticker.C
		}
	}
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-done:
			return announced
		case <-first.C:
			if !announced {
				said()
				s.startNote(cell, fmt.Sprintf("Ferry: starting %s kernel…\n", loc.Describe()))
			}
		case <-poll.C:
			if sp := b.Status().Spawn; sp != "" && sp != lastSpawn {
				lastSpawn = sp
				said()
				s.startNote(cell, fmt.Sprintf("Ferry: JupyterHub: %s\n", sp))
			}
		case <-tick:
			s.startNote(cell, fmt.Sprintf("Ferry: still starting %s kernel (%s so far)…\n", loc.Describe(), roundSeconds(since())))
		}
	}
}

func (s *Server) startNote(cell *wire.Message, text string) {
	s.publish(wire.IOPub, "stream", cell, map[string]string{"name": "stderr", "text": text}, nil)
}

// roundSeconds shows a duration as whole seconds ("23 s"), or tenths
// under ten seconds.
func roundSeconds(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

// setCell records m as the running cell, unless it is silent (its output
// is not shown).
func (s *Server) setCell(m *wire.Message) {
	var c struct {
		Silent bool `json:"silent"`
	}
	if m.Decode(&c) == nil && c.Silent {
		s.cell.Store(nil)
		return
	}
	s.startWaited.Store(0)
	s.cell.Store(m)
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

// workDirNote is the working directory's part of a %ferry status line
// (for a remote kernel, relative to the server's root).
func workDirNote(st backend.Status) string {
	if st.WorkDir == "" {
		return ""
	}
	return ", working dir " + st.WorkDir
}
