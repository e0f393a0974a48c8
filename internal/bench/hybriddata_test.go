package bench

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// A data-on-laptop session through the whole bench: its data is made once
// into the data folder, the laptop kernel runs there, and under remote the
// 4 MB input file crosses to the cloud, a separate machine with its own
// disk (the notebook could not read it there otherwise), while local moves
// nothing; every policy's row (ferry-cost too) ran all executions.
func TestHybridDataOnLaptop(t *testing.T) {
	requireTestbed(t, "six sessions against a jupyter-server behind tc, 30-60 s")
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("make.py", `import os, sys
import numpy as np
d = sys.argv[2]
stamp = os.path.join(d, ".made")
if os.path.exists(stamp):
    sys.exit(0)
np.save(os.path.join(d, "field.npy"), np.random.default_rng(0).random(500_000))
open(stamp, "w").write("1")
open(os.path.join(os.path.dirname(d), "made-count"), "a").write("x")
`)
	nb := map[string]any{"nbformat": 4, "nbformat_minor": 5, "metadata": map[string]any{}, "cells": []any{
		map[string]any{"cell_type": "code", "metadata": map[string]any{}, "outputs": []any{}, "execution_count": nil, "source": "import numpy as np\nfield = np.load('field.npy')\nprint(field.shape)"},
		map[string]any{"cell_type": "code", "metadata": map[string]any{}, "outputs": []any{}, "execution_count": nil, "source": "m = float(field.mean())\nprint(round(m, 3))"},
	}}
	b, _ := json.Marshal(nb)
	write("nb.ipynb", string(b))
	write("s.json", `{"notebook": "nb.ipynb", "data": {"make": "make.py", "set": "field"}, "steps": [{"cell": 0, "think_s": 0}, {"cell": 1, "think_s": 0}, {"cell": 1, "think_s": 0}]}`)
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rows, err := Hybrid(ctx, HybridOptions{Python: testenv.Python(), Sessions: []string{filepath.Join(dir, "s.json")},
		Settings: []LinkSetting{{"50Mbit/5ms", "50mbit", 5 * time.Millisecond, 0.5, ""}}, ThinkScale: 1, Repeat: 1, DataDir: data, Out: io.Discard, Progress: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]HybridRow{}
	for _, r := range rows {
		by[r.Policy] = r
		if r.Executions != 3 {
			t.Errorf("%s ran %d executions, want 3", r.Policy, r.Executions)
		}
	}
	for _, p := range []string{"local", "remote", "paper", "ferry", "ferry-again", "ferry-cost", "oracle"} {
		if _, ok := by[p]; !ok {
			t.Fatalf("no %s row in %+v", p, rows)
		}
	}
	if by["local"].BytesMoved != 0 {
		t.Errorf("all-local moved %d bytes", by["local"].BytesMoved)
	}
	if by["remote"].BytesMoved < 3e6 {
		t.Errorf("all-remote moved %d bytes; the 4 MB file must cross to the cloud's own disk", by["remote"].BytesMoved)
	}
	if c, err := os.ReadFile(filepath.Join(data, "made-count")); err != nil || string(c) != "x" {
		t.Errorf("the data was made %q times (%v), want once", c, err)
	}
}
