package notebook

import (
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
