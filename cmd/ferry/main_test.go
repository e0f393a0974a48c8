package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// ferryBin is the ferry binary built for these tests; the integration tests
// run it as Jupyter would.
var ferryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	// No test reads or writes the user's calibration cache: every session
	// measures afresh unless a test points it at a file of its own.
	os.Setenv("FERRY_CALIBRATION_CACHE", "off")
	// Nor what the user's sessions learnt of cells: a test's placement
	// must not depend on an earlier run.
	os.Setenv("FERRY_RECALL", "off")
	out, err := exec.Command("go", "build", "-o", ferryBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building ferry: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	stopTestHub()
	os.RemoveAll(dir)
	os.Exit(code)
}

// installSpec installs the "ferry" kernelspec for the test binary under a
// temporary prefix and returns the environment that makes Jupyter find it
// first. It checks that Jupyter resolves "ferry" to this binary, so no test
// ever runs a stale kernelspec installed on the machine.
func installSpec(t *testing.T, extra ...string) []string {
	t.Helper()
	testenv.RequirePython(t)
	prefix := t.TempDir()
	args := append([]string{"install", "--prefix", prefix, "--python", testenv.Python()}, extra...)
	if out, err := exec.Command(ferryBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("ferry install: %v\n%s", err, out)
	}
	env := append(os.Environ(), "JUPYTER_PATH="+filepath.Join(prefix, "share", "jupyter"), "JUPYTER_PLATFORM_DIRS=1")
	cmd := exec.Command(testenv.Python(), "-m", "jupyter_client.kernelspecapp", "list", "--json")
	cmd.Env = append(env, "PYDEVD_DISABLE_FILE_VALIDATION=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jupyter kernelspec list: %v (apt-get install python3-jupyter-client)", err)
	}
	var specs struct {
		Kernelspecs map[string]struct {
			ResourceDir string `json:"resource_dir"`
			Spec        struct {
				Argv []string `json:"argv"`
			} `json:"spec"`
		} `json:"kernelspecs"`
	}
	if err := json.Unmarshal(out, &specs); err != nil {
		t.Fatalf("jupyter kernelspec list printed %q: %v", out, err)
	}
	ks, ok := specs.Kernelspecs["ferry"]
	if !ok || !strings.HasPrefix(ks.ResourceDir, prefix) || len(ks.Spec.Argv) == 0 || ks.Spec.Argv[0] != ferryBin {
		t.Fatalf("Jupyter resolves the ferry kernelspec to %s running %v, want the one just installed in %s running %s", ks.ResourceDir, ks.Spec.Argv, prefix, ferryBin)
	}
	return env
}

var ranRE = regexp.MustCompile(`(?m)^Ran (\d+) tests? in`)

// The Jupyter project's conformance suite, jupyter_kernel_test, against the
// ferry kernelspec of the binary just built. Every test applies to a
// Python kernel, so none may be skipped.
func TestConformance(t *testing.T) {
	testenv.SkipIfShort(t, "the jupyter_kernel_test conformance suite on real kernels, 13 s")
	env := installSpec(t)
	cmd := exec.Command(testenv.Python(), "-m", "unittest", "-v", "test_ferry_kernel")
	cmd.Dir = filepath.Join("..", "..", "tests", "conformance")
	cmd.Env = append(env, "FERRY_TEST_BINARY="+ferryBin, "PYDEVD_DISABLE_FILE_VALIDATION=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No module named 'jupyter_kernel_test'") {
			t.Fatal("jupyter_kernel_test missing: apt-get install python3-jupyter-kernel-test")
		}
		t.Fatalf("jupyter_kernel_test failed against the ferry kernel: %v\n%s", err, out)
	}
	m := ranRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no test count in the output:\n%s", out)
	}
	if n, _ := strconv.Atoi(string(m[1])); n < 13 {
		t.Errorf("ran %d tests, want the suite's 12 and the identity check:\n%s", n, out)
	}
	if strings.Contains(string(out), "skipped") {
		t.Errorf("tests were skipped; fill in the fields they need:\n%s", out)
	}
	t.Logf("%s", out)
}
