// Package transfer moves values between the kernels at two locations
// through Ferry: it installs the agent in each kernel incarnation, asks the
// source to pack names in windows of chunks, relays each chunk to the
// target as it comes (Ferry never holds a payload), has the target check
// the hash and load, and deletes names. It is the Go half of the state
// comm; agent.py is the other half (internal/agent holds the messages).
//
// It owns the agents' per-incarnation state and nothing else: it does not
// touch the state map or the cost model. Move returns a typed Result, so
// the caller records the new copies and feeds the model only the move's
// own time. It reaches kernels only through a Requester.
package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// Requester is how this package (and recovery and think time) reach the
// kernels; the kernel implements it over its backends and call table.
// Every method may block; ctx bounds it. They are called from the kernel's
// shell worker only (a cell, its moves, recovery and think-time work never
// run at once), except Send, which a move calls from the router's goroutine
// as chunks arrive.
type Requester interface {
	// Start makes sure an incarnation of loc's kernel runs, starting one
	// if needed (which can take long: a cold cloud node), and returns the
	// incarnation's Died channel.
	Start(ctx context.Context, loc location.Location) (<-chan struct{}, error)
	// Request sends a hidden request to loc's kernel: it never reaches the
	// front end (no output, history or execution count). It waits until
	// the kernel is idle after it, and has answered it if wantReply.
	// onIOPub, if set, sees each IOPub message of the request but status
	// as it arrives; otherwise they are collected in the Reply.
	Request(ctx context.Context, loc location.Location, ch wire.Channel, msgType string, content any, wantReply bool, onIOPub func(*wire.Message)) (Reply, error)
	// Send sends one message to loc's kernel without waiting.
	Send(ctx context.Context, loc location.Location, ch wire.Channel, m *wire.Message) error
}

// Reply is what a hidden request produced.
type Reply struct {
	Msg *wire.Message
	// IOPub holds the request's IOPub messages other than status.
	IOPub []*wire.Message
}

// ErrAgent is an error raised inside a kernel by hidden code.
var ErrAgent = errors.New("ferry agent error")

// Exec runs code silently at loc and returns the evaluated
// user_expressions (each a mime bundle) or the error the code raised.
func Exec(ctx context.Context, r Requester, loc location.Location, code string, exprs map[string]string) (map[string]json.RawMessage, error) {
	if exprs == nil {
		exprs = map[string]string{}
	}
	res, err := r.Request(ctx, loc, wire.Shell, "execute_request", map[string]any{
		"code": code, "silent": true, "store_history": false, "user_expressions": exprs, "allow_stdin": false, "stop_on_error": false,
	}, true, nil)
	if err != nil {
		return nil, err
	}
	var rep struct {
		Status string                     `json:"status"`
		EName  string                     `json:"ename"`
		EValue string                     `json:"evalue"`
		Exprs  map[string]json.RawMessage `json:"user_expressions"`
	}
	if err := res.Msg.Decode(&rep); err != nil {
		return nil, err
	}
	if rep.Status == "aborted" {
		return nil, ErrAborted
	}
	if rep.Status != "ok" {
		return nil, fmt.Errorf("%w: %s: %s", ErrAgent, rep.EName, rep.EValue)
	}
	return rep.Exprs, nil
}

// ErrAborted is returned by Exec when ipykernel aborted the request: it
// arrived in the short window after a cell raised in which ipykernel
// aborts what is queued (stop_on_error). Nothing ran; asking again a
// moment later works.
var ErrAborted = errors.New("the kernel aborted the request (it came right after a cell raised)")

// Result is one finished move.
type Result struct {
	// From and To are the move's source and target.
	From, To location.Location
	// Names are the names the target confirmed loading.
	Names []string
	// Bytes were sent over the link (compressed where it paid); RawBytes
	// is the payload before compression.
	Bytes, RawBytes int64
	// WireSeconds is the move itself, from the pack request to the
	// target's confirmation: never a kernel start or a retry's first try,
	// so the link model learns only what the link costs.
	WireSeconds float64
	// Unmovable says, per name that could not be serialised, why; those
	// names stayed where they were.
	Unmovable map[string]string
	// Notes are what the target said while loading (warnings raised by
	// its libraries, settings it could not apply), for the cell's output.
	Notes []string
}

// Compression is the payload's sent/raw size ratio, 0 when nothing was
// sent.
func (r Result) Compression() float64 {
	if r.RawBytes <= 0 || r.Bytes <= 0 {
		return 0
	}
	return float64(r.Bytes) / float64(r.RawBytes)
}

// Progress is how far a move has come, for a display of it: reported
// when the payload begins, as each chunk passes Ferry, and once when the
// move ends (Finished, with Err if it failed).
type Progress struct {
	Src, Dst location.Location
	Names    []string
	// Raw is the payload relayed so far before compression, of RawTotal
	// (0 until the source said); Sent is what crossed the link so far.
	Raw, RawTotal, Sent int64
	Finished            bool
	Err                 error
}

// Mover moves values between locations. Its methods are called from the
// kernel's shell worker, one at a time.
type Mover struct {
	req       Requester
	secret    string
	onChunk   func(src, dst location.Location, chunk int)
	log       *slog.Logger
	env       func(loc location.Location) map[string]string
	onInstall func(loc location.Location, info agent.Info)
	onLoaded  func(dst location.Location, names []string)
	progress  func(Progress)

	// readyMu makes Ready install one agent at a time: the kernel starts
	// kernels ahead of the first cell on goroutines of their own.
	readyMu sync.Mutex
	mu      sync.Mutex
	agents  map[location.Location]*agentState
	// dead are locations whose agent's incarnation was replaced by a new
	// one before Dead was asked.
	dead []location.Location
}

// agentState is the agent in one kernel incarnation.
type agentState struct {
	died   <-chan struct{} // the incarnation the agent was installed in
	commID string
	info   agent.Info
}

// Config configures a Mover.
type Config struct {
	// Secret is presented on the state comm; the agent accepts payloads
	// only from whoever knows it.
	Secret string
	// OnChunk, if set, is called as each chunk passes Ferry (the fault
	// suite strikes there).
	OnChunk func(src, dst location.Location, chunk int)
	Log     *slog.Logger
	// Env returns the environment variables to set in loc's kernel when
	// the agent is installed: the user's --forward-env, for the clouds.
	Env func(loc location.Location) map[string]string
	// OnInstall, if set, is called (from whichever goroutine made the
	// kernel ready) each time the agent is installed in a new kernel
	// incarnation, with what the agent says of its kernel: the kernel
	// registers the files it holds and compares versions.
	OnInstall func(loc location.Location, info agent.Info)
	// OnLoaded, if set, is called after a target confirmed loading names
	// (from whichever goroutine made the move): the kernel stamps files
	// that arrived on the laptop, so it can tell them from files changed
	// there outside a cell.
	OnLoaded func(dst location.Location, names []string)
	// OnProgress, if set, is told how far each move has come (Progress);
	// it is called from the goroutine relaying chunks, so it must not
	// block for long.
	OnProgress func(Progress)
}

// New returns a Mover reaching kernels through req.
func New(req Requester, cfg Config) *Mover {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Mover{req: req, secret: cfg.Secret, onChunk: cfg.OnChunk, log: cfg.Log, env: cfg.Env, onInstall: cfg.OnInstall, onLoaded: cfg.OnLoaded,
		progress: cfg.OnProgress, agents: map[location.Location]*agentState{}}
}

// Ready makes sure loc's kernel runs with the agent installed in its
// current incarnation: it installs the agent, checks its protocol version
// and opens the state comm with the session secret. The kernel calls it
// before every request to loc while state is tracked.
func (m *Mover) Ready(ctx context.Context, loc location.Location) error {
	died, err := m.req.Start(ctx, loc)
	if err != nil {
		return err
	}
	m.readyMu.Lock()
	defer m.readyMu.Unlock()
	m.mu.Lock()
	a := m.agents[loc]
	m.mu.Unlock()
	if a != nil && a.died == died && !closed(died) {
		return nil
	}
	var env map[string]string
	if m.env != nil {
		env = m.env(loc)
	}
	exprs, err := Exec(ctx, m.req, loc, agent.InstallCode(m.secret, env), map[string]string{agent.ProtocolKey: agent.ProtocolExpr, agent.InfoKey: agent.InfoExpr})
	if err != nil {
		return fmt.Errorf("installing the agent in the %s kernel: %w", loc, err)
	}
	if err := agent.CheckProtocol(exprs[agent.ProtocolKey]); err != nil {
		return fmt.Errorf("installing the agent in the %s kernel: %w", loc, err)
	}
	info, err := agent.ParseInfo(exprs[agent.InfoKey])
	if err != nil {
		m.log.Warn("the agent did not describe its kernel; versions and files there are unknown", "at", loc, "err", err)
	}
	comm := wire.NewID()
	if _, err := m.req.Request(ctx, loc, wire.Shell, "comm_open", map[string]any{
		"comm_id": comm, "target_name": agent.CommTarget, "data": map[string]string{"secret": m.secret},
	}, false, nil); err != nil {
		return fmt.Errorf("opening the state channel to the %s kernel: %w", loc, err)
	}
	m.mu.Lock()
	if a != nil && a.died != died {
		m.dead = append(m.dead, loc) // its old incarnation died
	}
	m.agents[loc] = &agentState{died: died, commID: comm, info: info}
	m.mu.Unlock()
	if m.onInstall != nil {
		m.onInstall(loc, info)
	}
	return nil
}

// Info returns what the agent in loc's current kernel said of it when
// installed, and whether one is installed.
func (m *Mover) Info(loc location.Location) (agent.Info, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.agents[loc]
	if a == nil {
		return agent.Info{}, false
	}
	return a.info, true
}

// ErrIncompatible is returned when the target could not load a payload
// because its Python lacks a module the payload needs, or has one without
// what the payload refers to: a certain failure, not retried.
var ErrIncompatible = errors.New("the target cannot load this payload")

// incompatible reports whether a load error names a missing module or
// attribute (ModuleNotFoundError, ImportError, "Can't get attribute").
func incompatible(agentErr string) bool {
	for _, p := range []string{"ModuleNotFoundError", "ImportError", "Can't get attribute", "AttributeError"} {
		if strings.Contains(agentErr, p) {
			return true
		}
	}
	return false
}

// Dead returns the locations whose kernel incarnation, with the agent
// installed, has died since, and forgets that incarnation. The kernel
// calls it before planning each cell and after each move, so a dead copy
// is never chosen as a source.
func (m *Mover) Dead() []location.Location {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.dead
	m.dead = nil
	for loc, a := range m.agents {
		if closed(a.died) {
			delete(m.agents, loc)
			out = append(out, loc)
		}
	}
	return location.NewSet(out...)
}

func (m *Mover) comm(loc location.Location) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.agents[loc]; a != nil {
		return a.commID
	}
	return ""
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Move moves names from src to dst in one payload, so names sharing
// objects keep their identity. The source keeps its copy until the target
// confirmed the payload's hash. A failed move is tried once more, unless
// a kernel died or ctx ended.
func (m *Mover) Move(ctx context.Context, src, dst location.Location, names []string) (res Result, err error) {
	if m.progress != nil {
		defer func() {
			m.progress(Progress{Src: src, Dst: dst, Names: names, Raw: res.RawBytes, RawTotal: res.RawBytes, Sent: res.Bytes, Finished: true, Err: err})
		}()
	}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		for _, loc := range []location.Location{src, dst} {
			if err := m.Ready(ctx, loc); err != nil {
				return Result{}, err
			}
		}
		res, err := m.once(ctx, src, dst, names)
		if err == nil {
			return res, nil
		}
		lastErr = err
		if errors.Is(err, backend.ErrDied) || errors.Is(err, ErrIncompatible) || ctx.Err() != nil {
			break
		}
		m.log.Warn("state transfer failed; retrying", "from", src, "to", dst, "err", err)
	}
	return Result{}, lastErr
}

// packWindow is how many chunks the source sends per request: IOPub has no
// flow control, so a source faster than the link would otherwise pile the
// whole payload up in Ferry's memory (measured: 1.6 GB of Go heap for a
// 1 GB array sent to a jupyter-server kernel).
const packWindow = 4

// once is one try of a move; both kernels run with the agent installed.
func (m *Mover) once(ctx context.Context, src, dst location.Location, names []string) (Result, error) {
	t0 := time.Now()
	srcComm, dstComm := m.comm(src), m.comm(dst)
	id := wire.NewID()
	var (
		mu       sync.Mutex
		packed   *agent.Msg
		sendErr  error
		chunks   int
		agentErr string
		sent     int64
		paused   bool // the source waits for "more"
	)
	var rawTotal, rawDone int64
	// Each chunk goes on to the target as soon as it arrives.
	onIOPub := func(msg *wire.Message) {
		d, raw, ok := agent.CommData(msg)
		if !ok || d.ID != id {
			return
		}
		mu.Lock()
		if m.progress != nil && (d.Op == agent.OpBegin || d.Op == agent.OpChunk) {
			defer func() { // told after the chunk went on, outside the lock
				mu.Lock()
				p := Progress{Src: src, Dst: dst, Names: names, Raw: rawDone, RawTotal: rawTotal, Sent: sent}
				mu.Unlock()
				m.progress(p)
			}()
		}
		defer mu.Unlock()
		switch d.Op {
		case agent.OpBegin, agent.OpChunk:
			if d.Op == agent.OpChunk && len(msg.Buffers) != 1 {
				agentErr = "chunk without its buffer"
				return
			}
			fw, err := wire.New("comm_msg", backend.Session, "ferry", nil, map[string]any{"comm_id": dstComm, "data": raw})
			if err == nil {
				fw.Buffers = msg.Buffers
				err = m.req.Send(ctx, dst, wire.Shell, fw)
			}
			if err != nil && sendErr == nil {
				sendErr = err
			}
			if d.Op == agent.OpBegin {
				rawTotal = d.RawSize
			}
			if d.Op == agent.OpChunk {
				chunks++
				sent += int64(len(msg.Buffers[0]))
				rawDone += d.Raw
				if m.onChunk != nil {
					m.onChunk(src, dst, chunks)
				}
			}
		case agent.OpPaused:
			paused = true
		case agent.OpPacked:
			p := d
			packed = &p
		case agent.OpError:
			agentErr = d.Error
		}
	}
	ask := func(data map[string]any) error {
		_, err := m.req.Request(ctx, src, wire.Shell, "comm_msg", map[string]any{"comm_id": srcComm, "data": data}, false, onIOPub)
		return err
	}
	err := ask(map[string]any{"op": agent.OpPack, "id": id, "names": names, "compress": true, "window": packWindow})
	// Each window is relayed by the time its request is idle; only then
	// is the next asked for, so Ferry holds at most a window.
	more := func() bool {
		mu.Lock()
		defer mu.Unlock()
		p := paused && agentErr == "" && sendErr == nil
		paused = false
		return p
	}
	for err == nil && more() {
		err = ask(map[string]any{"op": agent.OpMore, "id": id})
	}
	mu.Lock()
	defer mu.Unlock()
	drop := func() {
		if msg, e := wire.New("comm_msg", backend.Session, "ferry", nil, map[string]any{"comm_id": dstComm, "data": map[string]any{"op": agent.OpDrop, "id": id}}); e == nil {
			_ = m.req.Send(ctx, dst, wire.Shell, msg)
		}
	}
	var fail error
	switch {
	case err != nil:
		fail = fmt.Errorf("packing %s at %s: %w", strings.Join(names, ", "), src, err)
	case agentErr != "":
		fail = fmt.Errorf("packing at %s: %s", src, agentErr)
	case packed == nil:
		fail = fmt.Errorf("packing at %s: the agent did not answer", src)
	case sendErr != nil:
		fail = fmt.Errorf("sending to %s: %w", dst, sendErr)
	case chunks != packed.Chunks:
		fail = fmt.Errorf("packing at %s: %d of %d chunks arrived", src, chunks, packed.Chunks)
	}
	if fail != nil {
		drop()
		return Result{}, fail
	}
	res := Result{From: src, To: dst, Bytes: sent, RawBytes: packed.RawSize, Unmovable: packed.Unmovable}
	rep, err := m.req.Request(ctx, dst, wire.Shell, "comm_msg", map[string]any{"comm_id": dstComm, "data": map[string]any{
		"op": agent.OpLoad, "id": id, "hash": packed.Hash, "chunks": packed.Chunks}}, false, nil)
	if err != nil {
		return Result{}, fmt.Errorf("loading at %s: %w", dst, err)
	}
	for _, msg := range rep.IOPub {
		d, _, ok := agent.CommData(msg)
		if !ok || d.ID != id {
			continue
		}
		switch d.Op {
		case agent.OpLoaded:
			if d.Hash != packed.Hash {
				return Result{}, fmt.Errorf("loading at %s: hash %s confirmed, %s sent", dst, d.Hash, packed.Hash)
			}
			res.Names = append([]string(nil), d.Names...)
			sort.Strings(res.Names)
			res.Notes = d.Notes
			if m.onLoaded != nil {
				m.onLoaded(dst, res.Names)
			}
			res.WireSeconds = time.Since(t0).Seconds()
			return res, nil
		case agent.OpError:
			if incompatible(d.Error) {
				return Result{}, fmt.Errorf("%w: loading at %s: %s", ErrIncompatible, dst, d.Error)
			}
			return Result{}, fmt.Errorf("loading at %s: %s", dst, d.Error)
		}
	}
	return Result{}, fmt.Errorf("loading at %s: the agent did not confirm", dst)
}

// Delete removes names at loc (deleted in the newest state, or stale
// there), so a cell there never sees an old value.
func (m *Mover) Delete(ctx context.Context, loc location.Location, names []string) error {
	if err := m.Ready(ctx, loc); err != nil {
		return err
	}
	_, err := m.req.Request(ctx, loc, wire.Shell, "comm_msg", map[string]any{"comm_id": m.comm(loc), "data": map[string]any{
		"op": agent.OpDelete, "id": wire.NewID(), "names": names}}, false, nil)
	return err
}
