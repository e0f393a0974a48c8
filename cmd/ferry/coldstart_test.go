package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestColdCloudStartThroughFerry: a cloud kernel that takes 25 s to start
// (over the old 20 s dial limit, after which Ferry reported the server
// unreachable, deleted the kernel and made another for the next cell:
// four kernels for two cells) is waited for and announced in the cell;
// two cells use one kernel, which runs in its own working directory.
func TestColdCloudStartThroughFerry(t *testing.T) {
	testenv.SkipIfShort(t, "a cloud kernel that takes 25 s to start")
	s := startJupyterServer(t)
	const delay = 25
	dir := filepath.Join(s.Dir(), ".data", "kernels", "slow")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "slow.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep "+strconv.Itoa(delay)+" || exit 1\nexec "+testenv.Python()+" -m ipykernel_launcher -f \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := `{"argv": [` + toJSON(script) + `, "{connection_file}"], "display_name": "slow", "language": "python"}`
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRY_TOKEN", s.Token)
	k := startKernel(t, "--remote", s.URL, "--remote-kernel", "slow")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := k.c.Execute(ctx, "%%ferry remote\nimport os\nprint(os.getcwd())", client.ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr string
	for _, o := range r.Outputs {
		switch o["name"] {
		case "stdout":
			stdout += o["text"].(string)
		case "stderr":
			stderr += o["text"].(string)
		}
	}
	if r.Status != "ok" {
		t.Fatalf("the first cloud cell: %s %s\n%s", r.Status, r.Text(), s.Log())
	}
	for _, want := range []string{"Ferry: starting the cloud kernel…", "Ferry: still starting the cloud kernel (", "Ferry: the cloud kernel started in "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the cell's stderr lacks %q:\n%s", want, stderr)
		}
	}
	wd, _ := os.Getwd()
	want, _ := filepath.EvalSymlinks(filepath.Join(s.Dir(), backend.DefaultWorkDir(wd)))
	if got, _ := filepath.EvalSymlinks(strings.TrimSpace(stdout)); got != want {
		t.Errorf("the cloud kernel runs in %q, want %q", stdout, want)
	}
	if got := k.exec(t, "%%ferry remote\nprint(6 * 7)", client.ExecOptions{}).Text(); got != "42\n" {
		t.Fatalf("the second cloud cell printed %q", got)
	}
	ids, err := s.Kernels(ctx)
	if err != nil || len(ids) != 1 {
		t.Fatalf("kernels on the server after two cells: %v (%v), want one", ids, err)
	}
	if st := k.exec(t, "%ferry status", client.ExecOptions{}).Text(); !strings.Contains(st, "working dir "+backend.DefaultWorkDir(wd)) {
		t.Errorf("%%ferry status does not show the cloud kernel's working directory:\n%s", st)
	}
}
