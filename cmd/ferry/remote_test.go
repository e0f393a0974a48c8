package main

import (
	"context"
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
