package files

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRatio: a CSV's estimate is well under half its size, random bytes'
// is the whole (the agent sends them raw), a small or missing file has
// none, and a rewritten file is estimated again.
func TestRatio(t *testing.T) {
	dir := t.TempDir()
	var csv strings.Builder
	for i := 0; csv.Len() < 20<<20; i++ {
		fmt.Fprintf(&csv, "%d,%d.%03d,station_%d,%d\n", i, i%977, i%1000, i%53, (i*7919)%100003)
	}
	noise := make([]byte, 20<<20)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("data.csv", []byte(csv.String()))
	write("noise.bin", noise)
	write("small.txt", []byte(strings.Repeat("a", 1000)))
	tr := New(dir)
	cases := []struct {
		rel      string
		min, max float64
	}{
		{"data.csv", 0.01, 0.5},
		{"noise.bin", 0.99, 1},
		{"small.txt", 0, 0},
		{"missing.csv", 0, 0},
	}
	for _, c := range cases {
		if r := tr.Ratio(c.rel); r < c.min || r > c.max {
			t.Errorf("Ratio(%s) = %.3f, want in [%.2f, %.2f]", c.rel, r, c.min, c.max)
		}
	}
	// The CSV becomes noise: a new size and time, a new estimate.
	write("data.csv", noise[:len(noise)-1])
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "data.csv"), later, later); err != nil {
		t.Fatal(err)
	}
	if r := tr.Ratio("data.csv"); r < 0.99 {
		t.Errorf("Ratio of the rewritten data.csv = %.3f, want the noise's (about 1): the old estimate was kept", r)
	}
}

// BenchmarkRatio: what an estimate of a 200 MB file costs (not cached).
func BenchmarkRatio(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "big.csv")
	var one strings.Builder
	for i := 0; one.Len() < 1<<20; i++ {
		fmt.Fprintf(&one, "%d,%d.%03d,station_%d\n", i, i%977, i%1000, i%53)
	}
	if err := os.WriteFile(p, []byte(strings.Repeat(one.String(), 200)), 0o644); err != nil {
		b.Fatal(err)
	}
	tr := New(dir)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(tr.ratios.seen)
		if tr.Ratio("big.csv") <= 0 {
			b.Fatal("no estimate")
		}
	}
}
