package backend

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestRemoteWorkDir: a kernel started with a WorkDir runs in
// <server root>/<WorkDir>, created with its parents through the Contents
// API, and two backends with different WorkDirs get different directories.
func TestRemoteWorkDir(t *testing.T) {
	s := startServer(t)
	dirs := []string{"ferry/a-1234", "ferry/b-5678"}
	var got []string
	for _, wd := range dirs {
		r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, WorkDir: wd})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		err = r.Start(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Shutdown(context.Background()) })
		out, _ := execute(t, r, "import os; print(os.getcwd())")
		got = append(got, strings.TrimSpace(out))
		if st := r.Status(); st.WorkDir != wd {
			t.Errorf("Status().WorkDir = %q, want %q", st.WorkDir, wd)
		}
	}
	for i, wd := range dirs {
		want, _ := filepath.EvalSymlinks(filepath.Join(s.Dir(), wd))
		if g, _ := filepath.EvalSymlinks(got[i]); g != want {
			t.Errorf("kernel with WorkDir %q runs in %q, want %q", wd, got[i], want)
		}
	}
	if got[0] == got[1] {
		t.Errorf("two WorkDirs, one directory %q", got[0])
	}
}

func TestDefaultWorkDir(t *testing.T) {
	a, b := DefaultWorkDir("/home/u/proj"), DefaultWorkDir("/tmp/x/proj")
	if !strings.HasPrefix(a, "ferry/proj-") || !strings.HasPrefix(b, "ferry/proj-") || a == b {
		t.Errorf("DefaultWorkDir gave %q and %q: want ferry/proj-<hash>, different per directory", a, b)
	}
	if a != DefaultWorkDir("/home/u/proj/") {
		t.Errorf("a trailing slash changed the work dir")
	}
	if d := DefaultWorkDir("/"); d == "ferry/-" || strings.Contains(d, "/.") {
		t.Errorf("DefaultWorkDir(/) = %q", d)
	}
}

// slowKernelspec writes a kernelspec into the server's data directory
// whose kernel sleeps delay before exec'ing ipykernel: a cold node.
func slowKernelspec(t *testing.T, s *JupyterServer, name string, delay time.Duration) {
	t.Helper()
	dir := filepath.Join(s.Dir(), ".data", "kernels", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "slow.sh")
	body := "#!/bin/sh\nsleep " + strconv.Itoa(int(delay.Seconds())) + " || exit 1\nexec " + testenv.Python() + " -m ipykernel_launcher -f \"$1\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `{"argv": ["` + script + `", "{connection_file}"], "display_name": "slow", "language": "python"}`
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRemoteSlowStart: a kernel that takes 25 s to start (over the old
// 20 s dial limit, after which the kernel was deleted and another made)
// is waited for: one kernel is created, the code runs there, and the
// start time is recorded.
func TestRemoteSlowStart(t *testing.T) {
	testenv.SkipIfShort(t, "a kernel that takes 25 s to start")
	s := startServer(t)
	const delay = 25 * time.Second
	slowKernelspec(t, s, "slow", delay)
	r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, KernelName: "slow", WorkDir: "ferry/slow"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	// A first Start that gives up after 3 s leaves the kernel pending.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	err = r.Start(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start cut short after 3 s: %v, want a deadline error", err)
	}
	if st := r.Status(); st.Starting.IsZero() || !strings.HasPrefix(st.State, "starting") {
		t.Fatalf("after a cut-short Start the kernel is not pending: %+v", st)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start of a kernel that takes %s: %v\nserver log:\n%s", delay, err, s.Log())
	}
	ids, err := s.Kernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != r.Status().KernelID {
		t.Fatalf("kernels on the server: %v, want exactly the one Ferry uses (%s)", ids, r.Status().KernelID)
	}
	if n := strings.Count(s.Log(), "Kernel started:"); n != 1 {
		t.Errorf("the server's log shows %d kernel starts, want 1", n)
	}
	if out, _ := execute(t, r, "print(6 * 7)"); strings.TrimSpace(out) != "42" {
		t.Fatalf("the slow kernel printed %q", out)
	}
	if took := r.Status().StartTook; took < delay {
		t.Errorf("recorded start %s, want at least %s", took, delay)
	}
}

// TestRemoteStartTimeout: a kernel still starting when the start timeout
// passes is deleted, and the error says to raise --start-timeout, not
// that the server is unreachable.
func TestRemoteStartTimeout(t *testing.T) {
	testenv.SkipIfShort(t, "waits for a start timeout")
	s := startServer(t)
	slowKernelspec(t, s, "slow", 60*time.Second)
	r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, KernelName: "slow", StartTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	err = r.Start(t.Context())
	if !errors.Is(err, ErrStartTimeout) || !strings.Contains(err.Error(), "--start-timeout") || strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("Start past its timeout: %v, want ErrStartTimeout advising --start-timeout", err)
	}
	ids, err := s.Kernels(t.Context())
	if err != nil || len(ids) != 0 {
		t.Fatalf("kernels left on the server after the timeout: %v (%v)", ids, err)
	}
}

// TestRemoteShutdownWhileStarting: Shutdown during a slow start deletes
// the pending kernel and ends the Start's wait at once.
func TestRemoteShutdownWhileStarting(t *testing.T) {
	testenv.SkipIfShort(t, "a jupyter-server and a slow kernelspec")
	s := startServer(t)
	slowKernelspec(t, s, "slow", 60*time.Second)
	r, err := NewRemote(RemoteConfig{URL: s.URL, Token: s.Token, KernelName: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Start(context.Background()) }()
	deadline := time.Now().Add(30 * time.Second)
	for r.Status().KernelID == "" {
		if time.Now().After(deadline) {
			t.Fatal("no kernel was created within 30 s")
		}
		time.Sleep(50 * time.Millisecond) // bounded polling
	}
	t0 := time.Now()
	if err := r.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errShutDown) {
			t.Errorf("Start ended by Shutdown: %v, want errShutDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start still waits 10 s after Shutdown")
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("Shutdown and the Start's end took %s", d)
	}
	if ids, err := s.Kernels(t.Context()); err != nil || len(ids) != 0 {
		t.Fatalf("kernels left on the server: %v (%v)", ids, err)
	}
}
