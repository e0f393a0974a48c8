package notebook

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not json", "{", "invalid JSON"},
		{"no nbformat", `{"cells": []}`, `no "nbformat"`},
		{"old nbformat", `{"nbformat": 3, "cells": []}`, "nbformat 3 is not supported"},
		{"no cells", `{"nbformat": 4, "metadata": {}}`, `no "cells"`},
		{"cells not a list", `{"nbformat": 4, "cells": {}}`, "not a list"},
		{"bad cell type", `{"nbformat": 4, "cells": [{"cell_type": "weird", "source": ""}]}`, `cell 1 has cell_type "weird"`},
		{"no source", `{"nbformat": 4, "cells": [{"cell_type": "code"}]}`, "cell 1 has no source"},
		{"null cell", `{"nbformat": 4, "cells": [null]}`, "cell 1 is null"},
		{"cell not an object", `{"nbformat": 4, "cells": [1]}`, "not a list of objects"},
		{"metadata not an object", `{"nbformat": 4, "cells": [], "metadata": []}`, `"metadata" is not an object`},
		{"nbformat not a number", `{"nbformat": "4", "cells": []}`, `"nbformat" is not a number`},
		{"source a number", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": 7}]}`, "cell 1 has no source text"},
		{"a list", `[]`, "invalid JSON"},
		{"nbformat 5", `{"nbformat": 5, "cells": []}`, "nbformat 5 is not supported; convert it with 'jupyter nbconvert --to notebook --nbformat 4'"},
		{"nbformat 4.5", `{"nbformat": 4.5, "cells": []}`, "nbformat 4.5 is not supported"},
		{"nbformat null", `{"nbformat": null, "cells": []}`, `"nbformat" is not a number`},
		{"nbformat huge", `{"nbformat": 1e400, "cells": []}`, `"nbformat" is not a number`},
		{"cells null", `{"nbformat": 4, "cells": null}`, `"cells" is null; want a list of cells`},
		{"no cell_type", `{"nbformat": 4, "cells": [{"source": ""}]}`, "cell 1 has cell_type missing or null; want code, markdown or raw"},
		{"cell_type a number", `{"nbformat": 4, "cells": [{"cell_type": 5, "source": ""}]}`, "cell 1 has cell_type 5;"},
		{"cell_type long", `{"nbformat": 4, "cells": [{"cell_type": "` + strings.Repeat("x", 5000) + `", "source": ""}]}`, `cell_type "xxxxxxxxx`},
		{"source null", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": null}]}`, `cell 1 has no source text ("source" is missing or null; want a string or a list of strings)`},
		{"source an object", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": {"a": 1}}]}`, `"source" is {"a":1}`},
		{"source line a number", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": "x"}, {"cell_type": "code", "source": ["x = ", 5]}]}`, "cell 2 source line 2 is 5, not text"},
		{"source line null", `{"nbformat": 4, "cells": [{"cell_type": "markdown", "source": ["a", null]}]}`, "cell 1 source line 2 is missing or null, not text"},
		{"source line a list", `{"nbformat": 4, "cells": [{"cell_type": "raw", "source": [["a"]]}]}`, `cell 1 source line 1 is ["a"], not text`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line with %q", err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, body string
		sources    []string
	}{
		{"no metadata", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": "x"}]}`, []string{"x"}},
		{"no cells", `{"nbformat": 4, "cells": []}`, nil},
		{"nbformat 4.0", `{"nbformat": 4.0, "nbformat_minor": 2, "cells": []}`, nil},
		{"source as a string", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": "a = 1\nb = 2"}]}`, []string{"a = 1\nb = 2"}},
		{"source as lines", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": ["a = 1\n", "b = 2"]}]}`, []string{"a = 1\nb = 2"}},
		{"source empty list", `{"nbformat": 4, "cells": [{"cell_type": "markdown", "source": []}]}`, []string{""}},
		{"no outputs, id or cell metadata", `{"nbformat": 4, "cells": [{"cell_type": "code", "source": "1"}, {"cell_type": "raw", "source": ""}]}`, []string{"1", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if len(nb.Cells) != len(tt.sources) || nb.Metadata == nil {
				t.Fatalf("%d cells, metadata %v", len(nb.Cells), nb.Metadata)
			}
			for i, want := range tt.sources {
				if got := nb.Cells[i].Source(); got != want {
					t.Errorf("cell %d source %q, want %q", i, got, want)
				}
			}
		})
	}
}

// A 50 MB cell (a pasted data blob) parses, keeps every byte, and writes
// back the same; a notebook of that size is read in well under a second
// or two.
func TestParseHugeCell(t *testing.T) {
	big := strings.Repeat("x = 1  # padding padding padding padding padding\n", 50<<20/50)
	for _, form := range []string{"string", "lines"} {
		t.Run(form, func(t *testing.T) {
			var src any = big
			if form == "lines" {
				src = SplitLines(big)
			}
			b, err := json.Marshal(map[string]any{"nbformat": 4, "nbformat_minor": 5, "metadata": map[string]any{},
				"cells": []any{map[string]any{"cell_type": "code", "source": src, "metadata": map[string]any{}, "outputs": []any{}}}})
			if err != nil {
				t.Fatal(err)
			}
			nb, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if got := nb.Cells[0].Source(); got != big {
				t.Fatalf("a %d-byte cell came back as %d bytes", len(big), len(got))
			}
			out, err := nb.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(out)
			if err != nil || again.Cells[0].Source() != big {
				t.Fatalf("the written notebook does not read back: %v", err)
			}
		})
	}
	t.Run("bad line at the end", func(t *testing.T) {
		var lines []any
		for _, l := range SplitLines(big) {
			lines = append(lines, l)
		}
		lines = append(lines, 5)
		b, _ := json.Marshal(map[string]any{"nbformat": 4, "cells": []any{map[string]any{"cell_type": "code", "source": lines}}})
		_, err := Parse(b)
		if err == nil || strings.Contains(err.Error(), "\n") || len(err.Error()) > 200 || !strings.Contains(err.Error(), "cell 1 source line") {
			t.Fatalf("err = %.300v", err)
		}
	})
}

func TestRoundTripKeepsUnknownFields(t *testing.T) {
	in := `{"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "x"}}, "extra": [1],
	"cells": [{"cell_type": "code", "id": "c1", "source": ["a = 1\n", "a"], "metadata": {"tags": ["t"]}, "outputs": [], "execution_count": null}]}`
	nb, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if nb.Cells[0].Source() != "a = 1\na" {
		t.Fatalf("source %q", nb.Cells[0].Source())
	}
	b, err := nb.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"extra"`, `"id": "c1"`, `"tags"`, `"kernelspec"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("lost %s in %s", want, b)
		}
	}
}

func FuzzParse(f *testing.F) {
	// Real notebooks from the repository, and oddities.
	for _, pattern := range []string{"../../tests/notebooks/*.ipynb", "../../bench/notebooks/*.ipynb", "../../cmd/ferry/demo/*.ipynb"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": "x"}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "markdown", "source": ["a", 1]}], "metadata": null}`))
	f.Add([]byte(`{"nbformat": 4.0, "cells": [{"cell_type": "raw", "source": [], "id": 5, "outputs": {}}], "metadata": {"a": [1e400]}}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": "\u0000\ud800", "execution_count": "x"}], "nbformat": 3}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{}, null, []]}`))
	// Wrong nbformat, missing fields, source forms.
	f.Add([]byte(`{"nbformat": 3, "worksheets": [{"cells": [{"cell_type": "code", "input": "x"}]}]}`))
	f.Add([]byte(`{"nbformat": 5, "cells": []}`))
	f.Add([]byte(`{"nbformat": "4", "cells": []}`))
	f.Add([]byte(`{"nbformat": 4.5, "cells": []}`))
	f.Add([]byte(`{"nbformat": 4}`))
	f.Add([]byte(`{"cells": [{"cell_type": "code", "source": "x"}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code"}, {"source": "x"}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": ["a\n", "b"]}, {"cell_type": "code", "source": "a\nb"}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": ["a", null, 1, ["b"]]}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `, "source": ""}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": "` + strings.Repeat("y", 100000) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		nb, err := Parse(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		for i, c := range nb.Cells {
			_ = c.Source()
			_ = c.ID(i)
		}
		out, err := nb.Marshal()
		if err != nil {
			t.Fatalf("parsed notebook does not marshal: %v", err)
		}
		// What ferry run writes, it reads back the same.
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("a written notebook does not parse: %v\n%s", err, out)
		}
		if len(again.Cells) != len(nb.Cells) {
			t.Fatalf("%d cells became %d", len(nb.Cells), len(again.Cells))
		}
		for i := range nb.Cells {
			if a, b := nb.Cells[i], again.Cells[i]; a.Type() != b.Type() || a.Source() != b.Source() || a.ID(i) != b.ID(i) {
				t.Fatalf("cell %d changed: %q %q became %q %q", i, a.Type(), a.Source(), b.Type(), b.Source())
			}
		}
	})
}

// A notebook built from code reads back as the same nbformat 4 cells.
func TestFromCode(t *testing.T) {
	b, err := FromCode("x = 1", "print(x)\n").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	nb, err := Parse(b)
	if err != nil {
		t.Fatalf("FromCode made a notebook Parse refuses: %v\n%s", err, b)
	}
	if len(nb.Cells) != 2 || nb.Cells[0].Type() != "code" || nb.Cells[1].Source() != "print(x)\n" {
		t.Fatalf("got cells %v", nb.Cells)
	}
	if !strings.Contains(string(b), `"nbformat": 4`) || !strings.Contains(string(b), `"nbformat_minor": 5`) {
		t.Fatalf("no nbformat 4.5 header:\n%s", b)
	}
}
