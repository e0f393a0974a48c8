package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// DefaultPython is the interpreter that has Debian's Jupyter packages.
const DefaultPython = "/usr/bin/python3"

// Local is an ipykernel on this machine, started from an explicit
// interpreter in its own process group.
type Local struct {
	// Loc is the location this kernel stands for: location.Local normally,
	// or a cloud for a second local kernel standing in for it (tests,
	// transparency runs).
	Loc    location.Location
	Python string
	// Args are the arguments after the interpreter; the default is
	// "-m ipykernel_launcher -f {connection_file}".
	Args []string
	// StartTimeout bounds how long a kernel may take to answer.
	StartTimeout time.Duration
	// Dir is the kernel's working directory: the notebook's directory, as
	// Jupyter, nbconvert and papermill start kernels. Empty means Ferry's
	// own, which Jupyter already set to the notebook's; callers that know
	// the directory set it.
	Dir string
	// OnStart, if set, is called with each new kernel's pid (the test bed
	// moves it into a CPU-quota cgroup).
	OnStart func(pid int) error

	meter   upMeter // how long its kernels ran
	in      chan wire.Incoming
	handler func(wire.Incoming) // Handle's; nil: messages go to in

	mu       sync.Mutex
	cmd      *exec.Cmd
	conn     *wire.ClientConn
	dir      string
	died     chan struct{}
	started  time.Time
	restarts int
	// stat is /proc/PID/stat of the running process, kept open: read
	// again at offset 0 it is the process's state now.
	stat     *os.File
	exitMu   sync.Mutex // guards lastExit, written by the waiter goroutine
	lastExit string
	info     json.RawMessage
	stderr   *tailBuffer
}

// NewLocal returns a local backend using python (DefaultPython if empty).
func NewLocal(python string) *Local {
	if python == "" {
		python = DefaultPython
	}
	d := make(chan struct{})
	close(d)
	return &Local{Loc: location.Local, Python: python, StartTimeout: 60 * time.Second, in: make(chan wire.Incoming, 256), died: d}
}

// NewStandIn returns a second local kernel standing in for the cloud
// (--local-remote, tests, benchmarks).
func NewStandIn(python string) *Local {
	l := NewLocal(python)
	l.Loc = location.Remote
	return l
}

func (l *Local) Location() location.Location    { return l.Loc }
func (l *Local) Incoming() <-chan wire.Incoming { return l.in }

// Handle has f called with every message of this backend's kernels, on
// the goroutine that read it, instead of delivering them on Incoming (see
// wire.ClientConn.HandleWith): Ferry's relay is then one goroutine
// hand-off shorter per message. Set it before the first Start.
func (l *Local) Handle(f func(wire.Incoming)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handler = f
	if l.conn != nil {
		l.conn.HandleWith(f)
	}
}

func (l *Local) Died() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.died
}

func (l *Local) Alive() bool {
	select {
	case <-l.Died():
		return false
	default:
		return true
	}
}

func (l *Local) KernelInfo() json.RawMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info
}

// ConnInfo is the running kernel's connection info (it holds the key: never
// log it), so benchmarks can talk to the same kernel directly.
func (l *Local) ConnInfo() (wire.ConnInfo, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return wire.ConnInfo{}, false
	}
	return l.conn.Info, true
}

// Send sends a request to the kernel.
func (l *Local) Send(_ context.Context, ch wire.Channel, m *wire.Message) error {
	l.mu.Lock()
	c := l.conn
	l.mu.Unlock()
	if c == nil || !l.Alive() {
		return fmt.Errorf("local kernel is not running: %w", ErrDied)
	}
	return c.Send(ch, m)
}

// Start starts ipykernel, or restarts it after it died.
func (l *Local) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.died:
	default:
		if !l.exitedLocked() {
			return nil // running
		}
		// The process has exited but its waiter has not told yet: wait
		// for it, so a request right after a kernel's death goes to a new
		// kernel instead of the dead one.
		select {
		case <-l.died:
		case <-time.After(5 * time.Second):
			return fmt.Errorf("local kernel pid %d exited but was not reaped", l.cmd.Process.Pid)
		}
	}
	if l.cmd != nil {
		l.cleanupLocked()
		l.restarts++
	}
	if _, err := os.Stat(l.Python); err != nil {
		return fmt.Errorf("starting local kernel: interpreter %s not found (install python3-ipykernel, or pass --python PATH)", l.Python)
	}
	// Ports are chosen free and handed to the kernel, which binds them a
	// moment later; another process may take one in between (seen with
	// many kernels starting at once in the parallel test suites: the
	// kernel logged "Address already in use" and then sat silent until
	// the start timeout). Such a start is retried on fresh ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			l.cleanupLocked()
			slog.Warn("a port of the local kernel was taken before it bound it; starting it again on other ports")
		}
		if err = l.launchLocked(ctx); !errors.Is(err, errPortTaken) {
			return err
		}
	}
	return fmt.Errorf("local kernel (%s -m ipykernel_launcher) did not start: %w, three times; is the machine out of ports?", l.Python, err)
}

// errPortTaken is a kernel start that lost one of its ports to another
// process before binding it.
var errPortTaken = errors.New("a port was taken before the kernel bound it")

// launchLocked starts one kernel process and waits until it answers.
func (l *Local) launchLocked(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "ferry-local-")
	if err != nil {
		return fmt.Errorf("starting local kernel: %w", err)
	}
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting local kernel: %w", err)
	}
	cf := filepath.Join(dir, "kernel.json")
	if err := info.Write(cf); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting local kernel: writing connection file: %w", err)
	}
	args := l.Args
	if len(args) == 0 {
		args = []string{"-m", "ipykernel_launcher", "-f", "{connection_file}"}
	}
	argv := make([]string, len(args))
	for i, a := range args {
		argv[i] = strings.ReplaceAll(a, "{connection_file}", cf)
	}
	cmd := exec.Command(l.Python, argv...)
	cmd.Dir = l.Dir
	// Own process group so an interrupt or kill reaches the kernel and its
	// children, and Pdeathsig so it dies with Ferry even on SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = ChildEnv("JPY_PARENT_PID="+strconv.Itoa(os.Getpid()), "PYDEVD_DISABLE_FILE_VALIDATION=1")
	tail := &tailBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = tail, tail
	cmd.Stdin = nil
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting local kernel %s: %w", l.Python, err)
	}
	died := make(chan struct{})
	l.cmd, l.dir, l.died, l.stderr, l.started = cmd, dir, died, tail, time.Now()
	l.closeStatLocked()
	if f, err := os.Open("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"); err == nil {
		l.stat = f
	}
	if l.OnStart != nil {
		if err := l.OnStart(cmd.Process.Pid); err != nil {
			slog.Warn("start hook for the local kernel failed", "err", err)
		}
	}
	l.meter.up(l.started)
	go func() {
		err := cmd.Wait()
		l.meter.down(time.Now())
		l.exitMu.Lock()
		if err != nil {
			l.lastExit = err.Error()
		} else {
			l.lastExit = "exited"
		}
		l.exitMu.Unlock()
		close(died)
	}()
	// Bounded, so a flood the relay cannot keep up with stays in the
	// kernel's PUB (as it would for a slow front end), not in Ferry.
	conn, err := wire.Dial(info, Session, wire.BoundInput())
	if err != nil {
		l.killLocked()
		return fmt.Errorf("connecting to local kernel: %w", err)
	}
	l.conn = conn

	ctx, cancel := context.WithTimeout(ctx, l.StartTimeout)
	defer cancel()
	ki, err := waitReady(ctx, conn, died, func() bool { return strings.Contains(tail.String(), "Address already in use") })
	if errors.Is(err, errPortTaken) {
		l.killLocked()
		return err
	}
	if err != nil {
		l.killLocked()
		msg := strings.TrimSpace(tail.String())
		if i := strings.LastIndex(msg, "\n"); i >= 0 {
			msg = msg[i+1:]
		}
		if msg != "" {
			return fmt.Errorf("local kernel (%s -m ipykernel_launcher) did not start: %w: %s (is python3-ipykernel installed?)", l.Python, err, msg)
		}
		return fmt.Errorf("local kernel (%s -m ipykernel_launcher) did not start: %w (is python3-ipykernel installed?)", l.Python, err)
	}
	l.info = ki
	// The kernel has read its connection file (and rewritten it, in
	// ipykernel, before it answers): it holds the HMAC key, so it goes
	// now rather than at Close, which a killed Ferry never reaches (137
	// of them were left in /tmp after one day's benches and tests).
	os.RemoveAll(l.dir)
	l.dir = ""
	if l.handler != nil {
		conn.HandleWith(l.handler)
	} else {
		conn.DeliverTo(l.in)
	}
	slog.Debug("local kernel ready", "pid", cmd.Process.Pid)
	return nil
}

// waitReady sends kernel_info requests until one is answered and its IOPub
// status arrives: only then is the SUB socket known to be connected, so no
// output of the first cell can be lost.
func waitReady(ctx context.Context, c *wire.ClientConn, died <-chan struct{}, portTaken func() bool) (json.RawMessage, error) {
	var info json.RawMessage
	ids := map[string]bool{}
	iopubSeen := false
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	send := func() error {
		m, err := c.NewMessage("kernel_info_request", nil)
		if err != nil {
			return err
		}
		ids[m.Header.MsgID] = true
		return c.Send(wire.Shell, m)
	}
	if err := send(); err != nil {
		return nil, err
	}
	for info == nil || !iopubSeen {
		select {
		case in, ok := <-c.Incoming():
			if !ok {
				return nil, errors.New("connection closed")
			}
			if !ids[in.Msg.ParentID()] {
				continue
			}
			switch {
			case in.Channel == wire.Shell && in.Msg.Header.MsgType == "kernel_info_reply":
				info = in.Msg.Content
			case in.Channel == wire.IOPub:
				iopubSeen = true
			}
		case <-tick.C:
			if portTaken != nil && portTaken() {
				return nil, errPortTaken
			}
			if !iopubSeen {
				if err := send(); err != nil {
					return nil, err
				}
			}
		case <-died:
			if portTaken != nil && portTaken() {
				return nil, errPortTaken
			}
			return nil, errors.New("kernel process exited")
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer: %w", ctx.Err())
		}
	}
	return info, nil
}

// exitedLocked reports whether the kernel process is gone or a zombie,
// which the died channel tells only once Wait has reaped it.
//
// It reads /proc/PID/stat: a process killed with SIGKILL shows its main
// thread as a zombie there before the rest of it has exited, which is what
// waitid(WNOWAIT) and a pidfd wait for, and a cell sent in between went to
// the dying kernel (TestBackendDeathIsReportedAndRecovered failed 4 of 4
// with either). It is asked before every request, so the file stays open
// and is read again in place: opening it each time took the overhead
// bench's trivial cell 49 µs in Start, 4 µs so.
func (l *Local) exitedLocked() bool {
	if l.cmd == nil || l.cmd.Process == nil {
		return true
	}
	var buf [512]byte
	var b []byte
	if l.stat != nil {
		n, err := l.stat.ReadAt(buf[:], 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return true // reaped: the file reads ESRCH
		}
		b = buf[:n]
	} else {
		var err error
		if b, err = os.ReadFile("/proc/" + strconv.Itoa(l.cmd.Process.Pid) + "/stat"); err != nil {
			return true
		}
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// Interrupt sends SIGINT to the kernel, as jupyter_client does for
// interrupt_mode "signal".
func (l *Local) Interrupt(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cmd == nil || l.cmd.Process == nil {
		return errors.New("local kernel is not running")
	}
	return l.cmd.Process.Signal(syscall.SIGINT)
}

// Shutdown asks the kernel to stop, then SIGTERMs and SIGKILLs its process
// group, each after a grace period bounded by ctx.
func (l *Local) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cmd == nil {
		return nil
	}
	died := l.died
	if l.conn != nil {
		if m, err := l.conn.NewMessage("shutdown_request", map[string]bool{"restart": false}); err == nil {
			_ = l.conn.Send(wire.Control, m)
		}
	}
	pgid := l.cmd.Process.Pid
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{{0, 2 * time.Second}, {syscall.SIGTERM, 2 * time.Second}, {syscall.SIGKILL, 5 * time.Second}}
	for _, st := range steps {
		if st.sig != 0 {
			_ = syscall.Kill(-pgid, st.sig)
		}
		t := time.NewTimer(st.wait)
		select {
		case <-died:
			t.Stop()
			// The group may still hold children the kernel started.
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			l.cleanupLocked()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			l.killLocked()
			return ctx.Err()
		}
	}
	l.cleanupLocked()
	return fmt.Errorf("local kernel pid %d did not exit after SIGKILL", pgid)
}

// killLocked kills the process group at once and waits briefly for it.
func (l *Local) killLocked() {
	if l.cmd != nil && l.cmd.Process != nil {
		_ = syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-l.died:
		case <-time.After(5 * time.Second):
		}
	}
	l.cleanupLocked()
}

func (l *Local) cleanupLocked() {
	l.closeStatLocked()
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
	if l.dir != "" {
		os.RemoveAll(l.dir)
		l.dir = ""
	}
}

func (l *Local) closeStatLocked() {
	if l.stat != nil {
		l.stat.Close()
		l.stat = nil
	}
}

// Status describes the local kernel.
func (l *Local) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exitMu.Lock()
	last := l.lastExit
	l.exitMu.Unlock()
	st := Status{Location: l.Loc, Kind: "ipykernel", Interpreter: l.Python, Started: l.started, Restarts: l.restarts, LastExit: last, State: "not started", WorkDir: l.Dir,
		UpSeconds: l.meter.seconds(time.Now())}
	if st.WorkDir == "" {
		st.WorkDir, _ = os.Getwd()
	}
	if l.cmd != nil && l.cmd.Process != nil {
		st.PID = l.cmd.Process.Pid
		select {
		case <-l.died:
			st.State = "dead"
		default:
			st.State = "running"
		}
	}
	return st
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if t.buf.Len() > t.max {
		b := t.buf.Bytes()[t.buf.Len()-t.max:]
		nb := append([]byte(nil), b...)
		t.buf.Reset()
		t.buf.Write(nb)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}

// ChildEnv is the environment for a process Ferry starts: Ferry's own
// without the remote server's token, plus extra. User code runs in the
// local kernel, where os.environ, %env or !env would show the token and
// put it into the saved notebook.
func ChildEnv(extra ...string) []string {
	env := []string{} // not nil: a nil Env would inherit everything
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_TOKEN=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
