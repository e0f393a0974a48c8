package load

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

const (
	floodLines = 100_000 // (a) many small messages
	floodMB    = 200     // (b) this many 1 MiB prints
	// A following cell must run "at once": well under this, even on a
	// loaded 2-core machine (it takes a few ms when idle).
	afterLimit = 3 * time.Second
	// The Ferry process's resident memory during a flood may grow by at
	// most this much: well below the 210 MB of output, so Ferry relays
	// output as it comes instead of piling it up (measured: +20 to +75 MB,
	// the Go heap's slack over the few messages in flight included; +290
	// MB once in CI, when the relay fell behind a 1 MiB flood and its
	// unbounded IOPub queue took it all in: wire.BoundInput now pushes
	// back, +29 MB).
	floodRSSLimit = 128 << 20
)

// floodCount is what the front end received of one flood cell.
type floodCount struct {
	msgs     int    // stdout stream messages
	bytes    int64  // stdout text bytes
	lines    int    // complete stdout lines
	next     int    // (a) the number the next line must carry
	gaps     int    // (a) numbers skipped
	bad      string // (a) first malformed or out-of-order line
	badAfter bool   // bad came after output was lost (a rate notice, or a gap)
	notice   string // jupyter-server's "IOPub ... rate exceeded" notice, if relayed
	partial  strings.Builder
	errors   []string // error outputs
}

// feed takes one stream message's text; with numbers set, every line must
// be the next integer (or a later one, counted as a gap).
func (c *floodCount) feed(name, text string, numbers bool) {
	if name == "stderr" {
		if strings.Contains(text, "IOPub message rate exceeded") || strings.Contains(text, "IOPub data rate exceeded") {
			if c.notice == "" {
				c.notice = strings.SplitN(strings.TrimSpace(text), "\n", 2)[0]
			}
		}
		return
	}
	c.msgs++
	c.bytes += int64(len(text))
	if !numbers {
		c.lines += strings.Count(text, "\n")
		return
	}
	c.partial.WriteString(text)
	buf := c.partial.String()
	c.partial.Reset()
	for {
		line, rest, ok := strings.Cut(buf, "\n")
		if !ok {
			c.partial.WriteString(buf)
			return
		}
		buf = rest
		c.lines++
		n, err := strconv.Atoi(line)
		switch {
		case line == "":
			// A print's number and newline are two writes and may leave
			// the kernel as two messages; one dropping messages at its
			// high-water mark can lose the number and keep the newline
			// (seen in CI): that number is lost, not reordered.
			c.gaps++
			c.next++
		case err != nil || n < c.next:
			// Once messages were lost, a print's number and its newline
			// may have travelled apart: lines are garbled, not reordered.
			if c.bad == "" {
				c.bad = fmt.Sprintf("line %d is %q, want %d", c.lines, line, c.next)
				c.badAfter = c.notice != "" || c.gaps > 0
			}
		case n > c.next:
			c.gaps += n - c.next
			c.next = n + 1
		default:
			c.next++
		}
	}
}

// runFlood executes code through the raw protocol (the client keeps no
// outputs), counting what arrives.
func runFlood(ctx context.Context, cl *client.Client, code string, numbers bool) (*floodCount, time.Duration, error) {
	m, err := cl.Conn().NewMessage("execute_request", map[string]any{"code": code, "silent": false, "store_history": true,
		"user_expressions": map[string]any{}, "allow_stdin": false, "stop_on_error": true})
	if err != nil {
		return nil, 0, err
	}
	c := &floodCount{}
	t0 := time.Now()
	reply, err := cl.Exchange(ctx, wire.Shell, m, func(msg *wire.Message) {
		switch msg.Header.MsgType {
		case "stream":
			var s struct {
				Name string `json:"name"`
				Text string `json:"text"`
			}
			if msg.Decode(&s) == nil {
				c.feed(s.Name, s.Text, numbers)
			}
		case "error":
			var e struct {
				EName  string `json:"ename"`
				EValue string `json:"evalue"`
			}
			_ = msg.Decode(&e)
			c.errors = append(c.errors, e.EName+": "+e.EValue)
		}
	}, true)
	d := time.Since(t0)
	if err != nil {
		return c, d, err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := reply.Decode(&st); err != nil || st.Status != "ok" {
		return c, d, fmt.Errorf("flood cell answered status %q (%v), errors %v", st.Status, err, c.errors)
	}
	return c, d, nil
}

// delivery says what a flood case may lose.
type delivery int

const (
	// all: every message must reach the front end, in order.
	all delivery = iota
	// allOrNotice: all of it, or the server's rate notice must be relayed
	// (what was delivered before the notice in order).
	allOrNotice
	// lossy: the kernel's own IOPub socket may drop messages past ZeroMQ's
	// high-water mark when the server falls behind, without any notice;
	// the cell must still complete.
	lossy
)

type floodCase struct {
	loc     string // local or remote
	numbers bool   // (a) 100k numbered lines, else (b) 200 MiB
	want    delivery
}

func (fc floodCase) code() string {
	if fc.numbers {
		return fmt.Sprintf("%%%%ferry %s\nfor i in range(%d):\n    print(i, flush=True)", fc.loc, floodLines)
	}
	return fmt.Sprintf("%%%%ferry %s\ns = 'x' * ((1 << 20) - 1)\nfor i in range(%d):\n    print(s, flush=True)", fc.loc, floodMB)
}

func (fc floodCase) name() string {
	if fc.numbers {
		return fmt.Sprintf("%s %dk prints", fc.loc, floodLines/1000)
	}
	return fmt.Sprintf("%s %d x 1 MiB prints", fc.loc, floodMB)
}

// check says what is wrong with what arrived, or "".
func (fc floodCase) check(c *floodCount) string {
	if len(c.errors) > 0 {
		return fmt.Sprintf("error outputs %v", c.errors)
	}
	var complete bool
	if fc.numbers {
		complete = c.bad == "" && c.lines == floodLines && c.next == floodLines && c.gaps == 0 && c.partial.Len() == 0
	} else {
		complete = c.bytes == int64(floodMB)<<20 && c.lines == floodMB
	}
	lost := fmt.Sprintf("%d lines (%d numbers skipped), %d bytes, notice %q", c.lines, c.gaps, c.bytes, c.notice)
	switch {
	case complete && c.notice != "":
		return "everything arrived, yet a rate notice was shown: " + c.notice
	case complete:
		return ""
	case c.bad != "" && !c.badAfter:
		return "out of order or malformed before any loss: " + c.bad
	case fc.want == all:
		return "output lost: " + lost
	case fc.want == allOrNotice && c.notice == "":
		return "output lost without jupyter-server's rate notice: " + lost
	case c.lines > floodLines || c.bytes > int64(floodMB)<<20:
		return "more output than the cell printed: " + lost
	}
	return ""
}

var (
	buildOnce sync.Once
	ferryBin  string
	buildErr  error
)

// buildFerry builds bin/ferry once for the tests that run Ferry in its own
// process.
func buildFerry(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-load-")
		if err != nil {
			buildErr = err
			return
		}
		ferryBin = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-o", ferryBin, "github.com/ferry-nb/ferry/cmd/ferry").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building ferry: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ferryBin
}

// ferryProc is `ferry kernel --remote URL` in its own process, as Jupyter
// runs it, so its memory is its own and not the test front end's.
type ferryProc struct {
	cmd    *exec.Cmd
	c      *client.Client
	exited chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (p *ferryProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stderr.Len() < 1<<20 {
		p.stderr.Write(b)
	}
	return len(b), nil
}

func startFerryProc(ctx context.Context, t *testing.T, srv *backend.JupyterServer) *ferryProc {
	t.Helper()
	bin := buildFerry(t)
	info, err := wire.NewLocalConnInfo()
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(t.TempDir(), "kernel.json")
	if err := info.Write(cf); err != nil {
		t.Fatal(err)
	}
	p := &ferryProc{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "kernel", "-f", cf, "--python", testenv.Python(), "--remote", srv.URL, "--policy", "local")
	env := []string{"FERRY_TOKEN=" + srv.Token}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "FERRY_") {
			env = append(env, e)
		}
	}
	p.cmd.Env = env
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			p.mu.Lock()
			t.Logf("ferry kernel stderr (tail):\n%s", tail(p.stderr.String(), 4000))
			p.mu.Unlock()
		}
	})
	if p.c, err = client.Connect(info); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.c.Close)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := p.c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// lostIdles counts Ferry's warnings that a backend's idle status never
// came (dropped on the kernel's IOPub socket).
func (p *ferryProc) lostIdles() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Count(p.stderr.String(), "idle status never came")
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var (
	localPIDRe = regexp.MustCompile(`(?m)^local: .*, pid (\d+)`)
	remoteIDRe = regexp.MustCompile(`(?m)^remote: .*, kernel ([0-9a-f-]{36})`)
)

// kernels reads the kernels a Ferry process runs from its %ferry status.
func (p *ferryProc) kernels(ctx context.Context) (kernels, error) {
	r, err := p.c.Execute(ctx, "%ferry status", client.ExecOptions{})
	if err != nil {
		return kernels{}, err
	}
	st := r.Text()
	var k kernels
	if m := localPIDRe.FindStringSubmatch(st); m != nil {
		k.localPID, _ = strconv.Atoi(m[1])
	}
	if m := remoteIDRe.FindStringSubmatch(st); m != nil {
		k.remoteID = m[1]
	}
	if k.localPID == 0 || k.remoteID == "" {
		return k, fmt.Errorf("%%ferry status names no local pid or remote kernel:\n%s", st)
	}
	return k, nil
}

// shutdown asks Ferry to shut down, as Jupyter does, and waits for it to
// exit.
func (p *ferryProc) shutdown(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := p.c.Shutdown(sctx, false)
	select {
	case <-p.exited:
	case <-sctx.Done():
		return fmt.Errorf("ferry kernel did not exit after shutdown_request (reply: %v)", err)
	}
	return err
}

// TestIOPubFlood runs cells that flood IOPub, (a) with 100k small messages
// and (b) with 200 MiB of output, at the local ipykernel and at remote
// kernels on a jupyter-server with its default IOPub rate limits and on
// one without limits, through `ferry kernel` in its own process. The cell
// must complete and the next run at once. The local kernel's output must
// all reach the front end, in order; the remote kernel's too, or, where
// the server's rate limit dropped some, the server's own notice must reach
// the front end. Ferry's memory must stay far below the flood's size.
func TestIOPubFlood(t *testing.T) {
	testenv.SkipIfShort(t, "IOPub floods through real kernels and two jupyter-servers, 2-4 min")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sctx, scancel := context.WithTimeout(ctx, 90*time.Second)
	unlimited, err := backend.StartJupyterServer(sctx, testenv.Python(), 0, "--ServerApp.limit_rate=False")
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	defer unlimited.Stop()

	setups := []struct {
		label string
		srv   *backend.JupyterServer
		cases []floodCase
	}{
		{"jupyter-server with default IOPub rate limits", server, []floodCase{
			{"local", true, all}, {"local", false, all}, {"remote", true, allOrNotice}, {"remote", false, allOrNotice}}},
		{"jupyter-server with --ServerApp.limit_rate=False", unlimited, []floodCase{
			{"remote", true, lossy}, {"remote", false, all}}},
	}
	for _, su := range setups {
		p := startFerryProc(ctx, t, su.srv)
		pid := p.cmd.Process.Pid
		for _, fc := range su.cases {
			// Warm up: the kernel (and Ferry's agent in it) runs.
			if _, err := p.c.Execute(ctx, fmt.Sprintf("%%%%ferry %s\npass", fc.loc), client.ExecOptions{}); err != nil {
				t.Fatal(err)
			}
			base := pidRSS(strconv.Itoa(pid))
			cpu0 := cpuSeconds(pid)
			ms := sampleRSS(pid, 10*time.Millisecond, 6*time.Minute)
			c, d, err := runFlood(ctx, p.c, fc.code(), fc.numbers)
			peak := ms.Stop()
			cpu := cpuSeconds(pid) - cpu0
			if err != nil {
				t.Fatalf("%s (%s): %v", fc.name(), su.label, err)
			}
			t0 := time.Now()
			r, err := p.c.Execute(ctx, fmt.Sprintf("%%%%ferry %s\nprint('after')", fc.loc), client.ExecOptions{})
			after := time.Since(t0)
			if err != nil {
				t.Fatalf("%s (%s): the next cell: %v", fc.name(), su.label, err)
			}
			t.Logf("%s (%s): %d stdout messages, %.1f MB, %d lines in %s (%.0f msgs/s, %.1f MB/s); rate notice %q; idle status lost %d times so far; next cell %s; ferry CPU %.2fs, RSS %.1f MB before, peak %.1f MB (%d samples)",
				fc.name(), su.label, c.msgs, float64(c.bytes)/1e6, c.lines, d.Round(time.Millisecond), float64(c.msgs)/d.Seconds(),
				float64(c.bytes)/1e6/d.Seconds(), c.notice, p.lostIdles(), after.Round(time.Millisecond), cpu, mb(base), mb(peak.RSS), peak.Samples)
			if msg := fc.check(c); msg != "" {
				t.Errorf("%s (%s): %s", fc.name(), su.label, msg)
			}
			if r.Text() != "after\n" || after > afterLimit {
				t.Errorf("%s (%s): the next cell printed %q in %s (limit %s): the kernel stalled", fc.name(), su.label, r.Text(), after, afterLimit)
			}
			if peak.RSS > base+floodRSSLimit {
				t.Errorf("%s (%s): ferry's RSS grew from %.0f MB to %.0f MB during the flood (limit +%d MB)", fc.name(), su.label, mb(base), mb(peak.RSS), floodRSSLimit>>20)
			}
		}
		ks, err := p.kernels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.shutdown(ctx); err != nil {
			t.Error(err)
		}
		checkKernelsGone(t, su.srv, []kernels{ks})
	}
}
