// Package kernel is Ferry as a Jupyter kernel: it binds the sockets a front
// end connects to, dispatches each request, and relays what the backends
// answer with the front end's parent header, session and execution count.
package kernel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/calibrate"
	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
	"github.com/ferry-nb/ferry/internal/recall"
	"github.com/ferry-nb/ferry/internal/recovery"
	"github.com/ferry-nb/ferry/internal/state"
	"github.com/ferry-nb/ferry/internal/thinktime"
	"github.com/ferry-nb/ferry/internal/trace"
	"github.com/ferry-nb/ferry/internal/transfer"
	"github.com/ferry-nb/ferry/internal/wire"
)

// Version is Ferry's implementation version.
var Version = "0.1.0"

// Config configures a kernel.
type Config struct {
	Conn wire.ConnInfo
	// Backends by location; location.Local is required.
	Backends map[location.Location]backend.Backend
	// Policy names the initial placement policy.
	Policy string
	// PolicyImpl, if set, is used instead of the named policy (the
	// benchmark runs the oracle's placement this way).
	PolicyImpl policy.Policy
	// Seed seeds the random policy.
	Seed int64
	// Link is the assumed link until measured; RemoteSpeed the assumed
	// local/remote speed ratio until cells ran at both places.
	Link        policy.Link
	RemoteSpeed float64
	// Trace, if set, receives one event per execution.
	Trace *trace.Writer
	// BaselineDump measures, at each migration, a full-session dill dump at
	// the source: the baseline Ferry's transfers are compared with.
	BaselineDump bool
	// Analyzer tells which names a cell reads and writes. Without it Ferry
	// moves no state (fine while every cell runs in one place).
	Analyzer *analysis.Analyzer
	// OnChunk, if set, is called as each chunk of a state payload passes
	// through Ferry from src to dst: the fault suite strikes there, mid-
	// transfer, instead of guessing with timers.
	OnChunk func(src, dst location.Location, chunk int)
	// Log receives Ferry's own log lines (slog.Default if nil).
	Log *slog.Logger
	// Recall, if set, is what earlier sessions learnt of cells (package
	// recall): a cell not run yet in this session is planned by its
	// remembered runtime, and each finished cell is recorded. Saved in
	// think time and at shutdown.
	Recall *recall.Store
	// Root is the notebook's folder on the laptop, the local kernel's
	// working directory ("" = Ferry's own): files under it are state.
	Root string
	// ForwardEnv names laptop environment variables to set in the cloud
	// kernels (--forward-env); no other part of the laptop's environment
	// is copied.
	ForwardEnv []string
	// FilesCap bounds the files brought to a cloud for one cell (0: 2
	// GiB); a cell needing more runs on the laptop, and says why.
	FilesCap int64
	// CloudPrice is what a cloud kernel costs per hour of existing, in
	// USD (--cloud-price; 0: unknown), for %ferry status and the summary.
	CloudPrice float64
	// Clouds are what differs per cloud from the defaults above (Link,
	// RemoteSpeed, CloudPrice), by location: a GPU cloud's speed, price
	// and link are not a CPU cloud's. A cloud missing here, or a zero
	// field, takes the default.
	Clouds map[location.Location]CloudSettings
	// CloudIdle lets a cloud kernel go once no cell ran there for this
	// long (--cloud-idle; 0: never), its values written home first
	// (release.go).
	CloudIdle time.Duration
	// Objective is what --policy ferry minimises (policy.Objective; empty:
	// time). balanced and cost also let idle cloud kernels go without
	// --cloud-idle, at their break-even.
	Objective policy.Objective
	// Calibration, if set, turns on the speed calibration (package
	// calibrate) and keeps its figures and kernel start times across
	// sessions; LaptopKey names the laptop's figures in it (the
	// interpreter), Clouds[loc].Key each cloud's.
	Calibration *calibrate.Cache
	LaptopKey   string
}

// CloudSettings are one cloud's own speed, price and link (Config.Clouds).
type CloudSettings struct {
	// Speed is how many times faster than the laptop it is assumed to run
	// cells until measured (0: Config.RemoteSpeed).
	Speed float64
	// Price is USD per hour its kernel exists (0: Config.CloudPrice).
	Price float64
	// Link is its link to the laptop, assumed until measured (zero:
	// Config.Link).
	Link policy.Link
	// Key names it in the calibration cache (its URL and kernelspec);
	// "" keeps nothing of it across sessions.
	Key string
}

// Price is what loc's kernel costs per hour it exists, in USD (0: unknown).
func (c Config) Price(loc location.Location) float64 {
	if p := c.Clouds[loc].Price; p > 0 {
		return p
	}
	return c.CloudPrice
}

// CloudUse is one cloud's kernel time so far and what it cost.
type CloudUse struct {
	Seconds float64 `json:"kernel_seconds"`
	USD     float64 `json:"cost"`
}

// CloudUsageByCloud is CloudUsage for each cloud apart. Any goroutine may
// call it.
func (s *Server) CloudUsageByCloud() map[location.Location]CloudUse {
	out := map[location.Location]CloudUse{}
	for _, loc := range s.locs.Clouds() {
		if b := s.backends[loc]; b != nil {
			up := b.Status().UpSeconds
			out[loc] = CloudUse{Seconds: up, USD: up * s.cfg.Price(loc) / 3600}
		}
	}
	return out
}

// CloudUsage is how long the cloud kernels existed so far (from each
// one's creation to its deletion, over restarts) and what that cost, each
// at its own price (0 without one). Any goroutine may call it.
func (s *Server) CloudUsage() (seconds, usd float64) {
	for _, u := range s.CloudUsageByCloud() {
		seconds += u.Seconds
		usd += u.USD
	}
	return seconds, usd
}

// Server is one running Ferry kernel.
type Server struct {
	cfg     Config
	signer  *wire.Signer
	session string

	shell, control, stdin, iopub *wire.Socket

	backends map[location.Location]backend.Backend
	locs     location.Set // the configured locations, the laptop first
	log      *slog.Logger
	start    time.Time

	callsMu sync.Mutex
	calls   map[string]*call // backend msg_id -> call
	recent  []string         // finished calls, oldest first, kept for late output

	stdinMu      sync.Mutex
	stdinPending *pendingInput

	commMu    sync.Mutex
	commOwner map[string]location.Location // comm_id -> location

	// where is where the running (or last) cell runs: the control
	// goroutine reads it for interrupts while the shell worker sets it.
	where where

	// Only the shell worker touches these.
	execCount int
	histMu    sync.Mutex // history is also written by the router (outputs)
	history   []historyEntry
	// kernelHist is what each kernel knows of history (shell worker only).
	kernelHist map[location.Location]*kernelHistory
	policy     policy.Policy
	model      *policy.Model
	state      *state.Map
	lineage    *state.Lineage
	lastEnd    time.Time // when the previous execution finished, for think time
	lastWhy    string    // the last placement decision, for %ferry why
	lastCosts  map[location.Location]float64
	rel        releases // idle release (release.go)
	lastMoved  string
	seq        int
	// tracedIdleBytes is Totals().IdleBytes at the last trace event.
	tracedIdleBytes int64
	// startWaited is the nanoseconds the running cell waited for kernel
	// starts (startBackend), taken into its trace event.
	startWaited atomic.Int64
	lastCell    string // the last cell run, for predictions

	// The rooms: moves, recovery and think time own their state; the
	// kernel routes. facts is the state map and lineage as planning sees
	// them.
	mover *transfer.Mover
	files *files.Tracker
	root  string // the notebook's folder on the laptop
	// recallSaved is when think time last wrote the recall file (the
	// shell worker's).
	recallSaved time.Time
	out         *outside
	recovery    *recovery.Recovery
	think       *thinktime.Worker
	facts       policy.Facts

	// cell is the running cell's execute_request (nil between cells and
	// for silent ones): a kernel start that takes a while is announced in
	// its output. Set by the shell worker, read by whoever starts a kernel.
	cell atomic.Pointer[wire.Message]
	// interrupts and inputs count the interrupt requests and the
	// input_requests relayed to the front end, so a cell learns whether
	// it was interrupted or read stdin while it ran: lineage never
	// replays such a run.
	interrupts, inputs atomic.Int64
	// moves shows a long move's progress in the running cell.
	moves *moveDisplay

	// wake is signalled when a shell request arrives, to cancel
	// think-time work.
	wake chan struct{}
	// work is held by the shell worker while it handles a request or
	// spends think time, so a shutdown from the control channel can tell
	// whether it may move state (the mover is the shell worker's).
	work chan struct{}
	// stopping is set once a shutdown began: no backend starts again.
	stopping atomic.Bool
	// wg counts the goroutines Serve starts; Serve waits for them.
	wg sync.WaitGroup

	// Rejected counts front-end messages dropped for bad signatures or frames.
	Rejected atomic.Int64
	// Stats are the counters ferry run reports.
	Stats Stats

	cancel context.CancelFunc
	done   chan struct{}
}

// Stats counts what happened in a session. The cell and move counters
// are the kernel's; recovery and think time keep their own, which Totals
// adds in.
type Stats struct {
	mu          sync.Mutex
	CellsLocal  int
	CellsRemote int // at any cloud
	// CellsAt counts cells by where they ran (several clouds).
	CellsAt    map[location.Location]int
	Migrations int
	BytesMoved int64
	// TransferSeconds is the time spent moving state for cells.
	TransferSeconds float64
	// FullStateBytes and FullStateSeconds are what a full-session dill dump
	// at the same migration points would have cost (with BaselineDump).
	FullStateBytes   int64
	FullStateSeconds float64
	PinnedCells      int
	// CloudReleases counts cloud kernels let go after idle time;
	// WrittenHome the values written home before them.
	CloudReleases, WrittenHome int
	// WarmStarts counts cloud kernels started in think time before the
	// cell expected there (policy.Warmer).
	WarmStarts int

	recovery func() recovery.Counts
	think    func() thinktime.Counts
}

// Totals is a copy of the counters.
type Totals struct {
	CellsLocal, CellsRemote, Migrations, PinnedCells int
	CellsAt                                          map[location.Location]int
	BytesMoved, FullStateBytes                       int64
	TransferSeconds, FullStateSeconds                float64
	// VarsLost counts values whose only copy died with a kernel;
	// VarsRebuilt those rebuilt from lineage, in RebuildSeconds.
	VarsLost, VarsRebuilt int
	RebuildSeconds        float64
	// IdleMoves and IdleBytes are the moves made in the user's think
	// time (prefetch and write-back); IdleCancelled were cut short by
	// the next request.
	IdleMoves, IdleCancelled int
	IdleBytes                int64
	// Recomputed counts values made at a cell's location by re-running
	// their cells instead of moving them.
	Recomputed int
	// CloudReleases counts cloud kernels let go after --cloud-idle;
	// WrittenHome the values written home before them.
	CloudReleases, WrittenHome int
	// WarmStarts counts cloud kernels started in think time.
	WarmStarts int
}

// Totals returns a copy of all counters.
func (s *Stats) Totals() Totals {
	s.mu.Lock()
	t := Totals{CellsLocal: s.CellsLocal, CellsRemote: s.CellsRemote, Migrations: s.Migrations, PinnedCells: s.PinnedCells,
		BytesMoved: s.BytesMoved, FullStateBytes: s.FullStateBytes, TransferSeconds: s.TransferSeconds, FullStateSeconds: s.FullStateSeconds,
		CloudReleases: s.CloudReleases, WrittenHome: s.WrittenHome, WarmStarts: s.WarmStarts, CellsAt: maps.Clone(s.CellsAt)}
	rc, th := s.recovery, s.think
	s.mu.Unlock()
	if rc != nil {
		c := rc()
		t.VarsLost, t.VarsRebuilt, t.RebuildSeconds, t.Recomputed = c.Lost, c.Rebuilt, c.RebuildSeconds, c.Recomputed
	}
	if th != nil {
		c := th()
		t.IdleMoves, t.IdleCancelled, t.IdleBytes = c.Moves, c.Cancelled, c.Bytes
	}
	return t
}

// Snapshot returns a copy of the counters.
func (s *Stats) Snapshot() (local, remote, migrations int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.CellsLocal, s.CellsRemote, s.Migrations, s.BytesMoved
}

// where is the location of the running cell (busy, "" between cells) and
// of the last cell, safe for the control goroutine to read.
type where struct {
	mu         sync.Mutex
	busy, last location.Location
}

func (w *where) set(busy location.Location) {
	w.mu.Lock()
	w.busy = busy
	if busy != "" {
		w.last = busy
	}
	w.mu.Unlock()
}

// now is where the running cell runs, else where the last one ran.
func (w *where) now() location.Location {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.busy != "" {
		return w.busy
	}
	return w.last
}

type historyEntry struct {
	Line   int
	Input  string
	Output *string // text/plain of the execute_result, if any
	// outAt are the kernels holding the result as their Out[Line]
	// (history.go): where the cell ran, and where it was moved to.
	outAt map[location.Location]bool
}

type pendingInput struct {
	loc     location.Location
	request *wire.Message // the backend's input_request
}

// call is one request forwarded to a backend.
type call struct {
	fe     *wire.Message // the front end's request (nil for hidden calls)
	count  int           // execution count shown to the front end; 0 = keep
	reply  chan *wire.Message
	idle   chan struct{}
	once   sync.Once
	sink   func(*wire.Message) // receives IOPub of hidden calls
	result func(string)        // receives the text/plain of an execute_result
	waiter atomic.Bool         // a handler still waits for the reply
	// started is set once the backend said busy for the request: only
	// then may a request that died with its kernel have run.
	started atomic.Bool
	// gaveUp is set when Ferry stopped waiting for the reply and answered
	// the front end itself; a late reply is then dropped.
	gaveUp atomic.Bool
	// lastIOPub is when the backend last published for the request (unix
	// ns), so a lost idle status is told from output still coming.
	lastIOPub atomic.Int64
}

func (c *call) markIdle() { c.once.Do(func() { close(c.idle) }) }

// New binds the kernel's sockets. Call Serve to run it.
func New(cfg Config) (*Server, error) {
	if cfg.Backends[location.Local] == nil {
		return nil, errors.New("kernel needs a local backend")
	}
	signer, err := wire.NewSigner(cfg.Conn.SignatureScheme, []byte(cfg.Conn.Key))
	if err != nil {
		return nil, err
	}
	p := cfg.PolicyImpl
	if p == nil {
		var err error
		if p, err = policy.New(cfg.Policy, cfg.Seed); err != nil {
			return nil, err
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	model := policy.NewModel(cfg.Link)
	model.Objective = cfg.Objective
	model.SpeedPrior = cfg.RemoteSpeed
	for loc, c := range cfg.Clouds {
		if cfg.Backends[loc] == nil {
			return nil, fmt.Errorf("settings for cloud %q, which is not configured (clouds: %s)", loc, location.NewSet(keys(cfg.Backends)...).Clouds())
		}
		if c.Speed > 0 {
			if model.SpeedPriors == nil {
				model.SpeedPriors = map[location.Location]float64{}
			}
			model.SpeedPriors[loc] = c.Speed
		}
		if c.Link != (policy.Link{}) {
			l := c.Link
			if l.Bandwidth <= 0 {
				l.Bandwidth = cfg.Link.Bandwidth
			}
			if l.RTT <= 0 {
				l.RTT = cfg.Link.RTT
			}
			if l.Compression <= 0 {
				l.Compression = cfg.Link.Compression
			}
			model.SetLink(loc, l)
		}
	}
	var s *Server
	// A plan at a location whose kernel is not running pays its start.
	model.Cold = func(l location.Location) bool { return !s.Running(l) }
	// A start under way (one begun in think time) has only the rest left.
	model.StartedAgo = func(l location.Location) float64 {
		if b := s.backends[l]; b != nil && !b.Alive() {
			if st := b.Status().Starting; !st.IsZero() {
				return time.Since(st).Seconds()
			}
		}
		return 0
	}
	// How long a running cloud kernel has before an idle release, were
	// no cell to run there (the cost objective's billing of a kernel that
	// idles while a cell runs on the laptop).
	model.UntilRelease = func(l location.Location) float64 { return s.untilRelease(l) }
	locs := keys(cfg.Backends)
	s = &Server{cfg: cfg, signer: signer, session: wire.NewID(), backends: cfg.Backends, locs: location.NewSet(locs...), log: cfg.Log,
		start: time.Now(), calls: map[string]*call{}, commOwner: map[string]location.Location{}, kernelHist: map[location.Location]*kernelHistory{}, policy: p, model: model,
		state: state.New(), lineage: state.NewLineage(0), done: make(chan struct{}), wake: make(chan struct{}, 1), work: make(chan struct{}, 1)}
	s.where.set(location.Local)
	s.where.set("")
	// Without an Analyzer the state map stays empty, so nothing is ever
	// planned to move, rebuilt or proposed in think time.
	root := cfg.Root
	if root == "" {
		root, _ = os.Getwd()
	}
	s.files, s.out = files.New(root), newOutside()
	s.root = root
	if h := cfg.Recall; h != nil {
		model.Remembered = func(cell string) (float64, bool) {
			e, ok := h.Get(recall.Key(root, cell))
			return e.LaptopSeconds, ok
		}
	}
	s.moves = newMoveDisplay(func(cell *wire.Message, msgType string, content map[string]any) {
		s.publish(wire.IOPub, msgType, cell, content, nil)
	})
	s.mover = transfer.New(s, transfer.Config{Secret: wire.NewID() + wire.NewID(), OnChunk: cfg.OnChunk, Log: cfg.Log,
		Env: s.forwardEnv, OnInstall: s.onInstall, OnLoaded: s.onLoaded, OnProgress: s.onProgress})
	s.recovery = recovery.New(s, s.mover, s.state, s.lineage, model, s.locs, cfg.Log)
	s.facts = fileFacts{s.recovery.Facts(), s.files}
	s.think = thinktime.New(s, s.mover, s.state, s.facts, model, s.locs, cfg.Log)
	if cfg.Calibration != nil {
		keys := map[location.Location]string{location.Local: cfg.LaptopKey}
		for _, loc := range s.locs.Clouds() {
			keys[loc] = cfg.Clouds[loc].Key
			// The start kept from last time is not given to the model:
			// ferry puts a cold kernel's whole start on the cell that
			// would start it, and with a known 20 s start it never
			// started a 4x cloud in a replay of the hybrid bench's
			// digits session (15% behind all-remote); sharing the start
			// over the unseen cells ahead made it worse (6% behind both
			// fixed placements, 4x slower with --cloud-idle 1m). The
			// model learns the start from this session's first, as
			// before; amortising a known start is open (issue 16).
		}
		s.think.SetCalibration(cfg.Calibration, keys)
	}
	s.Stats.recovery, s.Stats.think = s.recovery.Counts, s.think.Counts
	binds := []struct {
		dst  **wire.Socket
		kind wire.Kind
		port int
		name string
	}{{&s.shell, wire.ROUTER, cfg.Conn.ShellPort, "shell"}, {&s.control, wire.ROUTER, cfg.Conn.ControlPort, "control"},
		{&s.stdin, wire.ROUTER, cfg.Conn.StdinPort, "stdin"}, {&s.iopub, wire.PUB, cfg.Conn.IOPubPort, "iopub"}}
	for _, b := range binds {
		sock, err := wire.Bind(b.kind, cfg.Conn.Addr(b.port), b.name)
		if err != nil {
			s.closeSockets()
			return nil, err
		}
		*b.dst = sock
	}
	return s, nil
}

func (s *Server) closeSockets() {
	for _, sock := range []*wire.Socket{s.shell, s.control, s.stdin, s.iopub} {
		if sock != nil {
			sock.Close()
		}
	}
}

// Serve runs the kernel until ctx ends or a shutdown_request arrives, then
// shuts down in steps: the front-end readers and the shell worker stop,
// every backend is shut down, the sockets close, and every goroutine Serve
// started has returned before it does.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	defer close(s.done)
	if err := wire.Heartbeat(ctx, s.cfg.Conn.Addr(s.cfg.Conn.HBPort)); err != nil {
		cancel()
		s.closeSockets()
		return err
	}
	goWait := func(f func()) {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); f() }()
	}
	// Backends that can call Ferry with each message do, from the goroutine
	// that read it: one hand-off less per message than a route goroutine
	// reading their channel. Set before any kernel starts.
	for loc, b := range s.backends {
		if h, ok := b.(handler); ok {
			h.Handle(func(in wire.Incoming) { s.dispatch(loc, in) })
		}
	}
	// Start the local kernel now so the first cell does not wait for it;
	// a cloud's only when it will be used or must be measured
	// (startAtConnect): a cloud kernel nobody uses costs money.
	var starts sync.WaitGroup
	for _, loc := range s.locs {
		if loc != location.Local && !s.startAtConnect(loc) {
			continue
		}
		starts.Add(1)
		goWait(func() {
			defer starts.Done()
			if err := s.ready(ctx, loc); err != nil && ctx.Err() == nil {
				s.log.Warn("starting kernel", "location", loc, "err", err)
			}
		})
	}
	// Then measure them, one after the other and once all are up: a
	// calibration beside another kernel's start measured the laptop 3x
	// slower than the same machine's stand-in cloud. Now, not at the first
	// pause after a cell: a cloud started to be measured may see no cell
	// for a while.
	if len(s.locs.Clouds()) > 0 {
		goWait(func() {
			starts.Wait()
			s.think.Calibrate(ctx)
		})
	}
	for loc, b := range s.backends {
		if _, ok := b.(handler); ok {
			continue // Handle'd above
		}
		goWait(func() { s.route(ctx, loc, b) })
	}
	shellQ := make(chan *wire.Message, 1024)
	goWait(func() {
		s.readFrontEnd(ctx, s.shell, wire.Shell, func(m *wire.Message) {
			select {
			case s.wake <- struct{}{}: // stop think-time work at once
			default:
			}
			select {
			case shellQ <- m:
			case <-ctx.Done():
			}
		})
	})
	goWait(func() {
		s.readFrontEnd(ctx, s.control, wire.Control, func(m *wire.Message) { s.handleControl(ctx, m) })
	})
	goWait(func() { s.readFrontEnd(ctx, s.stdin, wire.Stdin, s.handleInputReply) })
	s.publish(wire.IOPub, "status", nil, map[string]string{"execution_state": "starting"}, nil)
	goWait(func() {
		for {
			select {
			case m := <-shellQ:
				s.work <- struct{}{}
				s.handleShell(ctx, m)
				s.idle(ctx, shellQ, m.Header.MsgType == "execute_request")
				<-s.work
			case <-ctx.Done():
				return
			}
		}
	})
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	var wg sync.WaitGroup
	for _, b := range s.backends {
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.Shutdown(sctx) }()
	}
	wg.Wait()
	s.closeSockets()
	s.wg.Wait()
	s.saveRecall()
	return nil
}

// errStopping refuses work once Ferry is shutting down.
var errStopping = errors.New("Ferry is shutting down")

// Stop ends Serve.
func (s *Server) Stop() {
	s.stopping.Store(true)
	if s.cancel != nil {
		s.cancel()
	}
}

// Done is closed when Serve has returned.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) readFrontEnd(ctx context.Context, sock *wire.Socket, ch wire.Channel, handle func(*wire.Message)) {
	for {
		frames, err := sock.Recv(ctx)
		if err != nil {
			return
		}
		m, err := wire.Decode(frames, s.signer)
		if err != nil {
			s.Rejected.Add(1)
			s.log.Warn("dropped message from front end", "channel", ch, "err", err)
			continue
		}
		handle(m)
	}
}

// send sends a reply to the front end on ch, routed by the request's
// identities.
func (s *Server) send(ch wire.Channel, req *wire.Message, msgType string, content any, buffers [][]byte) {
	m, err := wire.New(msgType, s.session, req.Header.Username, req.HeaderJSON(), content)
	if err != nil {
		s.log.Error("building reply", "type", msgType, "err", err)
		return
	}
	m.Identities = req.Identities
	m.Buffers = buffers
	s.sendMsg(ch, m)
}

func (s *Server) sendMsg(ch wire.Channel, m *wire.Message) {
	frames, err := wire.Encode(m, s.signer)
	if err != nil {
		s.log.Error("encoding message", "type", m.Header.MsgType, "err", err)
		return
	}
	sock := map[wire.Channel]*wire.Socket{wire.Shell: s.shell, wire.Control: s.control, wire.Stdin: s.stdin, wire.IOPub: s.iopub}[ch]
	if err := sock.Send(frames); err != nil && !errors.Is(err, wire.ErrClosed) {
		s.log.Error("sending to front end", "channel", ch, "err", err)
	}
}

// publish sends an IOPub message with parent req (nil for none).
func (s *Server) publish(_ wire.Channel, msgType string, req *wire.Message, content any, buffers [][]byte) {
	var parent json.RawMessage
	user := "ferry"
	if req != nil {
		parent = req.HeaderJSON()
		user = req.Header.Username
	}
	m, err := wire.New(msgType, s.session, user, parent, content)
	if err != nil {
		s.log.Error("building iopub message", "type", msgType, "err", err)
		return
	}
	m.Identities = [][]byte{[]byte("kernel.ferry." + msgType)}
	m.Buffers = buffers
	s.sendMsg(wire.IOPub, m)
}

func (s *Server) status(req *wire.Message, state string) {
	s.publish(wire.IOPub, "status", req, map[string]string{"execution_state": state}, nil)
}

// register records a forwarded request so the router can relay what the
// backend answers to it.
func (s *Server) register(id string, c *call) {
	s.callsMu.Lock()
	s.calls[id] = c
	s.callsMu.Unlock()
}

// finish keeps a call for late output (threads printing after the cell) but
// forgets the oldest once many have finished.
func (s *Server) finish(id string) {
	const keep = 256
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	s.recent = append(s.recent, id)
	if len(s.recent) > keep {
		delete(s.calls, s.recent[0])
		s.recent = s.recent[1:]
	}
}

func (s *Server) lookup(id string) *call {
	s.callsMu.Lock()
	defer s.callsMu.Unlock()
	return s.calls[id]
}

// route relays everything one backend sends on its Incoming channel. It is
// the only reader of that backend's messages, so IOPub order is kept.
func (s *Server) route(ctx context.Context, loc location.Location, b backend.Backend) {
	for {
		select {
		case in := <-b.Incoming():
			s.dispatch(loc, in)
		case <-ctx.Done():
			return
		}
	}
}

// handler is a backend that calls a function with each message instead
// (backend.Local): on the goroutine that read it, in order per socket.
type handler interface {
	Handle(func(wire.Incoming))
}

// dispatch relays one backend message: IOPub to the front end under its
// request, stdin requests to the front end's stdin, replies to whoever
// waits for them. Messages of one socket come in order; those of
// different sockets may come concurrently (they never had an order).
func (s *Server) dispatch(loc location.Location, in wire.Incoming) {
	m := in.Msg
	c := s.lookup(m.ParentID())
	switch in.Channel {
	case wire.IOPub:
		s.relayIOPub(loc, c, m)
	case wire.Stdin:
		s.relayInputRequest(loc, c, m)
	default: // shell and control replies
		if c == nil {
			s.log.Debug("reply to unknown request", "type", m.Header.MsgType)
			return
		}
		if c.waiter.Load() {
			select {
			case c.reply <- m:
				return
			default:
			}
		}
		if c.fe != nil && !c.gaveUp.Load() { // nobody waits for it (unknown types): relay as is
			s.relayReply(in.Channel, c, m)
		}
	}
}

func (s *Server) relayIOPub(loc location.Location, c *call, m *wire.Message) {
	t := m.Header.MsgType
	if c != nil {
		c.lastIOPub.Store(time.Now().UnixNano())
	}
	if c != nil && c.sink != nil {
		c.sink(m)
	}
	if t == "status" {
		if c != nil {
			var st struct {
				State string `json:"execution_state"`
			}
			if m.Decode(&st) == nil {
				switch st.State {
				case "busy":
					c.started.Store(true)
				case "idle":
					c.markIdle()
				}
			}
		}
		return // Ferry publishes its own busy/idle
	}
	if t == "shutdown_reply" {
		// A backend's answer to Ferry stopping it (on a shutdown or restart,
		// or a cloud kernel let go), never the front end's: Ferry publishes
		// its own (shutdown). Relayed, it reached the front end without a
		// parent and with restart false, and the classic Notebook takes any
		// such message for the kernel's death ("Dead kernel" on Restart).
		return
	}
	if c != nil && c.fe == nil {
		return // hidden request: never shown
	}
	if t == "comm_open" {
		var co struct {
			ID string `json:"comm_id"`
		}
		if m.Decode(&co) == nil && co.ID != "" {
			s.commMu.Lock()
			s.commOwner[co.ID] = loc
			s.commMu.Unlock()
		}
	}
	content := m.Content
	var parent *wire.Message
	if c != nil {
		parent = c.fe
		if c.count > 0 && (t == "execute_input" || t == "execute_result") {
			content = setCount(content, c.count)
		}
		if c.count > 0 && t == "execute_result" && c.result != nil {
			var r struct {
				Data struct {
					Text *string `json:"text/plain"`
				} `json:"data"`
			}
			if m.Decode(&r) == nil && r.Data.Text != nil {
				c.result(*r.Data.Text)
			}
		}
	}
	out := &wire.Message{Header: wire.NewHeader(t, s.session, "ferry"), Parent: json.RawMessage("{}"), Metadata: m.Metadata, Content: content, Buffers: m.Buffers}
	out.Header.Extra = m.Header.Extra // header fields Ferry does not know pass through
	if parent != nil {
		out.Parent = parent.HeaderJSON()
		out.Header.Username = parent.Header.Username
	}
	out.Identities = [][]byte{[]byte("kernel.ferry." + t)}
	s.sendMsg(wire.IOPub, out)
}

// relayReply sends a backend's reply to the front end as the answer to the
// front end's own request.
func (s *Server) relayReply(ch wire.Channel, c *call, m *wire.Message) {
	content := m.Content
	if c.count > 0 && m.Header.MsgType == "execute_reply" {
		content = setCount(content, c.count)
	}
	out := &wire.Message{Identities: c.fe.Identities, Header: wire.NewHeader(m.Header.MsgType, s.session, c.fe.Header.Username),
		Parent: c.fe.HeaderJSON(), Metadata: m.Metadata, Content: content, Buffers: m.Buffers}
	out.Header.Extra = m.Header.Extra
	s.sendMsg(ch, out)
}

// setCount rewrites execution_count so the front end sees one continuous
// count whichever backend ran the cell. Only the top-level key is touched:
// its number is spliced in place (countSpan), the rest of the content
// passing through byte for byte; decoding and encoding the whole content
// was the slow path for every execute_input, execute_result and reply.
func setCount(content json.RawMessage, n int) json.RawMessage {
	if i, j, ok := countSpan(content); ok {
		num := strconv.Itoa(n)
		out := make([]byte, 0, len(content)-(j-i)+len(num))
		out = append(append(append(out, content[:i]...), num...), content[j:]...)
		return out
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(content, &m) != nil {
		return content
	}
	if _, ok := m["execution_count"]; !ok {
		return content
	}
	m["execution_count"] = json.RawMessage(fmt.Sprint(n))
	b, err := json.Marshal(m)
	if err != nil {
		return content
	}
	return b
}

func (s *Server) relayInputRequest(loc location.Location, c *call, m *wire.Message) {
	if m.Header.MsgType != "input_request" || c == nil || c.fe == nil {
		// Nobody can answer: give the kernel an empty line rather than hang.
		s.log.Warn("input request without a front-end request; answering empty", "type", m.Header.MsgType)
		reply, err := wire.New("input_reply", backend.Session, "ferry", m.HeaderJSON(), map[string]string{"value": ""})
		if err == nil {
			_ = s.backends[loc].Send(context.Background(), wire.Stdin, reply)
		}
		return
	}
	s.inputs.Add(1)
	s.stdinMu.Lock()
	s.stdinPending = &pendingInput{loc: loc, request: m}
	s.stdinMu.Unlock()
	out := &wire.Message{Identities: c.fe.Identities, Header: wire.NewHeader("input_request", s.session, c.fe.Header.Username),
		Parent: c.fe.HeaderJSON(), Metadata: m.Metadata, Content: m.Content}
	out.Header.Extra = m.Header.Extra
	s.sendMsg(wire.Stdin, out)
}

// handleInputReply forwards the front end's answer to the kernel that asked.
func (s *Server) handleInputReply(m *wire.Message) {
	if m.Header.MsgType != "input_reply" {
		s.log.Warn("unexpected message on stdin", "type", m.Header.MsgType)
		return
	}
	s.stdinMu.Lock()
	p := s.stdinPending
	s.stdinPending = nil
	s.stdinMu.Unlock()
	if p == nil {
		s.log.Warn("input_reply with no pending input_request")
		return
	}
	out := &wire.Message{Header: wire.NewHeader("input_reply", backend.Session, "ferry"), Parent: p.request.HeaderJSON(), Metadata: m.Metadata, Content: m.Content}
	out.Header.Extra = m.Header.Extra
	if err := s.backends[p.loc].Send(context.Background(), wire.Stdin, out); err != nil {
		s.log.Error("forwarding input reply", "err", err)
	}
}

// countSpan finds the value of content's top-level "execution_count" key,
// content[i:j], when it is a number or null; ok is false otherwise (the
// caller then decodes the whole content).
func countSpan(b []byte) (i, j int, ok bool) {
	space := func(k int) int {
		for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
			k++
		}
		return k
	}
	depth := 0
	for k := 0; k < len(b); k++ {
		switch b[k] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			e := k + 1
			for e < len(b) && b[e] != '"' {
				if b[e] == '\\' {
					e++
				}
				e++
			}
			if e >= len(b) {
				return 0, 0, false
			}
			if depth == 1 && string(b[k+1:e]) == "execution_count" {
				if c := space(e + 1); c < len(b) && b[c] == ':' {
					i = space(c + 1)
					j = i
					for j < len(b) && (b[j] == '-' || b[j] == '.' || b[j] == '+' || b[j] == 'e' || b[j] == 'E' || (b[j] >= '0' && b[j] <= '9') || (b[j] >= 'a' && b[j] <= 'z')) {
						j++
					}
					if v := string(b[i:j]); j > i && (v == "null" || (v[0] >= '0' && v[0] <= '9') || v[0] == '-') {
						if c := space(j); c < len(b) && (b[c] == ',' || b[c] == '}') {
							return i, j, true
						}
					}
					return 0, 0, false
				}
			}
			k = e
		}
	}
	return 0, 0, false
}

// keys are the locations of a backend map, in no order.
func keys(bs map[location.Location]backend.Backend) []location.Location {
	out := make([]location.Location, 0, len(bs))
	for l := range bs {
		out = append(out, l)
	}
	return out
}

// startAtConnect reports whether cloud loc's kernel starts with the
// session rather than with the first cell placed there: under --policy
// remote every cell goes there; under ferry and paper a cloud whose speed
// is neither configured (--remote-speed) nor known from an earlier
// session's calibration is started to be measured, once (issue 16: a
// policy that never saw the cloud run would never place a cell there).
// Otherwise the first cell placed there starts it and waits for it, a
// start the policy prices (Model.StartCost) once one was measured.
func (s *Server) startAtConnect(loc location.Location) bool {
	switch s.cfg.Policy {
	case "remote":
		return true
	case "ferry", "paper":
		known := s.cfg.Clouds[loc].Speed > 0 || s.cfg.RemoteSpeed > 0 || s.think.Calibrated(loc)
		return s.cfg.Calibration != nil && !known
	}
	return false
}
