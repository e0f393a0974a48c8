// Package analysis tells which notebook names a cell reads and may write,
// from Python's own ast after IPython's input transformations. The work is
// done by analyze.py in one long-lived helper process of the notebook's
// interpreter, spoken to in JSON lines over its stdin and stdout; results
// are cached by the SHA-256 of the code.
package analysis

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

//go:embed analyze.py
var script string

// Result is what a cell does to the notebook's names. Every list is sorted.
type Result struct {
	// Reads are the names the cell loads from the notebook namespace before
	// binding them for sure, including the globals of functions it defines
	// and uses. Builtins appear too: the caller moves only names it knows.
	Reads []string `json:"reads"`
	// Writes are the names the cell may bind or delete, including globals
	// assigned (via `global`) by functions it defines.
	Writes []string `json:"writes"`
	// Maybe are the names whose objects the cell may change in place
	// (attribute or item assignment, augmented assignment, method calls,
	// call arguments, iteration). It includes Writes: a name rebound to a
	// new object at its old object's address is only caught by content.
	Maybe   []string `json:"maybe"`
	Deleted []string `json:"deleted"` // names the cell may delete
	// Calls are the names the cell calls, directly or through functions it
	// defines and uses, so the caller can add what earlier-defined
	// functions do.
	Calls []string `json:"calls"`
	// Defs maps each function or class the cell defines at top level (and
	// f = lambda ...) to the globals its body uses, so a later use needs
	// them.
	Defs map[string][]string `json:"defs"`
	// DefEffects splits Defs by kind, for transitive effects across cells.
	DefEffects map[string]Effects `json:"def_effects"`
	// Magics are the IPython magics the cell uses (pinfo for x?).
	Magics []string `json:"magics"`
	// Shell is set when the cell runs shell commands (!cmd, %%bash).
	Shell bool `json:"shell"`
	// Dynamic means the cell may touch any name (exec, eval, globals(),
	// star imports, sys.modules, unknown magics): treat every name as
	// read and possibly changed.
	Dynamic bool `json:"dynamic"`
	// Unparsable is set when the cell does not parse; it runs anyway and
	// the namespace diff after it decides. Error says why.
	Unparsable bool   `json:"unparsable"`
	Error      string `json:"error"`
}

// Effects are what a function or class body does to globals when called.
type Effects struct {
	Reads  []string `json:"reads"`
	Writes []string `json:"writes"`
	Maybe  []string `json:"maybe"`
	Calls  []string `json:"calls"`
}

// maxCache bounds the result cache; a notebook has far fewer distinct cells.
const maxCache = 4096

// Analyzer runs the helper. It is safe for concurrent use; requests are
// answered one at a time by the single helper process.
type Analyzer struct {
	python string
	// sem is a one-slot semaphore guarding the helper, so waiting for it
	// honours the caller's context.
	sem chan struct{}

	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *tail
	dir    string
	seq    int

	cacheMu sync.Mutex
	cache   map[[32]byte]Result
}

// New returns an analyzer using the interpreter python (which needs
// IPython for magics); the helper starts on first use.
func New(python string) *Analyzer {
	return &Analyzer{python: python, sem: make(chan struct{}, 1), cache: map[[32]byte]Result{}}
}

// Analyze returns the cell's effects. If the helper fails or ctx ends, it
// returns an error and a Result marked Dynamic (correct beats small); the
// helper is restarted on the next call.
func (a *Analyzer) Analyze(ctx context.Context, code string) (Result, error) {
	key := sha256.Sum256([]byte(code))
	a.cacheMu.Lock()
	r, ok := a.cache[key]
	a.cacheMu.Unlock()
	if ok {
		return r, nil
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return Result{Dynamic: true}, fmt.Errorf("analysing cell: %w", ctx.Err())
	}
	r, err := a.ask(ctx, code)
	if err != nil {
		a.stopLocked()
		<-a.sem
		return Result{Dynamic: true}, err
	}
	<-a.sem
	a.cacheMu.Lock()
	if len(a.cache) >= maxCache {
		clear(a.cache)
	}
	a.cache[key] = r
	a.cacheMu.Unlock()
	return r, nil
}

// ask sends one request; the caller holds sem.
func (a *Analyzer) ask(ctx context.Context, code string) (Result, error) {
	if a.cmd == nil {
		if err := a.startLocked(); err != nil {
			return Result{}, err
		}
	}
	a.seq++
	req, err := json.Marshal(map[string]any{"id": a.seq, "code": code})
	if err != nil {
		return Result{}, fmt.Errorf("encoding analysis request: %w", err)
	}
	type answer struct {
		line []byte
		err  error
	}
	// The exchange runs aside so a stuck helper cannot outlive ctx: on
	// cancellation the helper is killed, which ends the read.
	done := make(chan answer, 1)
	in, out := a.in, a.out
	go func() {
		if _, err := in.Write(append(req, '\n')); err != nil {
			done <- answer{err: err}
			return
		}
		line, err := out.ReadBytes('\n')
		done <- answer{line, err}
	}()
	select {
	case ans := <-done:
		if ans.err != nil {
			return Result{}, fmt.Errorf("analysis helper %s: %w%s", a.python, ans.err, a.stderr.suffix())
		}
		var r struct {
			Result
			ID int `json:"id"`
		}
		if err := json.Unmarshal(ans.line, &r); err != nil {
			return Result{}, fmt.Errorf("analysis helper answered malformed JSON: %w", err)
		}
		if r.ID != a.seq {
			return Result{}, fmt.Errorf("analysis helper answered request %d, want %d", r.ID, a.seq)
		}
		return r.Result, nil
	case <-ctx.Done():
		return Result{}, fmt.Errorf("analysing cell: %w", ctx.Err())
	}
}

func (a *Analyzer) startLocked() error {
	dir, err := os.MkdirTemp("", "ferry-analysis-")
	if err != nil {
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	path := filepath.Join(dir, "ferry_analyze.py")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	// -I: the user's PYTHONPATH or a stray ast.py in the working directory
	// must not change how cells are read.
	cmd := exec.Command(a.python, "-I", path)
	// Ferry's environment without the remote server's token: the helper
	// needs no secret. (Not nil: a nil Env would inherit everything.)
	cmd.Env = []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Its own process group, and killed with Ferry: a helper must never
	// outlive the kernel or catch the front end's interrupts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	a.stderr = &tail{}
	cmd.Stderr = a.stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting analysis helper %s: %w (pass --python PATH)", a.python, err)
	}
	slog.Debug("analysis helper started", "python", a.python, "pid", cmd.Process.Pid)
	a.cmd, a.in, a.out, a.dir = cmd, in, bufio.NewReaderSize(out, 1<<16), dir
	return nil
}

func (a *Analyzer) stopLocked() {
	if a.cmd == nil {
		return
	}
	a.in.Close()
	_ = a.cmd.Process.Kill()
	if err := a.cmd.Wait(); err != nil && !isKilled(err) {
		slog.Debug("analysis helper exited", "err", err)
	}
	os.RemoveAll(a.dir)
	a.cmd = nil
}

func isKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Close stops the helper. The analyzer may still be used: the next call
// starts a new helper.
func (a *Analyzer) Close() {
	a.sem <- struct{}{}
	a.stopLocked()
	<-a.sem
}

// tail keeps the end of the helper's stderr, to say why it died.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

// suffix is ": <last stderr line>" or "".
func (t *tail) suffix() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return ""
	}
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return ": " + s
}
