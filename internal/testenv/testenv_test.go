package testenv

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestPythonFromEnvironment(t *testing.T) {
	t.Setenv("FERRY_PYTHON", "")
	if got := Python(); got != DefaultPython {
		t.Errorf("Python() = %q without FERRY_PYTHON, want %q", got, DefaultPython)
	}
	t.Setenv("FERRY_PYTHON", "/opt/py/bin/python3")
	if got := Python(); got != "/opt/py/bin/python3" {
		t.Errorf("Python() = %q, want FERRY_PYTHON's /opt/py/bin/python3", got)
	}
}

// A missing interpreter and a missing module both name the fix.
func TestProblemsNameTheFix(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "python3")
	t.Setenv("FERRY_PYTHON", missing)
	err := CheckPython()
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "run: bash scripts/setup.sh (installs python3-ipykernel") {
		t.Errorf("CheckPython with no interpreter at %s: %v", missing, err)
	}

	t.Setenv("FERRY_PYTHON", "")
	RequirePython(t) // the real set-up; the rest of the test needs it
	err = CheckModules("ipykernel", "ferry_no_such_module")
	if err == nil || !strings.Contains(err.Error(), "ferry_no_such_module (ModuleNotFoundError") || strings.Contains(err.Error(), "ipykernel (") || !strings.Contains(err.Error(), Fix) {
		t.Errorf("CheckModules with a missing module: %v", err)
	}
	if err := CheckJupyterServer(); err != nil {
		t.Errorf("CheckJupyterServer on the set-up machine: %v", err)
	}
}

// A missing browser names the Debian package and the install command.
func TestBrowserProblemsNameTheFix(t *testing.T) {
	saved := Browser
	t.Cleanup(func() { Browser = saved })
	Browser.Driver = filepath.Join(t.TempDir(), "chromedriver")
	err := CheckBrowser()
	if err == nil || !strings.Contains(err.Error(), "no "+Browser.Driver+" (Debian: chromium-driver)") || !strings.Contains(err.Error(), BrowserFix) {
		t.Errorf("CheckBrowser without chromedriver: %v", err)
	}
}

// Without jupyterhub or configurable-http-proxy on PATH the hub tests
// fail naming both Debian packages; on the set-up machine they pass.
func TestHubProblemsNameTheFix(t *testing.T) {
	t.Setenv("FERRY_PYTHON", "")
	if err := CheckJupyterHub(); err != nil {
		t.Errorf("CheckJupyterHub on the set-up machine: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	err := CheckJupyterHub()
	if err == nil || !strings.Contains(err.Error(), "no configurable-http-proxy on PATH") || !strings.Contains(err.Error(), "apt-get install jupyterhub node-configurable-http-proxy") {
		t.Errorf("CheckJupyterHub with an empty PATH: %v", err)
	}
}
