package trace

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t.jsonl")
	w, err := Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := w.Add(Event{Seq: i, Cell: "c", Loc: "local", Reads: []string{"x"}, Sizes: map[string]int64{"x": 3}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadFile(p)
	if err != nil || len(evs) != 3 || evs[2].Seq != 2 || evs[0].Sizes["x"] != 3 {
		t.Fatalf("read %v, %v", evs, err)
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"empty", "", "trace is empty"},
		{"not json", "{", "trace line 1"},
		{"bad loc", `{"cell":"c","loc":"moon"}`, `"loc" is "moon"`},
		{"no cell", `{"loc":"local"}`, `missing "cell"`},
		{"negative", `{"cell":"c","loc":"local","runtime_s":-1}`, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	f.Add(`{"seq":1,"cell":"a","loc":"local","reads":["x"],"sizes":{"x":1}}`)
	f.Fuzz(func(t *testing.T, s string) {
		evs, err := Read(strings.NewReader(s))
		if err == nil && len(evs) == 0 {
			t.Fatal("no error and no events")
		}
	})
}
