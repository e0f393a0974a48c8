// Package analysis tells which notebook names a cell reads and may write,
// from Python's own ast after IPython's input transformations. The work is
// done by analyze.py in one long-lived helper process of the notebook's
// interpreter; results are cached by the code's hash.
package analysis

import (
	"bufio"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

//go:embed analyze.py
var script string

// Result is what a cell does to the notebook's names.
type Result struct {
	Reads   []string `json:"reads"`
	Writes  []string `json:"writes"`
	Maybe   []string `json:"maybe"`   // names whose objects the cell may mutate
	Deleted []string `json:"deleted"` // names it may delete
	Calls   []string `json:"calls"`
	// Defs maps each function or class the cell defines to the globals its
	// body uses, so a later call needs them.
	Defs map[string][]string `json:"defs"`
	// Dynamic means the cell may touch any name (exec, globals(), star
	// imports, unknown magics).
	Dynamic bool `json:"dynamic"`
	// Error is set when the cell does not parse; the cell runs anyway.
	Error string `json:"error"`
}

// Analyzer runs the helper. It is safe for concurrent use.
type Analyzer struct {
	python string

	mu    sync.Mutex
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	dir   string
	seq   int
	cache map[[32]byte]Result
}

// New returns an analyzer using python; the helper starts on first use.
func New(python string) *Analyzer {
	return &Analyzer{python: python, cache: map[[32]byte]Result{}}
}

// Analyze returns the cell's effects.
func (a *Analyzer) Analyze(ctx context.Context, code string) (Result, error) {
	key := sha256.Sum256([]byte(code))
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.cache[key]; ok {
		return r, nil
	}
	r, err := a.ask(ctx, code)
	if err != nil {
		a.stopLocked() // restart on the next call
		return Result{Dynamic: true}, err
	}
	if len(a.cache) > 4096 {
		clear(a.cache)
	}
	a.cache[key] = r
	return r, nil
}

func (a *Analyzer) ask(ctx context.Context, code string) (Result, error) {
	if a.cmd == nil {
		if err := a.startLocked(); err != nil {
			return Result{}, err
		}
	}
	a.seq++
	req, _ := json.Marshal(map[string]any{"id": a.seq, "code": code})
	type answer struct {
		line []byte
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		if _, err := a.in.Write(append(req, '\n')); err != nil {
			done <- answer{err: err}
			return
		}
		line, err := a.out.ReadBytes('\n')
		done <- answer{line, err}
	}()
	select {
	case ans := <-done:
		if ans.err != nil {
			return Result{}, fmt.Errorf("analysis helper: %w", ans.err)
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
	cmd := exec.Command(a.python, "-I", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("starting analysis helper %s: %w (pass --python PATH)", a.python, err)
	}
	a.cmd, a.in, a.out, a.dir = cmd, in, bufio.NewReaderSize(out, 1<<16), dir
	return nil
}

func (a *Analyzer) stopLocked() {
	if a.cmd == nil {
		return
	}
	a.in.Close()
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
	os.RemoveAll(a.dir)
	a.cmd = nil
}

// Close stops the helper.
func (a *Analyzer) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopLocked()
}
