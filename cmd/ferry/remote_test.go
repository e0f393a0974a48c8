package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/testenv"
)

func startJupyterServer(t *testing.T) *backend.JupyterServer {
	t.Helper()
	testenv.RequireJupyterServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := backend.StartJupyterServer(ctx, testenv.Python(), 0)
	if err != nil {
		t.Fatalf("%v (apt-get install jupyter-server)", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// startRemoteKernel runs `ferry kernel --remote URL` with the token in the
// environment, as a kernelspec would.
func startRemoteKernel(t *testing.T, s *backend.JupyterServer) *kernelProc {
	t.Helper()
	t.Setenv("FERRY_TOKEN", s.Token)
	return startKernel(t, "--remote", s.URL)
}

func TestPinnedCellsRunOnBothSides(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 6 s")
	s := startJupyterServer(t)
	k := startRemoteKernel(t, s)
	localPID := k.exec(t, "import os\nprint(os.getpid())", client.ExecOptions{}).Text()
	remotePID := k.exec(t, "%%ferry remote\nimport os\nprint(os.getpid())", client.ExecOptions{}).Text()
	if localPID == "" || localPID == remotePID {
		t.Fatalf("local pid %q, remote pid %q: want two different kernels", localPID, remotePID)
	}
	k.exec(t, "%%ferry remote\ndata = [i * i for i in range(10)]", client.ExecOptions{})
	if got := k.exec(t, "%%ferry local\nprint(sum(data))", client.ExecOptions{}).Text(); got != "285\n" {
		t.Fatalf("a remote result read locally: %q", got)
	}
	st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
	if !strings.Contains(st, "remote: jupyter-server kernel python3 connected") || !strings.Contains(st, s.URL) || strings.Contains(st, s.Token) {
		t.Fatalf("%%ferry status:\n%s", st)
	}
}

func TestRemoteInterruptAndInputThroughFerry(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 6 s")
	s := startJupyterServer(t)
	k := startRemoteKernel(t, s)
	r := k.exec(t, "%%ferry remote\nname = input('name? ')\nprint('hello', name)", client.ExecOptions{Input: func(p string, _ bool) (string, error) {
		if p != "name? " {
			t.Errorf("prompt %q", p)
		}
		return "cloud", nil
	}})
	if r.Stream("stdout") != "hello cloud\n" {
		t.Fatalf("input on the remote: %q", r.Text())
	}
	res := make(chan *client.Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
		defer cancel()
		r, _ := k.c.Execute(ctx, "%%ferry remote\nimport time\ntime.sleep(60)", client.ExecOptions{})
		res <- r
	}()
	time.Sleep(800 * time.Millisecond)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.c.Interrupt(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r == nil || r.EName != "KeyboardInterrupt" {
			t.Fatalf("got %+v, want KeyboardInterrupt", r)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("remote interrupt took %s", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("remote cell not interrupted")
	}
}

func TestRemoteGoneFallsBackToLocal(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server that is stopped, 26 s")
	s := startJupyterServer(t)
	k := startRemoteKernel(t, s)
	k.exec(t, "x = 5", client.ExecOptions{})
	k.exec(t, "%%ferry remote\ny = x + 1", client.ExecOptions{})
	s.Stop() // the cloud goes away
	r := k.exec(t, "%%ferry remote\nprint(y)", client.ExecOptions{})
	if r.Status != "error" || !strings.Contains(r.EValue, "remote") {
		t.Fatalf("a cell pinned to a vanished remote: %+v", r)
	}
	// y lived only in the cloud: Ferry rebuilds it on the laptop.
	got := k.exec(t, "print(x, y)", client.ExecOptions{}).Text()
	if !strings.HasSuffix(got, "5 6\n") || !strings.Contains(got, "rebuilt y on the laptop") {
		t.Fatalf("the session did not go on locally with y rebuilt: %q", got)
	}
}

func TestTokenNeverOnArgvOrInOutput(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 5 s")
	s := startJupyterServer(t)
	k := startRemoteKernel(t, s)
	k.exec(t, "%%ferry remote\nprint(1)", client.ExecOptions{})
	for _, pid := range []int{k.cmd.Process.Pid} {
		b, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "cmdline"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), s.Token) {
			t.Fatal("the token is on ferry's command line")
		}
	}
	out, _ := exec.Command("ps", "axww", "-o", "args").Output()
	if strings.Contains(string(out), s.Token) {
		t.Fatal("the token shows in ps")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestDemo(t *testing.T) {
	testenv.SkipIfShort(t, "ferry demo on real kernels and a jupyter-server, 7 s")
	testenv.RequireJupyterServer(t)
	out, err := exec.Command(ferryBin, "demo", "--python", testenv.Python()).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry demo: %v\n%s", err, out)
	}
	for _, want := range []string{"remote", "local", "trained", "accuracy 0.9", "never left the laptop"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// Several clouds through the command: two named --remote, each with its
// own token from FERRY_TOKEN_NAME (a token given to the wrong server
// would be refused), pins to each by name, a value made at one cloud read
// at the other, status and price per cloud, and a pin to a cloud that is
// not configured refused in one line.
func TestNamedCloudsThroughTheCommand(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and two jupyter-servers, 15 s")
	g, c := startJupyterServer(t), startJupyterServer(t)
	t.Setenv("FERRY_TOKEN", "")
	t.Setenv("FERRY_TOKEN_GPU", g.Token)
	t.Setenv("FERRY_TOKEN_CPU", c.Token)
	k := startKernel(t, "--remote", "gpu="+g.URL, "--remote", "cpu="+c.URL, "--cloud-price", "gpu=2.48,cpu=0.19", "--remote-speed", "gpu=8x,cpu=2x")
	pids := map[string]string{}
	for _, loc := range []string{"local", "gpu", "cpu"} {
		pids[k.exec(t, "%%ferry "+loc+"\nimport os\nprint(os.getpid())", client.ExecOptions{}).Text()] = loc
	}
	if len(pids) != 3 {
		t.Fatalf("pids by location %v: want three kernels", pids)
	}
	k.exec(t, "%%ferry gpu\ndata = [i * i for i in range(10)]", client.ExecOptions{})
	if got := k.exec(t, "%%ferry cpu\ndata.append(-1)\nprint(sum(data))", client.ExecOptions{}).Text(); got != "284\n" {
		t.Fatalf("a gpu value changed at cpu: %q", got)
	}
	if got := k.exec(t, "%%ferry local\nprint(data[-1], len(data))", client.ExecOptions{}).Text(); got != "-1 11\n" {
		t.Fatalf("the cpu change read on the laptop: %q", got)
	}
	st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
	for _, want := range []string{"gpu: jupyter-server kernel python3 connected", "cpu: jupyter-server kernel python3 connected", g.URL, c.URL,
		"gpu: speed ", "x the laptop's, $2.48/h, link model", "x the laptop's, $0.19/h, link model"} {
		if !strings.Contains(st, want) {
			t.Fatalf("%%ferry status lacks %q:\n%s", want, st)
		}
	}
	if strings.Contains(st, g.Token) || strings.Contains(st, c.Token) {
		t.Fatalf("%%ferry status shows a token:\n%s", st)
	}
	r := k.exec(t, "%%ferry tpu\nprint('ran')", client.ExecOptions{})
	if txt := r.Text(); strings.Contains(txt, "ran") || !strings.Contains(txt, "%%ferry tpu: no location of that name is configured; name one of: local, cpu, gpu") {
		t.Fatalf("a pin to an unknown cloud: %q", txt)
	}

	// The same through ferry run: the summary counts cells per location
	// and each cloud's time at its own price.
	dir := t.TempDir()
	nb := writeNotebook(t, dir, "three.ipynb", []string{"%%ferry gpu\nx = [1, 2]", "%%ferry cpu\nx.append(3)", "print(x)"})
	out, sum := filepath.Join(dir, "out.ipynb"), filepath.Join(dir, "summary.json")
	code, stderr := ferryCmd(t, ferryEnv("FERRY_TOKEN_GPU="+g.Token, "FERRY_TOKEN_CPU="+c.Token), "run", nb, "-o", out, "--summary", sum, "--python", testenv.Python(),
		"--remote", "gpu="+g.URL, "--remote", "cpu="+c.URL, "--cloud-price", "gpu=3600,cpu=36")
	if code != 0 {
		t.Fatalf("ferry run over two clouds exited %d:\n%s", code, stderr)
	}
	s := readSummary(t, sum)
	if s.CellsByLocation["gpu"] != 1 || s.CellsByLocation["cpu"] != 1 || s.CellsByLocation["local"] != 1 || s.CellsRemote != 2 {
		t.Fatalf("cells by location %v (remote %d), want one at each", s.CellsByLocation, s.CellsRemote)
	}
	gu, cu := s.Clouds["gpu"], s.Clouds["cpu"]
	if gu.Seconds <= 0 || cu.Seconds <= 0 || gu.USD < 0.99*gu.Seconds || cu.USD > cu.Seconds/50 {
		t.Fatalf("clouds %+v: want each cloud's seconds at its own price ($1/s at gpu, $0.01/s at cpu)", s.Clouds)
	}
	if d := s.CloudCost - (gu.USD + cu.USD); d > 1e-9 || d < -1e-9 {
		t.Fatalf("cloud_cost %.4f is not the clouds' sum %.4f", s.CloudCost, gu.USD+cu.USD)
	}
}

// The cloud's speed is measured, not assumed (issue 16): under --policy
// ferry with no --remote-speed, a cloud never measured is started at
// connect and calibrated; the figures and its start time are kept, so the
// next session knows its speed without starting it, and starts it only
// for a cell placed there.
func TestCalibrationMeasuresTheCloud(t *testing.T) {
	testenv.SkipIfShort(t, "real kernels and a jupyter-server, 15 s")
	s := startJupyterServer(t)
	cache := filepath.Join(t.TempDir(), "calibration.json")
	t.Setenv("FERRY_CALIBRATION_CACHE", cache)
	t.Setenv("FERRY_TOKEN", s.Token)
	k := startKernel(t, "--remote", s.URL, "--policy", "ferry")
	key := s.URL + "|python3"
	var figures map[string]struct {
		Single float64 `json:"single"`
		Start  float64 `json:"start_s"`
	}
	// Both kernels are measured without any cell: bounded wait for the
	// cache file the calibration writes.
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, _ := os.ReadFile(cache)
		figures = nil
		_ = json.Unmarshal(b, &figures)
		if figures[key].Single > 0 && figures["laptop|"+testenv.Python()].Single > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no calibration of both kernels within 90 s; cache: %s\nkernel stderr:\n%s", b, k.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if figures[key].Start <= 0 {
		t.Errorf("the cloud's start time was not kept: %+v", figures[key])
	}
	st := k.exec(t, "%ferry status", client.ExecOptions{}).Text()
	if !strings.Contains(st, "speed: the cloud runs cells") || !strings.Contains(st, "by the calibration") {
		t.Fatalf("%%ferry status does not give the calibrated speed:\n%s", st)
	}
	t.Logf("calibrated: laptop %+v, cloud %+v; %s", figures["laptop|"+testenv.Python()], figures[key], st[strings.Index(st, "speed:"):])
	_ = k.cmd.Process.Kill()
	<-k.exited

	// The next session knows the cloud: it does not start it at connect.
	before, err := s.Kernels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k2 := startKernel(t, "--remote", s.URL, "--policy", "ferry")
	st2 := k2.exec(t, "%ferry status", client.ExecOptions{}).Text()
	if !strings.Contains(st2, "by the calibration") {
		t.Fatalf("the second session did not use the kept calibration:\n%s", st2)
	}
	if strings.Contains(st2, "remote: jupyter-server kernel python3 connected") {
		t.Fatalf("the second session started the cloud kernel with no cell placed there:\n%s", st2)
	}
	after, err := s.Kernels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(after) > len(before) {
		t.Fatalf("kernels on the server went from %d to %d with no cell in the cloud", len(before), len(after))
	}
}
