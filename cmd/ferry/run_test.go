package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// closedPort is a loopback URL nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// ferryCmd runs the ferry binary with env and args and returns its exit
// code and stderr.
func ferryCmd(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("running ferry %v: %v\n%s", args, err, stderr.String())
	return 0, ""
}

// A headless run with a %%ferry remote cell and a cloud that does not
// answer: the cell fails with one clear error, nothing runs in its place,
// ferry run exits non-zero, and the summary does not count the cell as
// remote (papermill users read both).
func TestRunPinnedRemoteUnreachable(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran-on-the-laptop")
	nb := writeNotebook(t, dir, "pinned.ipynb", []string{
		"x = 1",
		"%%ferry remote\nimport pathlib\npathlib.Path(" + toJSON(marker) + ").write_text('oops')\nprint(x)",
		"print('after')",
	})
	out, sum := filepath.Join(dir, "out.ipynb"), filepath.Join(dir, "summary.json")
	code, stderr := ferryCmd(t, ferryEnv(), "run", nb, "-o", out, "--summary", sum, "--python", testenv.Python(), "--remote", closedPort(t))
	if code == 0 {
		t.Fatalf("ferry run exited 0 with a %%%%ferry remote cell and no cloud:\n%s", stderr)
	}
	if !strings.Contains(stderr, "remote kernel could not start") {
		t.Errorf("ferry run's error does not say the cloud kernel could not start:\n%s", stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the pinned cell ran on the laptop")
	}
	s := readSummary(t, sum)
	if s.CellsRemote != 0 || s.Errors != 1 || s.CellsLocal != 1 {
		t.Errorf("summary: %d local, %d remote, %d errors; want 1 local, 0 remote, 1 error", s.CellsLocal, s.CellsRemote, s.Errors)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	outs, _ := got.Cells[1]["outputs"].([]any)
	if len(outs) != 1 || outs[0].(map[string]any)["ename"] != "FerryError" {
		t.Errorf("the pinned cell's outputs are %v; want one FerryError", outs)
	}
}

// quietEnv is ferryEnv without debug logging, so stderr holds only what
// a user sees.
func quietEnv(extra ...string) []string {
	var env []string
	for _, kv := range ferryEnv(extra...) {
		if kv != "FERRY_DEBUG=1" {
			env = append(env, kv)
		}
	}
	return env
}

// ferry run checks --python once, before the first cell: an interpreter
// that is missing, not executable or without ipykernel fails the run with
// one line naming it and the fix, and no cell runs; a bare name is looked
// up in PATH, as a shell would.
func TestRunChecksPython(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "python-not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noIPykernel := filepath.Join(dir, "python-without-ipykernel")
	if err := os.WriteFile(noIPykernel, []byte("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ipykernel'\" >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(testenv.Python(), filepath.Join(bin, "ferrytestpython")); err != nil {
		t.Fatal(err)
	}
	pathEnv := "PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")
	nb := writeNotebook(t, dir, "py.ipynb", []string{"print(6 * 7)"})
	tests := []struct {
		name, python string
		want         []string // in the one line of stderr; nil: the run succeeds
	}{
		{"missing", filepath.Join(dir, "no-such-python"), []string{filepath.Join(dir, "no-such-python"), "not found", "--python"}},
		{"not executable", notExec, []string{notExec, "not executable", "--python"}},
		{"without ipykernel", noIPykernel, []string{noIPykernel, "ipykernel", "--python"}},
		{"bare name not in PATH", "no-such-python-ferry", []string{"no-such-python-ferry", "PATH", "--python"}},
		{"bare name in PATH", "ferrytestpython", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.ipynb")
			code, stderr := ferryCmd(t, quietEnv(pathEnv), "run", nb, "-o", out, "--python", tt.python)
			if tt.want == nil {
				if code != 0 {
					t.Fatalf("ferry run --python %s: exit %d\n%s", tt.python, code, stderr)
				}
				got, err := notebook.Read(out)
				if err != nil {
					t.Fatal(err)
				}
				if o := toJSON(got.Cells[0]["outputs"]); !strings.Contains(o, "42") {
					t.Errorf("the cell's outputs are %s, want 42", o)
				}
				return
			}
			if code == 0 {
				t.Fatalf("ferry run --python %s exited 0", tt.python)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("want one line on stderr, got %d:\n%s", len(lines), stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[len(lines)-1], w) {
					t.Errorf("the error does not say %q: %s", w, lines[len(lines)-1])
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("ferry run wrote an executed notebook though no cell could run")
			}
		})
	}
}

// The HTML report of a real run names cells as the progress and the
// errors do, starts with the kernels' start-up, ends at the wall time,
// highlights and names the error, and says laptop and cloud, never
// Ferry's internal names.
func TestRunReportSpeaksTheUsersWords(t *testing.T) {
	testenv.SkipIfShort(t, "ferry run on real kernels with a stand-in cloud")
	dir := t.TempDir()
	nbPath := filepath.Join(dir, "r.ipynb")
	nb := notebook.FromCode("#md", "import random\nx = random.random()", "y = x * 2", "1/0")
	nb.Cells[0]["cell_type"] = "markdown"
	if err := nb.Write(nbPath); err != nil {
		t.Fatal(err)
	}
	rep, sum := filepath.Join(dir, "r.html"), filepath.Join(dir, "s.json")
	out, err := exec.Command(ferryBin, "run", nbPath, "-o", filepath.Join(dir, "o.ipynb"), "--local-remote", "--policy", "pingpong",
		"--allow-errors", "--report", rep, "--summary", sum, "--python", testenv.Python()).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry run: %v\n%s", err, out)
	}
	for _, want := range []string{"cell 1 of 3 `import random`", "cell 3 of 3 `1/0`", "1 error, in cell 3 of 3 `1/0`", "(2 on the laptop, 1 in the cloud)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(rep)
	if err != nil {
		t.Fatal(err)
	}
	page := html.UnescapeString(string(b))
	for _, want := range []string{"Starting Ferry and its kernels took", "cell 2 of 3 <code>y = x * 2</code>", `<tr class="local err">`,
		"raised ZeroDivisionError: division by zero", "random state", "--policy pingpong takes the laptop and each cloud in turn."} {
		if !strings.Contains(page, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(page, "__ferry") || strings.Contains(page, "id:cell-") {
		t.Error("the report shows Ferry's internal names or cell ids")
	}
	var s struct {
		Wall float64 `json:"wall_seconds"`
	}
	sb, _ := os.ReadFile(sum)
	_ = json.Unmarshal(sb, &s)
	ticks := regexp.MustCompile(`text-anchor="middle">([0-9.]+)s<`).FindAllStringSubmatch(page, -1)
	// The timeline covers the wall time: its pieces (start-up, think
	// time, each cell) are measured apart, so they may add up to a few
	// milliseconds more, never to less.
	if len(ticks) == 0 {
		t.Fatalf("the report has no timeline axis")
	}
	end, _ := strconv.ParseFloat(ticks[len(ticks)-1][1], 64)
	if end < s.Wall*0.99-0.005 || end > s.Wall*1.02+0.01 {
		t.Errorf("the timeline ends at %v s; want the wall time %.3g s", end, s.Wall)
	}
}

// readSummary reads the JSON summary ferry run --summary wrote.
func readSummary(t *testing.T, path string) summary {
	t.Helper()
	var s summary
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("the summary %s: %v", path, err)
	}
	return s
}
