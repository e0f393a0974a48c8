package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ferryBin is the ferry binary built for these tests; the integration tests
// run it as Jupyter would.
var ferryBin string

const python = "/usr/bin/python3"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	out, err := exec.Command("go", "build", "-o", ferryBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building ferry: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// installSpec installs a kernelspec for the test binary under a temporary
// prefix and returns the environment that makes Jupyter find it.
func installSpec(t *testing.T, extra ...string) []string {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s missing: run 'bash scripts/setup.sh'", python)
	}
	prefix := t.TempDir()
	args := append([]string{"install", "--prefix", prefix, "--python", python}, extra...)
	if out, err := exec.Command(ferryBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("ferry install: %v\n%s", err, out)
	}
	return append(os.Environ(), "JUPYTER_PATH="+filepath.Join(prefix, "share", "jupyter"), "JUPYTER_PLATFORM_DIRS=1")
}

func TestConformance(t *testing.T) {
	env := installSpec(t)
	cmd := exec.Command(python, "-m", "unittest", "-v", "test_ferry_kernel")
	cmd.Dir = filepath.Join("..", "..", "tests", "conformance")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("jupyter_kernel_test failed against the ferry kernel: %v (apt-get install python3-jupyter-kernel-test if it is missing)", err)
	}
}
