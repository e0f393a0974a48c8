package notebook

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// -p values are typed and rendered as papermill's CLI and Python
// translator do (the expectations are what papermill writes).
func TestParseValueRendering(t *testing.T) {
	tests := []struct{ in, want string }{
		{"True", "True"},
		{"False", "False"},
		{"None", "None"},
		{"true", `"true"`}, // only Python's spelling is a bool
		{"42", "42"},
		{" 42 ", "42"},
		{"-7", "-7"},
		{"1_000", "1000"},
		{"123456789012345678901234567890", "123456789012345678901234567890"},
		{"0.5", "0.5"},
		{".5", "0.5"},
		{"1.", "1.0"},
		{"1e5", "100000.0"},
		{"1e16", "1e+16"},
		{"1.5e-5", "1.5e-05"},
		{"1_0.5", "10.5"},
		{"inf", "float('inf')"},
		{"-Infinity", "float('-inf')"},
		{"nan", "float('nan')"},
		{"0x10", `"0x10"`},
		{"hello", `"hello"`},
		{`say "hi"\now`, `"say \"hi\"\\now"`},
		{"é日😀\x01", `"\xe9\u65e5\U0001f600\x01"`},
		{"it's", `"it's"`},
		{"", `""`},
	}
	for _, tt := range tests {
		if got := PythonLiteral(ParseValue(tt.in)); got != tt.want {
			t.Errorf("-p x %q renders as %s; want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseYAML(t *testing.T) {
	tests := []struct {
		name, src string
		want      string // the injected cell's source
		err       string
	}{
		{"scalars", "a: 1\nb: 2.5\nc: hello\nd: true\ne: null\nf: 'True'\n",
			"# Parameters\na = 1\nb = 2.5\nc = \"hello\"\nd = True\ne = None\nf = \"True\"\n", ""},
		{"yaml 1.1 booleans as PyYAML reads them", "a: yes\nb: off\nc: 'yes'\n", "# Parameters\na = True\nb = False\nc = \"yes\"\n", ""},
		{"dates stay strings", "day: 2024-01-31\n", "# Parameters\nday = \"2024-01-31\"\n", ""},
		{"nested, in order", "z: [1, two, {k: v}]\na: {y: 1, x: [null]}\n",
			"# Parameters\nz = [1, \"two\", {\"k\": \"v\"}]\na = {\"y\": 1, \"x\": [None]}\n", ""},
		{"numbers", "h: 0x1f\nbig: 123456789012345678901234567890\nf: 1e3\ninf: .inf\n",
			"# Parameters\nh = 31\nbig = 123456789012345678901234567890\nf = 1000.0\ninf = float('inf')\n", ""},
		{"empty", "", "# Parameters\n", ""},
		{"not a mapping", "- a\n- b\n", "", "not a YAML mapping"},
		{"not yaml", "a: [1\n", "", "is not YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p Params
			err := p.ParseYAML([]byte(tt.src), "-y")
			if tt.err != "" {
				if err == nil || !errors.Is(err, ErrParams) || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v; want one line with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Source(); got != tt.want {
				t.Errorf("source\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// Later sources override earlier ones in place, as papermill's dict
// update: -f, then -y, then -p.
func TestParamsOverride(t *testing.T) {
	var p Params
	if err := p.ParseYAML([]byte("a: 1\nb: 2\n"), "-f"); err != nil {
		t.Fatal(err)
	}
	p.Set("a", ParseValue("9"))
	p.Set("c", ParseValue("x"))
	if got, want := p.Source(), "# Parameters\na = 9\nb = 2\nc = \"x\"\n"; got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func tags(c Cell) string {
	md, _ := c["metadata"].(map[string]any)
	return toJSONString(md["tags"])
}

func TestInjectParameters(t *testing.T) {
	tagged := func(src string, tag string) Cell {
		return Cell{"cell_type": "code", "source": src, "metadata": map[string]any{"tags": []any{"x", tag}}, "outputs": []any{}}
	}
	tests := []struct {
		name   string
		cells  []Cell
		at     int
		tagged bool
		n      int
	}{
		{"after the parameters cell", []Cell{FromCode("import os").Cells[0], tagged("alpha = 1", "parameters"), FromCode("print(alpha)").Cells[0]}, 2, true, 4},
		{"at the top without one", FromCode("a = 1", "b = 2").Cells, 0, false, 3},
		{"replacing an earlier injection", []Cell{tagged("alpha = 1", "parameters"), tagged("# Parameters\nalpha = 2\n", "injected-parameters"), FromCode("print(alpha)").Cells[0]}, 1, true, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb := FromCode()
			nb.Cells = tt.cells
			var p Params
			p.Set("alpha", ParseValue("0.5"))
			at, tagged, err := nb.InjectParameters(&p)
			if err != nil {
				t.Fatal(err)
			}
			if at != tt.at || tagged != tt.tagged || len(nb.Cells) != tt.n {
				t.Fatalf("injected at %d (tagged %v) into %d cells; want %d (%v), %d cells", at, tagged, len(nb.Cells), tt.at, tt.tagged, tt.n)
			}
			c := nb.Cells[at]
			if c.Source() != "# Parameters\nalpha = 0.5\n" || tags(c) != `["injected-parameters"]` || c.Type() != "code" {
				t.Errorf("injected cell %v", c)
			}
			if id, _ := c["id"].(string); len(id) != 8 {
				t.Errorf("an nbformat 4.5 cell needs an id; got %q", id)
			}
			if pm, _ := nb.Metadata["papermill"].(map[string]any); toJSONString(pm["parameters"]) != `{"alpha":0.5}` {
				t.Errorf("metadata.papermill.parameters = %v", pm)
			}
			// Injecting again (a re-run of the output) replaces, never adds.
			if _, _, err := nb.InjectParameters(&p); err != nil || len(nb.Cells) != tt.n {
				t.Errorf("a second injection made %d cells (err %v); want %d", len(nb.Cells), err, tt.n)
			}
		})
	}
	var bad Params
	bad.Set("not-a-name", 1)
	if _, _, err := FromCode("x").InjectParameters(&bad); !errors.Is(err, ErrParams) {
		t.Errorf("a parameter named not-a-name was injected (err %v)", err)
	}
}

func toJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
