package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/wire"
)

// kernelProc is a `ferry kernel` process started as Jupyter starts it.
type kernelProc struct {
	cmd  *exec.Cmd
	info wire.ConnInfo
	c    *client.Client
	done chan error
}

func startKernel(t *testing.T, extra ...string) *kernelProc {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s missing: run 'bash scripts/setup.sh'", python)
	}
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(t.TempDir(), "kernel.json")
	if err := info.Write(cf); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ferryBin, append([]string{"kernel", "-f", cf, "--python", python}, extra...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k := &kernelProc{cmd: cmd, info: info, done: make(chan error, 1)}
	go func() { k.done <- cmd.Wait() }()
	c, err := client.Connect(info)
	if err != nil {
		t.Fatal(err)
	}
	k.c = c
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = cmd.Process.Kill()
		<-k.done
	})
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

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running after %s", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecuteOutputsAndCounts(t *testing.T) {
	k := startKernel(t)
	no := false
	tests := []struct {
		name     string
		code     string
		opt      client.ExecOptions
		wantText string
		wantType string
		count    int
	}{
		{"stream", "print('hello')", client.ExecOptions{}, "hello\n", "stream", 1},
		{"result", "6 * 7", client.ExecOptions{}, "42\n", "execute_result", 2},
		{"display", "from IPython.display import display, Markdown\ndisplay(Markdown('*m*'))", client.ExecOptions{}, "<IPython.core.display.Markdown object>\n", "display_data", 3},
		{"error", "1/0", client.ExecOptions{}, "ZeroDivisionError: division by zero\n", "error", 4},
		{"silent does not count", "print('quiet')", client.ExecOptions{Silent: true}, "quiet\n", "stream", 0},
		{"no history does not count", "x = 5\nx", client.ExecOptions{StoreHistory: &no}, "5\n", "execute_result", 0},
		{"count goes on", "x + 1", client.ExecOptions{}, "6\n", "execute_result", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := k.exec(t, tt.code, tt.opt)
			if r.Text() != tt.wantText {
				t.Errorf("output %q, want %q", r.Text(), tt.wantText)
			}
			if len(r.Outputs) == 0 || r.Outputs[len(r.Outputs)-1]["output_type"] != tt.wantType {
				t.Errorf("outputs %v, want a %s", r.Outputs, tt.wantType)
			}
			if tt.count > 0 && r.Count != tt.count {
				t.Errorf("execution_count %d, want %d", r.Count, tt.count)
			}
			if tt.wantType == "execute_result" && tt.count > 0 {
				if n, _ := r.Outputs[len(r.Outputs)-1]["execution_count"].(float64); int(n) != tt.count {
					t.Errorf("execute_result count %v, want %d", r.Outputs[len(r.Outputs)-1]["execution_count"], tt.count)
				}
			}
		})
	}
}

func TestShellRequests(t *testing.T) {
	k := startKernel(t)
	k.exec(t, "alpha_beta = 1", client.ExecOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		msgType string
		content map[string]any
		check   func(map[string]any) bool
	}{
		{"complete_request", map[string]any{"code": "alpha_b", "cursor_pos": 7}, func(c map[string]any) bool {
			return strings.Contains(toJSON(c["matches"]), "alpha_beta")
		}},
		{"inspect_request", map[string]any{"code": "len", "cursor_pos": 3, "detail_level": 0}, func(c map[string]any) bool {
			return c["found"] == true && strings.Contains(toJSON(c["data"]), "Return the number of items")
		}},
		{"is_complete_request", map[string]any{"code": "for i in x:"}, func(c map[string]any) bool { return c["status"] == "incomplete" }},
		{"history_request", map[string]any{"hist_access_type": "tail", "n": 10, "output": false, "raw": true}, func(c map[string]any) bool {
			return strings.Contains(toJSON(c["history"]), "alpha_beta = 1")
		}},
		{"comm_info_request", map[string]any{}, func(c map[string]any) bool { return c["status"] == "ok" }},
		{"kernel_info_request", map[string]any{}, func(c map[string]any) bool {
			li, _ := c["language_info"].(map[string]any)
			return c["implementation"] == "ferry" && c["protocol_version"] == "5.3" && li["name"] == "python"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.msgType, func(t *testing.T) {
			var statuses []string
			r, err := k.c.Request(ctx, wire.Shell, tt.msgType, tt.content, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = statuses
			var c map[string]any
			if err := r.Decode(&c); err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimSuffix(tt.msgType, "_request") + "_reply"; r.Header.MsgType != want {
				t.Fatalf("reply type %s, want %s", r.Header.MsgType, want)
			}
			if !tt.check(c) {
				t.Fatalf("unexpected reply: %s", toJSON(c))
			}
		})
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestInterruptStopsSleep(t *testing.T) {
	k := startKernel(t)
	k.exec(t, "import time", client.ExecOptions{})
	res := make(chan *client.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
		defer cancel()
		r, err := k.c.Execute(ctx, "time.sleep(60)", client.ExecOptions{})
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	// Interrupt once the cell is running: the shell is busy then.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.c.Interrupt(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if took := time.Since(start); took > time.Second {
			t.Errorf("interrupt took %s, want under 1s", took)
		}
		if r == nil || r.EName != "KeyboardInterrupt" {
			t.Fatalf("cell ended with %+v, want KeyboardInterrupt", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("interrupted cell did not end")
	}
}

func TestInputRoundTrip(t *testing.T) {
	k := startKernel(t)
	var prompt string
	r := k.exec(t, "name = input('who? ')\nprint('hi', name)", client.ExecOptions{Input: func(p string, pw bool) (string, error) {
		prompt = p
		return "ferry", nil
	}})
	if prompt != "who? " || r.Text() != "hi ferry\n" {
		t.Fatalf("prompt %q, output %q", prompt, r.Text())
	}
}

func TestCommRoundTripWithBuffers(t *testing.T) {
	k := startKernel(t)
	k.exec(t, `def _echo_target(comm, msg):
    @comm.on_msg
    def _r(m):
        comm.send({'echo': m['content']['data']}, buffers=[bytes(b)[::-1] for b in m['buffers']])
get_ipython().kernel.comm_manager.register_target('echo', _echo_target)`, client.ExecOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := wire.NewID()
	open, err := k.c.Conn().NewMessage("comm_open", map[string]any{"comm_id": id, "target_name": "echo", "data": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.c.Notify(ctx, open, nil); err != nil {
		t.Fatal(err)
	}
	m, err := k.c.Conn().NewMessage("comm_msg", map[string]any{"comm_id": id, "data": map[string]any{"n": 7}})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i)
	}
	m.Buffers = [][]byte{payload}
	var reply *wire.Message
	if err := k.c.Notify(ctx, m, func(msg *wire.Message) {
		if msg.Header.MsgType == "comm_msg" {
			reply = msg
		}
	}); err != nil {
		t.Fatal(err)
	}
	if reply == nil {
		t.Fatal("no comm reply")
	}
	var rc struct {
		Data struct {
			Echo struct {
				N int `json:"n"`
			} `json:"echo"`
		} `json:"data"`
	}
	if err := reply.Decode(&rc); err != nil || rc.Data.Echo.N != 7 {
		t.Errorf("comm reply %s", reply.Content)
	}
	if len(reply.Buffers) != 1 || len(reply.Buffers[0]) != len(payload) || reply.Buffers[0][0] != payload[len(payload)-1] {
		t.Errorf("buffer did not come back reversed intact")
	}
}

func TestStatusBusyIdleAndUnknownTypes(t *testing.T) {
	k := startKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, typ := range []string{"kernel_info_request", "no_such_request"} {
		m, err := k.c.Conn().NewMessage(typ, map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		m.Header.Extra = map[string]json.RawMessage{"subshell_id": json.RawMessage(`null`)}
		var states []string
		err = k.c.NotifyStatus(ctx, m, func(state string) { states = append(states, state) })
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if strings.Join(states, ",") != "busy,idle" {
			t.Errorf("%s: statuses %v, want busy then idle", typ, states)
		}
	}
}

func TestMisSignedMessageIsDropped(t *testing.T) {
	k := startKernel(t)
	bad := k.info
	bad.Key = "not-the-key"
	evil, err := client.Connect(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := evil.Execute(ctx, "open('/tmp/ferry-pwned', 'w').write('x')", client.ExecOptions{}); err == nil {
		t.Fatal("a message signed with the wrong key was answered")
	}
	if _, err := os.Stat("/tmp/ferry-pwned"); err == nil {
		os.Remove("/tmp/ferry-pwned")
		t.Fatal("a mis-signed execute_request ran")
	}
	if r := k.exec(t, "print('still fine')", client.ExecOptions{}); r.Text() != "still fine\n" {
		t.Fatalf("kernel broken after a bad message: %q", r.Text())
	}
}

func TestHeartbeatWhileBusy(t *testing.T) {
	k := startKernel(t)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = k.c.Execute(ctx, "import time; time.sleep(3)", client.ExecOptions{})
	}()
	time.Sleep(300 * time.Millisecond)
	if err := wire.Ping(k.info.Addr(k.info.HBPort), []byte("ping"), 2*time.Second); err != nil {
		t.Fatalf("heartbeat while a cell runs: %v", err)
	}
}

func TestBackendDeathIsReportedAndRecovered(t *testing.T) {
	k := startKernel(t)
	pid := k.backendPID(t)
	k.exec(t, "import time", client.ExecOptions{})
	res := make(chan *client.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r, err := k.c.Execute(ctx, "time.sleep(30)", client.ExecOptions{})
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	time.Sleep(500 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r == nil || r.EName != "KernelDied" || !strings.Contains(r.EValue, "died while running this cell") {
			t.Fatalf("cell ended with %+v, want a KernelDied error", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the cell hung after its kernel died")
	}
	if r := k.exec(t, "print(1 + 1)", client.ExecOptions{}); r.Text() != "2\n" {
		t.Fatalf("next cell after restart: %q", r.Text())
	}
	if k.backendPID(t) == pid {
		t.Fatal("backend was not restarted")
	}
}

func TestShutdownLeavesNoProcess(t *testing.T) {
	tests := []struct {
		name string
		stop func(k *kernelProc) error
	}{
		{"shutdown_request", func(k *kernelProc) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return k.c.Shutdown(ctx, false)
		}},
		{"shutdown_request restart", func(k *kernelProc) error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			return k.c.Shutdown(ctx, true)
		}},
		{"SIGTERM", func(k *kernelProc) error { return k.cmd.Process.Signal(syscall.SIGTERM) }},
		{"SIGKILL (front end vanished)", func(k *kernelProc) error { return k.cmd.Process.Kill() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := startKernel(t)
			pid := k.backendPID(t)
			if err := tt.stop(k); err != nil {
				t.Fatal(err)
			}
			select {
			case <-k.done:
			case <-time.After(20 * time.Second):
				t.Fatal("ferry kernel did not exit")
			}
			k.done <- nil // for the cleanup
			waitGone(t, pid, 10*time.Second)
		})
	}
}

// The front end's kernel manager dies without shutting the kernel down:
// Ferry notices its parent is gone and stops, with its ipykernel.
func TestFrontEndVanishes(t *testing.T) {
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(t.TempDir(), "kernel.json")
	if err := info.Write(cf); err != nil {
		t.Fatal(err)
	}
	manager := exec.Command("sh", "-c", `"$0" kernel -f "$1" --python "$2" & echo $!; wait`, ferryBin, cf, python)
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
	_ = manager.Process.Kill()
	_ = manager.Wait()
	waitGone(t, ferryPID, 10*time.Second)
	waitGone(t, pid, 10*time.Second)
}

// The target kernel dies in the middle of a state transfer: the variable
// is intact at the source and the session goes on.
func TestTargetKilledMidTransfer(t *testing.T) {
	k := startKernel(t, "--local-remote")
	remotePID, err := strconv.Atoi(strings.TrimSpace(k.exec(t, "%%ferry remote\nimport os\nprint(os.getpid())", client.ExecOptions{}).Text()))
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
