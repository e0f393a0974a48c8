// Package testenv is what the tests know about the machine they run on:
// which Python interpreter has the Jupyter stack, and whether it really
// does. A test that needs a piece of the set-up asks for it here and
// fails, not skips, with the one command that fixes it, so a machine set
// up wrong never reports a pass it did not earn.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// DefaultPython is the Debian interpreter that has the Jupyter packages
// scripts/setup.sh installs.
const DefaultPython = "/usr/bin/python3"

// Fix is what to run when the set-up is missing or incomplete.
const Fix = "run: bash scripts/setup.sh (installs python3-ipykernel, python3-jupyter-client, jupyter-server and the rest of the Debian packages the tests use)"

// Python is the interpreter the tests run kernels, servers and helper
// scripts on: $FERRY_PYTHON if set, else DefaultPython.
func Python() string {
	if p := os.Getenv("FERRY_PYTHON"); p != "" {
		return p
	}
	return DefaultPython
}

// debianPackage names the Debian package that provides a Python module.
var debianPackage = map[string]string{
	"ipykernel":      "python3-ipykernel",
	"jupyter_client": "python3-jupyter-client",
	"jupyter_server": "python3-jupyter-server",
	"jupyterhub":     "jupyterhub",
	"notebook":       "jupyter-notebook",
	"selenium":       "python3-selenium",
	"ipywidgets":     "python3-ipywidgets",
	"matplotlib":     "python3-matplotlib",
	"numpy":          "python3-numpy",
	"pandas":         "python3-pandas",
	"sympy":          "python3-sympy",
}

var (
	mu      sync.Mutex
	checked = map[string]error{} // interpreter and modules -> result
)

// CheckModules reports whether Python() exists and imports every module,
// as an error that says what is missing and how to fix it. Each
// interpreter and module list is checked once per test binary.
func CheckModules(modules ...string) error {
	py := Python()
	key := py + "\x00" + strings.Join(modules, ",")
	mu.Lock()
	defer mu.Unlock()
	if err, ok := checked[key]; ok {
		return err
	}
	err := checkModules(py, modules)
	checked[key] = err
	return err
}

func checkModules(py string, modules []string) error {
	if _, err := os.Stat(py); err != nil {
		return fmt.Errorf("no Python interpreter at %s (FERRY_PYTHON, else %s): %v; %s", py, DefaultPython, err, Fix)
	}
	// Import each module for real, so a broken install fails here and not
	// deep inside a test; report every missing one, not the first.
	script := "import importlib, sys\nbad = []\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n    except Exception as e:\n        bad.append('%s (%s: %s)' % (m, type(e).__name__, e))\nif bad:\n    print('; '.join(bad))\n    sys.exit(1)\n"
	cmd := exec.Command(py, append([]string{"-c", script}, modules...)...)
	cmd.Env = append(os.Environ(), "PYDEVD_DISABLE_FILE_VALIDATION=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		var pkgs []string
		for _, m := range modules {
			if p, ok := debianPackage[m]; ok && strings.Contains(string(out), m+" (") {
				pkgs = append(pkgs, p)
			}
		}
		missing := strings.TrimSpace(string(out))
		if missing == "" {
			missing = err.Error()
		}
		hint := ""
		if len(pkgs) > 0 {
			hint = " (Debian: " + strings.Join(pkgs, " ") + ")"
		}
		return fmt.Errorf("%s cannot import what the tests need: %s%s; %s", py, missing, hint, Fix)
	}
	return nil
}

// CheckPython is CheckModules for a kernel: ipykernel and jupyter_client.
// For TestMain, which has no testing.TB.
func CheckPython() error { return CheckModules("ipykernel", "jupyter_client") }

// CheckJupyterServer is CheckPython and jupyter_server, for tests that
// start a jupyter-server. For TestMain, which has no testing.TB.
func CheckJupyterServer() error {
	return CheckModules("ipykernel", "jupyter_client", "jupyter_server")
}

// RequirePython fails the test unless Python() exists and imports
// ipykernel and jupyter_client, and any extra modules the test needs.
func RequirePython(t testing.TB, extra ...string) {
	t.Helper()
	if err := CheckModules(append([]string{"ipykernel", "jupyter_client"}, extra...)...); err != nil {
		t.Fatal(err)
	}
}

// RequireJupyterServer fails the test unless Python() can also run
// jupyter-server.
func RequireJupyterServer(t testing.TB) {
	t.Helper()
	if err := CheckJupyterServer(); err != nil {
		t.Fatal(err)
	}
}

// HubFix is the command that installs what the JupyterHub tests need.
const HubFix = "apt-get install jupyterhub node-configurable-http-proxy (or run: bash scripts/setup.sh)"

// CheckJupyterHub reports whether Debian's jupyterhub and
// configurable-http-proxy are installed and Python() runs jupyter-server
// and imports jupyterhub (its singleuser server), as one error naming
// everything missing and the fix.
func CheckJupyterHub() error {
	var bad []string
	if err := CheckModules("ipykernel", "jupyter_client", "jupyter_server", "jupyterhub"); err != nil {
		bad = append(bad, err.Error())
	}
	for _, bin := range []string{"jupyterhub", "configurable-http-proxy"} {
		if _, err := exec.LookPath(bin); err != nil {
			bad = append(bad, "no "+bin+" on PATH")
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the JupyterHub tests cannot run: %s; %s", strings.Join(bad, "; "), HubFix)
	}
	return nil
}

// RequireJupyterHub fails the test unless CheckJupyterHub passes.
func RequireJupyterHub(t testing.TB) {
	t.Helper()
	if err := CheckJupyterHub(); err != nil {
		t.Fatal(err)
	}
}

// Browser is what the browser test (internal/browser) drives: Debian's
// Chromium and its WebDriver.
var Browser = struct{ Chromium, Driver string }{"/usr/bin/chromium", "/usr/bin/chromedriver"}

// BrowserFix is the command that installs what the browser test needs.
const BrowserFix = "apt-get install jupyter-notebook python3-selenium chromium chromium-driver python3-ipywidgets python3-matplotlib (or run: bash scripts/setup.sh)"

// CheckBrowser reports whether the classic Notebook, selenium, ipywidgets
// and matplotlib import on Python() and Chromium and chromedriver are
// installed, as one error naming everything missing and the fix.
func CheckBrowser() error {
	var bad []string
	if err := CheckModules("ipykernel", "jupyter_client", "notebook", "selenium", "ipywidgets", "matplotlib"); err != nil {
		bad = append(bad, err.Error())
	}
	for _, p := range []struct{ path, pkg string }{{Browser.Chromium, "chromium"}, {Browser.Driver, "chromium-driver"}} {
		if _, err := os.Stat(p.path); err != nil {
			bad = append(bad, fmt.Sprintf("no %s (Debian: %s)", p.path, p.pkg))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the browser test cannot run: %s; %s", strings.Join(bad, "; "), BrowserFix)
	}
	return nil
}

// RequireBrowser fails the test unless CheckBrowser passes.
func RequireBrowser(t testing.TB) {
	t.Helper()
	if err := CheckBrowser(); err != nil {
		t.Fatal(err)
	}
}

// RequireRoot skips the test, loudly, unless it runs as root: what says
// what needs root (network namespaces, tc, cgroups). CI runs as root, so
// there these tests always run.
func RequireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("LOUD SKIP: %s need root; CI runs as root", what)
	}
}

// SkipIfShort skips a slow integration test under go test -short (the
// dev loop, make test-short), saying loudly why and where it does run:
// why is what makes it slow and about how long it takes, e.g. "real
// kernels and a jupyter-server, 25 s".
func SkipIfShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("slow integration suite (%s): runs in full under make test", why)
	}
}
