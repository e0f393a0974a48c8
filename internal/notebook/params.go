package notebook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Params are papermill-style parameters in the order they were first
// given; setting a name again replaces its value in place, as a Python
// dict's update does, so the injected cell reads as papermill writes it.
type Params struct {
	names  []string
	values map[string]any
}

// Set gives name the value v.
func (p *Params) Set(name string, v any) {
	if p.values == nil {
		p.values = map[string]any{}
	}
	if _, ok := p.values[name]; !ok {
		p.names = append(p.names, name)
	}
	p.values[name] = v
}

// Len is the number of parameters.
func (p *Params) Len() int { return len(p.names) }

// Get returns the value of name.
func (p *Params) Get(name string) (any, bool) { v, ok := p.values[name]; return v, ok }

// ErrParams marks parameters that cannot be read or injected.
var ErrParams = errors.New("bad parameters")

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseValue types a -p value as papermill's CLI does: True, False, None,
// an int, a float, else the string itself.
func ParseValue(s string) any {
	switch s {
	case "True":
		return true
	case "False":
		return false
	case "None":
		return nil
	}
	if i, ok := pyInt(s); ok {
		return i
	}
	if f, ok := pyFloat(s); ok {
		return f
	}
	return s
}

var (
	pyIntRE   = regexp.MustCompile(`^[+-]?[0-9]+(_[0-9]+)*$`)
	pyDigits  = `[0-9]+(_[0-9]+)*`
	pyFloatRE = regexp.MustCompile(`^[+-]?((` + pyDigits + `)?\.` + pyDigits + `|` + pyDigits + `\.?)([eE][+-]?` + pyDigits + `)?$`)
	pyInfRE   = regexp.MustCompile(`(?i)^[+-]?(inf|infinity|nan)$`)
)

// pyInt parses what Python's int() accepts in base 10 (any size).
func pyInt(s string) (*big.Int, bool) {
	s = strings.TrimSpace(s)
	if !pyIntRE.MatchString(s) {
		return nil, false
	}
	return new(big.Int).SetString(strings.ReplaceAll(s, "_", ""), 10)
}

// pyFloat parses what Python's float() accepts.
func pyFloat(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if !pyFloatRE.MatchString(s) && !pyInfRE.MatchString(s) {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return f, true // out of range: ±Inf, as Python's float() gives
}

// ParseYAML reads a YAML mapping into p (later keys win), typed as
// papermill's loader types them: dates stay strings (its NoDatesSafeLoader)
// and YAML 1.1's yes/no/on/off are booleans, as PyYAML reads them.
func (p *Params) ParseYAML(src []byte, what string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return fmt.Errorf("%w: %s is not YAML: %v", ErrParams, what, oneLine(err.Error()))
	}
	if len(doc.Content) == 0 {
		return nil // empty: no parameters, as papermill's `or {}`
	}
	m := doc.Content[0]
	if m.Kind == yaml.ScalarNode && m.Tag == "!!null" {
		return nil
	}
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%w: %s is not a YAML mapping (NAME: VALUE lines)", ErrParams, what)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		v, err := yamlValue(m.Content[i+1])
		if err != nil {
			return fmt.Errorf("%w: %s: %s: %v", ErrParams, what, m.Content[i].Value, err)
		}
		p.Set(m.Content[i].Value, v)
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// yamlValue converts a node to Go values the translator renders:
// *Params for mappings (keeping order), []any, strings, bools, nil,
// *big.Int and float64.
func yamlValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.AliasNode:
		return yamlValue(n.Alias)
	case yaml.MappingNode:
		var m Params
		m.values = map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := yamlValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m.Set(n.Content[i].Value, v)
		}
		return &m, nil
	case yaml.SequenceNode:
		l := []any{}
		for _, c := range n.Content {
			v, err := yamlValue(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			err := n.Decode(&b)
			return b, err
		case "!!int":
			if i, ok := pyInt(n.Value); ok {
				return i, nil
			}
			var i int64 // 0x, 0o, 0b forms
			if err := n.Decode(&i); err != nil {
				return nil, err
			}
			return big.NewInt(i), nil
		case "!!float":
			// yaml.v3 tags integers beyond int64 as floats; Python's are
			// unbounded.
			if i, ok := pyInt(n.Value); ok {
				return i, nil
			}
			var f float64
			err := n.Decode(&f)
			return f, err
		case "!!str":
			if n.Style == 0 {
				switch n.Value {
				case "yes", "Yes", "YES", "on", "On", "ON":
					return true, nil
				case "no", "No", "NO", "off", "Off", "OFF":
					return false, nil
				}
			}
		}
		return n.Value, nil // strings, and timestamps kept as text
	}
	return nil, fmt.Errorf("unsupported YAML node")
}

// PythonLiteral renders v as papermill's PythonTranslator does.
func PythonLiteral(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case *big.Int:
		return x.String()
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return pyFloatRepr(x)
	case string:
		return pyEscapedStr(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = PythonLiteral(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case *Params:
		parts := make([]string, len(x.names))
		for i, k := range x.names {
			parts[i] = pyEscapedStr(k) + ": " + PythonLiteral(x.values[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return pyEscapedStr(fmt.Sprint(v))
}

// pyFloatRepr is Python's repr of a float: the shortest digits that read
// back, fixed notation for exponents -4..15, at least one decimal.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "float('nan')"
	case math.IsInf(f, 1):
		return "float('inf')"
	case math.IsInf(f, -1):
		return "float('-inf')"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX
	mant, expS, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(expS)
	if exp < -4 || exp >= 16 {
		sign := "+"
		if exp < 0 {
			sign, exp = "-", -exp
		}
		return fmt.Sprintf("%se%s%02d", mant, sign, exp)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// pyEscapedStr is papermill's translate_escaped_str: the text encoded
// with Python's unicode_escape codec, double quotes escaped, in quotes.
func pyEscapedStr(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '"':
			b.WriteString(`\"`)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0x100):
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x100 && r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		case r >= 0x10000:
			fmt.Fprintf(&b, `\U%08x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Source is the injected cell's code, as papermill's Python translator
// writes it (before its optional black formatting).
func (p *Params) Source() string {
	var b strings.Builder
	b.WriteString("# Parameters\n")
	for _, n := range p.names {
		b.WriteString(n + " = " + PythonLiteral(p.values[n]) + "\n")
	}
	return b.String()
}

// plain converts parameters to JSON-ready values for the notebook's
// metadata.papermill.parameters.
func plain(v any) any {
	switch x := v.(type) {
	case *Params:
		m := make(map[string]any, len(x.names))
		for _, k := range x.names {
			m[k] = plain(x.values[k])
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = plain(e)
		}
		return l
	case *big.Int:
		return json.Number(x.String())
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return pyFloatRepr(x) // JSON has no NaN or Infinity
		}
	}
	return v
}

func firstTagged(cells []Cell, tag string) int {
	for i, c := range cells {
		md, _ := c["metadata"].(map[string]any)
		tags, _ := md["tags"].([]any)
		for _, t := range tags {
			if t == tag {
				return i
			}
		}
	}
	return -1
}

// InjectParameters adds p as a code cell tagged "injected-parameters",
// as papermill does: in place of an earlier injected cell (a re-run of an
// executed notebook), else right after the first cell tagged
// "parameters", else at the top. It reports where the cell went and
// whether a "parameters" cell was found. Names must be Python identifiers.
func (nb *Notebook) InjectParameters(p *Params) (index int, tagged bool, err error) {
	for _, n := range p.names {
		if !identRE.MatchString(n) {
			return 0, false, fmt.Errorf("%w: %q is not a Python variable name", ErrParams, n)
		}
	}
	cell := Cell{"cell_type": "code", "execution_count": nil, "outputs": []any{}, "source": p.Source(),
		"metadata": map[string]any{"tags": []any{"injected-parameters"}}}
	if minor, _ := nb.rest["nbformat_minor"]; minor != nil {
		var m float64
		if json.Unmarshal(minor, &m) == nil && m >= 5 {
			var id [4]byte
			_, _ = rand.Read(id[:])
			cell["id"] = hex.EncodeToString(id[:]) // nbformat's 8 hex digits
		}
	}
	tagged = firstTagged(nb.Cells, "parameters") >= 0
	switch inj, par := firstTagged(nb.Cells, "injected-parameters"), firstTagged(nb.Cells, "parameters"); {
	case inj >= 0:
		index = inj
		nb.Cells[inj] = cell
	case par >= 0:
		index = par + 1
		nb.Cells = append(nb.Cells[:index], append([]Cell{cell}, nb.Cells[index:]...)...)
	default:
		index = 0
		nb.Cells = append([]Cell{cell}, nb.Cells...)
	}
	pm, _ := nb.Metadata["papermill"].(map[string]any)
	if pm == nil {
		pm = map[string]any{}
	}
	pm["parameters"] = plain(p)
	nb.Metadata["papermill"] = pm
	return index, tagged, nil
}
