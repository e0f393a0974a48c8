package notebook

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
)

// fakeKernel runs cells by their source: "hang" blocks until ctx ends
// (after printing), "raise" raises, anything else prints itself.
type fakeKernel struct {
	interrupts int
	started    chan struct{} // closed when a hanging cell starts, if set
}

func (k *fakeKernel) Execute(ctx context.Context, code string, opt client.ExecOptions) (*client.Result, error) {
	timing := map[string]string{"iopub.status.busy": "2026-01-02T03:04:05.000001Z", "iopub.execute_input": "2026-01-02T03:04:05.000002Z",
		"shell.execute_reply": "2026-01-02T03:04:05.000003Z", "iopub.status.idle": "2026-01-02T03:04:05.000004Z"}
	out := func(o client.Output) client.Output {
		if opt.OnOutput != nil {
			opt.OnOutput(o)
		}
		return o
	}
	switch code {
	case "hang":
		res := &client.Result{Outputs: []client.Output{out(client.Output{"output_type": "stream", "name": "stdout", "text": "started\n"})}}
		if k.started != nil {
			close(k.started)
		}
		<-ctx.Done()
		return res, ctx.Err()
	case "raise":
		tb := []any{"\x1b[0;31mZeroDivisionError\x1b[0m Traceback", "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"}
		return &client.Result{Status: "error", Count: 1, EName: "ZeroDivisionError", EValue: "division by zero", Timing: timing,
			Outputs: []client.Output{out(client.Output{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": tb})}}, nil
	}
	return &client.Result{Status: "ok", Count: 1, Timing: timing,
		Outputs: []client.Output{out(client.Output{"output_type": "stream", "name": "stdout", "text": code + "\n"})}}, nil
}

func (k *fakeKernel) Interrupt(context.Context) error { k.interrupts++; return nil }

func outputsJSON(c Cell) string { return toJSONString(c["outputs"]) }

func TestRunRecordsTiming(t *testing.T) {
	nb := FromCode("a", "b")
	var log bytes.Buffer
	if _, err := Run(context.Background(), nb, &fakeKernel{}, RunOptions{LogOutput: &log}); err != nil {
		t.Fatal(err)
	}
	md, _ := nb.Cells[1]["metadata"].(map[string]any)
	ex, _ := md["execution"].(map[string]any)
	for _, k := range []string{"iopub.status.busy", "iopub.execute_input", "shell.execute_reply", "iopub.status.idle"} {
		if s, _ := ex[k].(string); !strings.HasPrefix(s, "2026-01-02T03:04:05.00000") {
			t.Errorf("metadata.execution[%q] = %v", k, ex[k])
		}
	}
	if log.String() != "a\nb\n" {
		t.Errorf("--log-output wrote %q; want both cells' output", log.String())
	}
}

func TestRunCellError(t *testing.T) {
	nb := FromCode("a", "raise", "never")
	var log bytes.Buffer
	_, err := Run(context.Background(), nb, &fakeKernel{}, RunOptions{LogOutput: &log})
	var ce *CellError
	if !errors.As(err, &ce) || ce.Index != 1 || ce.EName != "ZeroDivisionError" || len(ce.Traceback) != 2 {
		t.Fatalf("err = %#v; want cell 2's ZeroDivisionError with its traceback", err)
	}
	if strings.Contains(log.String(), "\x1b[") || !strings.Contains(log.String(), "ZeroDivisionError: division by zero") {
		t.Errorf("--log-output wrote %q; want the traceback without colour", log.String())
	}
	if outputsJSON(nb.Cells[2]) != "[]" {
		t.Errorf("the cell after the error ran: %s", outputsJSON(nb.Cells[2]))
	}
}

// A cell over the timeout is interrupted and records nbclient's
// CellTimeoutError after what it printed; the run stops, even with
// AllowErrors, and the error says which cell and the limit.
func TestRunCellTimeout(t *testing.T) {
	for _, allow := range []bool{false, true} {
		nb := FromCode("a", "hang", "never")
		k := &fakeKernel{}
		_, err := Run(context.Background(), nb, k, RunOptions{CellTimeout: 50 * time.Millisecond, AllowErrors: allow})
		if !errors.Is(err, ErrCellTimeout) || !strings.Contains(err.Error(), "cell 2") || !strings.Contains(err.Error(), "0.05 seconds") {
			t.Fatalf("allow-errors %v: err = %v; want cell 2's timeout", allow, err)
		}
		if k.interrupts != 1 {
			t.Errorf("the kernel was interrupted %d times; want 1", k.interrupts)
		}
		outs, _ := nb.Cells[1]["outputs"].([]any)
		if len(outs) != 2 {
			t.Fatalf("outputs %s; want the cell's print and the timeout error", outputsJSON(nb.Cells[1]))
		}
		e := outs[1].(client.Output)
		if e["output_type"] != "error" || e["ename"] != "CellTimeoutError" || !strings.Contains(e["evalue"].(string), "after 0.05 seconds") {
			t.Errorf("timeout output %v", e)
		}
		if outputsJSON(nb.Cells[2]) != "[]" {
			t.Errorf("allow-errors %v: the cell after the timeout ran", allow)
		}
	}
}

// Cancelling the run (Ctrl-C) interrupts the running cell, keeps what it
// printed and returns ErrInterrupted.
func TestRunInterrupted(t *testing.T) {
	nb := FromCode("a", "hang", "never")
	k := &fakeKernel{started: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-k.started; cancel() }()
	runs, err := Run(ctx, nb, k, RunOptions{})
	if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), "cell 2") {
		t.Fatalf("err = %v; want interrupted in cell 2", err)
	}
	if k.interrupts != 1 || len(runs) != 2 || runs[1].Status != "interrupted" {
		t.Errorf("%d interrupts, runs %v", k.interrupts, runs)
	}
	if !strings.Contains(outputsJSON(nb.Cells[1]), "started") {
		t.Errorf("the interrupted cell lost its output: %s", outputsJSON(nb.Cells[1]))
	}
}
