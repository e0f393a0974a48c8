package notebook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
)

// Dir is the working directory a headless run of the notebook at path
// gives its kernel: override if set, else the notebook's own directory, as
// nbconvert and papermill do, so relative paths in cells mean what they
// meant in Jupyter. It returns an absolute path.
func Dir(path, override string) (string, error) {
	dir := filepath.Dir(path)
	if override != "" {
		dir = override
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("the kernel's working directory: %w", err)
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		if override != "" {
			return "", fmt.Errorf("--cwd %s is not a directory", override)
		}
		return "", fmt.Errorf("the notebook's directory %s: %w", dir, err)
	}
	return abs, nil
}

// Executor runs code; client.Session implements it.
type Executor interface {
	Execute(ctx context.Context, code string, opt client.ExecOptions) (*client.Result, error)
	Interrupt(ctx context.Context) error
}

// RunOptions control a headless run.
type RunOptions struct {
	AllowErrors bool
	// CellTimeout bounds one cell; 0 means no limit. A cell over it is
	// interrupted and counts as an error, as in nbclient.
	CellTimeout time.Duration
	// Progress, if set, receives a progress line per cell.
	Progress io.Writer
	// Terminal draws the progress as a bar updated in place.
	Terminal bool
	// LogOutput, if set, receives each cell's outputs as they arrive
	// (papermill's --log-output): stream text as printed, tracebacks
	// without colour, results as their text/plain.
	LogOutput io.Writer

	// now and ticker stand in for the clock in tests (nil: the real one).
	now    func() time.Time
	ticker func(time.Duration) (<-chan time.Time, func())
}

// tickEvery is how often a terminal's progress bar redraws its clock
// while a cell runs, so a long cell does not look hung.
const tickEvery = time.Second

// ErrCellTimeout marks a cell stopped at RunOptions.CellTimeout.
var ErrCellTimeout = errors.New("cell timed out")

// ErrInterrupted marks a run stopped because its context ended (Ctrl-C).
var ErrInterrupted = errors.New("interrupted")

// CellError is returned when a cell raised and AllowErrors is off.
type CellError struct {
	// Index is the cell's position in Cells; Name is how users see it.
	Index         int
	Name          CellName
	EName, EValue string
	// Traceback is the kernel's, ANSI colour codes included.
	Traceback []string
}

func (e *CellError) Error() string {
	return fmt.Sprintf("%s raised %s: %s (use --allow-errors to run on)", e.Name.Long(), e.EName, e.EValue)
}

// CellRun is what happened to one code cell.
type CellRun struct {
	Index   int
	Seconds float64
	Status  string
}

// Run executes every code cell in order, writing outputs into the notebook.
func Run(ctx context.Context, nb *Notebook, ex Executor, opt RunOptions) ([]CellRun, error) {
	var code []int
	for i, c := range nb.Cells {
		if c.Type() == "code" {
			code = append(code, i)
		}
	}
	var runs []CellRun
	var firstErr error
	names := nb.CellNames()
	bar := newProgress(opt, len(code))
	for n, i := range code {
		c := nb.Cells[i]
		src := c.Source()
		name := names[i]
		bar.set(n, name.Long())
		if strings.TrimSpace(src) == "" {
			c["outputs"] = []any{}
			c["execution_count"] = nil
			continue
		}
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if opt.CellTimeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, opt.CellTimeout)
		}
		t0 := time.Now()
		var res *client.Result
		var err error
		bar.ticking(func() {
			res, err = ex.Execute(cctx, src, client.ExecOptions{CellID: c.ID(i), OnOutput: logOutput(opt.LogOutput)})
		})
		cancel()
		if err != nil && cctx.Err() != nil {
			// Stop the cell still running, so the kernel is free (and
			// quick to shut down), and keep what it printed.
			ictx, icancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = ex.Interrupt(ictx)
			icancel()
			if res == nil {
				res = &client.Result{}
			}
			secs := time.Since(t0).Seconds()
			bar.end()
			if ctx.Err() != nil {
				store(c, res)
				runs = append(runs, CellRun{Index: i, Seconds: secs, Status: "interrupted"})
				return runs, fmt.Errorf("%w in %s", ErrInterrupted, name.Long())
			}
			// As nbclient: the cell gets a CellTimeoutError output, and the
			// run stops whatever AllowErrors says.
			ev := fmt.Sprintf("A cell timed out while it was being executed, after %s.", secondsText(opt.CellTimeout))
			res.Outputs = append(res.Outputs, client.Output{"output_type": "error", "ename": "CellTimeoutError", "evalue": ev, "traceback": []any{"CellTimeoutError: " + ev}})
			store(c, res)
			runs = append(runs, CellRun{Index: i, Seconds: secs, Status: "error"})
			return runs, fmt.Errorf("%w: %s did not finish within %s and was interrupted (raise --timeout)", ErrCellTimeout, name.Long(), secondsText(opt.CellTimeout))
		}
		if err != nil {
			bar.end()
			return runs, fmt.Errorf("running %s: %w", name.Long(), err)
		}
		secs := time.Since(t0).Seconds()
		store(c, res)
		runs = append(runs, CellRun{Index: i, Seconds: secs, Status: res.Status})
		if res.Status == "error" && firstErr == nil {
			firstErr = cellError(i, name, res)
			if !opt.AllowErrors {
				bar.stop(n, name.Long()+" raised "+res.EName)
				return runs, firstErr
			}
		}
	}
	bar.finish()
	if opt.AllowErrors {
		return runs, nil
	}
	return runs, firstErr
}

// progress shows which cell runs: on a terminal a bar redrawn in place,
// whose clock ticks while a cell runs; elsewhere (a log, CI) one line per
// cell and nothing in between.
type progress struct {
	opt   RunOptions
	now   func() time.Time
	start time.Time

	mu          sync.Mutex
	done, total int
	label       string
	ended       bool // the bar's line was ended; draw nothing more
}

func newProgress(opt RunOptions, total int) *progress {
	now := opt.now
	if now == nil {
		now = time.Now
	}
	return &progress{opt: opt, now: now, start: now(), total: total}
}

// set shows that done cells are finished and the cell label is next.
func (p *progress) set(done int, label string) {
	if p.opt.Progress == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.label = done, label
	if !p.opt.Terminal {
		if done < p.total {
			fmt.Fprintln(p.opt.Progress, label)
		}
		return
	}
	p.draw()
}

// draw redraws the bar; p.mu is held.
func (p *progress) draw() {
	if p.ended {
		return
	}
	const width = 30
	fill := 0
	if p.total > 0 {
		fill = p.done * width / p.total
	}
	bar := strings.Repeat("█", fill) + strings.Repeat("░", width-fill)
	fmt.Fprintf(p.opt.Progress, "\r\x1b[K%s %s  %s", bar, clock(p.now().Sub(p.start)), p.label)
}

// ticking runs f, redrawing the bar's clock every tickEvery meanwhile
// when the bar is on a terminal.
func (p *progress) ticking(f func()) {
	if p.opt.Progress == nil || !p.opt.Terminal {
		f()
		return
	}
	tick := p.opt.ticker
	if tick == nil {
		tick = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	c, stop := tick(tickEvery)
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for {
			select {
			case <-quit:
				return
			case <-c:
				p.mu.Lock()
				p.draw()
				p.mu.Unlock()
			}
		}
	}()
	defer func() {
		stop()
		close(quit)
		<-exited // no redraw after f returned
	}()
	f()
}

// end ends the bar's line, so what follows starts clean.
func (p *progress) end() {
	if p.opt.Progress == nil || !p.opt.Terminal {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		fmt.Fprintln(p.opt.Progress)
		p.ended = true
	}
}

// finish shows the bar full and ends its line.
func (p *progress) finish() {
	p.set(p.total, fmt.Sprintf("%d of %d done", p.total, p.total))
	p.end()
}

// stop shows the bar at done with why it stopped, and ends its line.
func (p *progress) stop(done int, why string) {
	if p.opt.Terminal {
		p.set(done, why)
	}
	p.end()
}

// clock shows an elapsed time as a clock does: 0:07, 12:34, 1:02:03.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s < 0 {
		s = 0
	}
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// Step is one execution of a scripted session (see internal/session).
type Step struct {
	Cell  int
	Think time.Duration
	// Old and New, if Old is set, edit the cell's source before the run.
	Old, New string
}

// RunSteps executes a scripted session: for each step it waits the user's
// think time, applies the edit and runs the cell, keeping the cell's last
// outputs in the notebook.
func RunSteps(ctx context.Context, nb *Notebook, ex Executor, steps []Step, opt RunOptions) ([]CellRun, error) {
	var runs []CellRun
	names := nb.CellNames()
	bar := newProgress(opt, len(steps))
	for n, st := range steps {
		if st.Cell < 0 || st.Cell >= len(nb.Cells) || nb.Cells[st.Cell].Type() != "code" {
			return runs, fmt.Errorf("step %d: cell %d is not a code cell of this notebook", n+1, st.Cell)
		}
		c := nb.Cells[st.Cell]
		if st.Old != "" {
			src := c.Source()
			if !strings.Contains(src, st.Old) {
				return runs, fmt.Errorf("step %d: cell %d does not contain %q to edit", n+1, st.Cell, st.Old)
			}
			c["source"] = strings.Replace(src, st.Old, st.New, 1)
		}
		select {
		case <-time.After(st.Think):
		case <-ctx.Done():
			return runs, ctx.Err()
		}
		name := names[st.Cell]
		name.Line = FirstLine(c.Source()) // as edited
		bar.set(n, fmt.Sprintf("step %d of %d: %s", n+1, len(steps), name.Long()))
		t0 := time.Now()
		var res *client.Result
		var err error
		bar.ticking(func() { res, err = ex.Execute(ctx, c.Source(), client.ExecOptions{CellID: c.ID(st.Cell)}) })
		if err != nil {
			bar.end()
			return runs, fmt.Errorf("step %d (%s): %w", n+1, name.Long(), err)
		}
		store(c, res)
		runs = append(runs, CellRun{Index: st.Cell, Seconds: time.Since(t0).Seconds(), Status: res.Status})
		if res.Status == "error" && !opt.AllowErrors {
			bar.stop(n, name.Long()+" raised "+res.EName)
			return runs, cellError(st.Cell, name, res)
		}
	}
	bar.finish()
	return runs, nil
}

// cellError describes the error a result carries.
func cellError(index int, name CellName, res *client.Result) *CellError {
	e := &CellError{Index: index, Name: name, EName: res.EName, EValue: res.EValue}
	for _, o := range res.Outputs {
		if o["output_type"] == "error" {
			tb, _ := o["traceback"].([]any)
			for _, l := range tb {
				if s, ok := l.(string); ok {
					e.Traceback = append(e.Traceback, s)
				}
			}
		}
	}
	return e
}

// secondsText shows a timeout as nbclient's message does, in seconds.
func secondsText(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " seconds"
}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;?]*[A-Za-z]")

// StripANSI removes terminal colour and cursor codes, as nbconvert's
// strip_ansi does for tracebacks shown outside a notebook.
func StripANSI(s string) string { return ansiRE.ReplaceAllString(s, "") }

// logOutput returns an OnOutput that writes outputs to w, or nil.
func logOutput(w io.Writer) func(client.Output) {
	if w == nil {
		return nil
	}
	return func(o client.Output) {
		switch o["output_type"] {
		case "stream":
			s, _ := o["text"].(string)
			io.WriteString(w, s)
		case "error":
			tb, _ := o["traceback"].([]any)
			for _, l := range tb {
				if s, ok := l.(string); ok {
					io.WriteString(w, StripANSI(s)+"\n")
				}
			}
		case "execute_result", "display_data":
			d, _ := o["data"].(map[string]any)
			if s, ok := d["text/plain"].(string); ok {
				io.WriteString(w, s+"\n")
			}
		}
	}
}

// store writes a result into the cell as nbformat keeps it.
func store(c Cell, res *client.Result) {
	outs := make([]any, 0, len(res.Outputs))
	for _, o := range res.Outputs {
		if t, ok := o["text"].(string); ok {
			o["text"] = SplitLines(t)
		}
		outs = append(outs, o)
	}
	c["outputs"] = outs
	if res.Count > 0 {
		c["execution_count"] = res.Count
	} else {
		c["execution_count"] = nil
	}
	// nbclient's record_timing (on by default): the milestones' dates.
	md, _ := c["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		c["metadata"] = md
	}
	ex := map[string]any{}
	for k, v := range res.Timing {
		ex[k] = v
	}
	md["execution"] = ex
}
