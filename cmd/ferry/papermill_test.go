package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// ferryOut runs the ferry binary and returns its exit code, stdout and
// stderr.
func ferryOut(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("running ferry %v: %v\n%s", args, err, stderr.String())
	return 0, "", ""
}

// paramNotebook writes a notebook whose second cell is tagged
// "parameters" and whose last prints the parameters.
func paramNotebook(t *testing.T, dir string) string {
	t.Helper()
	nb := notebook.FromCode("import sys", "alpha = 1\nname = 'default'\nflag = False\nextra = None", "print(repr(alpha), repr(name), repr(flag), repr(extra))")
	nb.Cells[1]["metadata"] = map[string]any{"tags": []any{"parameters"}}
	p := filepath.Join(dir, "params.ipynb")
	if err := nb.Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func stdoutOf(c notebook.Cell) string {
	var b strings.Builder
	outs, _ := c["outputs"].([]any)
	for _, o := range outs {
		m, _ := o.(map[string]any)
		if lines, ok := m["text"].([]any); ok {
			for _, l := range lines {
				s, _ := l.(string)
				b.WriteString(s)
			}
		}
	}
	return b.String()
}

func cellTags(c notebook.Cell) string {
	md, _ := c["metadata"].(map[string]any)
	return toJSON(md["tags"])
}

var isoRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

// Parameters from -f, -y, -p and -r reach the kernel in papermill's order
// in a cell after the "parameters" cell; -o - writes only the notebook to
// stdout; a re-run of the output replaces the injected cell; every cell
// has nbclient's timing metadata.
func TestRunParameters(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	nb := paramNotebook(t, dir)
	yamlFile := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(yamlFile, []byte("alpha: 2\nextra: [1, two]\nname: fromfile\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := ferryOut(t, quietEnv(), "run", nb, "-o", "-", "-f", yamlFile, "-y", "name: fromyaml", "-p", "alpha", "0.5", "--python", testenv.Python(), "-p", "flag", "True", "-r", "name", "007")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	out, err := notebook.Parse([]byte(stdout))
	if err != nil {
		t.Fatalf("stdout is not just the notebook (%v):\n%.500s", err, stdout)
	}
	if len(out.Cells) != 4 || cellTags(out.Cells[2]) != `["injected-parameters"]` {
		t.Fatalf("want the injected cell third of 4; got %d cells, cell 3 tagged %s", len(out.Cells), cellTags(out.Cells[2]))
	}
	if got, want := out.Cells[2].Source(), "# Parameters\nalpha = 0.5\nextra = [1, \"two\"]\nname = \"007\"\nflag = True\n"; got != want {
		t.Errorf("injected source %q; want %q", got, want)
	}
	if got, want := stdoutOf(out.Cells[3]), "0.5 '007' True [1, 'two']\n"; got != want {
		t.Errorf("the notebook printed %q; want %q", got, want)
	}
	for i, c := range out.Cells {
		md, _ := c["metadata"].(map[string]any)
		ex, _ := md["execution"].(map[string]any)
		for _, k := range []string{"iopub.execute_input", "iopub.status.busy", "shell.execute_reply", "iopub.status.idle"} {
			if s, _ := ex[k].(string); !isoRE.MatchString(s) {
				t.Errorf("cell %d metadata.execution[%q] = %v; want an ISO UTC timestamp", i+1, k, ex[k])
			}
		}
	}
	// Re-run the executed notebook with another value: still one injected cell.
	again := filepath.Join(dir, "again.ipynb")
	if err := os.WriteFile(again, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(dir, "out2.ipynb")
	if code, _, stderr := ferryOut(t, quietEnv(), "run", again, "-o", out2, "-p", "alpha", "3", "--python", testenv.Python()); code != 0 {
		t.Fatalf("re-run: exit %d\n%s", code, stderr)
	}
	got, err := notebook.Read(out2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Cells) != 4 || got.Cells[2].Source() != "# Parameters\nalpha = 3\n" || stdoutOf(got.Cells[3]) != "3 'default' False None\n" {
		t.Errorf("re-run: %d cells, injected %q, printed %q", len(got.Cells), got.Cells[2].Source(), stdoutOf(got.Cells[3]))
	}
}

// Usage mistakes exit 2 with one line, before any kernel starts.
func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "u.ipynb", []string{"1"})
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"-p without a value", []string{"run", nb, "-p", "alpha"}, "takes a name and a value"},
		{"-p=value", []string{"run", nb, "-p=alpha"}, "takes a name and a value"},
		{"bad yaml", []string{"run", nb, "-y", "a: [1"}, "is not YAML"},
		{"yaml list", []string{"run", nb, "-y", "[1, 2]"}, "not a YAML mapping"},
		{"missing -f", []string{"run", nb, "-f", filepath.Join(dir, "none.yaml")}, "none.yaml"},
		{"bad name", []string{"run", nb, "-p", "a-b", "1"}, "not a Python variable name"},
		{"two notebooks", []string{"run", nb, nb}, "exactly one notebook"},
		{"parameters with a session", []string{"run", nb, "-p", "a", "1", "--session", nb}, "do not mix"},
		{"kernel-name and python", []string{"run", nb, "--kernel-name", "python3", "--python", "/usr/bin/python3"}, "not both"},
		{"unknown flag", []string{"run", nb, "--no-such-flag"}, "no-such-flag"},
		{"completion without a shell", []string{"completion"}, "bash|zsh"},
		{"help for no command", []string{"help", "nope"}, "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := ferryOut(t, quietEnv(), tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Errorf("exit %d (want %d), stdout %q, stderr:\n%s\nwant %q", code, exitUsage, stdout, stderr, tt.want)
			}
			// The flag package's own errors list the flags after the line.
			flagPkg := strings.Contains(stderr, "flags:")
			if tt.args[0] == "run" && !flagPkg && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("want one line:\n%s", stderr)
			}
		})
	}
}

// A raising cell: its traceback, without colour, and the cell's source on
// stderr; --log-output streamed the earlier cell's print; the partial
// notebook is written; exit 1.
func TestRunCellErrorReport(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "err.ipynb", []string{"print('before the error')", "def f():\n    return 1 / 0\nf()", "print('never')"})
	out := filepath.Join(dir, "out.ipynb")
	code, stdout, stderr := ferryOut(t, quietEnv(), "run", nb, "-o", out, "--log-output", "--python", testenv.Python())
	if code != exitFailed {
		t.Fatalf("exit %d; want %d\n%s", code, exitFailed, stderr)
	}
	for _, want := range []string{"before the error", "An error occurred while executing cell 2", "return 1 / 0", "ZeroDivisionError: division by zero", "Traceback", "use --allow-errors"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "\x1b[") || stdout != "" {
		t.Errorf("colour codes on stderr or anything on stdout (%q):\n%q", stdout, stderr)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatalf("the partial notebook: %v", err)
	}
	if !strings.Contains(toJSON(got.Cells[1]["outputs"]), "ZeroDivisionError") || toJSON(got.Cells[2]["outputs"]) != "[]" {
		t.Errorf("outputs: %s / %s", toJSON(got.Cells[1]["outputs"]), toJSON(got.Cells[2]["outputs"]))
	}
}

// --timeout: the cell is interrupted, records CellTimeoutError, the
// notebook is written, exit 1, long before the cell would have ended.
func TestRunTimeoutRecorded(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "slow.ipynb", []string{"x = 1", "import time\nprint('waiting', flush=True)\ntime.sleep(60)", "print('never')"})
	out := filepath.Join(dir, "out.ipynb")
	t0 := time.Now()
	code, _, stderr := ferryOut(t, quietEnv(), "run", nb, "-o", out, "--timeout", "2", "--python", testenv.Python())
	if code != exitFailed || !strings.Contains(stderr, "did not finish within 2 seconds") {
		t.Fatalf("exit %d; want %d and the timeout named:\n%s", code, exitFailed, stderr)
	}
	if el := time.Since(t0); el > 45*time.Second {
		t.Errorf("the run took %s: the cell was not stopped", el)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	outs, _ := got.Cells[1]["outputs"].([]any)
	if len(outs) == 0 {
		t.Fatalf("the timed-out cell has no outputs; want its print and a CellTimeoutError (cells: %s)", toJSON(got.Cells))
	}
	last, _ := outs[len(outs)-1].(map[string]any)
	if last["ename"] != "CellTimeoutError" || !strings.Contains(toJSON(last["evalue"]), "after 2 seconds") || !strings.Contains(toJSON(outs), "waiting") {
		t.Errorf("the timed-out cell's outputs: %s", toJSON(outs))
	}
}

// SIGINT during a long cell: one clean line, the partial notebook (with
// what the cell printed), exit 130, without waiting for the cell.
func TestRunSIGINT(t *testing.T) {
	testenv.RequirePython(t)
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "long.ipynb", []string{"x = 1", "import time\nprint('sleeping', flush=True)\ntime.sleep(30)", "print('never')"})
	out := filepath.Join(dir, "out.ipynb")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, "run", nb, "-o", out, "--log-output", "--python", testenv.Python())
	cmd.Env = quietEnv()
	pr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for the cell's own print (streamed by --log-output), then Ctrl-C.
	sc := bufio.NewScanner(pr)
	var before []string
	for sc.Scan() {
		before = append(before, sc.Text())
		if sc.Text() == "sleeping" {
			break
		}
	}
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(pr)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("ferry run after SIGINT: %v; want exit %d\nbefore: %q\nafter: %s", err, exitInterrupted, before, rest)
	}
	if el := time.Since(t0); el > 20*time.Second {
		t.Errorf("exiting took %s: the cell was waited for", el)
	}
	lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "interrupted in cell 2") || !strings.Contains(lines[0], out) {
		t.Errorf("after SIGINT stderr is\n%s\nwant one line naming the cell and the partial notebook", rest)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatalf("no partial notebook: %v", err)
	}
	if !strings.Contains(toJSON(got.Cells[1]["outputs"]), "sleeping") || toJSON(got.Cells[2]["outputs"]) != "[]" {
		t.Errorf("partial outputs: %s / %s", toJSON(got.Cells[1]["outputs"]), toJSON(got.Cells[2]["outputs"]))
	}
}

// --kernel-name takes the interpreter from an installed kernelspec; a
// spec that is not python -m ipykernel_launcher, a broken one and a
// missing one each fail with one line.
func TestKernelspecPython(t *testing.T) {
	root := t.TempDir()
	write := func(name, body string) {
		d := filepath.Join(root, "kernels", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "kernel.json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("py", `{"argv": ["/opt/py/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}`)
	write("oldpy", `{"argv": ["python3", "-m", "ipykernel", "-f", "{connection_file}"]}`)
	write("r", `{"argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]}`)
	write("broken", `{"argv": [`)
	write("ferry", `{"argv": ["/usr/local/bin/ferry", "kernel", "-f", "{connection_file}", "--python", "/opt/ferry/python"]}`)
	t.Setenv("JUPYTER_PATH", root)
	t.Setenv("JUPYTER_DATA_DIR", t.TempDir())
	tests := []struct{ name, want, err string }{
		{"py", "/opt/py/bin/python", ""},
		{"oldpy", "python3", ""},
		{"ferry", "/opt/ferry/python", ""},
		{"r", "", "not a python -m ipykernel_launcher kernel"},
		{"broken", "", "not valid JSON"},
		{"nope", "", "installed: "},
	}
	for _, tt := range tests {
		got, err := kernelspecPython(tt.name)
		if tt.err == "" {
			if err != nil || got != tt.want {
				t.Errorf("%s: %q, %v; want %q", tt.name, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, errKernelspec) || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err %v; want one line with %q", tt.name, err, tt.err)
		}
	}
}

// ferry run --kernel-name runs on the spec's interpreter.
func TestRunKernelName(t *testing.T) {
	testenv.RequirePython(t)
	root := t.TempDir()
	d := filepath.Join(root, "kernels", "ferrytestpy")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(map[string]any{"argv": []string{testenv.Python(), "-m", "ipykernel_launcher", "-f", "{connection_file}"}})
	if err := os.WriteFile(filepath.Join(d, "kernel.json"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "k.ipynb", []string{"import sys\nprint(sys.executable)"})
	out := filepath.Join(dir, "out.ipynb")
	code, _, stderr := ferryOut(t, quietEnv("JUPYTER_PATH="+root), "run", nb, "-o", out, "--kernel-name", "ferrytestpy")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(testenv.Python())
	if exe := strings.TrimSpace(stdoutOf(got.Cells[0])); exe != testenv.Python() && exe != want {
		t.Errorf("the kernel ran on %q; want %s", exe, testenv.Python())
	}
	code, _, stderr = ferryOut(t, quietEnv("JUPYTER_PATH="+root), "run", nb, "-o", out, "--kernel-name", "no-such-spec")
	if code != exitFailed || !strings.Contains(stderr, "ferrytestpy") {
		t.Errorf("a missing spec: exit %d\n%s", code, stderr)
	}
}

// ferry --version, ferry help, ferry help CMD for each command, and the
// completion scripts: bash's parses (bash -n) and lists run's new flags.
func TestHelpAndCompletion(t *testing.T) {
	code, stdout, _ := ferryOut(t, quietEnv(), "--version")
	if code != 0 || !strings.HasPrefix(stdout, "ferry ") {
		t.Errorf("ferry --version: exit %d, %q", code, stdout)
	}
	code, stdout, _ = ferryOut(t, quietEnv(), "help")
	if code != 0 || !strings.Contains(stdout, "completion") {
		t.Errorf("ferry help: exit %d\n%s", code, stdout)
	}
	for _, c := range commands {
		t.Run("help "+c.name, func(t *testing.T) {
			code, stdout, stderr := ferryOut(t, quietEnv(), "help", c.name)
			if code != 0 || !strings.Contains(stdout, c.name) {
				t.Errorf("exit %d, stdout\n%s\nstderr\n%s", code, stdout, stderr)
			}
		})
	}
	_, stdout, _ = ferryOut(t, quietEnv(), "help", "run")
	for _, want := range []string{"-p NAME VALUE", "-y YAML", "-f FILE", "--log-output", "-kernel-name", "injected-parameters", "Exit codes", "130"} {
		if !strings.Contains(stdout, strings.TrimPrefix(want, "-")) {
			t.Errorf("ferry help run lacks %q", want)
		}
	}
	for _, sh := range []string{"bash", "zsh"} {
		code, script, stderr := ferryOut(t, quietEnv(), "completion", sh)
		if code != 0 {
			t.Fatalf("ferry completion %s: exit %d\n%s", sh, code, stderr)
		}
		for _, want := range []string{"--log-output", "--kernel-name", "-p", "completion", "hybrid"} {
			if !strings.Contains(script, want) {
				t.Errorf("%s script lacks %q", sh, want)
			}
		}
		if _, err := exec.LookPath(sh); err != nil {
			if sh == "bash" {
				t.Fatal("bash not found")
			}
			continue
		}
		check := exec.Command(sh, "-n")
		check.Stdin = strings.NewReader(script)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
	// The bash function completes run's flags.
	script := strings.NewReader(mustCompletion(t) + `
COMP_WORDS=(ferry run --log-o); COMP_CWORD=2; _ferry; echo "${COMPREPLY[*]}"
COMP_WORDS=(ferry com); COMP_CWORD=1; _ferry; echo "${COMPREPLY[*]}"
`)
	sh := exec.Command("bash")
	sh.Stdin = script
	out, err := sh.CombinedOutput()
	if err != nil || string(out) != "--log-output\ncompletion\n" {
		t.Errorf("bash completion: %v\n%q", err, out)
	}
}

func mustCompletion(t *testing.T) string {
	t.Helper()
	code, script, stderr := ferryOut(t, quietEnv(), "completion", "bash")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	return script
}

// The README's quick start: the bundled example runs with a stand-in
// cloud under pingpong (the injected cell makes five, alternating from the
// laptop), takes -p, and its own check (an assert) passes.
func TestQuickstartExample(t *testing.T) {
	testenv.RequirePython(t)
	out := filepath.Join(t.TempDir(), "qs.ipynb")
	code, _, stderr := ferryOut(t, quietEnv(), "run", filepath.Join("..", "..", "examples", "quickstart.ipynb"), "-o", out,
		"--local-remote", "--policy", "pingpong", "-p", "n", "500", "--python", testenv.Python())
	if code != 0 || !strings.Contains(stderr, "(3 local, 2 remote, 0 errors)") {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	got, err := notebook.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	last := got.Cells[len(got.Cells)-1]
	if o := toJSON(last["outputs"]); !strings.Contains(o, "41541750") {
		t.Errorf("the last cell shows %s; want the sum of squares below 500, 41541750", o)
	}
}
