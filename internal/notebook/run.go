package notebook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
}

// CellError is returned when a cell raised and AllowErrors is off.
type CellError struct {
	Index         int
	EName, EValue string
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
		res, err := ex.Execute(cctx, src, client.ExecOptions{CellID: c.ID(i)})
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
			_ = ex.Interrupt(ictx)
			icancel()
			return runs, fmt.Errorf("cell %d did not finish within %s and was interrupted (raise --timeout)", i+1, opt.CellTimeout)
		}
		if err != nil {
			return runs, fmt.Errorf("running cell %d: %w", i+1, err)
		}
		secs := time.Since(t0).Seconds()
		store(c, res)
		runs = append(runs, CellRun{Index: i, Seconds: secs, Status: res.Status})
		if res.Status == "error" && firstErr == nil {
			firstErr = &CellError{Index: i, EName: res.EName, EValue: res.EValue}
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
			return runs, &CellError{Index: st.Cell, EName: res.EName, EValue: res.EValue}
		}
	}
	progress(opt, len(steps), len(steps), start, "")
	if opt.Progress != nil && opt.Terminal {
		fmt.Fprintln(opt.Progress)
	}
	return runs, nil
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
}
