package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/session"
	"github.com/ferry-nb/ferry/internal/trace"
)

// summary is the --summary JSON. Field names are stable: scripts read them.
type summary struct {
	Notebook    string    `json:"notebook"`
	Output      string    `json:"output"`
	Policy      string    `json:"policy"`
	Cells       int       `json:"cells"`
	CellsLocal  int       `json:"cells_local"`
	CellsRemote int       `json:"cells_remote"`
	WallSeconds float64   `json:"wall_seconds"`
	BytesMoved  int64     `json:"bytes_moved"`
	Migrations  int       `json:"migrations"`
	Errors      int       `json:"errors"`
	CellSeconds []float64 `json:"cell_seconds"`

	TransferSeconds  float64 `json:"transfer_seconds"`
	FullStateBytes   int64   `json:"full_state_bytes"`
	FullStateSeconds float64 `json:"full_state_seconds"`
	PinnedCells      int     `json:"pinned_cells"`
	// CloudKernelSeconds is how long cloud kernels existed during the
	// run (creation to deletion); CloudCost that at --cloud-price (0
	// without one).
	CloudKernelSeconds float64 `json:"cloud_kernel_seconds"`
	CloudCost          float64 `json:"cloud_cost"`
	// CellsByLocation and Clouds break the counts down with several
	// clouds (--remote NAME=URL): cells per location, each cloud's kernel
	// time and cost at its own price.
	CellsByLocation map[location.Location]int             `json:"cells_by_location,omitempty"`
	Clouds          map[location.Location]kernel.CloudUse `json:"clouds,omitempty"`
	// CloudReleases counts cloud kernels let go after --cloud-idle.
	CloudReleases int `json:"cloud_releases"`
}

// runHelpText follows the flags in 'ferry help run'.
const runHelpText = `
Parameters (as papermill): -f FILE.yaml, then -y YAML, then -p NAME VALUE,
then -r NAME VALUE, later ones winning, go into a new code cell tagged
"injected-parameters" right after the cell tagged "parameters" (else at the
top); a re-run of an injected notebook replaces that cell. -p types VALUE
as papermill does: True, False, None, an int, a float, else a string; -r
keeps it a string.

Exit codes: 0 every cell ran (or --allow-errors); 1 a cell raised or timed
out, or the run failed (the partial notebook is written); 2 bad flags or
arguments; 130 interrupted by Ctrl-C, SIGTERM or SIGHUP (the partial
notebook is written).
`

// runParams are the -p and -r pairs taken out of the arguments before
// the flag set parses them: a Go flag takes one value, papermill's two.
type runParam struct {
	raw         bool
	name, value string
}

// paramPairFlag shows -p/-r in the flag set's help and completion; the
// pairs never reach it (extractParams takes them out first), only a
// mistyped -p=VALUE does.
type paramPairFlag struct{ name string }

func (f paramPairFlag) String() string { return "" }
func (f paramPairFlag) Set(string) error {
	return fmt.Errorf("takes a name and a value: -%s alpha 0.5", f.name)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ", ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// extractParams takes -p/--parameters and -r/--parameters_raw NAME VALUE
// out of args. It steps over the values of fs's other flags, so a value
// that happens to be "-p" is not taken for the flag.
func extractParams(fs *flag.FlagSet, args []string) ([]string, []runParam, error) {
	var rest []string
	var ps []runParam
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(rest, args[i:]...), ps, nil
		}
		switch a {
		case "-p", "--p", "-parameters", "--parameters", "-r", "--r", "-parameters_raw", "--parameters_raw":
			if i+2 >= len(args) {
				return nil, nil, fmt.Errorf("%w: %s takes a name and a value: %s alpha 0.5", errBadUsage, a, a)
			}
			name := strings.TrimLeft(a, "-")
			ps = append(ps, runParam{raw: name == "r" || name == "parameters_raw", name: args[i+1], value: args[i+2]})
			i += 2
			continue
		}
		rest = append(rest, a)
		if name := strings.TrimLeft(a, "-"); name != a && name != "" && !strings.Contains(name, "=") {
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
				rest = append(rest, args[i+1])
				i++
			}
		}
	}
	return rest, ps, nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// loadParams merges the parameters in papermill's order.
func loadParams(files, yamls []string, pairs []runParam) (*notebook.Params, error) {
	var p notebook.Params
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: -f %s: %w", errBadUsage, f, err)
		}
		if err := p.ParseYAML(b, "-f "+f); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadUsage, err)
		}
	}
	for _, y := range yamls {
		if err := p.ParseYAML([]byte(y), "-y"); err != nil {
			return nil, fmt.Errorf("%w: %w", errBadUsage, err)
		}
	}
	for _, raw := range []bool{false, true} {
		for _, pp := range pairs {
			if pp.raw != raw {
				continue
			}
			if raw {
				p.Set(pp.name, pp.value)
			} else {
				p.Set(pp.name, notebook.ParseValue(pp.value))
			}
		}
	}
	return &p, nil
}

func runNotebook(ctx context.Context, args []string) error {
	fs := newFlags("run")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: ferry run NOTEBOOK.ipynb [-o OUT.ipynb|-] [-p NAME VALUE]... [flags]\n\nExecute a notebook headless across the laptop and the cloud, and write the executed notebook.\n\nflags:")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), runHelpText)
	}
	out := fs.String("o", "", "where to write the executed notebook; - for stdout (default NOTEBOOK.ferry.ipynb)")
	var paramFiles, paramYAML stringList
	fs.Var(&paramFiles, "f", "papermill parameters from this YAML `FILE` (repeatable; also --parameters_file)")
	fs.Var(&paramFiles, "parameters_file", "same as -f")
	fs.Var(&paramYAML, "y", "papermill parameters as an inline `YAML` mapping, e.g. 'alpha: 0.5' (repeatable; also --parameters_yaml)")
	fs.Var(&paramYAML, "parameters_yaml", "same as -y")
	fs.Var(paramPairFlag{"p"}, "p", "a parameter, `NAME VALUE`, typed as papermill does (repeatable; also --parameters)")
	fs.Var(paramPairFlag{"parameters"}, "parameters", "same as -p")
	fs.Var(paramPairFlag{"r"}, "r", "a parameter, `NAME VALUE`, kept as a string (repeatable; also --parameters_raw)")
	fs.Var(paramPairFlag{"parameters_raw"}, "parameters_raw", "same as -r")
	logOutput := fs.Bool("log-output", false, "stream each cell's outputs to stderr as they arrive")
	kernelName := fs.String("kernel-name", "", "take the local kernel's interpreter from this installed Jupyter kernelspec (a python -m ipykernel_launcher one, or Ferry's own) instead of --python")
	allowErrors := fs.Bool("allow-errors", false, "run on after a cell raises, recording the error")
	summaryPath := fs.String("summary", "", "write a JSON summary of the run to this file")
	timeout := fs.Float64("timeout", 0, "seconds one cell may take before it is interrupted (0: no limit)")
	baseline := fs.Bool("baseline-dump", false, "at each migration also measure a full-session dill dump (the baseline) and report it in the summary")
	sessionPath := fs.String("session", "", "replay a scripted user session (cells, think times, edits) instead of running all cells")
	thinkScale := fs.Float64("think-scale", 1, "with --session: multiply the script's think times")
	reportPath := fs.String("report", "", "write a self-contained HTML report (timeline, decisions, totals) to this file")
	cwd := fs.String("cwd", "", "working directory of the local kernel (default: the notebook's directory, as nbconvert and papermill)")
	var bf backendFlags
	bf.register(fs)
	args, pairs, err := extractParams(fs, args)
	if err != nil {
		return err
	}
	// Accept flags after the notebook path too, as users type them.
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(paths) != 1 {
		return fmt.Errorf("%w: give exactly one notebook: ferry run NOTEBOOK.ipynb [-o OUT.ipynb]", errBadUsage)
	}
	in := paths[0]
	if *out == "" {
		*out = strings.TrimSuffix(in, ".ipynb") + ".ferry.ipynb"
	}
	toStdout := *out == "-"
	params, err := loadParams(paramFiles, paramYAML, pairs)
	if err != nil {
		return err
	}
	if *kernelName != "" {
		explicit := false
		fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "python" })
		if explicit {
			return fmt.Errorf("%w: give --kernel-name or --python, not both", errBadUsage)
		}
		if bf.python, err = kernelspecPython(*kernelName); err != nil {
			return err
		}
	}
	nb, err := notebook.Read(in)
	if err != nil {
		return err
	}
	if params.Len() > 0 && *sessionPath != "" {
		// A session script names cells by position; an injected cell would
		// shift them.
		return fmt.Errorf("%w: parameters and --session do not mix (the injected cell would shift the script's cell numbers)", errBadUsage)
	}
	if params.Len() > 0 {
		_, tagged, err := nb.InjectParameters(params)
		if err != nil {
			return fmt.Errorf("%w: %w", errBadUsage, err)
		}
		if !tagged {
			fmt.Fprintln(os.Stderr, "ferry run: the notebook has no cell tagged \"parameters\"; the parameters go into a cell at the top")
		}
	}
	if bf.dir, err = notebook.Dir(in, *cwd); err != nil {
		return err
	}
	var steps []notebook.Step
	if *sessionPath != "" {
		sc, err := session.Load(*sessionPath)
		if err != nil {
			return err
		}
		if *thinkScale < 0 {
			return errors.New("--think-scale must not be negative")
		}
		sc.ThinkScale *= *thinkScale
		steps = session.Steps(sc)
	}
	// Every cell needs the interpreter: check it once, before the first.
	if bf.python, err = checkPython(ctx, bf.python); err != nil {
		return err
	}
	cfg, err := bf.config()
	if err != nil {
		return err
	}
	defer cfg.Trace.Close()
	cfg.BaselineDump = *baseline
	start := time.Now()
	sess, err := client.StartFerry(ctx, cfg)
	if err != nil {
		return err
	}
	startup := time.Since(start).Seconds()
	defer sess.Close(context.Background())
	quietAfter(ctx)
	isTTY := term.IsTerminal(int(os.Stderr.Fd()))
	ropt := notebook.RunOptions{AllowErrors: *allowErrors, CellTimeout: time.Duration(*timeout * float64(time.Second)), Progress: os.Stderr, Terminal: isTTY}
	if *logOutput {
		ropt.LogOutput = os.Stderr
	}
	if ropt.CellTimeout > 0 {
		// As papermill's --execution-timeout, --timeout bounds a cell's own
		// run, not the kernel's start: under a loaded machine the first
		// cell timed out while the laptop kernel and the analysis helper
		// were still starting (8 s against a 2 s limit).
		if err := warmUp(ctx, sess, cfg); err != nil {
			return err
		}
	}
	var runs []notebook.CellRun
	var runErr error
	if steps != nil {
		runs, runErr = notebook.RunSteps(ctx, nb, sess, steps, ropt)
	} else {
		runs, runErr = notebook.Run(ctx, nb, sess, ropt)
	}
	wall := time.Since(start).Seconds()
	if toStdout {
		// Only the notebook goes to stdout, so it can be piped.
		b, err := nb.Marshal()
		if err != nil {
			return fmt.Errorf("encoding notebook: %w", err)
		}
		if _, err := os.Stdout.Write(b); err != nil {
			return fmt.Errorf("writing the notebook to stdout: %w", err)
		}
	} else if err := nb.Write(*out); err != nil {
		return err
	}
	tot := sess.Kernel.Stats.Totals()
	local, remote := tot.CellsLocal, tot.CellsRemote
	sum := summary{Notebook: in, Output: *out, Policy: bf.policy, Cells: len(runs), CellsLocal: local, CellsRemote: remote,
		WallSeconds: wall, BytesMoved: tot.BytesMoved, Migrations: tot.Migrations, CellSeconds: []float64{},
		TransferSeconds: tot.TransferSeconds, FullStateBytes: tot.FullStateBytes, FullStateSeconds: tot.FullStateSeconds, PinnedCells: tot.PinnedCells}
	by := sess.Kernel.CloudUsageByCloud() // one reading, so the parts add up to the whole
	for _, u := range by {
		sum.CloudKernelSeconds += u.Seconds
		sum.CloudCost += u.USD
	}
	if len(by) > 1 {
		sum.CellsByLocation, sum.Clouds = tot.CellsAt, by
	}
	sum.CloudReleases = tot.CloudReleases
	for _, r := range runs {
		sum.CellSeconds = append(sum.CellSeconds, r.Seconds)
		if r.Status == "error" {
			sum.Errors++
		}
	}
	if *reportPath != "" {
		if err := writeReport(*reportPath, sum, cfg.CloudPrice, startup, reportCells(nb, runs, cfg.Trace.Events()), cfg.Trace.Events()); err != nil {
			return err
		}
	}
	if *summaryPath != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(*summaryPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing summary: %w", err)
		}
	}
	where := *out
	if toStdout {
		where = "the notebook to stdout"
	}
	if errors.Is(runErr, notebook.ErrInterrupted) {
		// One line: main prints it.
		return fmt.Errorf("%w; wrote the partial notebook (%s)", runErr, where)
	}
	var ce *notebook.CellError
	if errors.As(runErr, &ce) {
		printCellError(nb, ce)
	}
	fmt.Fprintln(os.Stderr, summaryLine(nb, runs, wall, local, remote, where))
	return runErr
}

// summaryLine is the run's last line on stderr: how many cells ran where,
// and which raised, named as everywhere else ("cell 3 of 5 `x = 1/0`").
func summaryLine(nb *notebook.Notebook, runs []notebook.CellRun, wall float64, laptop, cloud int, where string) string {
	names := nb.CellNames()
	var failed []string
	for _, r := range runs {
		if r.Status == "error" {
			failed = append(failed, names[r.Index].Long())
		}
	}
	errs := "no errors"
	switch {
	case len(failed) == 1:
		errs = "1 error, in " + failed[0]
	case len(failed) > 1:
		errs = fmt.Sprintf("%d errors, in %s", len(failed), strings.Join(failed, ", "))
	}
	return fmt.Sprintf("ran %d cells in %.1fs (%d on the laptop, %d in the cloud); %s; wrote %s", len(runs), wall, laptop, cloud, errs, where)
}

// printCellError shows the failing cell and its traceback, without colour,
// as nbclient's CellExecutionError message does.
func printCellError(nb *notebook.Notebook, ce *notebook.CellError) {
	var b strings.Builder
	fmt.Fprintf(&b, "An error occurred while executing %s:\n------------------\n%s\n------------------\n\n", ce.Name, strings.TrimRight(nb.Cells[ce.Index].Source(), "\n"))
	for _, l := range ce.Traceback {
		b.WriteString(notebook.StripANSI(l) + "\n")
	}
	if len(ce.Traceback) == 0 {
		fmt.Fprintf(&b, "%s: %s\n", ce.EName, ce.EValue)
	}
	os.Stderr.WriteString(b.String())
}

// reportCells names each trace event's cell as the run names it, with
// its time as the run saw it and the error it raised. Events and runs are
// matched in order by the cell's id (ferry run sends it, and the trace
// keys cells by it); a run without an event (a cell that never ran) is
// stepped over.
func reportCells(nb *notebook.Notebook, runs []notebook.CellRun, evs []trace.Event) []report.Cell {
	names := nb.CellNames()
	out := make([]report.Cell, len(evs))
	j := 0
	for i, e := range evs {
		out[i] = report.Cell{Name: fmt.Sprintf("execution %d", i+1)}
		for k := j; k < len(runs); k++ {
			r := runs[k]
			if "id:"+nb.Cells[r.Index].ID(r.Index) != e.Cell {
				continue
			}
			n := names[r.Index]
			out[i] = report.Cell{Name: n.String(), Line: n.Line, Wall: r.Seconds, Error: errorOf(nb.Cells[r.Index])}
			j = k + 1
			break
		}
	}
	return out
}

// errorOf is "ZeroDivisionError: division by zero" for a cell whose
// outputs hold an error, else "".
func errorOf(c notebook.Cell) string {
	outs, _ := c["outputs"].([]any)
	for _, o := range outs {
		m, ok := o.(map[string]any)
		if !ok {
			if co, ok2 := o.(client.Output); ok2 {
				m = co
			}
		}
		if m["output_type"] == "error" {
			en, _ := m["ename"].(string)
			ev, _ := m["evalue"].(string)
			if ev == "" {
				return en
			}
			return en + ": " + ev
		}
	}
	return ""
}

func writeReport(path string, sum summary, price, startup float64, cells []report.Cell, evs []trace.Event) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	err = report.Write(f, report.Summary{Title: sum.Notebook, Policy: sum.Policy, WallSeconds: sum.WallSeconds, BytesMoved: sum.BytesMoved,
		Migrations: sum.Migrations, CellsLocal: sum.CellsLocal, CellsRemote: sum.CellsRemote, Errors: sum.Errors,
		StartupSeconds: startup, Cells: cells, CloudKernelSeconds: sum.CloudKernelSeconds, CloudCost: sum.CloudCost, CloudPrice: price}, evs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

// warmUp starts the laptop kernel and the analysis helper before the first
// cell, so a cell's time limit counts only the cell.
func warmUp(ctx context.Context, sess *client.Session, cfg kernel.Config) error {
	if _, err := sess.Kernel.Start(ctx, location.Local); err != nil {
		return fmt.Errorf("starting the laptop kernel: %w", err)
	}
	if cfg.Analyzer != nil {
		if _, err := cfg.Analyzer.Analyze(ctx, "pass"); err != nil {
			return fmt.Errorf("starting the analysis helper: %w", err)
		}
	}
	return nil
}
