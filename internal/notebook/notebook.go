// Package notebook reads, runs and writes Jupyter notebooks (nbformat 4),
// keeping every field it does not own as it was.
package notebook

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Notebook is an nbformat 4 notebook. Unknown top-level fields are kept.
type Notebook struct {
	Cells    []Cell
	Metadata map[string]any
	rest     map[string]json.RawMessage
}

// Cell is one cell; fields Ferry does not touch are kept.
type Cell map[string]any

// Type is the cell_type.
func (c Cell) Type() string { s, _ := c["cell_type"].(string); return s }

// ID is the cell's nbformat id, or one made from its position.
func (c Cell) ID(index int) string {
	if id, ok := c["id"].(string); ok && id != "" {
		return id
	}
	return fmt.Sprintf("cell-%d", index)
}

// Source joins the cell's source, which nbformat allows as a string or a
// list of lines.
func (c Cell) Source() string {
	switch s := c["source"].(type) {
	case string:
		return s
	case []any:
		var b strings.Builder
		for _, l := range s {
			if ls, ok := l.(string); ok {
				b.WriteString(ls)
			}
		}
		return b.String()
	}
	return ""
}

// Read loads a notebook, with one-line errors naming the problem.
func Read(path string) (*Notebook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading notebook: %w", err)
	}
	nb, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return nb, nil
}

// FromCode builds an nbformat 4.5 notebook of code cells, one per source,
// with no outputs yet: tests and benchmarks make their notebooks so.
func FromCode(sources ...string) *Notebook {
	cells := make([]Cell, len(sources))
	for i, src := range sources {
		cells[i] = Cell{"cell_type": "code", "metadata": map[string]any{}, "source": src, "outputs": []any{}, "execution_count": nil}
	}
	return &Notebook{Cells: cells, Metadata: map[string]any{},
		rest: map[string]json.RawMessage{"nbformat": json.RawMessage("4"), "nbformat_minor": json.RawMessage("5")}}
}

// Parse decodes and validates notebook JSON.
func Parse(b []byte) (*Notebook, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("not a notebook: invalid JSON (%v)", err)
	}
	var major *float64
	if raw, ok := top["nbformat"]; !ok {
		return nil, fmt.Errorf("not a notebook: no \"nbformat\" field")
	} else if err := json.Unmarshal(raw, &major); err != nil || major == nil {
		return nil, fmt.Errorf("not a notebook: \"nbformat\" is not a number")
	}
	if *major != 4 {
		return nil, fmt.Errorf("nbformat %v is not supported; convert it with 'jupyter nbconvert --to notebook --nbformat 4'", *major)
	}
	nb := &Notebook{rest: top, Metadata: map[string]any{}}
	if raw, ok := top["metadata"]; ok {
		if err := json.Unmarshal(raw, &nb.Metadata); err != nil || nb.Metadata == nil {
			return nil, fmt.Errorf("notebook \"metadata\" is not an object")
		}
	}
	raw, ok := top["cells"]
	if !ok {
		return nil, fmt.Errorf("not a notebook: no \"cells\" list")
	}
	if err := json.Unmarshal(raw, &nb.Cells); err != nil {
		return nil, fmt.Errorf("notebook \"cells\" is not a list of objects (%v)", err)
	}
	if nb.Cells == nil {
		return nil, fmt.Errorf("notebook \"cells\" is null; want a list of cells")
	}
	for i, c := range nb.Cells {
		if c == nil {
			return nil, fmt.Errorf("cell %d is null", i+1)
		}
		switch c.Type() {
		case "code", "markdown", "raw":
		default:
			return nil, fmt.Errorf("cell %d has cell_type %s; want code, markdown or raw", i+1, brief(c["cell_type"]))
		}
		switch src := c["source"].(type) {
		case string:
		case []any:
			for j, l := range src {
				if _, ok := l.(string); !ok {
					return nil, fmt.Errorf("cell %d source line %d is %s, not text", i+1, j+1, brief(l))
				}
			}
		default:
			return nil, fmt.Errorf("cell %d has no source text (\"source\" is %s; want a string or a list of strings)", i+1, brief(src))
		}
	}
	return nb, nil
}

// brief shows a JSON value in an error: as JSON, cut to a few dozen bytes.
func brief(v any) string {
	if v == nil {
		return "missing or null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%T", v)
	}
	if len(b) > 40 {
		return strings.ToValidUTF8(string(b[:37]), "") + "..."
	}
	return string(b)
}

// Marshal encodes the notebook as Jupyter writes it (one-space indent).
func (nb *Notebook) Marshal() ([]byte, error) {
	out := make(map[string]any, len(nb.rest)+2)
	for k, v := range nb.rest {
		out[k] = v
	}
	out["cells"] = nb.Cells
	out["metadata"] = nb.Metadata
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Write saves the notebook atomically.
func (nb *Notebook) Write(path string) error {
	b, err := nb.Marshal()
	if err != nil {
		return fmt.Errorf("encoding notebook: %w", err)
	}
	tmp := path + ".ferry-tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("writing notebook: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing notebook: %w", err)
	}
	return nil
}

// SplitLines turns text into nbformat's list-of-lines form.
func SplitLines(s string) []string {
	if s == "" {
		return []string{}
	}
	parts := strings.SplitAfter(s, "\n")
	if parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return parts
}
