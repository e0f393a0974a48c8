package notebook

import (
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
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
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "code", "source": "x"}]}`))
	f.Add([]byte(`{"nbformat": 4, "cells": [{"cell_type": "markdown", "source": ["a", 1]}], "metadata": null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		nb, err := Parse(b)
		if err != nil {
			return
		}
		for _, c := range nb.Cells {
			_ = c.Source()
		}
		if _, err := nb.Marshal(); err != nil {
			t.Fatalf("parsed notebook does not marshal: %v", err)
		}
	})
}
