// Package backendtest is an in-process fake of a backend kernel for unit
// tests of Ferry's policy and flow: moves, recovery, think time, cold
// starts and races run in milliseconds, without Python kernels. A Kernel
// implements backend.Backend and speaks the wire protocol the way
// ipykernel with Ferry's agent does: for each shell request status busy,
// its outputs, the reply, then idle, each with the request as parent, one
// request at a time; control requests at once; the state comm's pack/load
// protocol of agent.py with windows of chunks. It runs a small subset of
// Python (see interp.go), so cells stay valid Python that Ferry's analysis
// reads as it reads real ones. Integration tests keep real ipykernels;
// this package only stands in for them where the kernel's behaviour, not
// Python's, is under test.
//
// A test builds one per location and hands them to kernel.Config:
//
//	local, cloud := backendtest.New(location.Local), backendtest.New(location.Remote, backendtest.WithStartDelay(time.Second))
//
// Knobs: WithStartDelay / SetStartDelay (a cold start; Start honours its
// context), WithFailStart / SetFailStart, WithChunkSize, WithReplyDelay, WithLostBusy
// (IOPub loses execute requests' busy status), Kill (a crash:
// the namespace is lost, pending requests get no answer). Inspection:
// Value (a name's Python repr), Bytes, Names, Executed (runs of a cell's
// code, hidden or not), Effects (effect("name") calls), Starts.
package backendtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// DefaultChunkSize is the default payload chunk: small, so a transfer of a
// few hundred KiB already spans several windows.
const DefaultChunkSize = 64 << 10

// Option configures a Kernel at construction.
type Option func(*Kernel)

// WithStartDelay makes each Start take d (a cold start); Start honours its
// context while it waits.
func WithStartDelay(d time.Duration) Option { return func(k *Kernel) { k.startDelay = d } }

// WithFailStart makes every Start fail with err.
func WithFailStart(err error) Option { return func(k *Kernel) { k.failStart = err } }

// WithLostBusy makes every execute_request's busy status get lost, as
// a kernel's IOPub socket drops messages past its high-water mark: the
// request runs, but Ferry never hears that it started.
func WithLostBusy() Option { return func(k *Kernel) { k.lostBusy.Store(true) } }

// WithReplyDelay makes every shell request of msgType take d before its
// reply (a slow kernel_info_request: a link probe that outlasts the gap
// between the user's requests). A death ends the wait.
func WithReplyDelay(msgType string, d time.Duration) Option {
	return func(k *Kernel) {
		if k.replyDelay == nil {
			k.replyDelay = map[string]time.Duration{}
		}
		k.replyDelay[msgType] = d
	}
}

// WithAbortOnce makes the first execute_request of code be aborted, as
// ipykernel aborts a request that arrives while it clears its queue after
// an error: a reply with status "aborted", nothing run, no number taken.
func WithAbortOnce(code string) Option {
	return func(k *Kernel) {
		if k.abort == nil {
			k.abort = map[string]bool{}
		}
		k.abort[code] = true
	}
}

// WithChunkSize sets the payload chunk size of the state comm (n > 0).
func WithChunkSize(n int) Option {
	return func(k *Kernel) {
		if n > 0 {
			k.chunkSize = n
		}
	}
}

// Kernel is a fake backend kernel at one location, across incarnations:
// Kill ends one (its namespace is lost), the next Start makes a fresh one.
// It is safe for concurrent use.
type Kernel struct {
	loc       location.Location
	session   string
	in        chan wire.Incoming
	chunkSize int
	startSem  chan struct{} // one Start at a time
	lostBusy  atomic.Bool
	// replyDelay is how long each shell request type waits before its
	// reply (WithReplyDelay); set at construction only.
	replyDelay map[string]time.Duration
	// abort holds the cells whose next execute_request is aborted
	// (WithAbortOnce), guarded by mu.
	abort map[string]bool

	mu         sync.Mutex
	startDelay time.Duration
	failStart  error
	cur        *incarnation // nil before the first start
	starts     int
	shut       bool
	lastExit   string
	upTotal    time.Duration // the ended incarnations' lifetimes
	started    time.Time
	starting   time.Time // a start under way began (zero when none is)
	releases   int
	released   time.Time
	executed   map[string]int
	effects    map[string]int
}

// New returns a fake kernel at loc, not started.
func New(loc location.Location, opts ...Option) *Kernel {
	k := &Kernel{loc: loc, session: wire.NewID(), in: make(chan wire.Incoming, 4096), chunkSize: DefaultChunkSize,
		startSem: make(chan struct{}, 1), executed: map[string]int{}, effects: map[string]int{}}
	for _, o := range opts {
		o(k)
	}
	return k
}

var (
	_ backend.Backend  = (*Kernel)(nil)
	_ backend.Releaser = (*Kernel)(nil)
)

// SetStartDelay changes how long the next Starts take.
func (k *Kernel) SetStartDelay(d time.Duration) {
	k.mu.Lock()
	k.startDelay = d
	k.mu.Unlock()
}

// SetFailStart makes the next Starts fail with err (nil: succeed again).
func (k *Kernel) SetFailStart(err error) {
	k.mu.Lock()
	k.failStart = err
	k.mu.Unlock()
}

func (k *Kernel) Location() location.Location    { return k.loc }
func (k *Kernel) Incoming() <-chan wire.Incoming { return k.in }

// closedChan is Died before the first start: no incarnation runs.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (k *Kernel) current() *incarnation {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

func (k *Kernel) Died() <-chan struct{} {
	if inc := k.current(); inc != nil {
		return inc.dead
	}
	return closedChan
}

func (k *Kernel) Alive() bool {
	inc := k.current()
	return inc != nil && inc.alive()
}

// ErrShutdown is returned by Start after Shutdown.
var ErrShutdown = errors.New("fake kernel was shut down")

// Start starts an incarnation unless one runs, after the start delay.
func (k *Kernel) Start(ctx context.Context) error {
	select {
	case k.startSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-k.startSem }()
	k.mu.Lock()
	shut, running, delay, fail := k.shut, k.cur != nil && k.cur.alive(), k.startDelay, k.failStart
	k.mu.Unlock()
	switch {
	case shut:
		return ErrShutdown
	case running:
		return nil
	}
	k.mu.Lock()
	k.starting = time.Now()
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.starting = time.Time{}
		k.mu.Unlock()
	}()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.shut {
		return ErrShutdown
	}
	inc := newIncarnation(k)
	inc.born = time.Now()
	k.cur = inc
	k.starts++
	k.started = time.Now()
	k.released = time.Time{}
	inc.wg.Add(2)
	go inc.loop(inc.shell, inc.handleShell)
	go inc.loop(inc.control, inc.handleControl)
	return nil
}

// Send queues a request for the current incarnation: shell requests run
// one at a time in order, control requests at once, an input_reply goes
// to the input() waiting for it.
func (k *Kernel) Send(ctx context.Context, ch wire.Channel, m *wire.Message) error {
	if m == nil {
		return errors.New("fake kernel: nil message")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	inc := k.current()
	if inc == nil || !inc.alive() {
		return fmt.Errorf("fake %s kernel is not running: %w", k.loc, backend.ErrDied)
	}
	switch ch {
	case wire.Shell:
		inc.shell.push(m)
	case wire.Control:
		inc.control.push(m)
	case wire.Stdin:
		select {
		case inc.stdin <- m:
		default: // nobody asked: dropped, as a kernel drops a stray reply
		}
	default:
		return fmt.Errorf("fake kernel: cannot send on %q", ch)
	}
	return nil
}

// Interrupt raises KeyboardInterrupt in the running cell, if any.
func (k *Kernel) Interrupt(context.Context) error {
	inc := k.current()
	if inc == nil || !inc.alive() {
		return fmt.Errorf("fake %s kernel is not running", k.loc)
	}
	inc.interrupt()
	return nil
}

// Kill ends the current incarnation at once, as a crash does: Died
// closes, the namespace is lost, and requests being handled or queued get
// no answer. Nothing of it is delivered after Kill returns.
func (k *Kernel) Kill() {
	if inc := k.current(); inc != nil {
		inc.die("killed")
		inc.wg.Wait()
	}
}

// Release ends the current incarnation on purpose (idle release); the next
// Start starts a new one.
func (k *Kernel) Release(context.Context) error {
	if !k.Alive() {
		return nil
	}
	k.Kill()
	k.mu.Lock()
	k.releases++
	k.released = time.Now()
	k.lastExit = "released after idle time"
	k.mu.Unlock()
	return nil
}

// Releases counts the Release calls that ended an incarnation.
func (k *Kernel) Releases() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.releases
}

// Shutdown ends the current incarnation; Start fails after it.
func (k *Kernel) Shutdown(ctx context.Context) error {
	k.mu.Lock()
	k.shut = true
	inc := k.cur
	k.mu.Unlock()
	if inc == nil {
		return nil
	}
	inc.die("shut down")
	done := make(chan struct{})
	go func() { inc.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *Kernel) Status() backend.Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := backend.Status{Location: k.loc, Kind: "fake", Interpreter: "backendtest", State: "not started", Started: k.started, Starting: k.starting,
		Restarts: max(k.starts-1, 0), LastExit: k.lastExit, UpSeconds: k.upTotal.Seconds()}
	if k.cur != nil {
		st.State = "running"
		if k.cur.alive() {
			st.UpSeconds += time.Since(k.cur.born).Seconds()
		} else {
			st.State = "dead"
			if !k.released.IsZero() {
				st.State, st.Released = "released", k.released
			}
		}
	}
	return st
}

func (k *Kernel) KernelInfo() json.RawMessage {
	if k.current() == nil {
		return nil
	}
	return kernelInfo
}

var kernelInfo = json.RawMessage(`{"status":"ok","protocol_version":"5.3","implementation":"ferry-fake","implementation_version":"1",` +
	`"language_info":{"name":"python","version":"3.11.0","mimetype":"text/x-python","file_extension":".py"},"banner":"Ferry's fake kernel\n","help_links":[]}`)

// Starts counts the incarnations started.
func (k *Kernel) Starts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.starts
}

// Executed counts how many times code ran as an execute_request, hidden or
// not, across incarnations.
func (k *Kernel) Executed(code string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.executed[code]
}

// Effects counts the effect(name) calls that ran, across incarnations.
func (k *Kernel) Effects(name string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.effects[name]
}

// Value is the Python repr of what name holds in the current incarnation.
func (k *Kernel) Value(name string) (string, bool) {
	var r string
	ok := k.withObject(name, func(o *object) { r = repr(o) })
	return r, ok
}

// Bytes is the content of a bytearray name holds (blob, noise).
func (k *Kernel) Bytes(name string) ([]byte, bool) {
	var b []byte
	ok := k.withObject(name, func(o *object) {
		if o.kind == kBytes {
			b = append([]byte{}, o.b...)
		}
	})
	return b, ok && b != nil
}

// withObject calls f with what name holds, under the incarnation's lock.
func (k *Kernel) withObject(name string, f func(*object)) bool {
	inc := k.current()
	if inc == nil || !inc.alive() {
		return false
	}
	inc.mu.Lock()
	defer inc.mu.Unlock()
	o, ok := inc.ns[name]
	if ok {
		f(o)
	}
	return ok
}

// Names lists the names bound in the current incarnation, sorted.
func (k *Kernel) Names() []string {
	inc := k.current()
	if inc == nil || !inc.alive() {
		return nil
	}
	inc.mu.Lock()
	defer inc.mu.Unlock()
	names := make([]string, 0, len(inc.ns))
	for n := range inc.ns {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ---------------------------------------------------------------- incarnation

// incarnation is one run of the kernel: its namespace, agent and queues.
type incarnation struct {
	k       *Kernel
	born    time.Time // when Start made it: billed from then to its death
	dead    chan struct{}
	dieOnce sync.Once
	wg      sync.WaitGroup // the shell and control goroutines
	emitMu  sync.Mutex     // held while a message is delivered

	shell, control *queue
	stdin          chan *wire.Message
	intr           chan struct{}
	running        atomic.Bool // an execute_request is being run

	mu    sync.Mutex // guards what follows
	ns    map[string]*object
	count int // IPython's execution_count - 1: cells stored so far
	agent agentState
	// cellEffects are the effect() calls of the running user cell, as the
	// agent's audit hook records side effects: only for cells that are
	// not silent (Ferry's hidden work and replays are), reported once.
	cellEffects []string
}

func newIncarnation(k *Kernel) *incarnation {
	return &incarnation{k: k, dead: make(chan struct{}), shell: newQueue(), control: newQueue(),
		stdin: make(chan *wire.Message, 8), intr: make(chan struct{}, 1), ns: map[string]*object{}, agent: newAgentState()}
}

func (inc *incarnation) alive() bool {
	select {
	case <-inc.dead:
		return false
	default:
		return true
	}
}

// die ends the incarnation. Once it returns, no message of it is
// delivered: a send in flight has finished or given up.
func (inc *incarnation) die(why string) {
	inc.dieOnce.Do(func() {
		close(inc.dead)
		inc.k.mu.Lock()
		inc.k.lastExit = why
		inc.k.upTotal += time.Since(inc.born)
		inc.k.mu.Unlock()
	})
	// A barrier: an emit in flight has delivered or given up.
	inc.emitMu.Lock()
	inc.emitMu.Unlock() //nolint:staticcheck // empty critical section on purpose
}

func (inc *incarnation) interrupt() {
	if !inc.running.Load() {
		return // between cells an interrupt does nothing
	}
	select {
	case inc.intr <- struct{}{}:
	default:
	}
}

// errDead ends a handler whose incarnation died: nothing more is sent.
var errDead = errors.New("incarnation died")

// emit delivers one message unless the incarnation died.
func (inc *incarnation) emit(ch wire.Channel, m *wire.Message) error {
	inc.emitMu.Lock()
	defer inc.emitMu.Unlock()
	select {
	case <-inc.dead:
		return errDead
	default:
	}
	select {
	case inc.k.in <- wire.Incoming{Channel: ch, Msg: m}:
		return nil
	case <-inc.dead:
		return errDead
	}
}

// msg builds a message with parent req.
func (inc *incarnation) msg(msgType string, req *wire.Message, content any, buffers [][]byte) *wire.Message {
	m, err := wire.New(msgType, inc.k.session, "fake", req.HeaderJSON(), content)
	if err != nil { // content is always built here from plain values
		m, _ = wire.New(msgType, inc.k.session, "fake", req.HeaderJSON(), map[string]string{"error": err.Error()})
	}
	m.Buffers = buffers
	return m
}

// loop runs handle on each message of q, in order, until death.
func (inc *incarnation) loop(q *queue, handle func(*wire.Message) error) {
	defer inc.wg.Done()
	for {
		m, ok := q.pop(inc.dead)
		if !ok {
			return
		}
		if err := handle(m); errors.Is(err, errDead) {
			return
		}
	}
}

// out collects a request's messages; flush delivers them in order.
type out struct {
	inc     *incarnation
	req     *wire.Message
	pending []wire.Incoming
}

func (o *out) add(ch wire.Channel, msgType string, content any, buffers [][]byte) {
	o.pending = append(o.pending, wire.Incoming{Channel: ch, Msg: o.inc.msg(msgType, o.req, content, buffers)})
}

func (o *out) iopub(msgType string, content any) { o.add(wire.IOPub, msgType, content, nil) }

func (o *out) flush() error {
	for _, p := range o.pending {
		if err := o.inc.emit(p.Channel, p.Msg); err != nil {
			o.pending = nil
			return err
		}
	}
	o.pending = nil
	return nil
}

// replyTypes are the requests answered with a <type>_reply.
var replyTypes = map[string]bool{"execute_request": true, "kernel_info_request": true, "complete_request": true,
	"inspect_request": true, "is_complete_request": true, "history_request": true, "comm_info_request": true,
	"shutdown_request": true, "interrupt_request": true}

// handleShell answers one shell request: busy, its outputs and reply, idle.
func (inc *incarnation) handleShell(m *wire.Message) error {
	o := &out{inc: inc, req: m}
	if m.Header.MsgType != "execute_request" || !inc.k.lostBusy.Load() {
		o.iopub("status", map[string]string{"execution_state": "busy"})
	}
	if err := o.flush(); err != nil {
		return err
	}
	var err error
	switch t := m.Header.MsgType; t {
	case "execute_request":
		err = inc.execute(o)
	case "comm_open", "comm_msg", "comm_close":
		inc.mu.Lock()
		inc.comm(o)
		inc.mu.Unlock()
	case "shutdown_request":
		inc.shutdownRequest(o, wire.Shell)
	default:
		inc.simpleReply(o, wire.Shell)
	}
	if err != nil {
		return err
	}
	if d := inc.k.replyDelay[m.Header.MsgType]; d > 0 {
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-inc.dead:
			tm.Stop()
			return errDead
		}
	}
	return inc.finish(o, m)
}

// handleControl answers a control request at once, even while a cell runs.
func (inc *incarnation) handleControl(m *wire.Message) error {
	o := &out{inc: inc, req: m}
	o.iopub("status", map[string]string{"execution_state": "busy"})
	switch m.Header.MsgType {
	case "interrupt_request":
		inc.interrupt()
		o.add(wire.Control, "interrupt_reply", map[string]string{"status": "ok"}, nil)
	case "shutdown_request":
		inc.shutdownRequest(o, wire.Control)
	default:
		inc.simpleReply(o, wire.Control)
	}
	return inc.finish(o, m)
}

// finish publishes idle after request m, sends what it produced, and
// ends the incarnation after a shutdown_request, as ipykernel does.
func (inc *incarnation) finish(o *out, m *wire.Message) error {
	o.iopub("status", map[string]string{"execution_state": "idle"})
	if err := o.flush(); err != nil {
		return err
	}
	if m.Header.MsgType == "shutdown_request" {
		inc.die("shut down by request")
		return errDead
	}
	return nil
}

func (inc *incarnation) shutdownRequest(o *out, ch wire.Channel) {
	var req struct {
		Restart bool `json:"restart"`
	}
	_ = o.req.Decode(&req)
	o.add(ch, "shutdown_reply", map[string]any{"status": "ok", "restart": req.Restart}, nil)
}

// simpleReply answers the requests a test does not exercise with what a
// kernel that knows nothing more would say.
func (inc *incarnation) simpleReply(o *out, ch wire.Channel) {
	t := o.req.Header.MsgType
	if !replyTypes[t] {
		return // unknown types get busy and idle only, as in ipykernel
	}
	var content any
	switch t {
	case "kernel_info_request":
		content = kernelInfo
	case "is_complete_request":
		content = map[string]string{"status": "complete"}
	case "complete_request":
		content = map[string]any{"status": "ok", "matches": []string{}, "cursor_start": 0, "cursor_end": 0, "metadata": map[string]any{}}
	case "inspect_request":
		content = map[string]any{"status": "ok", "found": false, "data": map[string]any{}, "metadata": map[string]any{}}
	case "history_request":
		content = map[string]any{"status": "ok", "history": []any{}}
	case "comm_info_request":
		inc.mu.Lock()
		comms := map[string]any{}
		for id, ok := range inc.agent.comms {
			if ok {
				comms[id] = map[string]string{"target_name": commTarget}
			}
		}
		inc.mu.Unlock()
		content = map[string]any{"status": "ok", "comms": comms}
	default:
		content = errContent("NotImplementedError", "the fake kernel does not answer "+t)
	}
	o.add(ch, t[:len(t)-len("_request")]+"_reply", content, nil)
}

func errContent(ename, evalue string) map[string]any {
	return map[string]any{"status": "error", "ename": ename, "evalue": evalue, "traceback": []string{ename + ": " + evalue}}
}

// ---------------------------------------------------------------- queue

// queue is an unbounded FIFO of requests: Send never blocks on a busy
// kernel, as a socket's buffer does not.
type queue struct {
	mu    sync.Mutex
	items []*wire.Message
	ready chan struct{}
}

func newQueue() *queue { return &queue{ready: make(chan struct{}, 1)} }

func (q *queue) push(m *wire.Message) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *queue) pop(dead <-chan struct{}) (*wire.Message, bool) {
	for {
		select {
		case <-dead:
			return nil, false
		default:
		}
		q.mu.Lock()
		if len(q.items) > 0 {
			m := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return m, true
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-dead:
			return nil, false
		}
	}
}
