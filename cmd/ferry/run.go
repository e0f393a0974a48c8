package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/ferry-nb/ferry/internal/client"
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
}

func runNotebook(ctx context.Context, args []string) error {
	fs := newFlags("run")
	out := fs.String("o", "", "where to write the executed notebook (default NOTEBOOK.ferry.ipynb)")
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
	// Accept flags after the notebook path too, as users type them.
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(paths) != 1 {
		return errors.New("give exactly one notebook: ferry run NOTEBOOK.ipynb [-o OUT.ipynb]")
	}
	in := paths[0]
	if *out == "" {
		*out = strings.TrimSuffix(in, ".ipynb") + ".ferry.ipynb"
	}
	nb, err := notebook.Read(in)
	if err != nil {
		return err
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
	defer sess.Close(context.Background())
	isTTY := term.IsTerminal(int(os.Stderr.Fd()))
	ropt := notebook.RunOptions{AllowErrors: *allowErrors, CellTimeout: time.Duration(*timeout * float64(time.Second)), Progress: os.Stderr, Terminal: isTTY}
	var runs []notebook.CellRun
	var runErr error
	if steps != nil {
		runs, runErr = notebook.RunSteps(ctx, nb, sess, steps, ropt)
	} else {
		runs, runErr = notebook.Run(ctx, nb, sess, ropt)
	}
	wall := time.Since(start).Seconds()
	if err := nb.Write(*out); err != nil {
		return err
	}
	tot := sess.Kernel.Stats.Totals()
	local, remote := tot.CellsLocal, tot.CellsRemote
	sum := summary{Notebook: in, Output: *out, Policy: bf.policy, Cells: len(runs), CellsLocal: local, CellsRemote: remote,
		WallSeconds: wall, BytesMoved: tot.BytesMoved, Migrations: tot.Migrations, CellSeconds: []float64{},
		TransferSeconds: tot.TransferSeconds, FullStateBytes: tot.FullStateBytes, FullStateSeconds: tot.FullStateSeconds, PinnedCells: tot.PinnedCells}
	for _, r := range runs {
		sum.CellSeconds = append(sum.CellSeconds, r.Seconds)
		if r.Status == "error" {
			sum.Errors++
		}
	}
	if *reportPath != "" {
		if err := writeReport(*reportPath, sum, cfg.Trace.Events()); err != nil {
			return err
		}
	}
	if *summaryPath != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(*summaryPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing summary: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "ran %d cells in %.1fs (%d local, %d remote, %d errors); wrote %s\n", sum.Cells, wall, local, remote, sum.Errors, *out)
	return runErr
}

func writeReport(path string, sum summary, evs []trace.Event) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	err = report.Write(f, report.Summary{Title: sum.Notebook, Policy: sum.Policy, WallSeconds: sum.WallSeconds, BytesMoved: sum.BytesMoved,
		Migrations: sum.Migrations, CellsLocal: sum.CellsLocal, CellsRemote: sum.CellsRemote, Errors: sum.Errors}, evs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}
