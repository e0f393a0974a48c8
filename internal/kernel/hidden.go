package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/wire"
)

// hiddenResult is what a hidden request produced.
type hiddenResult struct {
	Reply *wire.Message
	// IOPub holds the request's IOPub messages other than status, e.g.
	// comm messages with payload chunks or an error traceback.
	IOPub []*wire.Message
}

// hidden sends a request Ferry makes on its own (installing the agent,
// moving state). It never reaches the front end: no output, no history,
// no execution count. onIOPub, if set, sees each IOPub message as it
// arrives instead of it being collected (for streaming large payloads).
func (s *Server) hidden(ctx context.Context, loc string, ch wire.Channel, msgType string, content any, buffers [][]byte, wantReply bool, onIOPub func(*wire.Message)) (*hiddenResult, error) {
	b := s.backends[loc]
	if b == nil {
		return nil, fmt.Errorf("no %s backend", loc)
	}
	m, err := wire.New(msgType, backend.Session, "ferry", nil, content)
	if err != nil {
		return nil, err
	}
	m.Buffers = buffers
	res := &hiddenResult{}
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
		return nil, err
	}
	reply, err := s.await(ctx, loc, c, msgType, wantReply, died, nil)
	if err != nil {
		if errors.Is(err, backend.ErrDied) {
			return nil, fmt.Errorf("the %s kernel died during %s: %w", loc, msgType, backend.ErrDied)
		}
		return nil, err
	}
	res.Reply = reply
	mu.Lock()
	defer mu.Unlock()
	return res, nil
}

// forget drops a hidden call at once: its late messages are of no use.
func (s *Server) forget(id string) {
	s.callsMu.Lock()
	delete(s.calls, id)
	s.callsMu.Unlock()
}

// errAgent is an error raised inside the agent.
var errAgent = errors.New("ferry agent error")

// hiddenExec runs code silently at loc and returns the evaluated
// user_expressions (each a mime bundle) or the error the code raised.
func (s *Server) hiddenExec(ctx context.Context, loc, code string, exprs map[string]string) (map[string]json.RawMessage, error) {
	if exprs == nil {
		exprs = map[string]string{}
	}
	res, err := s.hidden(ctx, loc, wire.Shell, "execute_request", map[string]any{
		"code": code, "silent": true, "store_history": false, "user_expressions": exprs, "allow_stdin": false, "stop_on_error": false,
	}, nil, true, nil)
	if err != nil {
		return nil, err
	}
	var rep struct {
		Status string                     `json:"status"`
		EName  string                     `json:"ename"`
		EValue string                     `json:"evalue"`
		Exprs  map[string]json.RawMessage `json:"user_expressions"`
	}
	if err := res.Reply.Decode(&rep); err != nil {
		return nil, err
	}
	if rep.Status != "ok" {
		return nil, fmt.Errorf("%w: %s: %s", errAgent, rep.EName, rep.EValue)
	}
	return rep.Exprs, nil
}
