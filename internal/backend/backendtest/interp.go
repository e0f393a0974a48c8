package backendtest

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
)

// The interpreter runs a small subset of Python, one statement per line, so
// a test's cells stay valid Python that Ferry's analysis helper reads the
// way it reads real cells:
//
//	x = 5 / x = "s" / x = [] / x = [a, 1]   bind a literal (lists hold objects)
//	x = y                                   alias: both names bind one object
//	x = y + 1, x = a - b                    int arithmetic; + joins str, list, bytearray
//	x = blob(N)                             N deterministic bytes (a bytearray)
//	x = noise(N)                            N random bytes: the cell is not deterministic
//	x = opened()                            an open file: cannot move
//	x = input("prompt")                     asks the front end (stdin channel)
//	x = len(y)
//	x.append(v), x[i] = v                   mutate x in place; aliases see it
//	y = x[i]                                an item of a list (the object itself)
//	print(a, b)                             stream stdout
//	sleep(S)                                S seconds (int or float literal), interruptible
//	effect("name")                          a side effect the test can count
//	del x, y
//	raise ValueError("msg")                 any exception name
//	pass, blank lines and # comments
//
// A bare expression as the last line is the cell's execute_result. A line
// that does not parse fails the whole cell with SyntaxError before any line
// runs, as Python does; a name not bound fails with NameError at its line,
// after the lines before it took effect.

// kind is the Python type of an object of the subset.
type kind int

const (
	kNone kind = iota
	kInt
	kStr
	kBytes // a bytearray: like an array, aliases of it share a group
	kList
	kFile
)

var kindNames = [...]string{"NoneType", "int", "str", "bytearray", "list", "TextIOWrapper"}

func (k kind) String() string { return kindNames[k] }

func kindOf(s string) (kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return kind(i), true
		}
	}
	return 0, false
}

// object is one Python object. Names bound to one *object are aliases.
type object struct {
	kind  kind
	i     int64
	s     string
	b     []byte
	items []*object
}

var none = &object{kind: kNone}

// atomic objects cannot be shared in a way that matters (Python's ints
// and strs are immutable), so they never join an alias group.
func (o *object) atomic() bool { return o.kind == kNone || o.kind == kInt || o.kind == kStr }

// pyError is a Python exception raised by a cell.
type pyError struct {
	ename, evalue string
	line          int
}

func (e *pyError) Error() string { return e.ename + ": " + e.evalue }

func raise(ename, format string, args ...any) *pyError {
	return &pyError{ename: ename, evalue: fmt.Sprintf(format, args...)}
}

// maxBlob bounds blob() and noise(), so a typo cannot exhaust memory.
const maxBlob = 1 << 30

// ---------------------------------------------------------------- lexing

type token struct {
	kind byte // 'n' name, '0' int, 'f' float, 's' string, 'p' punctuation, 0 end
	text string
}

func lex(line string) ([]token, error) {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			i = len(line)
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i + 1
			for j < len(line) && (line[j] == '_' || line[j] >= 'a' && line[j] <= 'z' || line[j] >= 'A' && line[j] <= 'Z' || line[j] >= '0' && line[j] <= '9') {
				j++
			}
			toks, i = append(toks, token{'n', line[i:j]}), j
		case c >= '0' && c <= '9':
			j, k := i, byte('0')
			for j < len(line) && (line[j] >= '0' && line[j] <= '9' || line[j] == '.') {
				if line[j] == '.' {
					k = 'f'
				}
				j++
			}
			toks, i = append(toks, token{k, line[i:j]}), j
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(line) && line[j] != c {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated string literal")
			}
			body := line[i+1 : j]
			if c == '\'' { // strconv reads Go's double-quoted form
				body = strings.ReplaceAll(strings.ReplaceAll(body, `\'`, `'`), `"`, `\"`)
			}
			s, err := strconv.Unquote(`"` + body + `"`)
			if err != nil {
				return nil, fmt.Errorf("bad string literal %s", line[i:j+1])
			}
			toks, i = append(toks, token{'s', s}), j+1
		case strings.IndexByte("()[],+-.=", c) >= 0:
			if c == '=' && i+1 < len(line) && line[i+1] == '=' {
				return nil, fmt.Errorf("comparisons are not in the fake's subset")
			}
			toks, i = append(toks, token{'p', string(c)}), i+1
		default:
			return nil, fmt.Errorf("invalid character %q", c)
		}
	}
	return toks, nil
}

// ---------------------------------------------------------------- parsing

// expr is a parsed expression.
type expr interface{}

type (
	litInt   struct{ v int64 }
	litFloat struct{ v float64 } // only as sleep's argument
	litStr   struct{ v string }
	litNone  struct{}
	nameRef  struct{ name string }
	listLit  struct{ items []expr }
	callExpr struct {
		fn   string
		args []expr
	}
	methodCall struct {
		recv, method string
		args         []expr
	}
	indexExpr struct {
		recv  string
		index expr
	}
	binExpr struct {
		op   string
		l, r expr
	}
)

// stmt is one line of a cell.
type stmt struct {
	line   int
	op     string // "assign", "setitem", "del", "raise", "expr", "pass"
	target string
	names  []string
	index  expr // setitem: target[index] = x
	x      expr
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() token {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return token{}
}

func (p *parser) next() token { t := p.peek(); p.pos++; return t }

func (p *parser) accept(punct string) bool {
	if t := p.peek(); t.kind == 'p' && t.text == punct {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(punct string) error {
	if !p.accept(punct) {
		return fmt.Errorf("expected %q", punct)
	}
	return nil
}

func (p *parser) name() (string, error) {
	t := p.next()
	if t.kind != 'n' {
		return "", fmt.Errorf("expected a name")
	}
	return t.text, nil
}

// parse reads a cell; a line that does not parse fails it all.
func parse(code string) ([]stmt, error) {
	var out []stmt
	for i, line := range strings.Split(code, "\n") {
		toks, err := lex(line)
		if err == nil && len(toks) > 0 && (line[0] == ' ' || line[0] == '\t') {
			err = fmt.Errorf("unexpected indent")
		}
		if err != nil {
			return nil, &pyError{ename: "SyntaxError", evalue: err.Error() + " (line " + strconv.Itoa(i+1) + ")", line: i + 1}
		}
		if len(toks) == 0 {
			continue
		}
		p := &parser{toks: toks}
		s, err := p.stmt()
		if err == nil && p.pos != len(toks) {
			err = fmt.Errorf("unexpected %q", p.peek().text)
		}
		if err != nil {
			return nil, &pyError{ename: "SyntaxError", evalue: err.Error() + " (line " + strconv.Itoa(i+1) + ")", line: i + 1}
		}
		s.line = i + 1
		out = append(out, s)
	}
	return out, nil
}

func (p *parser) stmt() (stmt, error) {
	t := p.peek()
	if t.kind == 'n' {
		switch t.text {
		case "pass":
			p.pos++
			return stmt{op: "pass"}, nil
		case "del":
			p.pos++
			s := stmt{op: "del"}
			for {
				n, err := p.name()
				if err != nil {
					return s, err
				}
				s.names = append(s.names, n)
				if !p.accept(",") {
					return s, nil
				}
			}
		case "raise":
			p.pos++
			n, err := p.name()
			if err != nil {
				return stmt{}, err
			}
			s := stmt{op: "raise", target: n}
			if p.accept("(") {
				if !p.accept(")") {
					if s.x, err = p.expr(); err != nil {
						return s, err
					}
					err = p.expect(")")
				}
			}
			return s, err
		}
		if len(p.toks) > 1 && p.toks[1].kind == 'p' && p.toks[1].text == "=" {
			p.pos += 2
			x, err := p.expr()
			return stmt{op: "assign", target: t.text, x: x}, err
		}
	}
	x, err := p.expr()
	if ix, ok := x.(indexExpr); ok && err == nil && p.accept("=") {
		v, err := p.expr()
		return stmt{op: "setitem", target: ix.recv, index: ix.index, x: v}, err
	}
	return stmt{op: "expr", x: x}, err
}

func (p *parser) expr() (expr, error) {
	l, err := p.unary()
	for err == nil {
		t := p.peek()
		if t.kind != 'p' || t.text != "+" && t.text != "-" {
			break
		}
		p.pos++
		var r expr
		if r, err = p.unary(); err == nil {
			l = binExpr{op: t.text, l: l, r: r}
		}
	}
	return l, err
}

func (p *parser) unary() (expr, error) {
	if p.accept("-") {
		x, err := p.primary()
		return binExpr{op: "-", l: litInt{0}, r: x}, err
	}
	return p.primary()
}

func (p *parser) args(closing string) ([]expr, error) {
	var args []expr
	for !p.accept(closing) {
		if len(args) > 0 {
			if err := p.expect(","); err != nil {
				return nil, err
			}
			if p.accept(closing) {
				break
			}
		}
		a, err := p.expr()
		if err != nil {
			return nil, err
		}
		args = append(args, a)
	}
	return args, nil
}

func (p *parser) primary() (expr, error) {
	t := p.next()
	switch t.kind {
	case '0':
		v, err := strconv.ParseInt(t.text, 10, 64)
		return litInt{v}, err
	case 'f':
		v, err := strconv.ParseFloat(t.text, 64)
		return litFloat{v}, err
	case 's':
		return litStr{t.text}, nil
	case 'p':
		switch t.text {
		case "[":
			items, err := p.args("]")
			return listLit{items}, err
		case "(":
			x, err := p.expr()
			if err == nil {
				err = p.expect(")")
			}
			return x, err
		}
	case 'n':
		if t.text == "None" {
			return litNone{}, nil
		}
		if p.accept("(") {
			args, err := p.args(")")
			return callExpr{fn: t.text, args: args}, err
		}
		if p.accept(".") {
			m, err := p.name()
			if err != nil {
				return nil, err
			}
			if err := p.expect("("); err != nil {
				return nil, err
			}
			args, err := p.args(")")
			return methodCall{recv: t.text, method: m, args: args}, err
		}
		if p.accept("[") {
			i, err := p.expr()
			if err == nil {
				err = p.expect("]")
			}
			return indexExpr{recv: t.text, index: i}, err
		}
		return nameRef{t.text}, nil
	}
	return nil, fmt.Errorf("invalid syntax at %q", t.text)
}

// ---------------------------------------------------------------- evaluation

// env is what evaluation needs from the running incarnation: the
// namespace, and the builtins that reach outside it.
type env interface {
	lookup(name string) (*object, bool)
	print(text string)
	sleep(seconds float64) error
	input(prompt string) (string, error)
	effect(name string)
}

func eval(e env, x expr) (*object, error) {
	switch x := x.(type) {
	case litInt:
		return &object{kind: kInt, i: x.v}, nil
	case litStr:
		return &object{kind: kStr, s: x.v}, nil
	case litNone:
		return none, nil
	case litFloat:
		return nil, raise("TypeError", "the fake kernel takes floats only as sleep's argument")
	case nameRef:
		if o, ok := e.lookup(x.name); ok {
			return o, nil
		}
		return nil, raise("NameError", "name '%s' is not defined", x.name)
	case listLit:
		l := &object{kind: kList}
		for _, it := range x.items {
			o, err := eval(e, it)
			if err != nil {
				return nil, err
			}
			l.items = append(l.items, o)
		}
		return l, nil
	case binExpr:
		l, err := eval(e, x.l)
		if err != nil {
			return nil, err
		}
		r, err := eval(e, x.r)
		if err != nil {
			return nil, err
		}
		return binop(x.op, l, r)
	case methodCall:
		recv, ok := e.lookup(x.recv)
		if !ok {
			return nil, raise("NameError", "name '%s' is not defined", x.recv)
		}
		if recv.kind != kList || x.method != "append" {
			return nil, raise("AttributeError", "'%s' object has no attribute '%s'", recv.kind, x.method)
		}
		if len(x.args) != 1 {
			return nil, raise("TypeError", "list.append() takes exactly one argument (%d given)", len(x.args))
		}
		v, err := eval(e, x.args[0])
		if err != nil {
			return nil, err
		}
		recv.items = append(recv.items, v)
		return none, nil
	case indexExpr:
		l, i, err := item(e, x)
		if err != nil {
			return nil, err
		}
		return l.items[i], nil
	case callExpr:
		return call(e, x)
	}
	return nil, raise("SystemError", "unknown expression %T", x)
}

// item resolves x's list and index, Python style (negative from the end).
func item(e env, x indexExpr) (*object, int, error) {
	l, err := eval(e, nameRef{x.recv})
	if err != nil {
		return nil, 0, err
	}
	idx, err := eval(e, x.index)
	if err != nil {
		return nil, 0, err
	}
	if l.kind != kList || idx.kind != kInt {
		return nil, 0, raise("TypeError", "the fake kernel indexes only lists by ints, not %s by %s", l.kind, idx.kind)
	}
	i := idx.i
	if i < 0 {
		i += int64(len(l.items))
	}
	if i < 0 || i >= int64(len(l.items)) {
		return nil, 0, raise("IndexError", "list index out of range")
	}
	return l, int(i), nil
}

func binop(op string, l, r *object) (*object, error) {
	switch {
	case l.kind == kInt && r.kind == kInt:
		v, ok := l.i+r.i, true
		if op == "-" {
			v = l.i - r.i
			ok = (r.i >= 0 && v <= l.i) || (r.i < 0 && v > l.i)
		} else {
			ok = (r.i >= 0 && v >= l.i) || (r.i < 0 && v < l.i)
		}
		if !ok {
			return nil, raise("OverflowError", "the fake kernel's ints are 64-bit")
		}
		return &object{kind: kInt, i: v}, nil
	case op == "+" && l.kind == r.kind && l.kind == kStr:
		return &object{kind: kStr, s: l.s + r.s}, nil
	case op == "+" && l.kind == r.kind && l.kind == kList:
		return &object{kind: kList, items: append(append([]*object{}, l.items...), r.items...)}, nil
	case op == "+" && l.kind == r.kind && l.kind == kBytes:
		return &object{kind: kBytes, b: append(append([]byte{}, l.b...), r.b...)}, nil
	}
	return nil, raise("TypeError", "unsupported operand type(s) for %s: '%s' and '%s'", op, l.kind, r.kind)
}

// blobBytes is blob(n)'s content: the same for every call with n.
func blobBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + i>>8 + 7)
	}
	return b
}

func call(e env, c callExpr) (*object, error) {
	if c.fn == "sleep" && len(c.args) == 1 {
		if f, ok := c.args[0].(litFloat); ok {
			return none, e.sleep(f.v)
		}
	}
	args := make([]*object, len(c.args))
	for i, a := range c.args {
		o, err := eval(e, a)
		if err != nil {
			return nil, err
		}
		args[i] = o
	}
	want := func(n int, kinds ...kind) error {
		if len(args) != n {
			return raise("TypeError", "%s() takes %d argument(s) (%d given)", c.fn, n, len(args))
		}
		for i, k := range kinds {
			if args[i].kind != k {
				return raise("TypeError", "%s() argument %d must be %s, not %s", c.fn, i+1, k, args[i].kind)
			}
		}
		return nil
	}
	switch c.fn {
	case "print":
		parts := make([]string, len(args))
		for i, a := range args {
			parts[i] = str(a)
		}
		e.print(strings.Join(parts, " ") + "\n")
		return none, nil
	case "blob", "noise":
		if err := want(1, kInt); err != nil {
			return nil, err
		}
		if args[0].i < 0 || args[0].i > maxBlob {
			return nil, raise("ValueError", "%s() size %d is not in [0, %d]", c.fn, args[0].i, maxBlob)
		}
		if c.fn == "blob" {
			return &object{kind: kBytes, b: blobBytes(int(args[0].i))}, nil
		}
		b := make([]byte, args[0].i)
		_, _ = rand.Read(b)
		return &object{kind: kBytes, b: b}, nil
	case "opened":
		if err := want(0); err != nil {
			return nil, err
		}
		return &object{kind: kFile}, nil
	case "len":
		if err := want(1); err != nil {
			return nil, err
		}
		switch a := args[0]; a.kind {
		case kStr:
			return &object{kind: kInt, i: int64(len(a.s))}, nil
		case kBytes:
			return &object{kind: kInt, i: int64(len(a.b))}, nil
		case kList:
			return &object{kind: kInt, i: int64(len(a.items))}, nil
		}
		return nil, raise("TypeError", "object of type '%s' has no len()", args[0].kind)
	case "sleep":
		if err := want(1, kInt); err != nil {
			return nil, err
		}
		return none, e.sleep(float64(args[0].i))
	case "input":
		prompt := ""
		if len(args) > 0 {
			if err := want(1, kStr); err != nil {
				return nil, err
			}
			prompt = args[0].s
		}
		s, err := e.input(prompt)
		if err != nil {
			return nil, err
		}
		return &object{kind: kStr, s: s}, nil
	case "effect":
		if err := want(1, kStr); err != nil {
			return nil, err
		}
		e.effect(args[0].s)
		return none, nil
	}
	return nil, raise("NameError", "name '%s' is not defined", c.fn)
}

// ---------------------------------------------------------------- reprs

// repr is Python's repr of o; a list holding itself shows [...].
func repr(o *object) string {
	var b strings.Builder
	reprTo(&b, o, map[*object]bool{})
	return b.String()
}

func reprTo(b *strings.Builder, o *object, open map[*object]bool) {
	switch o.kind {
	case kNone:
		b.WriteString("None")
	case kInt:
		b.WriteString(strconv.FormatInt(o.i, 10))
	case kStr:
		b.WriteString(pyQuote(o.s))
	case kBytes:
		b.WriteString("bytearray(b'")
		b.Grow(4 * len(o.b))
		for _, c := range o.b {
			switch {
			case c == '\\' || c == '\'':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c == '\n':
				b.WriteString(`\n`)
			case c == '\t':
				b.WriteString(`\t`)
			case c == '\r':
				b.WriteString(`\r`)
			case c >= 0x20 && c < 0x7f:
				b.WriteByte(c)
			default:
				b.WriteString(`\x`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&15])
			}
		}
		b.WriteString("')")
	case kList:
		if open[o] {
			b.WriteString("[...]")
			return
		}
		open[o] = true
		b.WriteByte('[')
		for i, it := range o.items {
			if i > 0 {
				b.WriteString(", ")
			}
			reprTo(b, it, open)
		}
		b.WriteByte(']')
		delete(open, o)
	case kFile:
		b.WriteString("<_io.TextIOWrapper name='fake.txt' mode='r' encoding='UTF-8'>")
	}
}

const hexDigits = "0123456789abcdef"

// pyQuote quotes s as Python's repr does for plain text.
func pyQuote(s string) string {
	q := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteRune(q)
	for _, r := range s {
		switch {
		case r == q || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteRune(q)
	return b.String()
}

// str is Python's str(): a str as it is, anything else as its repr.
func str(o *object) string {
	if o.kind == kStr {
		return o.s
	}
	return repr(o)
}
