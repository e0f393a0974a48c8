package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

var (
	frontendsNB = filepath.Join("..", "..", "tests", "notebooks", "frontends.ipynb")
	comparePy   = filepath.Join("..", "..", "tests", "notebooks", "compare.py")
)

// compared is what compare.py prints: whether the visible outputs are equal,
// and both sides' outputs under their names.
type compared struct {
	equal bool
	sides map[string]json.RawMessage
}

// compare runs compare.py with args and decodes its verdict.
func compare(t *testing.T, env []string, args ...string) compared {
	t.Helper()
	cmd := exec.Command(testenv.Python(), append([]string{comparePy}, args...)...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("compare.py %s: %v\n%s%s\n(apt-get install python3-nbclient python3-nbformat if a module is missing)", strings.Join(args, " "), err, out, stderr.String())
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("compare.py printed %q: %v", out, err)
	}
	c := compared{sides: raw}
	if err := json.Unmarshal(raw["equal"], &c.equal); err != nil {
		t.Fatalf("compare.py printed no verdict: %s", out)
	}
	delete(c.sides, "equal")
	return c
}

// mustSee fails unless every piece shows in the outputs: the comparison
// must have covered display updates, clears, split streams and errors.
func mustSee(t *testing.T, outputs json.RawMessage, pieces ...string) {
	t.Helper()
	for _, p := range pieces {
		if !strings.Contains(string(outputs), p) {
			t.Errorf("outputs lack %q, so the comparison checked too little:\n%s", p, outputs)
		}
	}
}

// What the test notebook must show, on any kernel.
var frontendsMustShow = []string{
	`KeyError`, `hidden`, `line 0\nline 1\nline 2\n`, `stdout after stderr`,
	`'shown twice'`, `after the clear`, `a wait clear with nothing after keeps this`, `'result after clear'`,
}

// nbclient runs the same notebook on the ferry kernelspec and on python3.
func TestNbclientSameOutputs(t *testing.T) {
	testenv.SkipIfShort(t, "nbclient on the ferry and python3 kernelspecs, 9 s")
	env := installSpec(t)
	c := compare(t, env, "kernels", frontendsNB, "python3", "ferry")
	if !c.equal {
		t.Fatalf("outputs differ\nferry:   %s\npython3: %s", c.sides["ferry"], c.sides["python3"])
	}
	mustSee(t, c.sides["ferry"], frontendsMustShow...)
	// A display updated from later cells shows its last value everywhere.
	if strings.Contains(string(c.sides["ferry"]), "third, from a later cell") {
		t.Errorf("the display updated in a later cell was updated again by display(…, display_id=…): %s", c.sides["ferry"])
	}
}

// ferry run gives the outputs nbconvert gives on python3, and a summary.
func TestFerryRunMatchesNbconvert(t *testing.T) {
	testenv.SkipIfShort(t, "nbconvert and ferry run on real kernels, 9 s")
	env := installSpec(t)
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref.ipynb")
	conv := exec.Command(testenv.Python(), "-m", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
		"--ExecutePreprocessor.kernel_name=python3", "--output", ref, frontendsNB)
	conv.Env = env
	if out, err := conv.CombinedOutput(); err != nil {
		t.Fatalf("nbconvert: %v\n%s (apt-get install jupyter-nbconvert)", err, out)
	}
	got := filepath.Join(dir, "ferry.ipynb")
	sum := filepath.Join(dir, "summary.json")
	run := exec.Command(ferryBin, "run", frontendsNB, "-o", got, "--allow-errors", "--summary", sum, "--python", testenv.Python())
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("ferry run: %v\n%s", err, out)
	}
	c := compare(t, env, "files", ref, got)
	if !c.equal {
		t.Fatalf("ferry run differs from nbconvert on python3\nnbconvert: %s\nferry run: %s", c.sides[ref], c.sides[got])
	}
	mustSee(t, c.sides[got], frontendsMustShow...)

	var s map[string]any
	b, err := os.ReadFile(sum)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, b)
	}
	for _, k := range []string{"policy", "cells", "cells_local", "cells_remote", "wall_seconds", "bytes_moved", "migrations", "errors"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary lacks %q: %s", k, b)
		}
	}
	const codeCells = 14
	if s["errors"] != 1.0 || s["cells"] != float64(codeCells) || s["cells_local"] != float64(codeCells) || s["policy"] != "local" {
		t.Errorf("summary: %s; want 1 error, %d cells all local, policy local", b, codeCells)
	}
}

// jupyter console, in tmux as a person would use it. The tmux server is a
// private one, so it has this test's environment (JUPYTER_PATH) whatever
// other tmux servers run on the machine.
func TestJupyterConsoleInTmux(t *testing.T) {
	testenv.SkipIfShort(t, "jupyter console in tmux on a real kernel, 5 s")
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux missing: apt-get install tmux")
	}
	env := installSpec(t)
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	const session = "ferry"
	tmux := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("tmux", append([]string{"-S", sock}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40",
		testenv.Python()+" -m jupyter_console --kernel ferry --ZMQTerminalInteractiveShell.banner=''")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", sock, "kill-server").Run() })
	waitFor := func(what string, within time.Duration) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		for {
			screen := tmux("capture-pane", "-p", "-t", session)
			if strings.Contains(screen, what) {
				return screen
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%q did not appear within %s; screen:\n%s", what, within, screen)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitFor("In [1]", 60*time.Second)
	// The expression is built so the echoed input does not match.
	tmux("send-keys", "-t", session, "print('fer' + 'ry console')", "Enter")
	waitFor("ferry console", 30*time.Second)
	tmux("send-keys", "-t", session, "6*7", "Enter")
	waitFor("Out[2]: 42", 30*time.Second)
	tmux("send-keys", "-t", session, "%ferry status", "Enter")
	waitFor("local: ipykernel running", 30*time.Second)
	waitFor("In [4]", 10*time.Second)
	tmux("send-keys", "-t", session, "exit", "Enter")
}

// Ctrl-C in a terminal, as a person presses it (tmux sends it to the
// foreground process group, kernels included): ferry run ends with exit
// 130, one clean line naming the cell, not stuck to the progress bar, and
// the partial notebook written.
func TestRunCtrlCInTmux(t *testing.T) {
	testenv.SkipIfShort(t, "ferry run in tmux on a real kernel, 10 s")
	testenv.RequirePython(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux missing: apt-get install tmux")
	}
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "long.ipynb", []string{"x = 1", "import time\ntime.sleep(60)", "print('never')"})
	out := filepath.Join(dir, "out.ipynb")
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	const session = "ferryrun"
	tmux := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("tmux", append([]string{"-S", sock}, args...)...)
		cmd.Env = quietEnv()
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	bin, err := filepath.Abs(ferryBin)
	if err != nil {
		t.Fatal(err)
	}
	// The shell traps SIGINT (a handler, reset to default in its
	// children) so it outlives Ctrl-C and prints ferry's exit status.
	script := fmt.Sprintf("trap : INT; %s run %s -o %s --python %s; echo FERRY_EXIT=$?; exec sleep 120", bin, nb, out, testenv.Python())
	tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", "sh", "-c", script)
	tmux("set-option", "-t", session, "remain-on-exit", "on")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", sock, "kill-server").Run() })
	waitFor := func(what string, within time.Duration) string {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			screen := tmux("capture-pane", "-p", "-t", session)
			if strings.Contains(screen, what) {
				return screen
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q did not appear within %s; screen:\n%s", what, within, screen)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("cell 2 of 3", 90*time.Second)
	t0 := time.Now()
	tmux("send-keys", "-t", session, "C-c")
	screen := waitFor("FERRY_EXIT=", 30*time.Second)
	if !strings.Contains(screen, "FERRY_EXIT=130") {
		t.Errorf("exit status after Ctrl-C; want 130, screen:\n%s", screen)
	}
	if el := time.Since(t0); el > 20*time.Second {
		t.Errorf("exiting took %s: the cell was waited for", el)
	}
	if strings.Contains(screen, "context canceled") {
		t.Errorf("Ctrl-C shows an internal error:\n%s", screen)
	}
	clean := false
	for _, l := range strings.Split(screen, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "ferry run: ") && strings.Contains(l, "interrupted in cell 2 of 3") {
			clean = true
		}
	}
	if !clean {
		t.Errorf("no line of its own naming the interrupted cell:\n%s", screen)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatalf("no partial notebook after Ctrl-C: %v", err)
	}
	if toJSON(got.Cells[2]["outputs"]) != "[]" {
		t.Errorf("the cell after the interrupted one has outputs: %s", toJSON(got.Cells[2]["outputs"]))
	}
}
