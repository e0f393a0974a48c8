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
}

// ErrCellTimeout marks a cell stopped at RunOptions.CellTimeout.
var ErrCellTimeout = errors.New("cell timed out")

// ErrInterrupted marks a run stopped because its context ended (Ctrl-C).
var ErrInterrupted = errors.New("interrupted")

// CellError is returned when a cell raised and AllowErrors is off.
type CellError struct {
	Index         int
	EName, EValue string
	// Traceback is the kernel's, ANSI colour codes included.
	Traceback []string
}

func (e *CellError) Error() string {
	return fmt.Sprintf("cell %d raised %s: %s (use --allow-errors to run on)", e.Index+1, e.EName, e.EValue)
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
	start := time.Now()
	for n, i := range code {
		c := nb.Cells[i]
		src := c.Source()
		progress(opt, n, len(code), start, firstLine(src))
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
		res, err := ex.Execute(cctx, src, client.ExecOptions{CellID: c.ID(i), OnOutput: logOutput(opt.LogOutput)})
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
			endProgress(opt)
			if ctx.Err() != nil {
				store(c, res)
				runs = append(runs, CellRun{Index: i, Seconds: secs, Status: "interrupted"})
				return runs, fmt.Errorf("%w in cell %d", ErrInterrupted, i+1)
			}
			// As nbclient: the cell gets a CellTimeoutError output, and the
			// run stops whatever AllowErrors says.
			ev := fmt.Sprintf("A cell timed out while it was being executed, after %s.", secondsText(opt.CellTimeout))
			res.Outputs = append(res.Outputs, client.Output{"output_type": "error", "ename": "CellTimeoutError", "evalue": ev, "traceback": []any{"CellTimeoutError: " + ev}})
			store(c, res)
			runs = append(runs, CellRun{Index: i, Seconds: secs, Status: "error"})
			return runs, fmt.Errorf("%w: cell %d did not finish within %s and was interrupted (raise --timeout)", ErrCellTimeout, i+1, secondsText(opt.CellTimeout))
		}
		if err != nil {
			return runs, fmt.Errorf("running cell %d: %w", i+1, err)
		}
		secs := time.Since(t0).Seconds()
		store(c, res)
		runs = append(runs, CellRun{Index: i, Seconds: secs, Status: res.Status})
		if res.Status == "error" && firstErr == nil {
			firstErr = cellError(i, res)
			if !opt.AllowErrors {
				break
			}
		}
	}
	progress(opt, len(code), len(code), start, "")
	if opt.Progress != nil && opt.Terminal {
		fmt.Fprintln(opt.Progress)
	}
	if opt.AllowErrors {
		return runs, nil
	}
	return runs, firstErr
}

// endProgress ends a progress bar's line, so what follows starts clean.
func endProgress(opt RunOptions) {
	if opt.Progress != nil && opt.Terminal {
		fmt.Fprintln(opt.Progress)
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if len(l) > 40 {
		l = l[:37] + "..."
	}
	return l
}

func progress(opt RunOptions, done, total int, start time.Time, label string) {
	if opt.Progress == nil {
		return
	}
	el := time.Since(start).Round(100 * time.Millisecond)
	if !opt.Terminal {
		if done < total {
			fmt.Fprintf(opt.Progress, "[%d/%d] %s\n", done+1, total, label)
		}
		return
	}
	const width = 30
	fill := 0
	if total > 0 {
		fill = done * width / total
	}
	bar := strings.Repeat("█", fill) + strings.Repeat("░", width-fill)
	fmt.Fprintf(opt.Progress, "\r\x1b[K%s %d/%d cells %s  %s", bar, done, total, el, label)
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
	start := time.Now()
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
		progress(opt, n, len(steps), start, fmt.Sprintf("cell %d: %s", st.Cell, firstLine(c.Source())))
		t0 := time.Now()
		res, err := ex.Execute(ctx, c.Source(), client.ExecOptions{CellID: c.ID(st.Cell)})
		if err != nil {
			return runs, fmt.Errorf("step %d (cell %d): %w", n+1, st.Cell, err)
		}
		store(c, res)
		runs = append(runs, CellRun{Index: st.Cell, Seconds: time.Since(t0).Seconds(), Status: res.Status})
		if res.Status == "error" && !opt.AllowErrors {
			return runs, cellError(st.Cell, res)
		}
	}
	progress(opt, len(steps), len(steps), start, "")
	if opt.Progress != nil && opt.Terminal {
		fmt.Fprintln(opt.Progress)
	}
	return runs, nil
}

// cellError describes the error a result carries.
func cellError(index int, res *client.Result) *CellError {
	e := &CellError{Index: index, EName: res.EName, EValue: res.EValue}
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
