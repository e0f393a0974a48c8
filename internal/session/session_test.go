package session

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/notebook"
)

// Every bundled session script parses and names code cells of its notebook
// whose text its edits find.
func TestBundledSessions(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "bench", "sessions", "*.json"))
	if err != nil || len(paths) < 3 {
		t.Fatalf("want at least 3 bundled session scripts, found %v (%v)", paths, err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			s, err := Load(p)
			if err != nil {
				t.Fatal(err)
			}
			nb, err := notebook.Read(filepath.Join(filepath.Dir(p), s.Notebook))
			if err != nil {
				t.Fatal(err)
			}
			if s.Data != nil {
				if _, err := os.Stat(filepath.Join(filepath.Dir(p), s.Data.Make)); err != nil {
					t.Fatalf("its data maker: %v", err)
				}
			}
			src := map[int]string{}
			reruns := map[int]int{}
			for i, st := range Steps(s) {
				if st.Cell >= len(nb.Cells) || nb.Cells[st.Cell].Type() != "code" {
					t.Fatalf("step %d names cell %d, not a code cell", i+1, st.Cell)
				}
				if _, ok := src[st.Cell]; !ok {
					src[st.Cell] = nb.Cells[st.Cell].Source()
				}
				if st.Old != "" {
					if !strings.Contains(src[st.Cell], st.Old) {
						t.Fatalf("step %d edits %q, which cell %d does not contain", i+1, st.Old, st.Cell)
					}
					src[st.Cell] = strings.Replace(src[st.Cell], st.Old, st.New, 1)
				}
				reruns[st.Cell]++
			}
			hot := false
			for _, n := range reruns {
				hot = hot || n >= 3
			}
			if !hot {
				t.Error("the session re-runs no cell three times: it has no hot spot")
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, body, want string }{
		{"not json", "{", "want {"},
		{"unknown field", `{"notebook": "a", "steps": [{"cell": 1, "thinks": 2}]}`, "unknown field"},
		{"no steps", `{"notebook": "a", "steps": []}`, "has no steps"},
		{"negative", `{"notebook": "a", "steps": [{"cell": -1}]}`, "negative"},
		{"empty edit", `{"notebook": "a", "steps": [{"cell": 1, "edit": {"old": "", "new": "x"}}]}`, "empty"},
		{"data without set", `{"notebook": "a", "data": {"make": "m.py"}, "steps": [{"cell": 1}]}`, `needs both "make"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(p); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
