// Package analysis tells which notebook names a cell reads and may write,
// and what it does outside the namespace: the files it reads, writes,
// lists, globs, deletes or tests, the environment variables it reads and
// sets, the modules it imports (a local a.py may need to travel), whether
// it changes the working directory, which process-level settings it
// changes (print options, rcParams, logging, sys.path, module attributes
// ...) and which side effects (shell, network, file writes) it may have.
// It works from Python's own ast after IPython's input transformations,
// so magics and !shell count. The work is done by analyze.py in one
// long-lived helper process of the notebook's interpreter, spoken to in
// JSON lines over its stdin and stdout; results are cached by the SHA-256
// of the code.
//
// The facts are static and err towards "unknown": a path the analysis
// cannot spell sets FilesUnknown, an os.environ it cannot name sets
// EnvUnknown. Functions the cell defines carry the same facts in
// DefEffects, so a call from a later cell adds what the function does.
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
	"strings"
	"sync"
	"syscall"
)

//go:embed analyze.py
var script string

// bootstrap is the helper's -c program: it reads the script, len(script)
// bytes, from stdin and runs it as __main__; the requests follow on the
// same stream.
var bootstrap = fmt.Sprintf("import sys; exec(compile(sys.stdin.buffer.read(%d), 'ferry_analyze.py', 'exec'))", len(script))

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
	// Shell is set when the cell runs shell commands (!cmd, %%bash, %sx,
	// os.system, subprocess ..., also through a function it defines and
	// calls).
	Shell bool `json:"shell"`
	// Facts are what the cell does outside the namespace, now or through
	// the functions it defines and calls.
	Facts
	// ModuleAttrs are the AttrStores "X.attr" whose X an import statement
	// in this cell binds (import m; m.VERBOSE = True). The caller may add
	// stores on other names it knows to be modules. Settings then holds
	// "module.attr".
	ModuleAttrs []string `json:"module_attrs,omitempty"`
	// Dynamic means the cell may touch any name (exec, eval, globals(),
	// star imports, sys.modules, unknown magics): treat every name as
	// read and possibly changed. (Those of them that can also reach files
	// and the environment, such as exec and %run, set FilesUnknown and
	// EnvUnknown; a failed analysis sets all three.)
	Dynamic bool `json:"dynamic"`
	// Unparsable is set when the cell does not parse; it runs anyway and
	// the namespace diff after it decides. Error says why.
	Unparsable bool   `json:"unparsable"`
	Error      string `json:"error"`
}

// Effects are what a function or class body does to globals, and
// outside the namespace, when called.
type Effects struct {
	Reads  []string `json:"reads"`
	Writes []string `json:"writes"`
	Maybe  []string `json:"maybe"`
	Calls  []string `json:"calls"`
	Facts
}

// Facts are what code does outside the notebook's names. Every list is
// sorted; empty ones are omitted from the JSON.
type Facts struct {
	// Files are the files the code uses by a path it spells: a literal,
	// an f-string or sum of literals, os.path.join / Path(...) / p / "x"
	// of them, or a name bound to one earlier in the same scope. Paths are
	// as written (relative or absolute) after posixpath.normpath; URLs are
	// not files (they count as "network").
	Files []FileUse `json:"files,omitempty"`
	// FilesUnknown: the code may use files it does not name (a path from
	// a variable, a parameter or a computed string; shell commands; exec;
	// %run's script; open passed around; unknown magics). Treat it as
	// possibly reading and writing any file.
	FilesUnknown bool `json:"files_unknown,omitempty"`
	// Imports are the top-level modules imported ("a" for import a.b and
	// from a.b import c; relative imports are left out), including
	// importlib.import_module("x") and __import__("x").
	Imports []string `json:"imports,omitempty"`
	// Env are the environment variables read by name (os.environ["X"],
	// os.environ.get, os.getenv, "X" in os.environ, %env X, $X in
	// os.path.expandvars).
	Env []string `json:"env,omitempty"`
	// EnvWrites are the environment variables set or deleted by name
	// (os.environ["X"] = / del, setdefault, pop, os.putenv, os.unsetenv,
	// %env X=1, %env X 1, %set_env X 1).
	EnvWrites []string `json:"env_writes,omitempty"`
	// EnvUnknown: os.environ is used in a way that names no variable
	// (iterated, copied, updated, a computed key, passed on, bare %env,
	// load_dotenv): treat every variable as read and possibly set.
	EnvUnknown bool `json:"env_unknown,omitempty"`
	// Chdir: the code changes the working directory (os.chdir, %cd,
	// %pushd, %popd).
	Chdir bool `json:"chdir,omitempty"`
	// Settings are process-level settings changed, as tags:
	// numpy.printoptions, numpy.seterr, pandas.options, matplotlib.rc,
	// matplotlib.backend, logging, warnings, ipython.config,
	// ipython.magics, sys.path, torch.threads, torch.defaults,
	// sklearn.config, umask, recursionlimit, random.seed, locale, and
	// module.attr (Result only; see ModuleAttrs).
	Settings []string `json:"settings,omitempty"`
	// AttrStores are "X.attr" for every assignment, augmented assignment
	// or deletion of X.attr (or X.attr.more) where X is a global name: a
	// store on a module changes process state.
	AttrStores []string `json:"attr_stores,omitempty"`
	// SideEffects are static hints for the agent to confirm at run time:
	// "shell" (!cmd, shell magics, os.system, os.popen, os.exec*,
	// os.spawn*, subprocess), "network" (calls into requests, urllib,
	// http, socket, smtplib, ftplib, httpx, aiohttp, boto3, paramiko ...;
	// a URL given as a path; %pip, %conda) and "file-write" (a Files entry
	// that writes or deletes, or an unresolved path given to a function
	// that writes).
	SideEffects []string `json:"side_effects,omitempty"`
}

// FileUse is one use of a file or directory by path.
type FileUse struct {
	// Path is as written, normalised by posixpath.normpath; for Op
	// "glob" it is the pattern (Path("data").glob("*.csv") is
	// "data/*.csv").
	Path string `json:"path"`
	// Op is "read", "write" (including creating a directory), "list" (a
	// directory's entries), "glob", "delete" or "exists" (stat-like
	// tests). open's mode decides: no mode or "r" reads, "w" and "x"
	// write, "a" and "+" read and write (an append needs the old
	// content). A move reads and deletes its source and writes its
	// destination; a copy reads its source and writes its destination.
	Op string `json:"op"`
}

// unknown is the Result of a failed analysis: anything may happen.
func unknown() Result {
	return Result{Dynamic: true, Facts: Facts{FilesUnknown: true, EnvUnknown: true}}
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
	// boot is the helper's script, still to be written ahead of the
	// first request (bootstrap).
	boot []byte
	seq  int

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
		return unknown(), fmt.Errorf("analysing cell: %w", ctx.Err())
	}
	r, err := a.ask(ctx, code)
	if err != nil {
		a.stopLocked()
		<-a.sem
		return unknown(), err
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
	msg := append(a.boot, append(req, '\n')...)
	a.boot = nil
	go func() {
		if _, err := in.Write(msg); err != nil {
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
	// -I: the user's PYTHONPATH or a stray ast.py in the working directory
	// must not change how cells are read. The script comes on stdin ahead
	// of the first request, not from a file: a file in /tmp outlived every
	// Ferry that was killed rather than closed (237 of them after one
	// day's benches and tests).
	cmd := exec.Command(a.python, "-I", "-c", bootstrap)
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
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("starting analysis helper: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting analysis helper %s: %w (pass --python PATH)", a.python, err)
	}
	slog.Debug("analysis helper started", "python", a.python, "pid", cmd.Process.Pid)
	a.cmd, a.in, a.out, a.boot = cmd, in, bufio.NewReaderSize(out, 1<<16), []byte(script)
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
	a.cmd, a.boot = nil, nil
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
