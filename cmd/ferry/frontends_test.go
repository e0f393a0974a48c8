package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nbclient runs the same notebook on the ferry kernelspec and on python3.
func TestNbclientSameOutputs(t *testing.T) {
	env := installSpec(t)
	cmd := exec.Command(python, filepath.Join("..", "..", "tests", "notebooks", "compare.py"),
		filepath.Join("..", "..", "tests", "notebooks", "frontends.ipynb"), "python3", "ferry")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nbclient run: %v\n%s (apt-get install python3-nbclient)", err, out)
	}
	var res struct {
		Equal  bool            `json:"equal"`
		Ferry  json.RawMessage `json:"ferry"`
		Python json.RawMessage `json:"python3"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("compare.py printed %s: %v", out, err)
	}
	if !res.Equal {
		t.Fatalf("outputs differ\nferry:   %s\npython3: %s", res.Ferry, res.Python)
	}
	if !strings.Contains(string(res.Ferry), "KeyError") || !strings.Contains(string(res.Ferry), "hidden") {
		t.Fatalf("the comparison checked too little: %s", res.Ferry)
	}
}

// ferry run gives the outputs nbclient gives on python3.
func TestFerryRunMatchesNbclient(t *testing.T) {
	env := installSpec(t)
	dir := t.TempDir()
	nb := filepath.Join("..", "..", "tests", "notebooks", "frontends.ipynb")
	ref := filepath.Join(dir, "ref.ipynb")
	conv := exec.Command(python, "-m", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
		"--ExecutePreprocessor.kernel_name=python3", "--output", ref, nb)
	conv.Env = env
	if out, err := conv.CombinedOutput(); err != nil {
		t.Fatalf("nbconvert: %v\n%s (apt-get install jupyter-nbconvert)", err, out)
	}
	got := filepath.Join(dir, "ferry.ipynb")
	sum := filepath.Join(dir, "summary.json")
	run := exec.Command(ferryBin, "run", nb, "-o", got, "--allow-errors", "--summary", sum, "--python", python)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("ferry run: %v\n%s", err, out)
	}
	script := `import json,sys
sys.path.insert(0, sys.argv[3])
from compare import visible
import nbformat
a = visible(nbformat.read(sys.argv[1], as_version=4)); b = visible(nbformat.read(sys.argv[2], as_version=4))
print(json.dumps({"equal": a == b, "a": a, "b": b}))`
	cmp := exec.Command(python, "-c", script, ref, got, filepath.Join("..", "..", "tests", "notebooks"))
	out, err := cmp.Output()
	if err != nil {
		t.Fatalf("comparing: %v", err)
	}
	if !strings.Contains(string(out), `"equal": true`) {
		t.Fatalf("ferry run differs from nbconvert on python3: %s", out)
	}
	var s map[string]any
	b, err := os.ReadFile(sum)
	if err != nil || json.Unmarshal(b, &s) != nil {
		t.Fatalf("summary: %v %s", err, b)
	}
	for _, k := range []string{"policy", "cells", "cells_local", "cells_remote", "wall_seconds", "bytes_moved", "migrations", "errors"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary lacks %q: %s", k, b)
		}
	}
	if s["errors"].(float64) != 1 || s["cells"].(float64) != 7 {
		t.Errorf("summary counts: %s", b)
	}
}

// jupyter console, in tmux as a person would use it.
func TestJupyterConsoleInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux missing: apt-get install tmux")
	}
	env := installSpec(t)
	session := "ferrytest" + strings.ReplaceAll(filepath.Base(t.TempDir()), "-", "")
	tmux := func(args ...string) string {
		cmd := exec.Command("tmux", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30",
		python+" -m jupyter_console --kernel ferry --ZMQTerminalInteractiveShell.banner=''")
	defer exec.Command("tmux", "kill-session", "-t", session).Run()
	waitFor := func(what string, within time.Duration) string {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		for {
			screen := tmux("capture-pane", "-p", "-t", session)
			if strings.Contains(screen, what) {
				return screen
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%q did not appear; screen:\n%s", what, screen)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitFor("In [1]", 60*time.Second)
	tmux("send-keys", "-t", session, "print('fer' + 'ry console')", "Enter")
	waitFor("ferry console", 30*time.Second)
	tmux("send-keys", "-t", session, "6*7", "Enter")
	screen := waitFor("Out[2]: 42", 30*time.Second)
	if !strings.Contains(screen, "In [3]") {
		waitFor("In [3]", 10*time.Second)
	}
	tmux("send-keys", "-t", session, "exit", "Enter")
}
