package browser

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// The steps drive.py reports, in order; each must be there and pass.
var steps = []string{"browser", "login", "open", "laptop", "plot", "error", "input", "remote", "widget", "interrupt", "restart", "shutdown"}

// run is one test run's directories and processes. Everything it starts
// lives under root (binaries, profile, TMPDIR, runtime files) and carries
// marker in its environment, so the end can find and kill whatever is left.
type run struct {
	t         *testing.T
	root      string
	marker    string
	token     string
	url       string
	artifacts string
	server    *exec.Cmd
	serverLog string
	exited    chan struct{}
}

func TestBrowser(t *testing.T) {
	testenv.SkipIfShort(t, "classic Notebook and headless Chromium on the ferry kernel, 90 s")
	testenv.RequireBrowser(t)
	start := time.Now()
	r := newRun(t)
	env := r.env(r.installKernel())
	r.startServer(env)
	t.Logf("ferry built and installed, notebook server up: %s", time.Since(start).Round(100*time.Millisecond))

	// While the browser works, count the kernel processes (ferry and its
	// laptop and stand-in cloud ipykernels), so the check that Shutdown
	// leaves none is known to see them.
	watch := make(chan int, 1)
	stopWatch := make(chan struct{})
	go func() {
		most := 0
		for {
			most = max(most, len(r.kernelProcs()))
			select {
			case <-stopWatch:
				watch <- most
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	results := r.drive(env, 150*time.Second)
	close(stopWatch)
	if most := <-watch; most < 3 {
		t.Errorf("saw at most %d kernel processes while the notebook ran, want ferry and its two ipykernels: the process checks see too little", most)
	}
	for _, name := range steps {
		res, ok := results[name]
		switch {
		case !ok:
			t.Errorf("step %s: did not run (an earlier step it needs failed, or drive.py stopped)", name)
		case !res.OK:
			t.Errorf("step %s failed after %.1fs: %s", name, res.Secs, res.Detail)
		default:
			t.Logf("step %s ok (%.1fs): %s", name, res.Secs, res.Detail)
		}
	}
	if res, ok := results["shutdown"]; ok && res.OK {
		r.checkShutDown()
	}
	r.stopServer()
	// Ferry's own log lines (its stderr lands in the server's log), so a
	// warning shows even when every step passed.
	for _, line := range strings.Split(r.logTail(), "\n") {
		if strings.Contains(line, "level=") {
			t.Logf("ferry: %s", line)
		}
	}
	t.Logf("browser test took %s", time.Since(start).Round(100*time.Millisecond))
}

func newRun(t *testing.T) *run {
	root, err := os.MkdirTemp("", "ferry-browser-")
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, root: root, marker: "FERRY_BROWSER_RUN=" + root}
	// Cleanups run last-registered first: kill, then keep the artefacts,
	// then remove root.
	t.Cleanup(func() { os.RemoveAll(root) })
	r.artifacts = artifactsDir(t)
	t.Cleanup(r.killAll)
	for _, d := range []string{"bin", "prefix", "config", "runtime", "nb", "profile", "tmp", "ipython", "xdg", "data"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	r.token = hex.EncodeToString(b)
	return r
}

// artifactsDir is where a failed run's screenshots go: under
// $FERRY_ARTIFACTS (CI uploads it) or a temporary directory, kept when
// the test fails and removed when it passes.
func artifactsDir(t *testing.T) string {
	base := os.Getenv("FERRY_ARTIFACTS")
	if base != "" {
		if err := os.MkdirAll(base, 0o755); err != nil {
			t.Fatalf("FERRY_ARTIFACTS=%s: %v", base, err)
		}
	}
	dir, err := os.MkdirTemp(base, "browser-"+time.Now().Format("20060102-150405")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("screenshots and logs of the failed run kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// installKernel builds ferry and installs its kernelspec under root with
// a stand-in cloud (--local-remote: a second kernel on this machine), and
// returns the JUPYTER_PATH that finds it.
func (r *run) installKernel() string {
	t := r.t
	bin := filepath.Join(r.root, "bin", "ferry")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ferry-nb/ferry/cmd/ferry").CombinedOutput(); err != nil {
		t.Fatalf("building ferry: %v\n%s", err, out)
	}
	prefix := filepath.Join(r.root, "prefix")
	if out, err := exec.Command(bin, "install", "--prefix", prefix, "--python", testenv.Python()).CombinedOutput(); err != nil {
		t.Fatalf("ferry install: %v\n%s", err, out)
	}
	// ferry install has no --local-remote (a kernelspec for tests only), so
	// the test adds it to the argv it wrote.
	specPath := filepath.Join(prefix, "share", "jupyter", "kernels", "ferry", "kernel.json")
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatalf("%s: %v", specPath, err)
	}
	argv, _ := spec["argv"].([]any)
	if len(argv) < 2 || argv[0] != bin {
		t.Fatalf("ferry install wrote argv %v, want %s first", spec["argv"], bin)
	}
	spec["argv"] = append(argv, "--local-remote")
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(prefix, "share", "jupyter")
}

// env is the environment of the server and the driver: the test's own
// without Ferry's and Jupyter's settings (a developer's FERRY_REMOTE or
// config must not change the run), every Jupyter, IPython, Ferry and
// temporary directory under root, and the marker.
func (r *run) env(jupyterPath string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if (strings.HasPrefix(k, "FERRY_") && k != "FERRY_PYTHON") || strings.HasPrefix(k, "JUPYTER") || k == "IPYTHONDIR" || k == "TMPDIR" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"JUPYTER_PATH="+jupyterPath,
		"JUPYTER_CONFIG_DIR="+filepath.Join(r.root, "config"),
		"JUPYTER_RUNTIME_DIR="+filepath.Join(r.root, "runtime"),
		"JUPYTER_DATA_DIR="+filepath.Join(r.root, "data"),
		"JUPYTER_PLATFORM_DIRS=1",
		"IPYTHONDIR="+filepath.Join(r.root, "ipython"),
		"XDG_CONFIG_HOME="+filepath.Join(r.root, "xdg"),
		"TMPDIR="+filepath.Join(r.root, "tmp"),
		"PYDEVD_DISABLE_FILE_VALIDATION=1",
		r.marker,
	)
}

// freePort is a loopback port nothing listens on right now.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startServer starts the classic Notebook on a free loopback port. The
// token is in a 0600 config file, never in argv or the environment (the
// kernels inherit the server's environment).
func (r *run) startServer(env []string) {
	t := r.t
	conf, err := json.Marshal(map[string]any{"NotebookApp": map[string]any{
		"token":        r.token,
		"port_retries": 0, // a port taken meanwhile fails, not moves silently
		"open_browser": false,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.root, "config", "jupyter_notebook_config.json"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.root, "token"), []byte(r.token), 0o600); err != nil {
		t.Fatal(err)
	}
	r.serverLog = filepath.Join(r.root, "server.log")
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		log, err := os.Create(r.serverLog)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(testenv.Python(), "-m", "notebook", "--no-browser", "--allow-root",
			"--ip=127.0.0.1", "--port="+strconv.Itoa(port), "--notebook-dir="+filepath.Join(r.root, "nb"))
		cmd.Env = env
		cmd.Dir = filepath.Join(r.root, "nb")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			log.Close()
			t.Fatalf("starting jupyter notebook: %v (%s)", err, testenv.BrowserFix)
		}
		log.Close()
		r.server, r.exited = cmd, make(chan struct{})
		go func() { _ = cmd.Wait(); close(r.exited) }()
		r.url = fmt.Sprintf("http://127.0.0.1:%d/", port)
		err = r.waitServer(30 * time.Second)
		if err == nil {
			return
		}
		if attempt < 3 && strings.Contains(r.logTail(), "already in use") {
			continue // the free port was taken between our check and its bind
		}
		t.Fatalf("jupyter notebook on %s: %v\nits log:\n%s", r.url, err, r.logTail())
	}
}

// waitServer waits until the server answers /api (which needs no token).
func (r *run) waitServer(within time.Duration) error {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := c.Get(r.url + "api")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /api: %s", resp.Status)
		}
		select {
		case <-r.exited:
			return fmt.Errorf("the server exited (%v)", r.server.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering within %s: %v", within, err)
		}
	}
}

// api calls the server's REST API with the token in a header.
func (r *run) api(method, path string, out any) error {
	req, err := http.NewRequest(method, r.url+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+r.token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s /%s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type stepResult struct {
	Step   string  `json:"step"`
	OK     bool    `json:"ok"`
	Secs   float64 `json:"secs"`
	Detail string  `json:"detail"`
}

// drive runs drive.py against the server and returns its steps' results.
func (r *run) drive(env []string, within time.Duration) map[string]stepResult {
	t := r.t
	script, err := filepath.Abs(filepath.Join("testdata", "drive.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Python(), script, r.url, filepath.Join(r.root, "token"),
		filepath.Join(r.root, "nb"), filepath.Join(r.root, "profile"), r.artifacts)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On the deadline the driver, chromedriver and Chromium go together.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	results := map[string]stepResult{}
	var other []string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var res stepResult
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil || res.Step == "" {
			other = append(other, sc.Text())
			continue
		}
		results[res.Step] = res
	}
	err = cmd.Wait()
	failed := 0
	for _, res := range results {
		if !res.OK {
			failed++
		}
	}
	switch {
	case ctx.Err() != nil:
		t.Errorf("drive.py did not finish within %s (killed); stderr:\n%s", within, r.redact(stderr.String()))
	case err != nil && failed == 0:
		t.Errorf("drive.py: %v with no failed step; stdout %q, stderr:\n%s", err, other, r.redact(stderr.String()))
	case err == nil && failed > 0:
		t.Errorf("drive.py exited 0 with %d failed steps", failed)
	}
	if failed > 0 || err != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			t.Logf("drive.py stderr:\n%s", r.redact(s))
		}
	}
	return results
}

// checkShutDown asserts that after Shutdown in the UI the server runs no
// kernel and every ferry process (the kernel, its two ipykernels) is gone.
func (r *run) checkShutDown() {
	t := r.t
	var kernels []map[string]any
	if err := r.api("GET", "api/kernels", &kernels); err != nil {
		t.Errorf("after Shutdown: %v", err)
	} else if len(kernels) != 0 {
		t.Errorf("after Shutdown in the UI the server still runs kernels: %v", kernels)
	}
	left := waitGone(20*time.Second, r.kernelProcs)
	if len(left) > 0 {
		t.Errorf("20 s after Shutdown these kernel processes still run: %v", left)
	}
}

// kernelProcs are the run's ferry kernels and the ipykernels they started
// (their connection files are under the run's TMPDIR).
func (r *run) kernelProcs() []proc {
	bin := filepath.Join(r.root, "bin", "ferry")
	tmp := filepath.Join(r.root, "tmp")
	return r.procs(func(p proc) bool { return strings.Contains(p.cmdline, bin) || strings.Contains(p.cmdline, tmp) })
}

// stopServer asks the server to stop (it shuts down any kernel left) and
// waits for it; killAll takes care of it if it does not.
func (r *run) stopServer() {
	if err := r.api("POST", "api/shutdown", nil); err != nil {
		r.t.Errorf("stopping the notebook server: %v", err)
		return
	}
	select {
	case <-r.exited:
	case <-time.After(20 * time.Second):
		r.t.Errorf("the notebook server still runs 20 s after POST /api/shutdown")
	}
}

type proc struct {
	pid     int
	cmdline string
}

func (p proc) String() string {
	c := p.cmdline
	if len(c) > 160 {
		c = c[:160] + "…"
	}
	return fmt.Sprintf("%d %s", p.pid, c)
}

// procs lists this run's processes (by the marker in their environment or
// root in their command line) that match.
func (r *run) procs(match func(proc) bool) []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmd) == 0 { // gone, or a zombie
			continue
		}
		p := proc{pid: pid, cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))}
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		ours := strings.Contains(p.cmdline, r.root)
		for _, kv := range bytes.Split(environ, []byte{0}) {
			ours = ours || string(kv) == r.marker
		}
		if ours && match(p) {
			out = append(out, p)
		}
	}
	return out
}

func waitGone(within time.Duration, list func() []proc) []proc {
	deadline := time.Now().Add(within)
	for {
		left := list()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond) // polling /proc; bounded by deadline
	}
}

// killAll kills whatever of the run still runs: the server's and the
// driver's process groups, then any process of the run found in /proc
// (kernels start their own sessions), and keeps the logs of a failed run.
func (r *run) killAll() {
	t := r.t
	if r.server != nil {
		_ = syscall.Kill(-r.server.Process.Pid, syscall.SIGKILL)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("the notebook server (pid %d) did not die on SIGKILL", r.server.Process.Pid)
		}
	}
	all := func(proc) bool { return true }
	t0 := time.Now()
	left := r.procs(all)
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	if len(left) > 0 {
		t.Logf("killed %d processes of the run still running at the end: %v", len(left), left)
	}
	if left := waitGone(10*time.Second, func() []proc { return r.procs(all) }); len(left) > 0 {
		t.Errorf("processes of the run survive SIGKILL: %v", left)
	}
	t.Logf("cleanup: %s", time.Since(t0).Round(100*time.Millisecond))
	if t.Failed() {
		if b, err := os.ReadFile(r.serverLog); err == nil {
			_ = os.WriteFile(filepath.Join(r.artifacts, "server.log"), []byte(r.redact(string(b))), 0o644)
		}
		t.Logf("the notebook server's log (token redacted):\n%s", r.logTail())
	}
}

// logTail is the end of the server's log, token redacted.
func (r *run) logTail() string {
	b, err := os.ReadFile(r.serverLog)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return r.redact(string(b))
}

func (r *run) redact(s string) string {
	if r.token == "" {
		return s
	}
	return strings.ReplaceAll(s, r.token, "<token>")
}
