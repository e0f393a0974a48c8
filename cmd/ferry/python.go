package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
