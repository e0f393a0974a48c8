package agent

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAgentPython runs the agent's Python unit tests with Debian's
// interpreter (numpy, cloudpickle, IPython are needed).
func TestAgentPython(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s missing: run 'bash scripts/setup.sh'", python)
	}
	out, err := exec.Command(python, "-m", "unittest", "-v", "agent_test").CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("agent tests failed: %v (apt-get install python3-cloudpickle python3-numpy python3-zstandard)", err)
	}
	if !strings.Contains(string(out), "OK") {
		t.Fatal("no OK from unittest")
	}
}

func TestInstallCodeBindsNoName(t *testing.T) {
	code := InstallCode("s")
	if !strings.HasPrefix(code, "(lambda s, t:") || strings.Count(code, "\n") > strings.Count(Source, "\n")+1 {
		t.Fatalf("install code is not a single expression")
	}
	if !strings.Contains(ReportExpr([]string{"a\"b"}, true), `["a\"b"], True`) {
		t.Fatalf("report expression quotes names wrongly: %s", ReportExpr([]string{"a\"b"}, true))
	}
}
