// Package client is a Jupyter client in Go: it starts or connects to a
// kernel and executes code, collecting outputs the way nbformat stores them.
// ferry run, ferry bench and the tests use it as their front end.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/wire"
)

// Output is one nbformat 4 output.
type Output map[string]any

// Result is what one execution produced.
type Result struct {
	Reply   map[string]any // execute_reply content
	Status  string
	Count   int
	Outputs []Output
	// Error is set when the cell raised: ename and evalue.
	EName, EValue string
	// Timing holds the header dates of the execution's milestones under
	// nbclient's keys ("iopub.execute_input", "iopub.status.busy",
	// "shell.execute_reply", "iopub.status.idle"), as nbclient records them
	// in a cell's metadata.execution.
	Timing map[string]string
}

// ExecOptions control one execution.
type ExecOptions struct {
	Silent       bool
	StoreHistory *bool
	AllowStdin   bool
	// Input answers input_request prompts; nil means stdin is not allowed.
	Input func(prompt string, password bool) (string, error)
	// OnOutput sees every output as it arrives (for progress display).
	OnOutput func(Output)
	// UserExpressions are evaluated after the code.
	UserExpressions map[string]string
	// CellID identifies the notebook cell across edits, sent as metadata
	// "cellId" the way JupyterLab and VS Code send it.
	CellID string
}

// Client talks to one kernel. Requests are sent one at a time (like
// nbclient); IOPub is read by one goroutine and routed by parent msg_id.
type Client struct {
	conn *wire.ClientConn

	mu      sync.Mutex
	waiters map[string]*waiter
	replies map[string]chan *wire.Message
	stdin   chan *wire.Message
	closed  chan struct{}
	once    sync.Once

	// displays maps each display_id to the outputs showing it, across
	// executions, so update_display_data reaches earlier cells as it does
	// in nbclient. Only the goroutine running Execute touches it.
	displays map[string][]*displayRef
}

// displayRef is one output that carries a display_id; dead once its cell's
// outputs were cleared.
type displayRef struct {
	out  Output
	dead bool
}

type waiter struct {
	ch chan *wire.Message
}

// Connect connects to the kernel described by info.
func Connect(info wire.ConnInfo) (*Client, error) {
	conn, err := wire.Dial(info, wire.NewID())
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, waiters: map[string]*waiter{}, replies: map[string]chan *wire.Message{}, stdin: make(chan *wire.Message, 16), closed: make(chan struct{})}
	go c.read()
	return c, nil
}

// Conn exposes the underlying connection for tests that send raw messages.
func (c *Client) Conn() *wire.ClientConn { return c.conn }

func (c *Client) read() {
	defer c.once.Do(func() { close(c.closed) })
	for in := range c.conn.Incoming() {
		pid := in.Msg.ParentID()
		switch in.Channel {
		case wire.IOPub:
			c.mu.Lock()
			w := c.waiters[pid]
			c.mu.Unlock()
			if w != nil {
				w.ch <- in.Msg
			}
		case wire.Stdin:
			select {
			case c.stdin <- in.Msg:
			default:
			}
		default:
			c.mu.Lock()
			ch := c.replies[pid]
			c.mu.Unlock()
			if ch != nil {
				select {
				case ch <- in.Msg:
				default:
				}
			}
		}
	}
}

// Close closes the connection (the kernel keeps running).
func (c *Client) Close() {
	c.conn.Close()
}

// Request sends a request on ch and waits for its reply. IOPub messages
// for it are passed to onIOPub until the kernel reports idle.
func (c *Client) Request(ctx context.Context, ch wire.Channel, msgType string, content any, onIOPub func(*wire.Message)) (*wire.Message, error) {
	m, err := c.conn.NewMessage(msgType, content)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, ch, m, onIOPub, nil)
}

// Notify sends a message that gets no reply (comm_open, comm_msg, …) and
// waits until the kernel is idle again, passing IOPub to onIOPub.
func (c *Client) Notify(ctx context.Context, m *wire.Message, onIOPub func(*wire.Message)) error {
	_, err := c.exchange(ctx, wire.Shell, m, onIOPub, nil, false, false)
	return err
}

// Exchange sends m on ch and passes every IOPub message whose parent it is,
// status messages included, to onIOPub until the kernel reports idle (and,
// with wantReply, until the reply came). It is the raw view of the
// protocol that tests of the kernel itself need.
func (c *Client) Exchange(ctx context.Context, ch wire.Channel, m *wire.Message, onIOPub func(*wire.Message), wantReply bool) (*wire.Message, error) {
	return c.exchange(ctx, ch, m, onIOPub, nil, wantReply, true)
}

func (c *Client) roundTrip(ctx context.Context, ch wire.Channel, m *wire.Message, onIOPub func(*wire.Message), onStdin func(*wire.Message) error) (*wire.Message, error) {
	return c.exchange(ctx, ch, m, onIOPub, onStdin, true, false)
}

// exchange sends m and waits for its reply (if wantReply) and idle status.
// IOPub goes to onIOPub; status messages too if withStatus.
func (c *Client) exchange(ctx context.Context, ch wire.Channel, m *wire.Message, onIOPub func(*wire.Message), onStdin func(*wire.Message) error, wantReply, withStatus bool) (*wire.Message, error) {
	id := m.Header.MsgID
	w := &waiter{ch: make(chan *wire.Message, 1024)}
	rch := make(chan *wire.Message, 1)
	c.mu.Lock()
	c.waiters[id] = w
	c.replies[id] = rch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, id)
		delete(c.replies, id)
		c.mu.Unlock()
	}()
	if err := c.conn.Send(ch, m); err != nil {
		return nil, err
	}
	var reply *wire.Message
	idle := false
	for (wantReply && reply == nil) || !idle {
		select {
		case r := <-rch:
			reply = r
		case msg := <-w.ch:
			if msg.Header.MsgType == "status" {
				var st struct {
					S string `json:"execution_state"`
				}
				if msg.Decode(&st) == nil && st.S == "idle" {
					idle = true
				}
				if withStatus && onIOPub != nil {
					onIOPub(msg)
				}
				continue
			}
			if onIOPub != nil {
				onIOPub(msg)
			}
		case msg := <-c.stdin:
			if msg.ParentID() != id {
				continue
			}
			if onStdin == nil {
				return nil, errors.New("kernel asked for input but stdin is not allowed")
			}
			if err := onStdin(msg); err != nil {
				return nil, err
			}
		case <-c.closed:
			return nil, errors.New("connection to kernel closed")
		case <-ctx.Done():
			var missing []string
			if wantReply && reply == nil {
				missing = append(missing, "its reply")
			}
			if !idle {
				missing = append(missing, "the kernel's idle status")
			}
			return nil, fmt.Errorf("waiting for %s to %s: %w", strings.Join(missing, " and "), m.Header.MsgType, ctx.Err())
		}
	}
	return reply, nil
}

// WaitReady sends kernel_info requests until the kernel answers one with
// its IOPub status, so no output of the first cell is missed.
func (c *Client) WaitReady(ctx context.Context) (map[string]any, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := c.Request(tctx, wire.Shell, "kernel_info_request", nil, nil)
		cancel()
		if err == nil {
			var info map[string]any
			if err := r.Decode(&info); err != nil {
				return nil, err
			}
			return info, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("kernel did not become ready: %w", ctx.Err())
		}
	}
}

// Execute runs code and collects its outputs. When the exchange fails after
// the request was sent (ctx ended, the connection closed), it returns the
// outputs received so far with the error, so a front end can keep what an
// interrupted or timed-out cell printed, as nbclient does.
func (c *Client) Execute(ctx context.Context, code string, opt ExecOptions) (*Result, error) {
	content := map[string]any{"code": code, "silent": opt.Silent, "allow_stdin": opt.Input != nil, "stop_on_error": true}
	if opt.StoreHistory != nil {
		content["store_history"] = *opt.StoreHistory
	} else {
		content["store_history"] = !opt.Silent
	}
	if opt.UserExpressions != nil {
		content["user_expressions"] = opt.UserExpressions
	} else {
		content["user_expressions"] = map[string]any{}
	}
	m, err := c.conn.NewMessage("execute_request", content)
	if err != nil {
		return nil, err
	}
	if opt.CellID != "" {
		m.Metadata, _ = json.Marshal(map[string]string{"cellId": opt.CellID})
	}
	res := &Result{Timing: map[string]string{}}
	var mine []*displayRef // this cell's outputs that carry a display_id
	clearWaiting := false  // clear_output(wait=True) clears at the next output
	// tail accumulates the text of the last output while it is a stream
	// that later messages extend: concatenating strings instead copied the
	// whole text at every message (200 x 1 MiB prints: 20 GB of copies).
	var tail *strings.Builder
	clear := func() {
		tail = nil
		res.Outputs = nil
		for _, r := range mine {
			r.dead = true
		}
		mine = nil
	}
	onIOPub := func(msg *wire.Message) {
		t := msg.Header.MsgType
		switch t {
		case "status":
			var st struct {
				S string `json:"execution_state"`
			}
			if msg.Decode(&st) == nil && (st.S == "busy" || st.S == "idle") {
				if _, seen := res.Timing["iopub.status."+st.S]; !seen {
					res.Timing["iopub.status."+st.S] = Timestamp(msg.Header.Date)
				}
			}
			return
		case "execute_input":
			res.Timing["iopub.execute_input"] = Timestamp(msg.Header.Date)
			return
		}
		if t == "clear_output" {
			var cl struct {
				Wait bool `json:"wait"`
			}
			_ = msg.Decode(&cl)
			if cl.Wait {
				clearWaiting = true
			} else {
				clear()
			}
			return
		}
		var id string // only display messages carry one; never parse a large stream for it
		if t == "display_data" || t == "execute_result" || t == "update_display_data" {
			if id = displayID(msg); id != "" {
				c.updateDisplays(id, msg)
			}
		}
		out := ToOutput(msg)
		if out == nil {
			return
		}
		if clearWaiting {
			clear()
			clearWaiting = false
		}
		if id != "" {
			r := &displayRef{out: out}
			mine = append(mine, r)
			c.addDisplay(id, r)
		}
		if out["output_type"] == "stream" && len(res.Outputs) > 0 {
			last := res.Outputs[len(res.Outputs)-1]
			if last["output_type"] == "stream" && last["name"] == out["name"] {
				if tail == nil {
					tail = &strings.Builder{}
					tail.WriteString(last["text"].(string))
				}
				tail.WriteString(out["text"].(string))
				last["text"] = tail.String() // no copy: the builder only appends
				if opt.OnOutput != nil {
					opt.OnOutput(out)
				}
				return
			}
		}
		tail = nil // a new output: the last one is complete
		if out["output_type"] == "error" {
			res.EName, _ = out["ename"].(string)
			res.EValue, _ = out["evalue"].(string)
		}
		res.Outputs = append(res.Outputs, out)
		if opt.OnOutput != nil {
			opt.OnOutput(out)
		}
	}
	onStdin := func(msg *wire.Message) error {
		var req struct {
			Prompt   string `json:"prompt"`
			Password bool   `json:"password"`
		}
		if err := msg.Decode(&req); err != nil {
			return err
		}
		val, err := opt.Input(req.Prompt, req.Password)
		if err != nil {
			return err
		}
		rep, err := wire.New("input_reply", c.conn.Session, "ferry", msg.HeaderJSON(), map[string]string{"value": val})
		if err != nil {
			return err
		}
		return c.conn.Send(wire.Stdin, rep)
	}
	// withStatus: the busy and idle statuses are timing milestones.
	reply, err := c.exchange(ctx, wire.Shell, m, onIOPub, onStdin, true, true)
	if err != nil {
		return res, err
	}
	res.Timing["shell.execute_reply"] = Timestamp(reply.Header.Date)
	if err := reply.Decode(&res.Reply); err != nil {
		return nil, err
	}
	res.Status, _ = res.Reply["status"].(string)
	if n, ok := res.Reply["execution_count"].(float64); ok {
		res.Count = int(n)
	}
	if res.Status == "error" && res.EName == "" {
		res.EName, _ = res.Reply["ename"].(string)
		res.EValue, _ = res.Reply["evalue"].(string)
	}
	return res, nil
}

// Timestamp renders a message header's date as nbclient records timing:
// UTC, microseconds, a literal Z. A date that does not parse (a peer that
// sent none) falls back to now, as nbclient's does.
func Timestamp(date string) string {
	t, err := time.Parse(time.RFC3339Nano, date)
	if err != nil {
		t = time.Now()
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// Interrupt sends interrupt_request on control.
func (c *Client) Interrupt(ctx context.Context) error {
	_, err := c.Request(ctx, wire.Control, "interrupt_request", nil, nil)
	return err
}

// Shutdown sends shutdown_request on control and waits for the reply.
func (c *Client) Shutdown(ctx context.Context, restart bool) error {
	_, err := c.Request(ctx, wire.Control, "shutdown_request", map[string]bool{"restart": restart}, nil)
	return err
}

// displayID returns the transient display_id of a display message, or "".
func displayID(msg *wire.Message) string {
	var c struct {
		Transient struct {
			ID string `json:"display_id"`
		} `json:"transient"`
	}
	if json.Unmarshal(msg.Content, &c) != nil {
		return ""
	}
	return c.Transient.ID
}

// updateDisplays gives every live output showing display id the data and
// metadata of msg, as nbclient and Jupyter front ends do for
// update_display_data and for a display_data reusing an id.
func (c *Client) updateDisplays(id string, msg *wire.Message) {
	var u struct {
		Data     map[string]any `json:"data"`
		Metadata map[string]any `json:"metadata"`
	}
	if json.Unmarshal(msg.Content, &u) != nil {
		return
	}
	for _, r := range c.displays[id] {
		if !r.dead {
			r.out["data"], r.out["metadata"] = orMap(u.Data), orMap(u.Metadata)
		}
	}
}

// addDisplay records an output showing display id, dropping dead ones.
func (c *Client) addDisplay(id string, r *displayRef) {
	if c.displays == nil {
		c.displays = map[string][]*displayRef{}
	}
	refs := c.displays[id][:0]
	for _, old := range c.displays[id] {
		if !old.dead {
			refs = append(refs, old)
		}
	}
	c.displays[id] = append(refs, r)
}

// ToOutput converts an IOPub message to an nbformat output, or nil if the
// message is not an output.
func ToOutput(msg *wire.Message) Output {
	var c map[string]any
	if json.Unmarshal(msg.Content, &c) != nil {
		return nil
	}
	switch t := msg.Header.MsgType; t {
	case "stream":
		return Output{"output_type": "stream", "name": c["name"], "text": str(c["text"])}
	case "display_data", "update_display_data":
		if t == "update_display_data" {
			return nil
		}
		return Output{"output_type": "display_data", "data": orMap(c["data"]), "metadata": orMap(c["metadata"])}
	case "execute_result":
		return Output{"output_type": "execute_result", "data": orMap(c["data"]), "metadata": orMap(c["metadata"]), "execution_count": c["execution_count"]}
	case "error":
		tb, _ := c["traceback"].([]any)
		if tb == nil {
			tb = []any{}
		}
		return Output{"output_type": "error", "ename": str(c["ename"]), "evalue": str(c["evalue"]), "traceback": tb}
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func orMap(v any) map[string]any {
	if m, ok := v.(map[string]any); ok {
		return m
	}
	return map[string]any{}
}

// Stream joins the text a result's stream name ("stdout", "stderr") got.
func (r *Result) Stream(name string) string {
	var b strings.Builder
	for _, o := range r.Outputs {
		if o["output_type"] == "stream" && o["name"] == name {
			b.WriteString(str(o["text"]))
		}
	}
	return b.String()
}

// Text joins the text of a result's streams and text/plain results, for
// tests and summaries.
func (r *Result) Text() string {
	var b strings.Builder
	for _, o := range r.Outputs {
		switch o["output_type"] {
		case "stream":
			b.WriteString(str(o["text"]))
		case "execute_result", "display_data":
			if d, ok := o["data"].(map[string]any); ok {
				b.WriteString(str(d["text/plain"]))
				b.WriteString("\n")
			}
		case "error":
			b.WriteString(str(o["ename"]) + ": " + str(o["evalue"]) + "\n")
		}
	}
	return b.String()
}
