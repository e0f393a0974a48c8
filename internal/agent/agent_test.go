package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

func needPython(t testing.TB) {
	t.Helper()
	testenv.RequirePython(t, "cloudpickle", "numpy", "zstandard")
}

// TestAgentPython runs the agent's Python unit tests in-process with
// Debian's interpreter (numpy, pandas, cloudpickle, dill are needed):
// agent_test.py for the agent, outside_test.py for its helpers (files,
// side effects, process state), history_test.py for IPython's history.
func TestAgentPython(t *testing.T) {
	needPython(t)
	out, err := exec.Command(testenv.Python(), "-m", "unittest", "-v", "agent_test", "outside_test", "history_test").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("agent tests failed: %v", err)
	}
	if !strings.Contains(string(out), "\nOK") {
		t.Fatal("no OK from unittest")
	}
}

func TestInstallCodeIsOneExpression(t *testing.T) {
	code := agent.InstallCode(`se"cret`, nil)
	if !strings.HasPrefix(code, "(lambda s, t, j:") || strings.Count(code, "\n") != 0 {
		t.Fatalf("install code is not a single-line expression")
	}
	if !strings.Contains(code, strconv.Quote(`se"cret`)) {
		t.Fatalf("secret not quoted")
	}
	if got := agent.ReportExpr([]string{"a\"b"}, true, false, nil, false); !strings.Contains(got, `["a\"b"], True`) {
		t.Fatalf("report expression quotes names wrongly: %s", got)
	}
	if got := agent.ReportExpr(nil, false, false, nil, false); !strings.Contains(got, `([], False, False, [], False, [])`) {
		t.Fatalf("report expression without names: %s", got)
	}
}

// kernel is a real ipykernel with a client for the test.
type kernel struct {
	*client.Client
	t *testing.T
}

func startKernel(ctx context.Context, t *testing.T) *kernel {
	t.Helper()
	needPython(t)
	b := backend.NewLocal(testenv.Python())
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	// The test talks through its own client; the backend's copy of every
	// message is dropped.
	go func() {
		for range b.Incoming() {
		}
	}()
	info, ok := b.ConnInfo()
	if !ok {
		t.Fatal("no connection info for the local kernel")
	}
	c, err := client.Connect(info)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return &kernel{c, t}
}

// run executes a user cell and fails the test if it raised.
func (k *kernel) run(ctx context.Context, code string, opt client.ExecOptions) *client.Result {
	k.t.Helper()
	r, err := k.Execute(ctx, code, opt)
	if err != nil {
		k.t.Fatalf("%q: %v", code, err)
	}
	if r.Status != "ok" {
		k.t.Fatalf("%q: %s: %s", code, r.EName, r.EValue)
	}
	return r
}

// install installs the agent the way Ferry does: a hidden request.
func (k *kernel) install(ctx context.Context, secret string) *client.Result {
	k.t.Helper()
	no := false
	return k.run(ctx, agent.InstallCode(secret, nil), client.ExecOptions{Silent: true, StoreHistory: &no})
}

// comm sends a comm message (comm_open or comm_msg) and returns the comm
// messages the kernel published in answer, buffers included.
func (k *kernel) comm(ctx context.Context, msgType string, content map[string]any, buffers [][]byte) []*wire.Message {
	k.t.Helper()
	m, err := k.Conn().NewMessage(msgType, content)
	if err != nil {
		k.t.Fatal(err)
	}
	m.Buffers = buffers
	var got []*wire.Message
	if err := k.Notify(ctx, m, func(m *wire.Message) {
		if strings.HasPrefix(m.Header.MsgType, "comm_") {
			got = append(got, m)
		}
	}); err != nil {
		k.t.Fatal(err)
	}
	return got
}

// open opens the state comm with secret.
func (k *kernel) open(ctx context.Context, secret string) (string, []*wire.Message) {
	id := wire.NewID()
	return id, k.comm(ctx, "comm_open", map[string]any{"comm_id": id, "target_name": agent.CommTarget, "data": map[string]string{"secret": secret}}, nil)
}

func commData(t *testing.T, m *wire.Message) map[string]any {
	t.Helper()
	var c struct {
		Data map[string]any `json:"data"`
	}
	if err := m.Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c.Data
}

func reportOf(t *testing.T, r *client.Result) agent.Report {
	t.Helper()
	ue, _ := r.Reply["user_expressions"].(map[string]any)
	e, _ := ue[agent.ReportKey].(map[string]any)
	if e["status"] != "ok" {
		t.Fatalf("report expression: %v", e)
	}
	text := e["data"].(map[string]any)["text/plain"].(string)
	var rep agent.Report
	if err := json.Unmarshal([]byte(text), &rep); err != nil {
		t.Fatalf("report %q: %v", text, err)
	}
	return rep
}

// TestHiddenInstallLeavesNoTrace installs the agent in a real ipykernel
// between two user cells and checks the user sees nothing of it: the
// execution count, history, _, Out, dir() and %who are as without it.
func TestHiddenInstallLeavesNoTrace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	k := startKernel(ctx, t)
	first := k.run(ctx, "a = 1\na", client.ExecOptions{})
	if first.Count != 1 {
		t.Fatalf("first cell count %d", first.Count)
	}
	inst := k.install(ctx, "s3cret")
	if len(inst.Outputs) != 0 {
		t.Fatalf("hidden install produced output: %v", inst.Outputs)
	}
	// A comm with the wrong secret is closed; the right one is not.
	_, wrong := k.open(ctx, "guess")
	if len(wrong) != 1 || wrong[0].Header.MsgType != "comm_close" {
		t.Fatalf("a comm with a wrong secret got %v", wrong)
	}
	if _, right := k.open(ctx, "s3cret"); len(right) != 0 {
		t.Fatalf("the right secret got %v", right)
	}
	// The user's next cell, with the post-cell report riding on it.
	r := k.run(ctx, "b = [a]\nprint(sorted(n for n in dir() if not n.startswith('_')), len(In), _, sorted(Out))\n%who",
		client.ExecOptions{UserExpressions: map[string]string{agent.ReportKey: agent.ReportExpr([]string{"b"}, false, false, nil, false)}})
	if r.Count != 2 {
		t.Fatalf("execution count after a hidden install = %d, want 2", r.Count)
	}
	want := "['In', 'Out', 'a', 'b', 'exit', 'get_ipython', 'quit'] 3 1 [1]\na\t b\t \n"
	if got := r.Text(); got != want {
		t.Fatalf("user-visible state after install:\n got %q\nwant %q", got, want)
	}
	rep := reportOf(t, r)
	if _, ok := rep.Changed["b"]; !ok || len(rep.Changed) != 1 || rep.Error != "" {
		t.Fatalf("report after b = [a]: %+v", rep)
	}
	// The report itself leaves no trace either.
	r = k.run(ctx, "print(len(In), _, sorted(Out), [n for n in globals() if 'ferry' in n])", client.ExecOptions{})
	if got := r.Text(); got != "4 1 [1] []\n" || r.Count != 3 {
		t.Fatalf("after the report: %q (count %d)", got, r.Count)
	}
}

// move packs names in src and loads them in dst over the state comms,
// forwarding the chunks the way Ferry does. It returns the bytes sent.
func move(ctx context.Context, t *testing.T, src, dst *kernel, srcComm, dstComm string, names []string) int {
	t.Helper()
	id := wire.NewID()
	out := src.comm(ctx, "comm_msg", map[string]any{"comm_id": srcComm, "data": map[string]any{"op": "pack", "id": id, "names": names, "compress": true}}, nil)
	var packed map[string]any
	sent := 0
	for _, m := range out {
		d := commData(t, m)
		switch d["op"] {
		case "begin", "chunk":
			fw, err := dst.Conn().NewMessage("comm_msg", map[string]any{"comm_id": dstComm, "data": d})
			if err != nil {
				t.Fatal(err)
			}
			fw.Buffers = m.Buffers
			for _, b := range m.Buffers {
				sent += len(b)
			}
			if err := dst.Conn().Send(wire.Shell, fw); err != nil {
				t.Fatal(err)
			}
		case "packed":
			packed = d
		default:
			t.Fatalf("pack answered %v", d)
		}
	}
	if packed == nil {
		t.Fatal("no packed message")
	}
	if u, _ := packed["unmovable"].(map[string]any); len(u) > 0 {
		t.Fatalf("unmovable: %v", u)
	}
	res := dst.comm(ctx, "comm_msg", map[string]any{"comm_id": dstComm, "data": map[string]any{"op": "load", "id": id, "hash": packed["hash"], "chunks": packed["chunks"]}}, nil)
	if len(res) != 1 || commData(t, res[0])["op"] != "loaded" || commData(t, res[0])["hash"] != packed["hash"] {
		t.Fatalf("load answered %v", res)
	}
	return sent
}

// TestMoveBetweenRealKernels moves a group of variables from one real
// ipykernel to another: values, aliases, a lambda, an instance of a class
// defined in the notebook, a 100 MB array, an import alias and the agent.RNG.
func TestMoveBetweenRealKernels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	src, dst := startKernel(ctx, t), startKernel(ctx, t)
	for _, k := range []*kernel{src, dst} {
		k.install(ctx, "pw")
	}
	srcComm, _ := src.open(ctx, "pw")
	dstComm, _ := dst.open(ctx, "pw")
	src.run(ctx, `import random
import numpy as np
k = 10
a = [1, 2]
b = a
d = {"inner": a, "n": None}
sq = lambda v: v * v + k
class P:
    def __init__(self, val):
        self.val = val
    def twice(self):
        return 2 * self.val + k
p = P(3)
big = np.random.default_rng(0).random(100 * 2**20 // 8)
big_sum = float(big.sum())
random.seed(7)
np.random.seed(7)`, client.ExecOptions{})
	names := []string{"np", "k", "a", "b", "d", "sq", "P", "p", "big", "big_sum", agent.RNG}
	t0 := time.Now()
	sent := move(ctx, t, src, dst, srcComm, dstComm, names)
	secs := time.Since(t0).Seconds()
	t.Logf("moved %d names, %.1f MB sent, in %.2fs (%.2f GB/s kernel to kernel through this test)", len(names), float64(sent)/1e6, secs, float64(sent)/1e9/secs)

	// The source's next random numbers are what the target must draw.
	const draw = "print(random.random(), np.random.rand())"
	want := src.run(ctx, draw, client.ExecOptions{}).Text()
	check := `import random
print(a is b, d["inner"] is a, sq(3), p.val, p.twice(), isinstance(p, P), type(p).__name__)
print(big.shape, big.dtype, big.flags.writeable, float(big.sum()) == big_sum, np.__name__)
a.append(3)
print(d["inner"])`
	got := dst.run(ctx, check, client.ExecOptions{}).Text()
	wantCheck := "True True 19 3 16 True P\n(13107200,) float64 True True numpy\n[1, 2, 3]\n"
	if got != wantCheck {
		t.Fatalf("after the move:\n got %q\nwant %q", got, wantCheck)
	}
	if got := dst.run(ctx, draw, client.ExecOptions{}).Text(); got != want {
		t.Fatalf("random numbers after moving the agent.RNG state: got %q, want %q", got, want)
	}
	// A tampered payload is refused and loads nothing.
	id := wire.NewID()
	for _, d := range []map[string]any{
		{"op": "begin", "id": id, "raw_size": 3},
	} {
		dst.comm(ctx, "comm_msg", map[string]any{"comm_id": dstComm, "data": d}, nil)
	}
	dst.comm(ctx, "comm_msg", map[string]any{"comm_id": dstComm, "data": map[string]any{"op": "chunk", "id": id, "seq": 0, "z": false, "raw": 3}}, [][]byte{[]byte("abc")})
	res := dst.comm(ctx, "comm_msg", map[string]any{"comm_id": dstComm, "data": map[string]any{"op": "load", "id": id, "hash": strings.Repeat("0", 64), "chunks": 1}}, nil)
	if len(res) != 1 || commData(t, res[0])["op"] != "error" {
		t.Fatalf("tampered payload: %v", res)
	}
}

// TestDumpSessionSizeInKernel measures the baseline in a real kernel.
func TestDumpSessionSizeInKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	k := startKernel(ctx, t)
	k.install(ctx, "x")
	k.run(ctx, "import numpy as np\nx = np.zeros(1 << 20)", client.ExecOptions{})
	r := k.run(ctx, "", client.ExecOptions{UserExpressions: map[string]string{"d": agent.DumpSessionExpr}})
	ue := r.Reply["user_expressions"].(map[string]any)["d"].(map[string]any)
	text, _ := ue["data"].(map[string]any)["text/plain"].(string)
	var d struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
		Error   string  `json:"error"`
	}
	if err := json.Unmarshal([]byte(text), &d); err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	if d.Error != "" || d.Bytes < 8<<20 {
		t.Fatalf("dump_session_size = %+v, want at least the 8 MiB array", d)
	}
}

// BenchmarkSerialise1GB measures the agent on a 1 GiB float64 array in one
// Python process: serialise (pickle 5 with out-of-band buffers, chunking
// and the payload's tree hash: everything before the bytes go on the
// wire), receive (chunks copied in place and hashed, hash checked,
// unpickled into the namespace) and the fingerprint after a cell.
func BenchmarkSerialise1GB(b *testing.B) {
	needPython(b)
	const script = `
import sys, time, json
sys.path.insert(0, ".")
import agent, numpy as np
class Shell:
    def __init__(self):
        self.user_ns, self.user_ns_hidden = {}, {}
src, dst = Shell(), Shell()
src.user_ns["big"] = np.random.default_rng(0).random(1 << 27)
n = src.user_ns["big"].nbytes
agent._shell = src
agent.report()
best = {}
def keep(k, dt):
    best[k] = max(best.get(k, 0), n / dt / 1e9)
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    frames, _, _ = agent.pack(["big"])
    h = agent._Hasher()
    pieces = []
    for z, piece, raw in agent._chunks(frames, False):
        h.update(z, piece)
        pieces.append((z, piece, raw))
    digest = h.hexdigest()
    keep("serialise_GB/s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    agent._shell = dst
    inc = agent._Incoming(sum(r for _, _, r in pieces))
    for z, piece, raw in pieces:
        inc.add(z, piece, raw)
    assert inc.hasher.hexdigest() == digest
    agent.load(inc.blob)
    keep("load_GB/s", time.perf_counter() - t0)
    assert dst.user_ns["big"][-1] == src.user_ns["big"][-1]
    t0 = time.perf_counter()
    agent._content_hash(dst.user_ns["big"])
    keep("fingerprint_GB/s", time.perf_counter() - t0)
    del inc, pieces, frames
    dst.user_ns.clear()
    agent._shell = src
print(json.dumps(best))
`
	b.StopTimer()
	cmd := exec.Command(testenv.Python(), "-c", script, strconv.Itoa(max(b.N, 2)))
	b.StartTimer()
	out, err := cmd.CombinedOutput()
	b.StopTimer()
	if err != nil {
		b.Fatalf("%v\n%s", err, out)
	}
	line := regexp.MustCompile(`\{.*\}`).Find(out)
	var figures map[string]float64
	if err := json.Unmarshal(line, &figures); err != nil {
		b.Fatalf("%s: %v", out, err)
	}
	for k, v := range figures {
		b.ReportMetric(v, k)
	}
	fmt.Fprintf(os.Stderr, "1 GiB float64 array (best of %d): %v\n", max(b.N, 2), figures)
}
