package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/files"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
)

// oneVar is planning facts that know each name as the same variable.
type oneVar struct {
	policy.Facts
	v policy.Var
}

func (f oneVar) Var(string) (policy.Var, bool) { return f.v, true }

// TestFileFactsEstimateLaptopFiles: planning sees a compressible laptop
// file's estimated ratio; a file whose newest version is in a cloud (the
// laptop's copy says nothing of it), a variable, or a small file gets
// none, so the link's measured compression prices it.
func TestFileFactsEstimateLaptopFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.csv"), []byte(strings.Repeat("12,34.5,station_7\n", 2<<20/18)), 0o644); err != nil {
		t.Fatal(err)
	}
	tr := files.New(dir)
	laptop := policy.Var{Size: 2 << 20, At: []location.Location{location.Local}, Movable: true}
	cloud := policy.Var{Size: 2 << 20, At: []location.Location{location.Remote}, Movable: true}
	tests := []struct {
		name  string
		v     policy.Var
		known bool
	}{
		{files.Name("data.csv"), laptop, true},
		{files.Name("data.csv"), cloud, false},
		{"df", laptop, false},
		{files.Name("data.csv"), policy.Var{Size: 1000, At: []location.Location{location.Local}}, false},
	}
	for _, tt := range tests {
		v, _ := fileFacts{oneVar{v: tt.v}, tr}.Var(tt.name)
		if known := v.Ratio > 0 && v.Ratio < 0.5; known != tt.known {
			t.Errorf("%s (%d bytes at %v): ratio %.3f, want an estimate: %v", tt.name, tt.v.Size, tt.v.At, v.Ratio, tt.known)
		}
	}
}
