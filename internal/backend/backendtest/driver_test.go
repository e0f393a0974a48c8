package backendtest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// driver talks to one fake kernel the way Ferry's kernel does: it sends
// requests and reads the kernel's Incoming (as its only reader).
type driver struct {
	t *testing.T
	k *backendtest.Kernel
	// stray are messages read while waiting that belong to no request
	// being waited for (e.g. the statuses of relayed chunks).
	stray []wire.Incoming
}

// started returns a started fake kernel at loc, shut down at the end.
func started(t *testing.T, loc location.Location, opts ...backendtest.Option) *driver {
	t.Helper()
	k := backendtest.New(loc, opts...)
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Shutdown(context.Background()) })
	return &driver{t: t, k: k}
}

// result is everything one request produced.
type result struct {
	req   *wire.Message
	reply *wire.Message
	// msgs is every message with the request as parent, in order.
	msgs []wire.Incoming
}

func (r *result) types() []string {
	var out []string
	for _, m := range r.msgs {
		out = append(out, m.Msg.Header.MsgType)
	}
	return out
}

// content decodes the reply's content.
func (r *result) content() map[string]any {
	var c map[string]any
	if r.reply != nil {
		_ = json.Unmarshal(r.reply.Content, &c)
	}
	return c
}

// iopub returns the request's IOPub messages of type t.
func (r *result) iopub(t string) []*wire.Message {
	var out []*wire.Message
	for _, m := range r.msgs {
		if m.Channel == wire.IOPub && m.Msg.Header.MsgType == t {
			out = append(out, m.Msg)
		}
	}
	return out
}

// stdout joins the request's stdout stream.
func (r *result) stdout() string {
	s := ""
	for _, m := range r.iopub("stream") {
		var c struct{ Text string }
		_ = m.Decode(&c)
		s += c.Text
	}
	return s
}

// resultText is the execute_result's text/plain, or "".
func (r *result) resultText() string {
	for _, m := range r.iopub("execute_result") {
		var c struct {
			Data map[string]string `json:"data"`
		}
		_ = m.Decode(&c)
		return c.Data["text/plain"]
	}
	return ""
}

func (d *driver) send(ch wire.Channel, msgType string, content any, buffers [][]byte) *wire.Message {
	d.t.Helper()
	m, err := wire.New(msgType, backend.Session, "ferry", nil, content)
	if err != nil {
		d.t.Fatal(err)
	}
	m.Buffers = buffers
	if err := d.k.Send(context.Background(), ch, m); err != nil {
		d.t.Fatalf("sending %s: %v", msgType, err)
	}
	return m
}

// wait reads until req's idle status (and its reply, if wantReply) came;
// onMsg, if set, sees each of req's messages as it arrives. Messages of
// req read earlier while waiting for another request count too.
func (d *driver) wait(req *wire.Message, wantReply bool, onMsg func(wire.Incoming)) *result {
	d.t.Helper()
	r := &result{req: req}
	idle := false
	take := func(in wire.Incoming) {
		r.msgs = append(r.msgs, in)
		if onMsg != nil {
			onMsg(in)
		}
		switch {
		case in.Channel == wire.Shell || in.Channel == wire.Control:
			r.reply = in.Msg
		case in.Msg.Header.MsgType == "status":
			var st struct {
				State string `json:"execution_state"`
			}
			_ = in.Msg.Decode(&st)
			idle = st.State == "idle"
		}
	}
	backlog := d.stray
	d.stray = nil
	for _, in := range backlog {
		if in.Msg.ParentID() == req.Header.MsgID {
			take(in)
		} else {
			d.stray = append(d.stray, in)
		}
	}
	timeout := time.After(10 * time.Second)
	for !idle || wantReply && r.reply == nil {
		select {
		case in := <-d.k.Incoming():
			if in.Msg.ParentID() != req.Header.MsgID {
				d.stray = append(d.stray, in)
				continue
			}
			take(in)
		case <-timeout:
			d.t.Fatalf("no answer to %s after 10 s; got %v", req.Header.MsgType, r.types())
		}
	}
	return r
}

// do sends a request and waits for it.
func (d *driver) do(ch wire.Channel, msgType string, content any, buffers [][]byte) *result {
	d.t.Helper()
	return d.wait(d.send(ch, msgType, content, buffers), msgType != "comm_msg" && msgType != "comm_open" && msgType != "comm_close", nil)
}

// exec runs code as a front end's cell; exprs are its user_expressions.
func (d *driver) exec(code string, exprs map[string]string) *result {
	d.t.Helper()
	if exprs == nil {
		exprs = map[string]string{}
	}
	return d.do(wire.Shell, "execute_request", map[string]any{"code": code, "silent": false, "store_history": true,
		"user_expressions": exprs, "allow_stdin": false, "stop_on_error": true}, nil)
}

// hiddenExec runs code as Ferry's hidden requests do.
func (d *driver) hiddenExec(code string, exprs map[string]string) *result {
	d.t.Helper()
	if exprs == nil {
		exprs = map[string]string{}
	}
	return d.do(wire.Shell, "execute_request", map[string]any{"code": code, "silent": true, "store_history": false,
		"user_expressions": exprs, "allow_stdin": false, "stop_on_error": false}, nil)
}

// expr returns one user_expressions entry of r's reply.
func (r *result) expr(key string) json.RawMessage {
	var c struct {
		UE map[string]json.RawMessage `json:"user_expressions"`
	}
	if r.reply != nil {
		_ = json.Unmarshal(r.reply.Content, &c)
	}
	return c.UE[key]
}

// install installs the agent as Ferry does and checks its protocol.
func (d *driver) install(secret string) {
	d.t.Helper()
	r := d.hiddenExec(agent.InstallCode(secret, nil), map[string]string{agent.ProtocolKey: agent.ProtocolExpr})
	if st := r.content()["status"]; st != "ok" {
		d.t.Fatalf("install: %v", r.content())
	}
	if err := agent.CheckProtocol(r.expr(agent.ProtocolKey)); err != nil {
		d.t.Fatalf("install: %v", err)
	}
}

// open opens the state comm with secret and returns its id and what the
// kernel answered.
func (d *driver) open(secret string) (string, *result) {
	d.t.Helper()
	id := wire.NewID()
	r := d.do(wire.Shell, "comm_open", map[string]any{"comm_id": id, "target_name": agent.CommTarget, "data": map[string]string{"secret": secret}}, nil)
	return id, r
}

// report asks the agent what changed, as Ferry does after a cell raised.
func (d *driver) report(maybe []string, dynamic bool) agent.Report {
	d.t.Helper()
	r := d.hiddenExec("", map[string]string{agent.ReportKey: agent.ReportExpr(maybe, dynamic, false, nil, false)})
	rep, err := agent.ParseReport(r.expr(agent.ReportKey))
	if err != nil {
		d.t.Fatalf("report: %v", err)
	}
	return rep
}

// comm sends an op on the state comm and returns the agent's messages.
func (d *driver) comm(commID string, data map[string]any, buffers [][]byte) []agent.Msg {
	d.t.Helper()
	r := d.do(wire.Shell, "comm_msg", map[string]any{"comm_id": commID, "data": data}, buffers)
	var out []agent.Msg
	for _, m := range r.iopub("comm_msg") {
		if msg, _, ok := agent.CommData(m); ok {
			out = append(out, msg)
		}
	}
	return out
}
