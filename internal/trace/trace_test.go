package trace

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"reflect"
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
		{"bad loc", `{"cell":"c","loc":"Moon!"}`, `"loc" is "Moon!"`},
		{"no cell", `{"loc":"local"}`, `missing "cell"`},
		{"negative", `{"cell":"c","loc":"local","runtime_s":-1}`, "negative"},
		{"negative size", `{"cell":"c","loc":"local","sizes":{"x\ny":-1}}`, `trace line 1: negative size for "x\ny"`},
		{"negative bytes", `{"cell":"c","loc":"remote","bytes_moved":-5}`, "negative"},
		{"second line bad", "{\"cell\":\"c\",\"loc\":\"local\"}\n\n{\"cell\":\"c\",\"loc\":\"\"}", `trace line 3: "loc" is ""`},
		{"two events on a line", `{"cell":"c","loc":"local"} {"cell":"d","loc":"remote"}`, "trace line 1: not a trace event"},
		{"garbage after the event", `{"cell":"c","loc":"local"}xyz`, "trace line 1: not a trace event"},
		{"null", `null`, `trace line 1: missing "cell"`},
		{"a list", `[]`, "trace line 1: not a trace event"},
		{"runtime a string", `{"cell":"c","loc":"local","runtime_s":"1"}`, "trace line 1: not a trace event"},
		{"size beyond int64", `{"cell":"c","loc":"local","sizes":{"x":1e30}}`, "trace line 1: not a trace event"},
		{"only blank lines", "\n  \n\r\n", "trace is empty"},
		{"line too long", `{"cell":"c","loc":"local"}` + "\n" + strings.Repeat("x", 17<<20), "trace line 2: longer than 16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzRead: no input makes the trace reader panic; an error is one line
// naming the line at fault; what it accepts has one valid event per
// non-blank line and reads back the same after Ferry writes it again.
func FuzzRead(f *testing.F) {
	f.Add(`{"seq":1,"cell":"a","loc":"local","reads":["x"],"sizes":{"x":1}}`)
	full := Event{Seq: 3, Cell: "0123456789abcdef", Index: -1, Reads: []string{"x", "é"}, Writes: []string{"y"}, Sizes: map[string]int64{"y": 1 << 40},
		Loc: "remote", Runtime: 1.5, BytesMoved: 7, TransferSeconds: 0.25, Think: 3, Status: "error", Pinned: true, Deterministic: true,
		Why: "unmovable \"g\" (generator)", Moved: []string{"x"}}
	b, _ := json.Marshal(full)
	f.Add(string(b) + "\n" + string(b) + "\r\n\n")
	f.Add(`{"cell":"c","loc":"local"} {"cell":"d","loc":"remote"}`)
	f.Add(`{"cell":"c","loc":"local"}` + "\n" + `{"cell":"c","loc":"moon"}`)
	f.Add(`{"cell":"c","loc":"local","runtime_s":-0,"think_s":1e308,"seq":-1}`)
	f.Add(`{"cell":"c","loc":"local","sizes":{"x":-1}}`)
	f.Add(`{"cell":"c","loc":"local","sizes":null,"reads":null,"moved":[]}`)
	f.Add(`{"cell":"c","LOC":"local","Cell":"d"}`)
	f.Add(`{"cell":"\ud800","loc":"local","why":"\u0000"}`)
	f.Add("null\n[]\n{}")
	f.Add("\n\n\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		evs, err := Read(strings.NewReader(s))
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, "trace line ") && !strings.HasPrefix(msg, "trace is empty") && !strings.HasPrefix(msg, "reading trace") {
				t.Fatalf("error %q names no line", msg)
			}
			if evs != nil {
				t.Fatalf("a rejected trace also gave %d events", len(evs))
			}
			return
		}
		if len(evs) == 0 {
			t.Fatal("no error and no events")
		}
		lines := 0
		for _, l := range strings.Split(s, "\n") {
			if strings.TrimSpace(l) != "" {
				lines++
			}
		}
		if len(evs) != lines {
			t.Fatalf("%d non-blank lines gave %d events", lines, len(evs))
		}
		for i := range evs {
			if err := evs[i].validate(); err != nil {
				t.Fatalf("accepted event %d: %v", i, err)
			}
		}
		// Written again as Ferry writes traces, it reads back the same.
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		for _, e := range evs {
			if err := enc.Encode(e); err != nil {
				t.Fatalf("an accepted event does not encode: %v", err)
			}
		}
		again, err := Read(&out)
		if err != nil {
			t.Fatalf("a written trace does not read back: %v", err)
		}
		// (An empty omitempty list comes back as none: compare as written.)
		j1, _ := json.Marshal(evs)
		j2, _ := json.Marshal(again)
		if !bytes.Equal(j1, j2) || len(evs) != len(again) {
			t.Fatalf("events %s read back as %s", j1, j2)
		}
		for i := range evs {
			if !reflect.DeepEqual(evs[i].Reads, again[i].Reads) || evs[i].Runtime != again[i].Runtime {
				t.Fatalf("event %d: %+v read back as %+v", i, evs[i], again[i])
			}
		}
	})
}

func TestApportion(t *testing.T) {
	for _, c := range []struct {
		name  string
		total int64
		names []string
		est   map[string]int64
		want  map[string]int64
	}{
		{"one value takes it all", 327 << 10, []string{"forest"}, map[string]int64{"forest": 56}, map[string]int64{"forest": 327 << 10}},
		{"by the estimates", 1000, []string{"a", "b"}, map[string]int64{"a": 300, "b": 100}, map[string]int64{"a": 750, "b": 250}},
		{"evenly without estimates", 10, []string{"a", "b", "c"}, nil, map[string]int64{"a": 3, "b": 3, "c": 4}},
		{"nothing moved", 0, []string{"a"}, map[string]int64{"a": 5}, map[string]int64{"a": 0}},
	} {
		got := Apportion(c.total, c.names, c.est)
		var sum int64
		for _, v := range got {
			sum += v
		}
		if sum != c.total || len(got) != len(c.want) {
			t.Errorf("%s: %v sums to %d; want %v", c.name, got, sum, c.want)
			continue
		}
		for n, v := range c.want {
			if got[n] != v {
				t.Errorf("%s: %s got %d bytes; want %d", c.name, n, got[n], v)
			}
		}
	}
}

// A value's size in the trace is the one measured when it moved, for the
// version that moved; a later version keeps its own size.
func TestMeasuredSizesReplaceTheWritersGuess(t *testing.T) {
	evs := []Event{
		{Seq: 1, Cell: "fit", Writes: []string{"model", "n"}, Sizes: map[string]int64{"model": 56, "n": 28}},
		{Seq: 2, Cell: "use", Reads: []string{"model"}, Moved: []string{"model"}, MovedSizes: map[string]int64{"model": 327 << 10}, BytesMoved: 327 << 10},
		{Seq: 3, Cell: "refit", Writes: []string{"model"}, Sizes: map[string]int64{"model": 56}},
	}
	got := Measured(evs)
	if got[0].Sizes["model"] != 327<<10 || got[0].Sizes["n"] != 28 {
		t.Errorf("the writer's sizes are %v; want the model as it moved (327 KiB) and n as written", got[0].Sizes)
	}
	if got[2].Sizes["model"] != 56 {
		t.Errorf("a version that never moved got %d bytes; want its own 56", got[2].Sizes["model"])
	}
	if evs[0].Sizes["model"] != 56 {
		t.Error("Measured changed its argument")
	}
}
