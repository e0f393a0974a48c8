package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// replyTypes lists the shell and control requests that get a reply; any
// other message type is forwarded and completes when the backend goes idle.
var replyTypes = map[string]bool{
	"execute_request": true, "complete_request": true, "inspect_request": true, "is_complete_request": true,
	"history_request": true, "comm_info_request": true, "kernel_info_request": true, "shutdown_request": true,
	"interrupt_request": true, "debug_request": true,
}

// handleShell runs one shell request to completion; the shell worker calls
// it for each request in order, as ipykernel does.
func (s *Server) handleShell(ctx context.Context, m *wire.Message) {
	s.status(m, "busy")
	defer s.idleOrStop(m)
	switch m.Header.MsgType {
	case "execute_request":
		s.setCell(m)
		s.execute(ctx, m)
		s.cell.Store(nil)
	case "kernel_info_request":
		s.kernelInfo(ctx, m, wire.Shell)
	case "history_request":
		s.historyReply(m)
	case "shutdown_request":
		s.shutdown(ctx, m, wire.Shell)
	case "comm_open", "comm_msg", "comm_close":
		loc := s.where.now()
		var c struct {
			ID string `json:"comm_id"`
		}
		if m.Decode(&c) == nil {
			s.commMu.Lock()
			if owner, ok := s.commOwner[c.ID]; ok {
				loc = owner
			} else if m.Header.MsgType == "comm_open" {
				s.commOwner[c.ID] = loc
			}
			if m.Header.MsgType == "comm_close" {
				delete(s.commOwner, c.ID)
			}
			s.commMu.Unlock()
		}
		s.forward(ctx, loc, wire.Shell, m)
	default: // complete, inspect, is_complete, comm_info and unknown types
		s.forward(ctx, s.where.now(), wire.Shell, m)
	}
}

// handleControl answers control requests at once, even while a cell runs.
func (s *Server) handleControl(ctx context.Context, m *wire.Message) {
	s.status(m, "busy")
	defer s.idleOrStop(m)
	switch m.Header.MsgType {
	case "kernel_info_request":
		s.kernelInfo(ctx, m, wire.Control)
	case "interrupt_request":
		s.interrupts.Add(1)
		loc := s.where.now()
		if err := s.backends[loc].Interrupt(ctx); err != nil {
			s.log.Warn("interrupting", "location", loc, "err", err)
		}
		s.send(wire.Control, m, "interrupt_reply", map[string]string{"status": "ok"}, nil)
	case "shutdown_request":
		s.shutdown(ctx, m, wire.Control)
	default:
		s.forward(ctx, s.where.now(), wire.Control, m)
	}
}

func (s *Server) shutdown(ctx context.Context, m *wire.Message, ch wire.Channel) {
	var req struct {
		Restart bool `json:"restart"`
	}
	_ = m.Decode(&req)
	// As ipykernel does: the reply first, on the channel the request came
	// on, then the children stopped, then the same content broadcast on
	// IOPub (other front ends learn of the shutdown or restart there),
	// then idle (idleOrStop). Before the children stop, files written in a
	// cloud are copied home.
	content := map[string]any{"status": "ok", "restart": req.Restart}
	s.send(ch, m, "shutdown_reply", content, nil)
	s.writeBackBeforeShutdown(ctx, ch)
	// From here on no kernel is (re)started: a cell caught mid-transfer
	// must not bring a dead backend back while Ferry stops.
	s.stopping.Store(true)
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, b := range s.backends {
		_ = b.Shutdown(sctx)
	}
	s.publish(wire.IOPub, "shutdown_reply", m, content, nil)
	// Jupyter's kernel manager restarts by starting a new process, so the
	// kernel exits either way, once idle is published (idleOrStop).
}

// idleOrStop publishes idle after request m and, if m was a shutdown
// request, stops the kernel: the reply and idle are queued before the
// sockets close, and closing flushes them.
func (s *Server) idleOrStop(m *wire.Message) {
	s.status(m, "idle")
	if m.Header.MsgType == "shutdown_request" {
		s.Stop()
	}
}

// forward sends a front-end request to the backend at loc and relays what
// comes back, returning once the backend is idle again. It returns the
// backend's reply (already relayed) or an error.
func (s *Server) forward(ctx context.Context, loc location.Location, ch wire.Channel, m *wire.Message) (*wire.Message, error) {
	return s.forwardAs(ctx, loc, ch, m, m.Content, 0, true, nil)
}

// forwardAs is forward with the content and execution count to use.
// relay=false hands the reply back unrelayed, and leaves answering the
// front end on an error to the caller.
func (s *Server) forwardAs(ctx context.Context, loc location.Location, ch wire.Channel, m *wire.Message, content json.RawMessage, count int, relay bool, result func(string)) (*wire.Message, error) {
	fail := func(err error) (*wire.Message, error) {
		if relay {
			s.failRequest(ch, m, err)
		}
		return nil, err
	}
	if err := s.ready(ctx, loc); err != nil {
		return fail(err)
	}
	b := s.backends[loc]
	out := &wire.Message{Header: wire.NewHeader(m.Header.MsgType, backend.Session, "ferry"), Parent: json.RawMessage("{}"),
		Metadata: m.Metadata, Content: content, Buffers: m.Buffers}
	out.Header.Extra = m.Header.Extra
	c := &call{fe: m, count: count, reply: make(chan *wire.Message, 1), idle: make(chan struct{}), result: result}
	wantReply := replyTypes[m.Header.MsgType]
	c.waiter.Store(wantReply)
	id := out.Header.MsgID
	s.register(id, c)
	defer s.finish(id)
	died := b.Died()
	// Only here does Ferry know a request did not run: the kernel was dead
	// before it was sent, or it could not be sent.
	select {
	case <-died:
		return fail(fmt.Errorf("the %s kernel died before %s was sent to it: %w (%w)", loc, m.Header.MsgType, backend.ErrDied, errNotSent))
	default:
	}
	if err := b.Send(ctx, ch, out); err != nil {
		return fail(fmt.Errorf("%w (%w)", err, errNotSent))
	}
	var onReply func(*wire.Message)
	if relay {
		onReply = func(r *wire.Message) { s.relayReply(ch, c, r) }
	}
	reply, err := s.await(ctx, loc, c, m.Header.MsgType, wantReply, died, onReply)
	if err != nil && reply == nil {
		return fail(err)
	}
	return reply, err
}

// replyGrace is how long a reply may trail the backend's idle status (they
// travel on different sockets) before Ferry takes it as never coming.
const replyGrace = 2 * time.Second

// idleGrace is how long Ferry waits for a backend's idle status once its
// reply came and no IOPub message for the request arrives any more. A
// kernel's IOPub socket drops messages beyond ZeroMQ's high-water mark
// (1000 by default) when its subscriber falls behind (a jupyter-server
// relaying a flood of output does): the idle status may be among them,
// and waiting for it would stall the kernel for good.
var idleGrace = 10 * time.Second

// await waits until the backend is idle after call c and, if wantReply,
// has answered it; onReply sees the reply as soon as it arrives. A backend
// that goes idle without answering (its handler raised) or dies ends the
// wait with an error, never a hang; late replies are then dropped.
func (s *Server) await(ctx context.Context, loc location.Location, c *call, msgType string, wantReply bool, died <-chan struct{}, onReply func(*wire.Message)) (*wire.Message, error) {
	var reply *wire.Message
	idle := c.idle // nil once seen
	var grace <-chan time.Time
	var quiet <-chan time.Time // polls for IOPub silence after the reply
	var replied time.Time
	giveUp := func(err error) (*wire.Message, error) {
		c.waiter.Store(false)
		c.gaveUp.Store(true)
		return reply, err
	}
	for (wantReply && reply == nil) || idle != nil {
		select {
		case reply = <-c.reply:
			c.waiter.Store(false)
			if onReply != nil {
				onReply(reply)
			}
			if idle != nil {
				replied = time.Now()
				t := time.NewTicker(idleGrace / 10)
				defer t.Stop()
				quiet = t.C
			}
		case <-quiet:
			last := time.Unix(0, c.lastIOPub.Load())
			if last.Before(replied) {
				last = replied
			}
			if time.Since(last) >= idleGrace {
				s.log.Warn("the backend answered but its idle status never came (lost on IOPub?); going on", "location", loc, "type", msgType, "silent_for", idleGrace)
				idle, quiet = nil, nil
			}
		case <-idle:
			idle = nil
			if wantReply && reply == nil {
				t := time.NewTimer(replyGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			return giveUp(fmt.Errorf("the %s kernel went idle without answering %s (its handler failed; the kernel's log says why)", loc, msgType))
		case <-died:
			if !c.started.Load() {
				// Its busy status may have been dropped by IOPub, or still
				// be on its way: the request may have run, wholly or partly.
				return giveUp(fmt.Errorf("the %s kernel died before it confirmed it took up %s: %w (%w)", loc, msgType, backend.ErrDied, errUnconfirmed))
			}
			return giveUp(fmt.Errorf("the %s kernel died while handling %s: %w", loc, msgType, backend.ErrDied))
		case <-ctx.Done():
			return giveUp(ctx.Err())
		}
	}
	return reply, nil
}

// errNotSent marks a request that never reached its kernel: it did not
// run.
var errNotSent = errors.New("the request was not sent")

// errUnconfirmed marks a request whose kernel died before Ferry heard it
// say busy. That does not mean it did not run: a kernel's IOPub drops
// messages past its high-water mark, and the busy status may still be
// queued when the death is noticed.
var errUnconfirmed = errors.New("the kernel never confirmed it started the request")

// failRequest answers a request Ferry could not get answered by a backend,
// so the front end never hangs.
func (s *Server) failRequest(ch wire.Channel, m *wire.Message, err error) {
	t := m.Header.MsgType
	if !strings.HasSuffix(t, "_request") || !replyTypes[t] {
		return
	}
	s.send(ch, m, strings.TrimSuffix(t, "_request")+"_reply", map[string]any{
		"status": "error", "ename": "FerryError", "evalue": err.Error(), "traceback": []string{},
	}, nil)
}

// kernelInfo answers from the local backend's language info, so it works
// before the backend is up and never reaches a remote kernel.
func (s *Server) kernelInfo(ctx context.Context, m *wire.Message, ch wire.Channel) {
	reply := map[string]any{
		"status": "ok", "protocol_version": wire.ProtocolVersion, "implementation": "ferry", "implementation_version": Version,
		"banner":        "Ferry " + Version + " — runs each cell on your laptop or in the cloud\n",
		"help_links":    []map[string]string{{"text": "Ferry", "url": "https://github.com/ferry-nb/ferry"}},
		"language_info": map[string]any{"name": "python", "mimetype": "text/x-python", "file_extension": ".py"},
		"debugger":      false,
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// Only the kernel's start: kernel_info needs no agent, and it is
	// answered on the control goroutine, beside the shell worker.
	if _, err := s.Start(wctx, location.Local); err == nil {
		b := s.backends[location.Local]
		var ki map[string]json.RawMessage
		if json.Unmarshal(b.KernelInfo(), &ki) == nil {
			if li, ok := ki["language_info"]; ok {
				reply["language_info"] = li
			}
			if bn, ok := ki["banner"]; ok {
				var banner string
				if json.Unmarshal(bn, &banner) == nil {
					reply["banner"] = "Ferry " + Version + " — runs each cell on your laptop or in the cloud\n" + banner
				}
			}
		}
	} else {
		s.log.Warn("kernel_info without a local kernel", "err", err)
	}
	s.send(ch, m, "kernel_info_reply", reply, nil)
}

// historyQuery is a history_request's content.
type historyQuery struct {
	Output     bool   `json:"output"`
	Raw        bool   `json:"raw"`
	AccessType string `json:"hist_access_type"`
	Session    int    `json:"session"`
	Start      int    `json:"start"`
	Stop       *int   `json:"stop"`
	N          *int   `json:"n"`
	Pattern    string `json:"pattern"`
	Unique     bool   `json:"unique"`
}

func (s *Server) historyReply(m *wire.Message) {
	var q historyQuery
	if err := m.Decode(&q); err != nil {
		s.send(wire.Shell, m, "history_reply", map[string]any{"status": "error", "ename": "ValueError", "evalue": err.Error(), "traceback": []string{}}, nil)
		return
	}
	s.histMu.Lock()
	defer s.histMu.Unlock()
	hist := selectHistory(s.history, q)
	items := make([][]any, 0, len(hist))
	for _, h := range hist {
		if q.Output {
			items = append(items, []any{0, h.Line, []any{h.Input, h.Output}})
		} else {
			items = append(items, []any{0, h.Line, h.Input})
		}
	}
	s.send(wire.Shell, m, "history_reply", map[string]any{"status": "ok", "history": items}, nil)
}

// selectHistory answers a history request over this session's inputs the
// way IPython's history manager answers it for its current session
// (session 0; earlier sessions, negative numbers, have no entries here).
// all holds the stored cells in order, numbered 1, 2, … by their count.
func selectHistory(all []historyEntry, q historyQuery) []historyEntry {
	switch q.AccessType {
	case "tail":
		n := len(all)
		if q.N != nil {
			n = min(max(*q.N, 0), len(all))
		}
		return all[len(all)-n:]
	case "range":
		if q.Session < 0 {
			return nil
		}
		// Python-like bounds over lines 1…len: negative counts from the
		// end, a missing or zero stop means the end.
		end := len(all) + 1
		start, stop := q.Start, end
		if start < 0 {
			start += end
		}
		if q.Stop != nil && *q.Stop != 0 && *q.Stop < end {
			stop = *q.Stop
			if stop < 0 {
				stop += end
			}
		}
		var out []historyEntry
		for _, h := range all {
			if h.Line >= start && h.Line < stop {
				out = append(out, h)
			}
		}
		return out
	case "search":
		var out []historyEntry
		last := map[string]int{} // input -> index in out of its newest match
		for _, h := range all {
			if !globMatch(q.Pattern, h.Input) {
				continue
			}
			if q.Unique {
				// The newest occurrence stands for all, in its place.
				if i, ok := last[h.Input]; ok {
					out[i].Line = -1
				}
				last[h.Input] = len(out)
			}
			out = append(out, h)
		}
		if q.Unique {
			kept := out[:0]
			for _, h := range out {
				if h.Line >= 0 {
					kept = append(kept, h)
				}
			}
			out = kept
		}
		if q.N != nil && *q.N >= 0 && len(out) > *q.N {
			out = out[len(out)-*q.N:]
		}
		return out
	}
	return nil
}
