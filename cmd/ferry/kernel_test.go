package main

// Front-end tests: the ferry binary runs as Jupyter runs it (`ferry kernel
// -f FILE`) and the tests talk to it over ZeroMQ as a front end would.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

// kernelProc is a `ferry kernel` process started as Jupyter starts it.
type kernelProc struct {
	cmd    *exec.Cmd
	info   wire.ConnInfo
	c      *client.Client
	exited chan struct{} // closed when the process has exited
	stderr *logBuffer
}

// logBuffer collects a process's stderr for assertions and failure logs.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startKernel starts `ferry kernel -f FILE` on free ports and connects a
// client once the kernel answers kernel_info.
func startKernel(t *testing.T, extra ...string) *kernelProc {
	t.Helper()
	testenv.RequirePython(t)
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(t.TempDir(), "kernel.json")
	if err := info.Write(cf); err != nil {
		t.Fatal(err)
	}
	k := &kernelProc{info: info, exited: make(chan struct{}), stderr: &logBuffer{}}
	k.cmd = exec.Command(ferryBin, append([]string{"kernel", "-f", cf, "--python", testenv.Python()}, extra...)...)
	k.cmd.Stderr = k.stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = k.cmd.Wait(); close(k.exited) }()
	t.Cleanup(func() {
		_ = k.cmd.Process.Kill()
		<-k.exited
		if t.Failed() {
			t.Logf("ferry kernel stderr:\n%s", k.stderr)
		}
	})
	if k.c, err = client.Connect(info); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := k.c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *kernelProc) exec(t *testing.T, code string, opt client.ExecOptions) *client.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := k.c.Execute(ctx, code, opt)
	if err != nil {
		t.Fatalf("executing %q: %v", code, err)
	}
	return r
}

type cellResult struct {
	r   *client.Result
	err error
}

// startCell runs code in the background and returns once the cell's first
// output arrived, so the caller acts while the cell is surely running.
// Cells passed here print before they block.
func (k *kernelProc) startCell(t *testing.T, code string) <-chan cellResult {
	t.Helper()
	res := make(chan cellResult, 1)
	started := make(chan struct{})
	var once sync.Once
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// Started once the cell's own code prints: a notice of Ferry's
		// comes before ipykernel runs the code, and a SIGINT then finds
		// ipykernel ignoring it, so the cell would sleep on.
		r, err := k.c.Execute(ctx, code, client.ExecOptions{OnOutput: func(o client.Output) {
			if text, _ := o["text"].(string); o["output_type"] == "stream" && o["name"] == "stdout" && !strings.HasPrefix(text, "Ferry") {
				once.Do(func() { close(started) })
			}
		}})
		res <- cellResult{r, err}
	}()
	select {
	case <-started:
	case r := <-res:
		t.Fatalf("cell %q ended before it printed: %+v %v", code, r.r, r.err)
	case <-time.After(60 * time.Second):
		t.Fatalf("cell %q printed nothing within 60s", code)
	}
	return res
}

// awaitCell waits for a cell started with startCell.
func awaitCell(t *testing.T, res <-chan cellResult, within time.Duration) *client.Result {
	t.Helper()
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("cell failed: %v", r.err)
		}
		return r.r
	case <-time.After(within):
		t.Fatalf("cell did not end within %s", within)
	}
	return nil
}

// exchange sends a message built by the client and returns the reply (if
// wantReply) and every IOPub message it caused, status included.
func exchange(t *testing.T, c *client.Client, ch wire.Channel, m *wire.Message, wantReply bool) (*wire.Message, []*wire.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var iopub []*wire.Message
	reply, err := c.Exchange(ctx, ch, m, func(msg *wire.Message) { iopub = append(iopub, msg) }, wantReply)
	if err != nil {
		t.Fatalf("%s on %s: %v", m.Header.MsgType, ch, err)
	}
	return reply, iopub
}

// request is exchange for a fresh message of msgType with content.
func request(t *testing.T, c *client.Client, ch wire.Channel, msgType string, content any) (*wire.Message, []*wire.Message) {
	t.Helper()
	m, err := c.Conn().NewMessage(msgType, content)
	if err != nil {
		t.Fatal(err)
	}
	return exchange(t, c, ch, m, true)
}

func decode(t *testing.T, m *wire.Message) map[string]any {
	t.Helper()
	var c map[string]any
	if err := m.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

var pidRE = regexp.MustCompile(`local: ipykernel running, interpreter \S+, pid (\d+)`)

// backendPID reads the local ipykernel's pid from %ferry status.
func (k *kernelProc) backendPID(t *testing.T) int {
	t.Helper()
	r := k.exec(t, "%ferry status", client.ExecOptions{})
	m := pidRE.FindStringSubmatch(r.Text())
	if m == nil {
		t.Fatalf("%%ferry status shows no pid:\n%s", r.Text())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// waitLog waits until the kernel's stderr holds want n times.
func (k *kernelProc) waitLog(t *testing.T, want string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(k.stderr.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel did not log %q %d times within %s; stderr:\n%s", want, n, within, k.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecuteOutputs(t *testing.T) {
	k := startKernel(t)
	tests := []struct {
		name  string
		code  string
		check func(t *testing.T, r *client.Result)
	}{
		{"stdout and stderr", "import sys\nprint('out')\nprint('err', file=sys.stderr)", func(t *testing.T, r *client.Result) {
			want := []client.Output{{"output_type": "stream", "name": "stdout", "text": "out\n"}, {"output_type": "stream", "name": "stderr", "text": "err\n"}}
			if toJSON(r.Outputs) != toJSON(want) {
				t.Errorf("outputs %s, want %s", toJSON(r.Outputs), toJSON(want))
			}
		}},
		{"execute_result", "6 * 7", func(t *testing.T, r *client.Result) {
			if len(r.Outputs) != 1 || r.Outputs[0]["output_type"] != "execute_result" || toJSON(r.Outputs[0]["data"]) != `{"text/plain":"42"}` {
				t.Errorf("outputs %s, want one execute_result 42", toJSON(r.Outputs))
			}
			if n, _ := r.Outputs[0]["execution_count"].(float64); int(n) != r.Count {
				t.Errorf("execute_result count %v, reply count %d", r.Outputs[0]["execution_count"], r.Count)
			}
		}},
		{"display_data", "from IPython.display import display, HTML\ndisplay(HTML('<b>bold</b>'))", func(t *testing.T, r *client.Result) {
			if len(r.Outputs) != 1 || r.Outputs[0]["output_type"] != "display_data" {
				t.Fatalf("outputs %s, want one display_data", toJSON(r.Outputs))
			}
			if d := r.Outputs[0]["data"].(map[string]any); d["text/html"] != "<b>bold</b>" || d["text/plain"] == nil {
				t.Errorf("display data %s, want text/html and text/plain", toJSON(d))
			}
		}},
		{"error with traceback", "def f():\n    return 1 / 0\nf()", func(t *testing.T, r *client.Result) {
			if r.Status != "error" || r.EName != "ZeroDivisionError" || r.EValue != "division by zero" {
				t.Fatalf("status %q error %s: %s", r.Status, r.EName, r.EValue)
			}
			if r.Reply["ename"] != "ZeroDivisionError" {
				t.Errorf("reply ename %v", r.Reply["ename"])
			}
			tb, _ := r.Outputs[len(r.Outputs)-1]["traceback"].([]any)
			plain := ansiRE.ReplaceAllString(fmt.Sprint(tb...), "")
			if len(tb) < 3 || !strings.Contains(plain, "return 1 / 0") || !strings.Contains(plain, "----> 3 f()") {
				t.Errorf("traceback does not show the frames:\n%s", plain)
			}
		}},
		{"output after an error in a later cell is normal", "print('fine')", func(t *testing.T, r *client.Result) {
			if r.Status != "ok" || r.Stream("stdout") != "fine\n" {
				t.Errorf("status %q text %q", r.Status, r.Text())
			}
		}},
		{"clear_output", "print('gone')\nfrom IPython.display import clear_output\nclear_output()\nprint('kept')", func(t *testing.T, r *client.Result) {
			if r.Stream("stdout") != "kept\n" {
				t.Errorf("text %q, want only what followed the clear", r.Text())
			}
		}},
		{"update_display_data", "h = display('one', display_id=True)\nh.update('two')", func(t *testing.T, r *client.Result) {
			if r.Text() != "'two'\n" {
				t.Errorf("text %q, want the updated display", r.Text())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, k.exec(t, tt.code, client.ExecOptions{})) })
	}
}

// execTrace is what a front end sees of one execute_request.
type execTrace struct {
	Status      string
	ReplyCount  any
	InputCount  any      // execution_count of execute_input, nil if none
	ResultCount any      // execution_count of execute_result, nil if none
	Types       []string // IOPub message types in order
	Text        string   // stream text and text/plain of results
	UserExprs   any      // user_expressions of the reply
}

func traceExecute(t *testing.T, c *client.Client, code string, silent bool, storeHistory bool, exprs map[string]string) execTrace {
	t.Helper()
	m, err := c.Conn().NewMessage("execute_request", map[string]any{"code": code, "silent": silent, "store_history": storeHistory,
		"user_expressions": exprs, "allow_stdin": false, "stop_on_error": false})
	if err != nil {
		t.Fatal(err)
	}
	reply, iopub := exchange(t, c, wire.Shell, m, true)
	rc := decode(t, reply)
	tr := execTrace{Status: fmt.Sprint(rc["status"]), ReplyCount: rc["execution_count"], UserExprs: rc["user_expressions"]}
	for _, msg := range iopub {
		tr.Types = append(tr.Types, msg.Header.MsgType)
		mc := decode(t, msg)
		switch msg.Header.MsgType {
		case "execute_input":
			tr.InputCount = mc["execution_count"]
		case "execute_result":
			tr.ResultCount = mc["execution_count"]
			tr.Text += fmt.Sprint(mc["data"].(map[string]any)["text/plain"]) + "\n"
		case "stream":
			tr.Text += fmt.Sprint(mc["text"])
		case "status":
			tr.Types[len(tr.Types)-1] += ":" + fmt.Sprint(mc["execution_state"])
		}
	}
	return tr
}

// startPlainIPykernel starts a plain ipykernel, shut down when the test
// ends, and returns its connection info.
func startPlainIPykernel(t *testing.T) wire.ConnInfo {
	t.Helper()
	plain := backend.NewLocal(testenv.Python())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := plain.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plain.Shutdown(context.Background()) })
	info, _ := plain.ConnInfo()
	return info
}

// startPlainKernel starts a plain ipykernel and connects a client to it,
// for tests comparing Ferry with what it stands in for.
func startPlainKernel(t *testing.T) *client.Client {
	t.Helper()
	direct, err := client.Connect(startPlainIPykernel(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := direct.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return direct
}

// A front end sees the same execution counts, message sequence and user
// expressions through Ferry as straight from ipykernel, for every kind of
// request that does or does not count.
func TestExecutionCountsLikeIPykernel(t *testing.T) {
	testenv.SkipIfShort(t, "a ferry kernel beside a plain ipykernel, 5 s")
	k := startKernel(t)
	direct := startPlainKernel(t)
	steps := []struct {
		name          string
		code          string
		silent, store bool
		exprs         map[string]string
	}{
		{"first cell", "1", false, true, nil},
		{"silent", "2", true, false, nil},
		{"silent asking for history", "3", true, true, nil},
		{"no history", "4", false, false, nil},
		{"error", "1/0", false, true, nil},
		{"syntax error", "1 +* 2", false, true, nil},
		{"whitespace only", "  \n", false, true, nil},
		{"empty", "", false, true, nil},
		{"comment only", "# nothing", false, true, nil},
		{"assignment", "x = 5", false, true, nil},
		{"user expressions", "y = x * 2", false, true, map[string]string{"double": "y", "bad": "nope"}},
		{"print and result", "print(x)\nx + 1", false, true, nil},
		{"no history after all that", "x", false, false, nil},
		{"last", "x + y", false, true, nil},
	}
	for _, st := range steps {
		exprs := st.exprs
		if exprs == nil {
			exprs = map[string]string{}
		}
		want := traceExecute(t, direct, st.code, st.silent, st.store, exprs)
		got := traceExecute(t, k.c, st.code, st.silent, st.store, exprs)
		if toJSON(got) != toJSON(want) {
			t.Errorf("%s (%q):\nferry:    %s\nipykernel: %s", st.name, st.code, toJSON(got), toJSON(want))
		}
	}
}

func TestShellRequests(t *testing.T) {
	k := startKernel(t)
	k.exec(t, "alpha_beta = 1", client.ExecOptions{})
	tests := []struct {
		msgType string
		content map[string]any
		check   func(c map[string]any) bool
	}{
		{"complete_request", map[string]any{"code": "x = alpha_b", "cursor_pos": 11}, func(c map[string]any) bool {
			return c["status"] == "ok" && strings.Contains(toJSON(c["matches"]), `"alpha_beta"`) && c["cursor_start"] == 4.0 && c["cursor_end"] == 11.0
		}},
		{"inspect_request", map[string]any{"code": "len", "cursor_pos": 3, "detail_level": 0}, func(c map[string]any) bool {
			return c["status"] == "ok" && c["found"] == true && strings.Contains(toJSON(c["data"]), "Return the number of items")
		}},
		{"inspect_request", map[string]any{"code": "no_such_name_here", "cursor_pos": 5, "detail_level": 0}, func(c map[string]any) bool {
			return c["status"] == "ok" && c["found"] == false
		}},
		{"is_complete_request", map[string]any{"code": "for i in x:"}, func(c map[string]any) bool { return c["status"] == "incomplete" && c["indent"] == "    " }},
		{"is_complete_request", map[string]any{"code": "print(1)"}, func(c map[string]any) bool { return c["status"] == "complete" }},
		{"is_complete_request", map[string]any{"code": "1 +* 2"}, func(c map[string]any) bool { return c["status"] == "invalid" }},
		{"comm_info_request", map[string]any{}, func(c map[string]any) bool { return c["status"] == "ok" && c["comms"] != nil }},
		{"kernel_info_request", map[string]any{}, func(c map[string]any) bool {
			li, _ := c["language_info"].(map[string]any)
			return c["status"] == "ok" && c["implementation"] == "ferry" && c["protocol_version"] == "5.3" &&
				li["name"] == "python" && li["file_extension"] == ".py" && strings.HasPrefix(fmt.Sprint(li["version"]), "3.")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.msgType, func(t *testing.T) {
			reply, _ := request(t, k.c, wire.Shell, tt.msgType, tt.content)
			if want := strings.TrimSuffix(tt.msgType, "_request") + "_reply"; reply.Header.MsgType != want {
				t.Fatalf("reply type %s, want %s", reply.Header.MsgType, want)
			}
			if c := decode(t, reply); !tt.check(c) {
				t.Fatalf("for %s: unexpected reply %s", toJSON(tt.content), toJSON(c))
			}
		})
	}
	t.Run("kernel_info on control", func(t *testing.T) {
		reply, _ := request(t, k.c, wire.Control, "kernel_info_request", map[string]any{})
		if c := decode(t, reply); c["implementation"] != "ferry" {
			t.Fatalf("kernel_info on control: %s", toJSON(c))
		}
	})
}

// History requests get what ipykernel answers for the same cells (with
// its own history database emptied), but for the session number: IPython
// numbers sessions in its database, Ferry calls the current one 0.
func TestHistoryLikeIPykernel(t *testing.T) {
	testenv.SkipIfShort(t, "a ferry kernel beside a plain ipykernel, 5 s")
	// Fresh, separate history databases for both ipykernels.
	t.Setenv("IPYTHONDIR", t.TempDir())
	k := startKernel(t)
	t.Setenv("IPYTHONDIR", t.TempDir())
	direct := startPlainKernel(t)
	no := false
	for _, c := range []*client.Client{k.c, direct} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for _, code := range []string{"a1 = 1", "a1 + 1", "b2 = 'x'", "a1 + 1", "   ", "1/0", "%time 1", "[a1, b2]"} {
			// ipykernel aborts a request that arrives while it still
			// clears its queue after an error (stop_on_error): whether
			// the cell after 1/0 makes it depends on timing, not on the
			// kernel. An aborted cell did not run and is not stored, so
			// it is sent again (a few times at most), as a user would.
			for try := 0; ; try++ {
				r, err := c.Execute(ctx, code, client.ExecOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != "aborted" {
					break
				}
				if try == 3 {
					t.Fatalf("%q aborted %d times", code, try+1)
				}
			}
		}
		for _, opt := range []client.ExecOptions{{StoreHistory: &no}, {Silent: true}} {
			if _, err := c.Execute(ctx, "'not stored'", opt); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
	}
	base := map[string]any{"output": false, "raw": true}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []map[string]any{
		with("hist_access_type", "tail", "n", 3),
		with("hist_access_type", "tail", "n", 0),
		with("hist_access_type", "tail", "n", 100),
		with("hist_access_type", "range", "session", 0, "start", 2, "stop", 4),
		with("hist_access_type", "range", "session", 0, "start", 2),
		with("hist_access_type", "range", "session", 0, "start", -2),
		with("hist_access_type", "range", "session", -1, "start", 1, "stop", 4),
		with("hist_access_type", "search", "pattern", "a1*"),
		with("hist_access_type", "search", "pattern", "a1 ?*", "unique", true),
		with("hist_access_type", "search", "pattern", "[ab][12]*", "n", 2),
		with("hist_access_type", "search", "pattern", "*1*", "n", 3, "unique", true),
		with("hist_access_type", "search", "pattern", "A1*"),
		with("hist_access_type", "search", "pattern", "*not stored*"),
	}
	// Session numbers aside, the answers must be equal.
	normalise := func(c map[string]any) string {
		h, _ := c["history"].([]any)
		for _, e := range h {
			e.([]any)[0] = 0
		}
		return toJSON(map[string]any{"status": c["status"], "history": h})
	}
	for _, q := range tests {
		t.Run(toJSON(q), func(t *testing.T) {
			got, _ := request(t, k.c, wire.Shell, "history_request", q)
			want, _ := request(t, direct, wire.Shell, "history_request", q)
			if g, w := normalise(decode(t, got)), normalise(decode(t, want)); g != w {
				t.Fatalf("ferry:     %s\nipykernel: %s", g, w)
			}
		})
	}
	// Ferry keeps each cell's text/plain result (IPython only does with
	// HistoryManager.db_log_output); the shape is the same.
	reply, _ := request(t, k.c, wire.Shell, "history_request", map[string]any{"hist_access_type": "tail", "n": 3, "output": true, "raw": true})
	if got, want := toJSON(decode(t, reply)["history"]), `[[0,5,["1/0",null]],[0,6,["%time 1","1"]],[0,7,["[a1, b2]","[1, 'x']"]]]`; got != want {
		t.Errorf("history with output: %s, want %s", got, want)
	}
}

// %ferry status tells the backend, interpreter, the ipykernel's real pid
// and the uptime, as normal cell output that counts like a cell.
func TestStatusCommand(t *testing.T) {
	k := startKernel(t)
	r := k.exec(t, "%ferry status", client.ExecOptions{})
	text := r.Text()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`^Ferry \S+, policy local, up \d+s, 0 cells run\n`),
		regexp.MustCompile(`\nlocal: ipykernel running, interpreter ` + regexp.QuoteMeta(testenv.Python()) + `, pid \d+, working dir [^,\n]+, kernel uptime \d+s\n`),
		regexp.MustCompile(`\nremote: not configured`),
	} {
		if !want.MatchString(text) {
			t.Errorf("%%ferry status lacks %s:\n%s", want, text)
		}
	}
	if r.Status != "ok" || r.Count != 1 || len(r.Outputs) != 1 || r.Outputs[0]["name"] != "stdout" {
		t.Errorf("status %q count %d outputs %s; want one stdout stream in cell 1", r.Status, r.Count, toJSON(r.Outputs))
	}
	pid, _ := strconv.Atoi(pidRE.FindStringSubmatch(text)[1])
	p := mustProc(t, pid)
	if p.ppid != k.cmd.Process.Pid || !strings.Contains(p.cmdline, "ipykernel_launcher") {
		t.Errorf("%%ferry status pid is %s with parent %d, want ferry's (%d) ipykernel", p, p.ppid, k.cmd.Process.Pid)
	}
	if r := k.exec(t, "import os; os.getpid()", client.ExecOptions{}); r.Text() != fmt.Sprintf("%d\n", pid) {
		t.Errorf("cells run in pid %q, status says %d", r.Text(), pid)
	}
	bad := k.exec(t, "%ferry nonsense", client.ExecOptions{})
	if bad.Status != "error" || bad.EName != "FerryUsageError" || !strings.Contains(bad.EValue, "nonsense") {
		t.Errorf("unknown %%ferry command: %s %s: %s", bad.Status, bad.EName, bad.EValue)
	}
}

func TestInterruptStopsSleep(t *testing.T) {
	k := startKernel(t)
	res := k.startCell(t, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
	start := time.Now()
	reply, _ := request(t, k.c, wire.Control, "interrupt_request", map[string]any{})
	if c := decode(t, reply); c["status"] != "ok" {
		t.Fatalf("interrupt_reply %s", toJSON(c))
	}
	r := awaitCell(t, res, 10*time.Second)
	if took := time.Since(start); took > time.Second {
		t.Errorf("the interrupted cell ended %s after the interrupt_request, want under 1s", took)
	}
	if r.Status != "error" || r.EName != "KeyboardInterrupt" {
		t.Fatalf("cell ended with %s %s: %s, want KeyboardInterrupt", r.Status, r.EName, r.EValue)
	}
	if r := k.exec(t, "print('after')", client.ExecOptions{}); r.Stream("stdout") != "after\n" {
		t.Fatalf("next cell after the interrupt: %q", r.Text())
	}
}

func TestInput(t *testing.T) {
	k := startKernel(t)
	type prompt struct {
		text     string
		password bool
	}
	tests := []struct {
		name     string
		code     string
		answers  []string
		prompts  []prompt
		wantText string
	}{
		{"input", "name = input('who? ')\nprint('hi', name)", []string{"ferry"}, []prompt{{"who? ", false}}, "hi ferry\n"},
		{"two inputs", "a = input('a? ')\nb = input('b? ')\nprint(a + b)", []string{"x", "y"}, []prompt{{"a? ", false}, {"b? ", false}}, "xy\n"},
		{"password", "import getpass\nprint(len(getpass.getpass('secret? ')))", []string{"hunter2"}, []prompt{{"secret? ", true}}, "7\n"},
		{"unicode", "print(input('é? ')[::-1])", []string{"ñandú"}, []prompt{{"é? ", false}}, "údnañ\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []prompt
			r := k.exec(t, tt.code, client.ExecOptions{Input: func(p string, pw bool) (string, error) {
				got = append(got, prompt{p, pw})
				return tt.answers[len(got)-1], nil
			}})
			if fmt.Sprint(got) != fmt.Sprint(tt.prompts) || r.Text() != tt.wantText {
				t.Fatalf("prompts %v, output %q; want %v, %q", got, r.Text(), tt.prompts, tt.wantText)
			}
		})
	}
	t.Run("stdin not allowed", func(t *testing.T) {
		r := k.exec(t, "input('x? ')", client.ExecOptions{})
		if r.EName != "StdinNotImplementedError" {
			t.Fatalf("input() without stdin: %s: %s", r.EName, r.EValue)
		}
	})
}

// echoTarget is a comm target that answers each message with its data,
// its buffers unchanged and their hashes as the kernel saw them.
const echoTarget = `import hashlib
def _echo_target(comm, msg):
    comm.send({'opened_with': msg['content']['data']})
    @comm.on_msg
    def _r(m):
        bufs = [bytes(b) for b in m['buffers']]
        comm.send({'echo': m['content']['data'], 'sha': [hashlib.sha256(b).hexdigest() for b in bufs]}, buffers=bufs)
    @comm.on_close
    def _c(m):
        print('closed with', m['content']['data'])
get_ipython().kernel.comm_manager.register_target('echo', _echo_target)`

// testBuffers are binary buffers that must pass unchanged: empty, every
// byte value, the ZeroMQ delimiter, invalid UTF-8 and a large one.
func testBuffers() [][]byte {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(i * 7 >> 3)
	}
	return [][]byte{{}, all, wire.Delimiter, {0xff, 0xfe, 0x00, 0xc3}, big}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestCommRoundTripWithBuffers(t *testing.T) {
	k := startKernel(t)
	k.exec(t, echoTarget, client.ExecOptions{})
	id := wire.NewID()
	open, err := k.c.Conn().NewMessage("comm_open", map[string]any{"comm_id": id, "target_name": "echo", "data": map[string]any{"hello": 1}})
	if err != nil {
		t.Fatal(err)
	}
	_, iopub := exchange(t, k.c, wire.Shell, open, false)
	if got := commMsgs(t, iopub); len(got) != 1 || toJSON(got[0]["data"]) != `{"opened_with":{"hello":1}}` {
		t.Fatalf("comm_open answered %s", toJSON(got))
	}

	reply, _ := request(t, k.c, wire.Shell, "comm_info_request", map[string]any{"target_name": "echo"})
	if c := decode(t, reply); !strings.Contains(toJSON(c["comms"]), id) {
		t.Errorf("comm_info does not list the open comm: %s", toJSON(c))
	}

	bufs := testBuffers()
	m, err := k.c.Conn().NewMessage("comm_msg", map[string]any{"comm_id": id, "data": map[string]any{"n": 7, "s": "ü"}})
	if err != nil {
		t.Fatal(err)
	}
	m.Buffers = bufs
	var echo *wire.Message
	_, iopub = exchange(t, k.c, wire.Shell, m, false)
	for _, msg := range iopub {
		if msg.Header.MsgType == "comm_msg" {
			echo = msg
		}
	}
	if echo == nil {
		t.Fatal("no comm_msg came back")
	}
	var ec struct {
		CommID string `json:"comm_id"`
		Data   struct {
			Echo map[string]any `json:"echo"`
			SHA  []string       `json:"sha"`
		} `json:"data"`
	}
	if err := echo.Decode(&ec); err != nil {
		t.Fatal(err)
	}
	if ec.CommID != id || toJSON(ec.Data.Echo) != `{"n":7,"s":"ü"}` {
		t.Errorf("comm echo %s", echo.Content)
	}
	if len(ec.Data.SHA) != len(bufs) || len(echo.Buffers) != len(bufs) {
		t.Fatalf("sent %d buffers; the kernel saw %d, %d came back", len(bufs), len(ec.Data.SHA), len(echo.Buffers))
	}
	for i, b := range bufs {
		if ec.Data.SHA[i] != sha(b) {
			t.Errorf("buffer %d (%d bytes) changed on the way to the kernel", i, len(b))
		}
		if sha(echo.Buffers[i]) != sha(b) {
			t.Errorf("buffer %d (%d bytes) changed on the way back (%d bytes)", i, len(b), len(echo.Buffers[i]))
		}
	}

	cl, err := k.c.Conn().NewMessage("comm_close", map[string]any{"comm_id": id, "data": map[string]any{"bye": true}})
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, k.c, wire.Shell, cl, false)
	reply, _ = request(t, k.c, wire.Shell, "comm_info_request", map[string]any{})
	if c := decode(t, reply); strings.Contains(toJSON(c["comms"]), id) {
		t.Errorf("comm_info still lists the closed comm: %s", toJSON(c))
	}
}

func commMsgs(t *testing.T, iopub []*wire.Message) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range iopub {
		if m.Header.MsgType == "comm_msg" {
			out = append(out, decode(t, m))
		}
	}
	return out
}

// Every request gets exactly busy then idle on IOPub, with the request as
// parent, and nothing after idle.
func TestBusyIdleAroundEveryRequest(t *testing.T) {
	k := startKernel(t)
	tests := []struct {
		ch        wire.Channel
		msgType   string
		content   map[string]any
		wantReply bool
	}{
		{wire.Shell, "execute_request", map[string]any{"code": "print(1)", "silent": false, "store_history": true, "user_expressions": map[string]any{}, "allow_stdin": false}, true},
		{wire.Shell, "execute_request", map[string]any{"code": "%ferry status", "silent": false, "store_history": true, "user_expressions": map[string]any{}, "allow_stdin": false}, true},
		{wire.Shell, "execute_request", map[string]any{"code": "1/0", "silent": false, "store_history": true, "user_expressions": map[string]any{}, "allow_stdin": false}, true},
		{wire.Shell, "complete_request", map[string]any{"code": "pri", "cursor_pos": 3}, true},
		{wire.Shell, "inspect_request", map[string]any{"code": "print", "cursor_pos": 5, "detail_level": 0}, true},
		{wire.Shell, "is_complete_request", map[string]any{"code": "x = ("}, true},
		{wire.Shell, "history_request", map[string]any{"hist_access_type": "tail", "n": 1, "output": false, "raw": true}, true},
		{wire.Shell, "comm_info_request", map[string]any{}, true},
		{wire.Shell, "kernel_info_request", map[string]any{}, true},
		{wire.Shell, "comm_msg", map[string]any{"comm_id": "no-such-comm", "data": map[string]any{}}, false},
		{wire.Shell, "no_such_request", map[string]any{}, false},
		{wire.Control, "kernel_info_request", map[string]any{}, true},
		{wire.Control, "interrupt_request", map[string]any{}, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.ch)+" "+tt.msgType, func(t *testing.T) {
			m, err := k.c.Conn().NewMessage(tt.msgType, tt.content)
			if err != nil {
				t.Fatal(err)
			}
			_, iopub := exchange(t, k.c, tt.ch, m, tt.wantReply)
			var states []string
			for _, msg := range iopub {
				if msg.Header.MsgType == "status" {
					states = append(states, fmt.Sprint(decode(t, msg)["execution_state"]))
				}
				if msg.ParentID() != m.Header.MsgID {
					t.Errorf("%s has parent %s, want %s", msg.Header.MsgType, msg.ParentID(), m.Header.MsgID)
				}
			}
			if strings.Join(states, ",") != "busy,idle" {
				t.Fatalf("statuses %v, want busy then idle", states)
			}
			if first, last := iopub[0], iopub[len(iopub)-1]; first.Header.MsgType != "status" || last.Header.MsgType != "status" {
				t.Errorf("IOPub %s … %s, want busy first and idle last", first.Header.MsgType, last.Header.MsgType)
			}
		})
	}
}

// rawSocket is a DEALER on one of the kernel's ports, for sending frames
// no well-behaved client would send.
func rawSocket(t *testing.T, k *kernelProc, ch wire.Channel) *wire.Socket {
	t.Helper()
	port := map[wire.Channel]int{wire.Shell: k.info.ShellPort, wire.Control: k.info.ControlPort, wire.Stdin: k.info.StdinPort}[ch]
	s, err := wire.Connect(wire.DEALER, k.info.Addr(port), "raw "+string(ch), wire.WithIdentity(wire.NewID()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// rawReply waits for a reply on a raw socket.
func rawReply(t *testing.T, s *wire.Socket, signer *wire.Signer, within time.Duration) (*wire.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	frames, err := s.Recv(ctx)
	if err != nil {
		return nil, err
	}
	return wire.Decode(frames, signer)
}

func signed(t *testing.T, k *kernelProc, key, msgType string, content any) [][]byte {
	t.Helper()
	signer, err := wire.NewSigner("hmac-sha256", []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	m, err := wire.New(msgType, wire.NewID(), "tester", nil, content)
	if err != nil {
		t.Fatal(err)
	}
	f, err := wire.Encode(m, signer)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Messages with a wrong, missing or replayed signature are dropped and
// logged; none runs, and the kernel keeps working.
func TestBadSignaturesAreDropped(t *testing.T) {
	k := startKernel(t)
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := map[string]any{"code": fmt.Sprintf("open(%q, 'w').write('x')", marker), "silent": false}
	count := map[string]any{"code": "_runs = globals().get('_runs', 0) + 1", "silent": false, "store_history": true, "user_expressions": map[string]any{}}
	tests := []struct {
		name, log string
		frames    func() [][]byte
	}{
		{"wrong key", "message signature does not match", func() [][]byte { return signed(t, k, "not-the-key", "execute_request", evil) }},
		{"unsigned", "message is not signed", func() [][]byte { return signed(t, k, "", "execute_request", evil) }},
		{"tampered", "message signature does not match", func() [][]byte {
			f := signed(t, k, k.info.Key, "execute_request", count)
			f[len(f)-1] = []byte(toJSON(evil))
			return f
		}},
	}
	shell := rawSocket(t, k, wire.Shell)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := shell.Send(tt.frames()); err != nil {
				t.Fatal(err)
			}
			k.waitLog(t, "dropped message from front end", i+1, 10*time.Second)
			if !strings.Contains(k.stderr.String(), tt.log) {
				t.Errorf("the log does not say why: %s", k.stderr)
			}
		})
	}
	t.Run("replayed", func(t *testing.T) {
		f := signed(t, k, k.info.Key, "execute_request", count)
		signer, _ := wire.NewSigner("hmac-sha256", []byte(k.info.Key))
		for i := 0; i < 2; i++ {
			if err := shell.Send(f); err != nil {
				t.Fatal(err)
			}
		}
		k.waitLog(t, "replayed", 1, 10*time.Second)
		if r, err := rawReply(t, shell, signer, 30*time.Second); err != nil || r.Header.MsgType != "execute_reply" {
			t.Fatalf("the first copy got %v, %v; want its execute_reply", r, err)
		}
		if r := k.exec(t, "print(_runs)", client.ExecOptions{}); r.Stream("stdout") != "1\n" {
			t.Fatalf("a replayed execute_request ran: _runs = %q", r.Text())
		}
	})
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a badly signed execute_request ran")
	}
	signer, _ := wire.NewSigner("hmac-sha256", []byte(k.info.Key))
	if r, err := rawReply(t, shell, signer, 200*time.Millisecond); err == nil {
		t.Errorf("a dropped message was answered: %s", r.Header.MsgType)
	}
	if r := k.exec(t, "print('still fine')", client.ExecOptions{}); r.Stream("stdout") != "still fine\n" {
		t.Fatalf("kernel broken after bad messages: %q", r.Text())
	}
}

// Frames no client should send, on every channel: the kernel must neither
// crash nor hang, and must answer what it can answer.
func TestMalformedMessagesDoNotBreakTheKernel(t *testing.T) {
	testenv.SkipIfShort(t, "real kernel, 10 s")
	k := startKernel(t)
	signer, err := wire.NewSigner("hmac-sha256", []byte(k.info.Key))
	if err != nil {
		t.Fatal(err)
	}
	// frame builds signed frames around raw header, parent, metadata and
	// content, so the kernel gets past the signature check.
	frame := func(header, parent, meta, content string) [][]byte {
		h, p, m, c := []byte(header), []byte(parent), []byte(meta), []byte(content)
		return [][]byte{wire.Delimiter, signer.Sign(h, p, m, c), h, p, m, c}
	}
	hdr := func(msgType string) string {
		return fmt.Sprintf(`{"msg_id":%q,"session":"s","username":"u","date":"2024-01-01T00:00:00Z","msg_type":%q,"version":"5.3"}`, wire.NewID(), msgType)
	}
	junk := [][][]byte{
		{[]byte("")},
		{[]byte("garbage")},
		{wire.Delimiter},
		{wire.Delimiter, []byte("sig"), []byte("{}")},
		{[]byte("id"), wire.Delimiter, []byte("0000"), []byte("{}"), []byte("{}"), []byte("{}"), []byte("{}")},
		frame(`null`, `{}`, `{}`, `{}`),
		frame(`[]`, `{}`, `{}`, `{}`),
		frame(`{"msg_type": 5}`, `{}`, `{}`, `{}`),
		frame(`{"msg_id": "x"}`, `{}`, `{}`, `{}`),
		frame(hdr("execute_request"), `null`, `{}`, `{}`),
		frame(hdr("execute_request"), `{}`, `[]`, `{}`),
		frame(hdr("execute_request"), `{}`, `{}`, `"code"`),
		frame(hdr("execute_request"), `{}`, `{}`, `{"code": 5`),
		frame(hdr("input_reply"), `{}`, `{}`, `{"value": "nobody asked"}`),
		frame(hdr("comm_msg"), `{}`, `{}`, `{"data": {}}`),
		frame(hdr("comm_close"), `{}`, `{}`, `{"comm_id": 7}`),
	}
	for _, ch := range []wire.Channel{wire.Shell, wire.Control, wire.Stdin} {
		s := rawSocket(t, k, ch)
		for _, f := range junk {
			if err := s.Send(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Well-signed requests with bad content get an error reply, as
	// ipykernel's handlers would fail on them, and never hang the kernel.
	answered := []struct {
		msgType, content string
	}{
		{"execute_request", `{"code": 5}`},
		{"execute_request", `{"code": "1", "user_expressions": 5}`},
		{"complete_request", `{"code": "pri"}`},
		{"inspect_request", `{"cursor_pos": 1}`},
		{"is_complete_request", `{}`},
		{"history_request", `{"hist_access_type": 7}`},
	}
	shell := rawSocket(t, k, wire.Shell)
	for _, a := range answered {
		t.Run(a.msgType+" "+a.content, func(t *testing.T) {
			if err := shell.Send(frame(hdr(a.msgType), `{}`, `{}`, a.content)); err != nil {
				t.Fatal(err)
			}
			r, err := rawReply(t, shell, signer, 30*time.Second)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			if want := strings.TrimSuffix(a.msgType, "_request") + "_reply"; r.Header.MsgType != want {
				t.Fatalf("got %s, want %s", r.Header.MsgType, want)
			}
			var c struct{ Status, EValue string }
			if err := r.Decode(&c); err != nil || c.Status != "error" || c.EValue == "" {
				t.Fatalf("reply %s, want an error that says why", r.Content)
			}
		})
	}
	if r := k.exec(t, "print('alive')", client.ExecOptions{}); r.Stream("stdout") != "alive\n" {
		t.Fatalf("kernel broken after malformed messages: %q", r.Text())
	}
	select {
	case <-k.exited:
		t.Fatal("the kernel exited")
	default:
	}
}

// echoHandler makes ipykernel answer a message type it does not know
// with the header field and buffers it received, and publish an IOPub
// message with an extra header field of its own.
const echoHandler = `import hashlib
def _ferry_echo(stream, ident, parent):
    k = get_ipython().kernel
    bufs = [bytes(b) for b in parent['buffers']]
    reply = k.session.msg('ferry_echo_reply', {'probe': parent['header'].get('x_ferry_probe'),
        'sha': [hashlib.sha256(b).hexdigest() for b in bufs]}, parent=parent)
    reply['header']['x_kernel_field'] = 'reply'
    k.session.send(stream, reply, ident=ident, buffers=bufs)
    event = k.session.msg('ferry_echo_event', {'n': len(bufs)}, parent=parent)
    event['header']['x_kernel_field'] = 'event'
    k.session.send(k.iopub_socket, event, ident=b'ferry_echo_event', buffers=bufs)
get_ipython().kernel.shell_handlers['ferry_echo_request'] = _ferry_echo`

// A message type Ferry does not know reaches ipykernel with its extra
// header fields and buffers, and what ipykernel answers comes back with
// its own extra header fields and buffers.
func TestUnknownTypesAndExtraHeaderFieldsPassThrough(t *testing.T) {
	k := startKernel(t)
	k.exec(t, echoHandler, client.ExecOptions{})
	m, err := k.c.Conn().NewMessage("ferry_echo_request", map[string]any{"x": 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Extra = map[string]json.RawMessage{"x_ferry_probe": json.RawMessage(`{"nested":[1,"two",null]}`)}
	bufs := testBuffers()
	m.Buffers = bufs
	reply, iopub := exchange(t, k.c, wire.Shell, m, true)
	if reply.Header.MsgType != "ferry_echo_reply" || reply.ParentID() != m.Header.MsgID {
		t.Fatalf("reply %s to %s", reply.Header.MsgType, reply.ParentID())
	}
	var rc struct {
		Probe any      `json:"probe"`
		SHA   []string `json:"sha"`
	}
	if err := reply.Decode(&rc); err != nil {
		t.Fatal(err)
	}
	if toJSON(rc.Probe) != `{"nested":[1,"two",null]}` {
		t.Errorf("ipykernel saw header field x_ferry_probe = %s", toJSON(rc.Probe))
	}
	if got := string(reply.Header.Extra["x_kernel_field"]); got != `"reply"` {
		t.Errorf("the reply's extra header field arrived as %q", got)
	}
	if len(rc.SHA) != len(bufs) || len(reply.Buffers) != len(bufs) {
		t.Fatalf("sent %d buffers; ipykernel saw %d, the reply carried %d", len(bufs), len(rc.SHA), len(reply.Buffers))
	}
	for i, b := range bufs {
		if rc.SHA[i] != sha(b) || sha(reply.Buffers[i]) != sha(b) {
			t.Errorf("buffer %d (%d bytes) changed on the way", i, len(b))
		}
	}
	var event *wire.Message
	for _, msg := range iopub {
		if msg.Header.MsgType == "ferry_echo_event" {
			event = msg
		}
	}
	if event == nil {
		t.Fatalf("the IOPub message of an unknown type was not relayed; got %d IOPub messages", len(iopub))
	}
	if got := string(event.Header.Extra["x_kernel_field"]); got != `"event"` {
		t.Errorf("the IOPub message's extra header field arrived as %q", got)
	}
	if len(event.Buffers) != len(bufs) || sha(event.Buffers[4]) != sha(bufs[4]) {
		t.Errorf("the IOPub message's buffers changed")
	}
}

func TestHeartbeatWhileBusy(t *testing.T) {
	k := startKernel(t)
	res := k.startCell(t, "import time\nprint('busy', flush=True)\ntime.sleep(60)")
	for i := 0; i < 3; i++ {
		if err := wire.Ping(k.info.Addr(k.info.HBPort), []byte(fmt.Sprintf("ping %d", i)), 2*time.Second); err != nil {
			t.Fatalf("heartbeat while a cell runs: %v", err)
		}
	}
	select {
	case r := <-res:
		t.Fatalf("the cell ended before the pings were answered: %+v", r.r)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.c.Interrupt(ctx); err != nil {
		t.Fatal(err)
	}
	awaitCell(t, res, 10*time.Second)
}

// The ipykernel is killed while a cell runs: the cell ends with a clear
// KernelDied error, the next cell runs on a new ipykernel, and the count
// goes on.
func TestBackendDeathIsReportedAndRecovered(t *testing.T) {
	testenv.SkipIfShort(t, "kills and restarts a real ipykernel, 4 s")
	k := startKernel(t)
	pid := k.backendPID(t)
	res := k.startCell(t, "import time\nprint('running', flush=True)\ntime.sleep(60)")
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := awaitCell(t, res, 15*time.Second)
	if took := time.Since(killed); took > 5*time.Second {
		t.Errorf("the cell took %s to report its kernel's death", took)
	}
	if r.Status != "error" || r.EName != "KernelDied" || !strings.Contains(r.EValue, "died while running this cell") || !strings.Contains(r.EValue, "killed") {
		t.Fatalf("cell ended with %s %s: %q, want a KernelDied error naming the signal", r.Status, r.EName, r.EValue)
	}
	if r.Reply["ename"] != "KernelDied" {
		t.Errorf("the execute_reply says %v, want KernelDied (only one reply)", r.Reply["ename"])
	}
	if last := r.Outputs[len(r.Outputs)-1]; last["output_type"] != "error" || len(last["traceback"].([]any)) == 0 {
		t.Errorf("the error output is %s", toJSON(last))
	}
	if r.Count != 2 {
		t.Errorf("the failed cell's count is %d, want 2", r.Count)
	}
	next := k.exec(t, "print(1 + 1)", client.ExecOptions{})
	if next.Stream("stdout") != "2\n" || next.Count != 3 {
		t.Fatalf("next cell after the restart: %q, count %d; want 2, count 3", next.Text(), next.Count)
	}
	newPID := k.backendPID(t)
	if newPID == pid {
		t.Fatal("backend was not restarted")
	}
	waitGone(t, pid, 10*time.Second)
	if st := k.exec(t, "%ferry status", client.ExecOptions{}).Text(); !strings.Contains(st, "restarted 1 times") {
		t.Errorf("%%ferry status does not tell the restart:\n%s", st)
	}

	// Killed between cells: the next cell simply runs on a new kernel.
	if err := syscall.Kill(newPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, newPID, 10*time.Second)
	if r := k.exec(t, "print('again')", client.ExecOptions{}); r.Stream("stdout") != "again\n" || r.Status != "ok" {
		t.Fatalf("cell after an idle kernel died: %s %q", r.Status, r.Text())
	}
}

// spawnGrandchild makes the ipykernel start a long-running child of its
// own, which must not outlive the kernel either.
const spawnGrandchild = "import subprocess\n_child = subprocess.Popen(['sleep', '600'])\nprint(_child.pid)"

func TestShutdownLeavesNoProcess(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels stopped four ways, 20 s")
	tests := []struct {
		name string
		stop func(k *kernelProc) error
		// all: every descendant must go; else only ferry's own children
		// (ipykernel and helpers) — after SIGKILL nothing of ferry runs to
		// reach a grandchild.
		all bool
	}{
		{"shutdown_request", func(k *kernelProc) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return k.c.Shutdown(ctx, false)
		}, true},
		{"shutdown_request restart", func(k *kernelProc) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return k.c.Shutdown(ctx, true)
		}, true},
		{"SIGTERM", func(k *kernelProc) error { return k.cmd.Process.Signal(syscall.SIGTERM) }, true},
		{"SIGHUP", func(k *kernelProc) error { return k.cmd.Process.Signal(syscall.SIGHUP) }, true},
		{"SIGKILL", func(k *kernelProc) error { return k.cmd.Process.Kill() }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := startKernel(t)
			pid := k.backendPID(t)
			gc, err := strconv.Atoi(strings.TrimSpace(k.exec(t, spawnGrandchild, client.ExecOptions{}).Stream("stdout")))
			if err != nil {
				t.Fatal(err)
			}
			grandchild := mustProc(t, gc)
			t.Cleanup(func() { _ = syscall.Kill(gc, syscall.SIGKILL) })
			var watch []proc
			for _, p := range descendants(k.cmd.Process.Pid) {
				if tt.all || p.ppid == k.cmd.Process.Pid {
					watch = append(watch, p)
				}
			}
			if !strings.Contains(fmt.Sprint(watch), fmt.Sprintf("pid %d ", pid)) {
				t.Fatalf("the ipykernel (pid %d) is not among ferry's children: %v", pid, watch)
			}
			if tt.all && !strings.Contains(fmt.Sprint(watch), grandchild.String()) {
				t.Fatalf("the grandchild %s is not among ferry's descendants: %v", grandchild, watch)
			}
			if err := tt.stop(k); err != nil {
				t.Fatal(err)
			}
			select {
			case <-k.exited:
			case <-time.After(20 * time.Second):
				t.Fatal("ferry kernel did not exit within 20s")
			}
			waitAllGone(t, watch, 10*time.Second)
		})
	}
}

// The front end's kernel manager dies without shutting the kernel down:
// Ferry notices its parent is gone and stops, with its ipykernel, and
// deletes its kernel on the remote server (no orphans on either side).
func TestFrontEndVanishes(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 6 s")
	srv := startJupyterServer(t)
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(t.TempDir(), "kernel.json")
	if err := info.Write(cf); err != nil {
		t.Fatal(err)
	}
	manager := exec.Command("sh", "-c", `"$0" kernel -f "$1" --python "$2" --remote "$3" & echo $!; wait`, ferryBin, cf, testenv.Python(), srv.URL)
	manager.Env = append(os.Environ(), "FERRY_TOKEN="+srv.Token)
	out, err := manager.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := manager.Start(); err != nil {
		t.Fatal(err)
	}
	var ferryPID int
	if _, err := fmt.Fscan(out, &ferryPID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(ferryPID, syscall.SIGKILL) })
	c, err := client.Connect(info)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	k := &kernelProc{c: c}
	pid := k.backendPID(t)
	k.exec(t, "%%ferry remote\nx = 1", client.ExecOptions{})
	if n := len(serverKernels(t, srv)); n != 1 {
		t.Fatalf("%d kernels on the server, want Ferry's one", n)
	}
	_ = manager.Process.Kill()
	_ = manager.Wait()
	waitGone(t, ferryPID, 10*time.Second)
	waitGone(t, pid, 10*time.Second)
	if ks := serverKernels(t, srv); len(ks) != 0 {
		t.Fatalf("kernels left on the server after the front end vanished: %v", ks)
	}
}

// serverKernels lists the kernel ids on a jupyter-server.
func serverKernels(t *testing.T, s *backend.JupyterServer) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids, err := s.Kernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// The target kernel dies in the middle of a state transfer: the variable
// is intact at the source and the session goes on.
func TestTargetKilledMidTransfer(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 13 s")
	k := startKernel(t, "--local-remote")
	remotePID, err := strconv.Atoi(strings.TrimSpace(k.exec(t, "%%ferry remote\nimport os\nprint(os.getpid())", client.ExecOptions{}).Stream("stdout")))
	if err != nil {
		t.Fatal(err)
	}
	k.exec(t, "import numpy as np\nbig = np.random.default_rng(0).random(60_000_000)\nexpect = float(big.sum())", client.ExecOptions{})
	res := make(chan *client.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		r, err := k.c.Execute(ctx, "%%ferry remote\nprint(big.shape)", client.ExecOptions{})
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	time.Sleep(400 * time.Millisecond) // the 480 MB transfer is under way
	if err := syscall.Kill(remotePID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		// Either the cell ran where the data is, or it failed with a clear
		// message; it must not hang, and the data must survive.
		if r == nil {
			t.Fatal("no result")
		}
		if r.Status == "error" && !strings.Contains(r.EValue, "died") {
			t.Fatalf("unexpected error: %s: %s", r.EName, r.EValue)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the cell hung after its target kernel died")
	}
	if got := k.exec(t, "%%ferry local\nprint(float(big.sum()) == expect)", client.ExecOptions{}).Text(); got != "True\n" {
		t.Fatalf("the source copy after the failed transfer: %q", got)
	}
	if got := k.exec(t, "%%ferry remote\nprint(big.shape)", client.ExecOptions{}).Text(); got != "(60000000,)\n" {
		t.Fatalf("a new remote kernel got: %q", got)
	}
}

// A value whose only copy died is rebuilt from the cells that made it; one
// whose cell cannot run again (its input file is gone) is named, with why.
func TestLostValuesRebuiltOrNamed(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 5 s")
	k := startKernel(t, "--local-remote")
	src := filepath.Join(t.TempDir(), "input.txt")
	if err := os.WriteFile(src, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.exec(t, "base = 20", client.ExecOptions{})
	k.exec(t, "%%ferry remote\nimport os\nrows = [base + i for i in range(3)]\ntext = open("+strconv.Quote(src)+").read()", client.ExecOptions{})
	k.exec(t, "%%ferry remote\nrows.append(99)", client.ExecOptions{})
	if why := k.exec(t, "%ferry why", client.ExecOptions{}).Text(); why != "last cell ran at remote: pinned to remote by %%ferry remote\n  nothing moved\n" {
		t.Errorf("%%ferry why after a pinned cell: %q", why)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(k.exec(t, "%%ferry remote\nprint(os.getpid())", client.ExecOptions{}).Stream("stdout")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 10*time.Second)
	r := k.exec(t, "%%ferry local\nprint(rows)", client.ExecOptions{})
	if r.Status != "ok" || !strings.HasSuffix(r.Text(), "[20, 21, 22, 99]\n") {
		t.Fatalf("rows after its kernel died: %s %q", r.Status, r.Text())
	}
	// Where the rebuild runs depends on think time: once the laptop holds a
	// written-back copy of the first rows, replaying In [2] there would
	// overwrite it, so recovery picks the new cloud kernel (it failed one
	// CI run in two at the start of session 13, before and after that
	// session's changes). Either place is right; the notice must name it.
	where := "on the laptop"
	if strings.Contains(r.Text(), "rebuilding os, rows, text in the cloud") {
		where = "in the cloud"
	}
	// The cloud's random state (__ferry_rng__) must not be among the lost
	// values: neither side used a random generator. It was, one run in two,
	// while the speed calibration imported numpy into the kernels (a global
	// numpy state the user never made); it now runs in a child process.
	notice := r.Text()
	if strings.Contains(notice, "__ferry_rng__") {
		t.Errorf("the random state is named among the lost values although no cell used one:\n%s", notice)
	}
	for _, want := range []string{"the cloud kernel died", "rebuilding os, rows, text " + where + " by re-running In [2], In [3]", "rebuilt os, rows " + where,
		"could not rebuild text (re-running the cells that made it failed", "FileNotFoundError", "re-run In [2]"} {
		if !strings.Contains(notice, want) {
			t.Errorf("the notice does not say %q:\n%s", want, r.Text())
		}
	}
	// A cell reading the value that could not be rebuilt does not run, and
	// says why and what to run again.
	if r := k.exec(t, "%%ferry local\nprint(text)", client.ExecOptions{}); r.EName != "FerryError" || !strings.Contains(r.EValue, "this cell reads text, lost when the cloud kernel died") {
		t.Errorf("text, which could not be rebuilt: %s %s %q", r.Status, r.EName, r.EValue)
	}
}

// In the user's think time the ferry policy copies values that live only
// in the cloud home (write-back), so the cloud kernel's death then loses
// nothing and needs no rebuild.
func TestThinkTimeWriteBack(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, waits out think times, 9 s")
	k := startKernel(t, "--local-remote", "--policy", "ferry")
	k.exec(t, "%%ferry remote\nimport os\nimport numpy as np\na = np.ones(1000)", client.ExecOptions{})
	// %ferry commands are no cells for the interaction model.
	m := regexp.MustCompile(`remote: ipykernel running, interpreter \S+, pid (\d+)`).FindStringSubmatch(k.exec(t, "%ferry status", client.ExecOptions{}).Text())
	if m == nil {
		t.Fatal("no remote pid in the status text")
	}
	pid, _ := strconv.Atoi(m[1])
	for _, code := range []string{"%%ferry remote\nb = a + 1", "%%ferry remote\nc = b + 1"} {
		time.Sleep(2500 * time.Millisecond) // the user reads the output
		k.exec(t, code, client.ExecOptions{})
	}
	// Each status request lets the idle work resume; it copies a few KB.
	// Wait for a, b and c (three moves, unless batched: then the 5 s
	// bound): the first pause also runs the speed calibration, and the
	// first move alone had not brought c home (CI, 3 December).
	var st string
	moves := regexp.MustCompile(`think time: (\d+) moves`)
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond) // the user thinks
		st = k.exec(t, "%ferry status", client.ExecOptions{}).Text()
		if m := moves.FindStringSubmatch(st); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 3 {
				break
			}
		}
	}
	if !strings.Contains(st, "made while you thought") || strings.Contains(st, "think time: 0 moves") {
		t.Fatalf("no move was made in think time:\n%s", st)
	}
	// The link was probed while the user thought, and the model has it.
	if !regexp.MustCompile(`link model: rtt \d+\.\d ms \(probed [1-9]\d* times\)`).MatchString(st) {
		t.Errorf("no active link probe in %%ferry status:\n%s", st)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 10*time.Second)
	r := k.exec(t, "%%ferry local\nprint(int(c.sum()))", client.ExecOptions{})
	if r.Status != "ok" || !strings.HasSuffix(r.Text(), "3000\n") {
		t.Fatalf("c after the cloud kernel died: %s %q", r.Status, r.Text())
	}
	if strings.Contains(r.Text(), "rebuilt c") {
		t.Errorf("c was rebuilt although write-back had copied it home:\n%s", r.Text())
	}
	// A cell the policy placed: %ferry why gives both estimates and what
	// moved.
	k.exec(t, "%%ferry remote\nd = a * 3", client.ExecOptions{})
	k.exec(t, "e = d + c", client.ExecOptions{})
	why := k.exec(t, "%ferry why", client.ExecOptions{}).Text()
	if !regexp.MustCompile(`(?s)^last cell ran at (local|remote): (quickest there|it stays where the last cell ran, as moving would gain too little) by Ferry.s estimate .*\n  estimated: local \d+\.\d{3} s, remote \d+\.\d{3} s .*\n  (moved before it: [a-z', ]+ \(.* in \d+\.\d\d s\)|nothing moved)\n$`).MatchString(why) {
		t.Errorf("%%ferry why after a placed cell:\n%s", why)
	}
}

// Store vs recompute: a large value that is cheap to make is made again
// where the cell runs instead of crossing a slow link, and only if its
// content hash proves it the same.
func TestRecomputeInsteadOfMoving(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 6 s")
	k := startKernel(t, "--local-remote", "--bandwidth", "10Mbit")
	k.exec(t, "%%ferry local\nimport numpy as np\nbig = np.arange(40_000_000, dtype=np.float64)", client.ExecOptions{})
	k.exec(t, "%%ferry local\nsmall = [1, 2, 3]", client.ExecOptions{})
	r := k.exec(t, "%%ferry remote\nprint(int(big[-1]), sum(small))", client.ExecOptions{})
	if r.Status != "ok" || r.Stream("stdout") != "39999999 6\n" {
		t.Fatalf("the cell reading big at remote: %s %q", r.Status, r.Text())
	}
	// The hidden re-run is announced in the cell itself.
	if e := r.Stream("stderr"); !strings.Contains(e, "Ferry: recomputed big") {
		t.Fatalf("the recomputation was not announced in the cell: %q", e)
	}
	why := k.exec(t, "%ferry why", client.ExecOptions{}).Text()
	if !regexp.MustCompile(`recomputed big(, small)? at remote by re-running [12] cells? \(`).MatchString(why) || !strings.Contains(why, "instead of moving 305.2 MiB") {
		t.Fatalf("%%ferry why does not tell the recomputation:\n%s", why)
	}
	// np was replayed at remote as a side effect; the value left there is
	// not the map's, so it was deleted, and the next cell brings it.
	if r := k.exec(t, "%%ferry remote\nprint(np.__name__)", client.ExecOptions{}); r.Stream("stdout") != "numpy\n" {
		t.Fatalf("np at remote after the replay: %s %q", r.Status, r.Text())
	}
}

// The model learns what compression achieves on this notebook's payloads.
func TestCompressionIsMeasured(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 4 s")
	k := startKernel(t, "--local-remote", "--bandwidth", "10Gbit")
	k.exec(t, "%%ferry local\nimport numpy as np\nz = np.zeros(5_000_000)", client.ExecOptions{})
	if r := k.exec(t, "%%ferry remote\nprint(z.sum())", client.ExecOptions{}); r.Stream("stdout") != "0.0\n" {
		t.Fatalf("z at remote: %s %q", r.Status, r.Text())
	}
	st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
	m := regexp.MustCompile(`payloads compress to (\d+)%`).FindStringSubmatch(st)
	if m == nil {
		t.Fatalf("no compression figure in %%ferry status:\n%s", st)
	}
	if pct, _ := strconv.Atoi(m[1]); pct > 10 {
		t.Errorf("40 MB of zeros compress to %d%%, want a few percent at most", pct)
	}
}
