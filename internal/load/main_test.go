package load

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// server is the one jupyter-server standing in for the cloud, started with
// the options StartJupyterServer gives every server Ferry starts (so its
// IOPub rate limits are jupyter-server's defaults).
var server *backend.JupyterServer

func TestMain(m *testing.M) {
	if err := testenv.CheckJupyterServer(); err != nil {
		fmt.Fprintf(os.Stderr, "load tests: %v\n", err)
		os.Exit(1)
	}
	flag.Parse()
	if testing.Short() {
		// Every test here skips under -short (testenv.SkipIfShort), so no
		// server is started; a test that runs under -short must not use it.
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	s, err := backend.StartJupyterServer(ctx, testenv.Python(), 0)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "load tests need jupyter-server: %v (apt-get install jupyter-server)\n", err)
		os.Exit(1)
	}
	server = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// notebook is one Ferry kernel served in this process, with a local
// ipykernel and a kernel on a jupyter-server, as a user's notebook has.
type notebook struct {
	*client.Session
	an     *analysis.Analyzer
	local  *backend.Local
	remote *backend.Remote
	srv    *backend.JupyterServer
}

func startNotebook(ctx context.Context, srv *backend.JupyterServer) (*notebook, error) {
	r, err := backend.NewRemote(backend.RemoteConfig{URL: srv.URL, Token: srv.Token})
	if err != nil {
		return nil, err
	}
	l := backend.NewLocal(testenv.Python())
	an := analysis.New(testenv.Python())
	// Policy "local": cells run where their %%ferry pin says, everything
	// else locally; the remote kernel starts with the first remote cell.
	sess, err := client.StartFerry(ctx, kernel.Config{
		Backends: map[location.Location]backend.Backend{"local": l, "remote": r},
		Policy:   "local", Analyzer: an,
	})
	if err != nil {
		an.Close()
		return nil, err
	}
	return &notebook{Session: sess, an: an, local: l, remote: r, srv: srv}, nil
}

// close shuts the kernel down (both backends with it) and the analysis
// helper.
func (n *notebook) close() error {
	err := n.Session.Close(context.Background())
	n.an.Close()
	return err
}

// exec runs code and fails unless it ran without error.
func (n *notebook) exec(ctx context.Context, code string) (*client.Result, error) {
	r, err := n.Execute(ctx, code, client.ExecOptions{})
	if err != nil {
		return nil, err
	}
	if r.Status != "ok" {
		return r, fmt.Errorf("cell %q: status %s: %s: %s", firstLine(code), r.Status, r.EName, r.EValue)
	}
	return r, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// kernels is what a notebook ran on: the local ipykernel's pid and the
// remote kernel's id and pid (found by its connection file's name).
type kernels struct {
	localPID  int
	remoteID  string
	remotePID int
}

func (n *notebook) kernels() kernels {
	k := kernels{localPID: n.local.Status().PID, remoteID: n.remote.Status().KernelID}
	if k.remoteID != "" {
		if pids := pidsWith("kernel-" + k.remoteID + ".json"); len(pids) == 1 {
			k.remotePID = pids[0]
		}
	}
	return k
}

// pidsWith lists the live (non-zombie) processes whose command line
// contains s.
func pidsWith(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cl, []byte(s)) {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// checkKernelsGone fails unless, within a bounded wait, every kernel
// process is gone and the server lists none of the remote kernels.
func checkKernelsGone(t *testing.T, srv *backend.JupyterServer, ks []kernels) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		for _, k := range ks {
			if k.localPID != 0 && alive(k.localPID) {
				left = append(left, fmt.Sprintf("local ipykernel pid %d", k.localPID))
			}
			if k.remoteID != "" {
				for _, pid := range pidsWith("kernel-" + k.remoteID + ".json") {
					left = append(left, fmt.Sprintf("remote kernel %s pid %d", k.remoteID, pid))
				}
			}
		}
		ids, err := serverKernels(srv)
		if err != nil {
			left = append(left, "listing the server's kernels: "+err.Error())
		}
		for _, k := range ks {
			if ids[k.remoteID] {
				left = append(left, "kernel "+k.remoteID+" still listed by the server")
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after shutdown, within 15s, still there: %s", strings.Join(left, "; "))
		}
		time.Sleep(100 * time.Millisecond) // polling processes: nothing to wait on
	}
}

func serverKernels(srv *backend.JupyterServer) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := srv.Kernels(ctx)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, id := range list {
		ids[id] = true
	}
	return ids, nil
}

// checkGoroutines fails unless the number of goroutines falls back to at
// most before within the wait, printing the stacks of the ones left.
func checkGoroutines(t *testing.T, before int, wait time.Duration) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			t.Logf("goroutines: %d before, %d after shutdown", before, n)
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 8<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines leaked (%d before, %d %s after shutdown); stacks:\n%s", n-before, before, n, wait, buf)
		}
		time.Sleep(50 * time.Millisecond) // goroutines winding down: nothing to wait on
	}
}

// memSampler samples the Go heap and the process's RSS until stopped.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak memPeak
}

type memPeak struct {
	HeapInuse, HeapAlloc, RSS uint64 // bytes
	Samples                   int
}

func (p memPeak) String() string {
	return fmt.Sprintf("peak HeapInuse %.1f MB, peak HeapAlloc %.1f MB, peak RSS %.1f MB (%d samples)",
		mb(p.HeapInuse), mb(p.HeapAlloc), mb(p.RSS), p.Samples)
}

func mb(n uint64) float64 { return float64(n) / 1e6 }

// sampleMem samples this process's Go heap and resident set every
// interval; the sampler also stops by itself after max, so a forgotten
// Stop cannot leak it.
func sampleMem(interval, max time.Duration) *memSampler {
	return sample(interval, max, func(p *memPeak) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p.HeapInuse = maxU(p.HeapInuse, ms.HeapInuse)
		p.HeapAlloc = maxU(p.HeapAlloc, ms.HeapAlloc)
		p.RSS = maxU(p.RSS, processRSS())
	})
}

// sampleRSS samples another process's resident set (HeapInuse and
// HeapAlloc stay 0) until stopped, or for at most max.
func sampleRSS(pid int, interval, max time.Duration) *memSampler {
	id := strconv.Itoa(pid)
	return sample(interval, max, func(p *memPeak) { p.RSS = maxU(p.RSS, pidRSS(id)) })
}

func sample(interval, max time.Duration, read func(*memPeak)) *memSampler {
	s := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		end := time.After(max)
		for {
			s.mu.Lock()
			read(&s.peak)
			s.peak.Samples++
			s.mu.Unlock()
			select {
			case <-t.C:
			case <-s.stop:
				return
			case <-end:
				return
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peaks.
func (s *memSampler) Stop() memPeak {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// processRSS is this process's resident set (Go heap, ZeroMQ's buffers in
// C, everything), from /proc/self/status.
func processRSS() uint64 { return pidRSS("self") }

// pidRSS is the resident set of process pid ("self" for this one).
func pidRSS(pid string) uint64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stacks returns every goroutine's stack, for a timeout's report.
func stacks() string {
	buf := make([]byte, 8<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
