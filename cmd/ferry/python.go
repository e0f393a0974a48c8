package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
)

// resolvePython finds the interpreter --python names: a bare name through
// PATH, as a shell would, else the path as given. It checks the file
// exists and is executable; its errors name the interpreter and the fix.
func resolvePython(py string) (string, error) {
	fix := "pass --python with an interpreter that has ipykernel (e.g. " + backend.DefaultPython + ")"
	if py == "" {
		return "", errors.New("--python is empty; " + fix)
	}
	if !strings.ContainsRune(py, filepath.Separator) {
		p, err := exec.LookPath(py)
		if err != nil && !errors.Is(err, exec.ErrDot) {
			return "", fmt.Errorf("--python %s: not found in PATH; %s", py, fix)
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return p, nil
	}
	fi, err := os.Stat(py)
	switch {
	case err != nil:
		return "", fmt.Errorf("--python %s: not found; %s", py, fix)
	case fi.IsDir() || fi.Mode()&0o111 == 0:
		return "", fmt.Errorf("--python %s: not executable; %s", py, fix)
	}
	return py, nil
}

// checkPython resolves py and makes sure it imports ipykernel, once,
// before anything runs on it: a broken interpreter then fails a run with
// one message instead of every cell with its own. It returns the
// interpreter's path.
func checkPython(ctx context.Context, py string) (string, error) {
	p, err := resolvePython(py)
	if err != nil {
		return "", err
	}
	name := py
	if p != py {
		name = py + " (" + p + ")"
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, "-c", "import ipykernel")
	cmd.Env = backend.ChildEnv("PYDEVD_DISABLE_FILE_VALIDATION=1") // never the token
	out, err := cmd.CombinedOutput()
	if err != nil {
		why := err.Error()
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[len(lines)-1] != "" {
			why = strings.TrimSpace(lines[len(lines)-1])
		}
		return "", fmt.Errorf("--python %s cannot import ipykernel (%s); install it (Debian: apt-get install python3-ipykernel; else %s -m pip install ipykernel) or pass --python with an interpreter that has it (e.g. %s)",
			name, why, p, backend.DefaultPython)
	}
	return p, nil
}

// kernelspecDirs are where Jupyter looks for kernelspecs, in its order:
// JUPYTER_PATH, the user's data dir, then the system's.
func kernelspecDirs() []string {
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("JUPYTER_PATH")) {
		if d != "" {
			dirs = append(dirs, filepath.Join(d, "kernels"))
		}
	}
	if d := os.Getenv("JUPYTER_DATA_DIR"); d != "" {
		dirs = append(dirs, filepath.Join(d, "kernels"))
	} else if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".local", "share", "jupyter", "kernels"))
	}
	return append(dirs, "/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels")
}

// errKernelspec marks a --kernel-name that names no usable kernelspec.
var errKernelspec = errors.New("kernelspec")

// kernelspecPython returns the interpreter of the installed kernelspec
// name: its argv[0], when the spec runs `PYTHON -m ipykernel_launcher` (or
// ipykernel), the only kind of kernel Ferry drives locally, or the
// --python of a Ferry kernelspec.
func kernelspecPython(name string) (string, error) {
	var found []string
	for _, dir := range kernelspecDirs() {
		b, err := os.ReadFile(filepath.Join(dir, name, "kernel.json"))
		if err != nil {
			if ents, err := os.ReadDir(dir); err == nil {
				for _, e := range ents {
					found = append(found, e.Name())
				}
			}
			continue
		}
		var spec struct {
			Argv []string `json:"argv"`
		}
		if err := json.Unmarshal(b, &spec); err != nil {
			return "", fmt.Errorf("%w %s: %s is not valid JSON (%v)", errKernelspec, name, filepath.Join(dir, name, "kernel.json"), err)
		}
		a := spec.Argv
		if len(a) >= 3 && a[1] == "-m" && (a[2] == "ipykernel_launcher" || a[2] == "ipykernel") {
			return a[0], nil
		}
		// Ferry's own spec (ferry install): the interpreter it runs on.
		if len(a) >= 2 && a[1] == "kernel" {
			if i := slices.Index(a, "--python"); i > 0 && i+1 < len(a) {
				return a[i+1], nil
			}
		}
		return "", fmt.Errorf("%w %s runs %q, not a python -m ipykernel_launcher kernel; pass --python with its interpreter instead", errKernelspec, name, strings.Join(a, " "))
	}
	sort.Strings(found)
	have := "none is installed"
	if len(found) > 0 {
		have = "installed: " + strings.Join(slices.Compact(found), ", ")
	}
	return "", fmt.Errorf("%w %s not found in %s (%s); 'jupyter kernelspec list' shows them", errKernelspec, name, strings.Join(kernelspecDirs(), ", "), have)
}
