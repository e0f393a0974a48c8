package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/testenv"
)

// cellText is the stream text of a code cell of an executed notebook.
func cellText(t *testing.T, path string, cell int) string {
	t.Helper()
	nb, err := notebook.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	outs, _ := nb.Cells[cell]["outputs"].([]any)
	for _, o := range outs {
		m, _ := o.(map[string]any)
		switch txt := m["text"].(type) {
		case string:
			b.WriteString(txt)
		case []any:
			for _, l := range txt {
				s, _ := l.(string)
				b.WriteString(s)
			}
		}
	}
	return b.String()
}

// TestRunCwd: ferry run gives the local kernel the notebook's directory
// as its working directory, as nbconvert and papermill do, wherever ferry
// runs from; --cwd overrides it.
func TestRunCwd(t *testing.T) {
	testenv.RequirePython(t)
	nbDir := filepath.Join(t.TempDir(), "project")
	other := t.TempDir()
	if err := os.Mkdir(nbDir, 0o755); err != nil {
		t.Fatal(err)
	}
	nb := writeNotebook(t, nbDir, "nb.ipynb", []string{"import os\nprint(os.getcwd())"})
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"the notebook's directory", nil, nbDir},
		{"--cwd", []string{"--cwd", other}, other},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.ipynb")
			args := append([]string{"run", nb, "-o", out, "--python", testenv.Python()}, tt.args...)
			if code, stderr := ferryCmd(t, ferryEnv(), args...); code != 0 {
				t.Fatalf("ferry run exited %d:\n%s", code, stderr)
			}
			got, _ := filepath.EvalSymlinks(strings.TrimSpace(cellText(t, out, 0)))
			want, _ := filepath.EvalSymlinks(tt.want)
			if got != want {
				t.Fatalf("the kernel's os.getcwd() is %q, want %q", got, want)
			}
		})
	}
	if code, stderr := ferryCmd(t, ferryEnv(), "run", nb, "--cwd", filepath.Join(other, "missing"), "--python", testenv.Python()); code == 0 || !strings.Contains(stderr, "--cwd") {
		t.Fatalf("ferry run --cwd MISSING exited %d:\n%s", code, stderr)
	}
}

func TestParseStartTimeout(t *testing.T) {
	for in, want := range map[string]string{"10m": "10m0s", "90": "1m30s", "2.5": "2.5s", "5m0s": "5m0s"} {
		if d, err := parseStartTimeout(in); err != nil || d.String() != want {
			t.Errorf("parseStartTimeout(%q) = %v, %v; want %s", in, d, err, want)
		}
	}
	for _, in := range []string{"soon", "0", "-1m"} {
		if _, err := parseStartTimeout(in); err == nil || !strings.Contains(err.Error(), "--start-timeout") {
			t.Errorf("parseStartTimeout(%q) = %v, want an error naming --start-timeout", in, err)
		}
	}
}
