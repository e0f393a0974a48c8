package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

// The secrets of a Ferry session, and everywhere they must not show up:
//
//   - the Jupyter Server token (FERRY_TOKEN or --token-file);
//   - HMAC keys of connection files: the one Jupyter gives `ferry kernel`,
//     the one Ferry makes for its local ipykernel, and the remote kernel's
//     (which Ferry never sees);
//   - the per-session secret of the state comm, installed in both agents.
//
// The keys and the comm secret live only inside the processes, so the
// test notebook's cells write them to a side file the test reads at the
// end. (The key between `ferry run` and its in-process kernel never
// leaves ferry's memory; nothing outside the process can see it, so it is
// not checked.)
//
// Places checked: ferry's stdout and stderr with debug logging on
// (FERRY_DEBUG=1), the trace, the HTML report, the summary, the executed
// notebook, the error messages of a wrong token and an unreachable server,
// the argv (/proc/PID/cmdline) of every process on the machine while
// ferry runs, and the environment of every process ferry starts (user
// code runs in the local kernel: %env or !env would print it into the
// notebook).

// secretSet finds secrets, or either half of one (a truncated print is a
// leak too), in text.
type secretSet struct {
	names, values []string
}

func (s *secretSet) add(name, value string) {
	value = strings.TrimSpace(value)
	if len(value) < 8 {
		panic(fmt.Sprintf("secret %s is %d bytes: too short to search for", name, len(value)))
	}
	s.names = append(s.names, name)
	s.values = append(s.values, value)
	if len(value) >= 32 {
		h := len(value) / 2
		s.names = append(s.names, name+" (first half)", name+" (second half)")
		s.values = append(s.values, value[:h], value[h:])
	}
}

// find returns the names of the secrets in b.
func (s *secretSet) find(b []byte) []string {
	var out []string
	for i, v := range s.values {
		if bytes.Contains(b, []byte(v)) {
			out = append(out, s.names[i])
		}
	}
	return out
}

// leaks returns "where: secret" for every secret found in any of places.
func (s *secretSet) leaks(places map[string][]byte) []string {
	var out []string
	for where, b := range places {
		for _, name := range s.find(b) {
			out = append(out, where+": "+name)
		}
	}
	sort.Strings(out)
	return out
}

// procRecord is what a process showed: its argv, or its environment.
type procRecord struct {
	pid  int
	what string // "argv of PID (NAME)" or "environment of PID (NAME)"
	data []byte
}

// procWatch records, while it runs, the argv of every process on the
// machine and the environment of every descendant of root, and the mode
// of every connection file (-f FILE) a descendant was started with.
type procWatch struct {
	root int
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	seen      map[string]bool
	records   []procRecord
	connFiles map[string]os.FileMode
}

func watchProcs(root int) *procWatch {
	w := &procWatch{root: root, stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]bool{}, connFiles: map[string]os.FileMode{}}
	go func() {
		defer close(w.done)
		for {
			w.poll()
			select {
			case <-w.stop:
				w.poll()
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns what it saw.
func (w *procWatch) Stop() ([]procRecord, map[string]os.FileMode) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.records, w.connFiles
}

func (w *procWatch) poll() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	parent := map[int]int{}
	argv := map[int][]byte{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			argv[pid] = b
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			// "pid (comm) state ppid ...": comm may hold spaces and parens.
			if i := bytes.LastIndexByte(st, ')'); i > 0 {
				if f := strings.Fields(string(st[i+1:])); len(f) > 1 {
					parent[pid], _ = strconv.Atoi(f[1])
				}
			}
		}
	}
	isDesc := func(pid int) bool {
		for p, n := parent[pid], 0; p > 1 && n < 64; p, n = parent[p], n+1 {
			if p == w.root {
				return true
			}
		}
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	add := func(pid int, what string, b []byte) {
		key := what + "\x00" + string(b)
		if !w.seen[key] {
			w.seen[key] = true
			w.records = append(w.records, procRecord{pid: pid, what: what, data: b})
		}
	}
	for pid, b := range argv {
		name := filepath.Base(string(bytes.SplitN(b, []byte{0}, 2)[0]))
		add(pid, fmt.Sprintf("argv of %d (%s)", pid, name), b)
		if pid == w.root || !isDesc(pid) {
			continue
		}
		// A child between fork and exec still runs ferry's image with
		// ferry's own environment (Go forks with CLONE_VFORK|CLONE_VM):
		// what it will run with is known only after its exec, which a
		// later poll sees. Seen under load as "environment of N (ferry,
		// started by ferry)" holding ferry's FERRY_TOKEN.
		if pp, ok := argv[parent[pid]]; ok && bytes.Equal(b, pp) {
			continue
		}
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
			add(pid, fmt.Sprintf("environment of %d (%s, started by ferry)", pid, name), env)
		}
		args := strings.Split(string(b), "\x00")
		for i, a := range args {
			if a == "-f" && i+1 < len(args) {
				if _, ok := w.connFiles[args[i+1]]; !ok {
					if st, err := os.Stat(args[i+1]); err == nil {
						w.connFiles[args[i+1]] = st.Mode().Perm()
					}
				}
			}
		}
	}
}

// ferryEnv is the test's environment for ferry: debug logging on, no
// remote settings of the machine's user, and extra.
func ferryEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") && !strings.HasPrefix(kv, "JUPYTER_TOKEN=") {
			env = append(env, kv)
		}
	}
	return append(append(env, "FERRY_DEBUG=1"), extra...)
}

// migrationNotebook writes a notebook that moves state local → remote →
// local → remote, and whose cells write the keys and the comm secret of
// each kernel to sideDir/{local,remote}.
func migrationNotebook(t *testing.T, dir, sideDir string) string {
	t.Helper()
	cells := []string{
		"%%ferry local\nx = list(range(1000))\nprint('x ready')",
		"%%ferry remote\ny = sum(x)\n" + tellSecrets(filepath.Join(sideDir, "remote")) + "\nprint('remote', y)",
		"%%ferry local\nz = [y] * 3\n" + tellSecrets(filepath.Join(sideDir, "local")) + "\nprint('local', z[0])",
		"%%ferry remote\nprint('back', len(z), z[2])",
	}
	return writeNotebook(t, dir, "secrets.ipynb", cells)
}

// tellSecrets is a line of Python that writes the kernel's comm secret
// and HMAC key to path, binding no name (a bound open file could not move).
func tellSecrets(path string) string {
	return fmt.Sprintf("__import__('pathlib').Path(%q).write_text(__import__('sys').modules['_ferry_agent']._secret + '\\n' + get_ipython().kernel.session.key.decode())", path)
}

func writeNotebook(t *testing.T, dir, name string, cells []string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := notebook.FromCode(cells...).Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// readSide reads what a cell wrote: the comm secret and the kernel's key.
func readSide(t *testing.T, path string) (secret, key string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the notebook did not write its kernel's secrets (did the cell run there?): %v", err)
	}
	parts := strings.Split(string(b), "\n")
	if len(parts) != 2 {
		t.Fatalf("%s holds %d lines", path, len(parts))
	}
	return parts[0], parts[1]
}

// ferryRun is one `ferry run` with the watcher on.
type ferryRun struct {
	stdout, stderr bytes.Buffer
	err            error
	procs          []procRecord
	connFiles      map[string]os.FileMode
}

func runFerryWatched(t *testing.T, env []string, args ...string) *ferryRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r := &ferryRun{}
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &r.stdout, &r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := watchProcs(cmd.Process.Pid)
	r.err = cmd.Wait()
	r.procs, r.connFiles = w.Stop()
	return r
}

// places gathers what ferry wrote and what its processes showed.
func (r *ferryRun) places(t *testing.T, files ...string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{"ferry's stdout": r.stdout.Bytes(), "ferry's stderr": r.stderr.Bytes()}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("ferry did not write %s: %v", filepath.Base(f), err)
		}
		m[filepath.Base(f)] = b
	}
	for _, p := range r.procs {
		m[p.what] = p.data
	}
	return m
}

// checkConnFiles: the connection files of the kernels ferry started were
// owner-only while they ran and are gone now.
func checkConnFiles(t *testing.T, files map[string]os.FileMode) {
	t.Helper()
	if len(files) == 0 {
		t.Error("saw no kernel started by ferry with a connection file (-f): the process watch is blind")
	}
	for f, mode := range files {
		if mode&0o077 != 0 {
			t.Errorf("connection file %s had mode %v while the kernel ran; it holds the key", f, mode)
		}
		if _, err := os.Stat(f); err == nil {
			t.Errorf("connection file %s is still there after ferry exited", f)
		}
	}
}

func TestSecretsNeverLeak(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, every front end, 26 s")
	s := startJupyterServer(t)
	for _, mode := range []string{"token in FERRY_TOKEN", "token in a file"} {
		t.Run("run, "+mode, func(t *testing.T) {
			dir := t.TempDir()
			side := t.TempDir()
			nb := migrationNotebook(t, dir, side)
			out, tr, rep, sum := filepath.Join(dir, "out.ipynb"), filepath.Join(dir, "t.jsonl"), filepath.Join(dir, "r.html"), filepath.Join(dir, "s.json")
			env := ferryEnv()
			args := []string{"run", nb, "-o", out, "--remote", s.URL, "--trace", tr, "--report", rep, "--summary", sum, "--python", testenv.Python()}
			if mode == "token in FERRY_TOKEN" {
				env = append(env, "FERRY_TOKEN="+s.Token)
			} else {
				tf := filepath.Join(dir, "token")
				if err := os.WriteFile(tf, []byte(s.Token+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--token-file", tf)
			}
			r := runFerryWatched(t, env, args...)
			if r.err != nil {
				t.Fatalf("ferry run: %v\n%s", r.err, r.stderr.String())
			}
			// The run did what the test is about: state moved both ways.
			var summary struct {
				CellsLocal  int `json:"cells_local"`
				CellsRemote int `json:"cells_remote"`
				Migrations  int `json:"migrations"`
			}
			b, _ := os.ReadFile(sum)
			if err := json.Unmarshal(b, &summary); err != nil || summary.CellsRemote != 2 || summary.CellsLocal != 2 || summary.Migrations < 3 {
				trace, _ := os.ReadFile(tr)
				t.Fatalf("summary %s (%v): want 2 local and 2 remote cells and state moved both ways; trace:\n%s\nstderr:\n%s", b, err, trace, r.stderr.String())
			}
			if b, _ := os.ReadFile(out); !bytes.Contains(b, []byte(`back 3 499500`)) {
				t.Fatalf("the last cell did not see the state moved back and forth:\n%s", b)
			}
			if !strings.Contains(r.stderr.String(), "level=DEBUG") {
				t.Errorf("no debug log on stderr with FERRY_DEBUG=1:\n%s", r.stderr.String())
			}
			var secrets secretSet
			secrets.add("the Jupyter Server token", s.Token)
			rs, rk := readSide(t, filepath.Join(side, "remote"))
			ls, lk := readSide(t, filepath.Join(side, "local"))
			if rs != ls {
				t.Errorf("the two agents hold different comm secrets")
			}
			secrets.add("the state comm's secret", ls)
			secrets.add("the local kernel's HMAC key", lk)
			secrets.add("the remote kernel's HMAC key", rk)
			if leaks := secrets.leaks(r.places(t, out, tr, rep, sum)); len(leaks) > 0 {
				t.Errorf("secrets leaked:\n  %s", strings.Join(leaks, "\n  "))
			}
			checkConnFiles(t, r.connFiles)
		})
	}

	t.Run("kernel", func(t *testing.T) {
		dir, side := t.TempDir(), t.TempDir()
		info, err := wire.NewLocalConnInfo()
		if err != nil {
			t.Fatal(err)
		}
		cf := filepath.Join(dir, "kernel.json")
		if err := info.Write(cf); err != nil {
			t.Fatal(err)
		}
		var stderr logBuf
		cmd := exec.Command(ferryBin, "kernel", "-f", cf, "--python", testenv.Python(), "--remote", s.URL)
		cmd.Env = ferryEnv("FERRY_TOKEN=" + s.Token)
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		w := watchProcs(cmd.Process.Pid)
		stopped := false
		stop := func() ([]procRecord, map[string]os.FileMode) {
			if !stopped {
				stopped = true
				_ = cmd.Process.Kill()
				<-exited
			}
			return w.Stop()
		}
		defer func() {
			if !stopped {
				stop()
			}
		}()
		c, err := client.Connect(info)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		var outputs bytes.Buffer
		cells := []string{
			"%%ferry local\nx = list(range(1000))",
			"%%ferry remote\ny = sum(x)\n" + tellSecrets(filepath.Join(side, "remote")),
			"%%ferry local\nz = [y] * 3\n" + tellSecrets(filepath.Join(side, "local")),
			"%%ferry remote\nprint('back', len(z), z[2])",
			"%ferry status",
		}
		for _, code := range cells {
			r, err := c.Execute(ctx, code, client.ExecOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != "ok" {
				t.Fatalf("%q: %s: %s\n%s", code, r.EName, r.EValue, stderr.String())
			}
			fmt.Fprintf(&outputs, "%s\n", r.Text())
		}
		if !strings.Contains(outputs.String(), "back 3 499500") {
			t.Fatalf("state did not move both ways:\n%s", outputs.String())
		}
		// A shutdown the way Jupyter asks for it, so the kernel cleans up.
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = c.Shutdown(sctx, false)
		scancel()
		c.Close()
		select {
		case <-exited:
			stopped = true
		case <-time.After(30 * time.Second):
			t.Error("ferry kernel did not exit after shutdown_request")
		}
		procs, connFiles := stop()
		var secrets secretSet
		secrets.add("the Jupyter Server token", s.Token)
		secrets.add("the HMAC key of ferry's connection file", info.Key)
		rs, rk := readSide(t, filepath.Join(side, "remote"))
		ls, lk := readSide(t, filepath.Join(side, "local"))
		secrets.add("the state comm's secret", ls)
		if rs != ls {
			secrets.add("the remote agent's comm secret", rs)
		}
		secrets.add("the local kernel's HMAC key", lk)
		secrets.add("the remote kernel's HMAC key", rk)
		places := map[string][]byte{"ferry's stdout and stderr": []byte(stderr.String()), "cell outputs (with %ferry status)": outputs.Bytes()}
		for _, p := range procs {
			places[p.what] = p.data
		}
		if leaks := secrets.leaks(places); len(leaks) > 0 {
			t.Errorf("secrets leaked:\n  %s", strings.Join(leaks, "\n  "))
		}
		checkConnFiles(t, connFiles)
	})

	t.Run("wrong token", func(t *testing.T) {
		dir := t.TempDir()
		nb := writeNotebook(t, dir, "w.ipynb", []string{"x = 1", "%%ferry remote\nprint(x)"})
		out, tr, rep, sum := filepath.Join(dir, "out.ipynb"), filepath.Join(dir, "t.jsonl"), filepath.Join(dir, "r.html"), filepath.Join(dir, "s.json")
		wrong := wire.NewID() + wire.NewID()
		r := runFerryWatched(t, ferryEnv("FERRY_TOKEN="+wrong), "run", nb, "-o", out, "--remote", s.URL, "--trace", tr, "--report", rep, "--summary", sum,
			"--python", testenv.Python(), "--allow-errors")
		nbOut, _ := os.ReadFile(out)
		said := r.stderr.String() + string(nbOut)
		if !strings.Contains(said, "rejected the token") {
			t.Fatalf("a wrong token was not reported as such (exit %v):\n%s\n%s", r.err, r.stderr.String(), nbOut)
		}
		var secrets secretSet
		secrets.add("the wrong token", wrong)
		secrets.add("the Jupyter Server token", s.Token)
		files := []string{}
		for _, f := range []string{out, tr, rep, sum} {
			if _, err := os.Stat(f); err == nil {
				files = append(files, f)
			}
		}
		if leaks := secrets.leaks(r.places(t, files...)); len(leaks) > 0 {
			t.Errorf("secrets leaked:\n  %s", strings.Join(leaks, "\n  "))
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		dir := t.TempDir()
		nb := writeNotebook(t, dir, "u.ipynb", []string{"x = 1", "%%ferry remote\nprint(x)"})
		out := filepath.Join(dir, "out.ipynb")
		ports, err := wire.FreePorts("127.0.0.1", 1)
		if err != nil {
			t.Fatal(err)
		}
		url := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		tf := filepath.Join(dir, "token")
		if err := os.WriteFile(tf, []byte(s.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		r := runFerryWatched(t, ferryEnv(), "run", nb, "-o", out, "--remote", url, "--token-file", tf, "--python", testenv.Python(), "--allow-errors")
		nbOut, _ := os.ReadFile(out)
		said := r.stderr.String() + string(nbOut)
		if !strings.Contains(said, strconv.Itoa(ports[0])) {
			t.Fatalf("the unreachable server is not named in what ferry said (exit %v):\n%s\n%s", r.err, r.stderr.String(), nbOut)
		}
		var secrets secretSet
		secrets.add("the Jupyter Server token", s.Token)
		files := []string{}
		if _, err := os.Stat(out); err == nil {
			files = append(files, out)
		}
		if leaks := secrets.leaks(r.places(t, files...)); len(leaks) > 0 {
			t.Errorf("secrets leaked:\n  %s", strings.Join(leaks, "\n  "))
		}
	})
}

// logBuf is a goroutine-safe buffer for a process's output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The search itself must be able to fail: a secret planted in text, in a
// file, on a running process's command line and in the environment of a
// process started by the watched one is found, and so is half of one.
func TestSecretSearchFindsPlantedSecrets(t *testing.T) {
	planted := wire.NewID() + wire.NewID()
	var secrets secretSet
	secrets.add("planted", planted)
	secrets.add("other", wire.NewID())

	if got := secrets.leaks(map[string][]byte{"stdout": []byte("level=DEBUG msg=x token=" + planted + "\n"), "clean": []byte("nothing")}); len(got) != 3 || got[0] != "stdout: planted" {
		t.Fatalf("in text: %v", got)
	}
	if got := secrets.find([]byte("…" + planted[:len(planted)/2] + "…")); len(got) != 1 || got[0] != "planted (first half)" {
		t.Fatalf("half a secret: %v", got)
	}
	if got := secrets.find([]byte(strings.ToUpper(planted[:3]) + planted[3:len(planted)/2-1])); len(got) != 0 {
		t.Fatalf("found %v in text without a secret", got)
	}

	dir := t.TempDir()
	f := filepath.Join(dir, "report.html")
	if err := os.WriteFile(f, []byte("<html>"+planted+"</html>"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &ferryRun{}
	if got := secrets.leaks(r.places(t, f)); len(got) != 3 || got[0] != "report.html: planted" {
		t.Fatalf("in a file: %v", got)
	}

	// A parent with the secret on its command line; its child has it in
	// its environment. The parent's own environment is not searched (ferry
	// itself holds FERRY_TOKEN by design).
	cmd := exec.Command("/bin/sh", "-c", "sleep 2; : "+planted)
	cmd.Env = append(os.Environ(), "PLANTED_FOR_TEST="+planted)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := watchProcs(cmd.Process.Pid)
	time.Sleep(600 * time.Millisecond)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	procs, _ := w.Stop()
	var argv, env bool
	for _, p := range procs {
		if len(secrets.find(p.data)) == 0 {
			continue
		}
		switch {
		case strings.HasPrefix(p.what, "argv of "+strconv.Itoa(cmd.Process.Pid)):
			argv = true
		case strings.HasPrefix(p.what, "environment of"):
			if p.pid == cmd.Process.Pid {
				t.Errorf("searched the environment of the watched process itself")
			}
			env = true
		}
	}
	if !argv || !env {
		t.Fatalf("the process watch missed the planted secret: on argv %v, in a child's environment %v", argv, env)
	}
}
