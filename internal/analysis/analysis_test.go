package analysis

import (
	"cmp"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

func newAnalyzer(t *testing.T) *Analyzer {
	t.Helper()
	testenv.RequirePython(t)
	a := New(testenv.Python())
	t.Cleanup(a.Close)
	return a
}

// names is a test's expectation for one list: what it must and must not hold.
type names struct{ has, not []string }

func (n names) check(t *testing.T, what string, got []string) {
	t.Helper()
	for _, w := range n.has {
		if !slices.Contains(got, w) {
			t.Errorf("%s = %v, missing %q", what, got, w)
		}
	}
	for _, w := range n.not {
		if slices.Contains(got, w) {
			t.Errorf("%s = %v, should not contain %q", what, got, w)
		}
	}
}

func has(s ...string) names { return names{has: s} }

func TestAnalyze(t *testing.T) {
	a := newAnalyzer(t)
	tests := []struct {
		name                          string
		code                          string
		reads, writes, maybe, deleted names
		calls, magics                 names
		defs                          map[string]names
		dynamic, unparsable, shell    bool
	}{
		// Flow at module level.
		{name: "assign then read is not a read", code: "x = 1\ny = x + z",
			reads: names{has: []string{"z"}, not: []string{"x", "y"}}, writes: has("x", "y")},
		{name: "conditional binding still reads", code: "if c:\n    x = 1\nprint(x)", reads: has("c", "x")},
		{name: "short-circuit walrus still reads", code: "ok and (v := 1)\nprint(v)", reads: has("ok", "v"), writes: has("v")},
		{name: "while body may not run", code: "while cond():\n    w = 1\nw", reads: has("cond", "w")},
		{name: "a block runs in order once it runs", code: "for s in r:\n    p = f(s)\n    q = p + 1\nprint(p)", reads: has("r", "f", "p")},
		{name: "loop body binding does not hide its first read", code: "for i in r:\n    if i:\n        print(y)\n    y = i", reads: has("y")},
		{name: "if branches do not see each other", code: "if c:\n    x = 1\nelse:\n    print(x)", reads: has("x")},
		{name: "try else sees the body, handlers do not", code: "try:\n    v = f()\nexcept E:\n    print(w)\nelse:\n    w = v\nv", reads: names{has: []string{"w", "v"}}},
		{name: "try else alone", code: "try:\n    v = f()\nexcept E:\n    pass\nelse:\n    print(v)", reads: names{not: []string{"v"}}},
		{name: "a deletion in a block persists", code: "x = 1\nif c:\n    del x\nprint(x)", reads: has("x"), deleted: has("x")},
		{name: "exception mid-cell keeps later names", code: "x = 1\nraise ValueError\ny = x", reads: names{not: []string{"x"}}, writes: has("x", "y")},

		// Names inside strings.
		{name: "df.query's @names are reads", code: "out = df.query('a > @limit and b < @hi')", reads: has("df", "limit", "hi")},
		{name: "df.eval's @names are reads", code: "df.eval('c = a * @k', inplace=True)", reads: has("df", "k")},
		{name: "numexpr.evaluate reads bare names", code: "import numexpr as ne\nr = ne.evaluate('2 * x + y')", reads: has("x", "y")},
		{name: "a string not given to query is no read", code: "s = 'a > @limit'", reads: names{not: []string{"limit"}}},

		// Assignment forms.
		{name: "augmented assignment reads and mutates", code: "n += 1\nlst += [2]", reads: has("n", "lst"), writes: has("n", "lst"), maybe: has("n", "lst")},
		{name: "augmented item assignment", code: "counts[k] += 1", reads: has("counts", "k"), maybe: has("counts"), writes: names{not: []string{"counts"}}},
		{name: "item and attribute assignment mutate", code: "a[3] = 1\nb.c = 2\nd[k].e = v",
			reads: has("a", "b", "d", "k", "v"), maybe: has("a", "b", "d"), writes: names{not: []string{"a", "b", "d"}}},
		{name: "unpacking and starred targets", code: "first, *rest = seq\n(p, q), r = pairs",
			reads: has("seq", "pairs"), writes: has("first", "rest", "p", "q", "r")},
		{name: "annotated assignment", code: "x: int = y\nz: float", reads: has("y", "int", "float"), writes: names{has: []string{"x"}, not: []string{"z"}}},
		{name: "method call may mutate", code: "lst.append(1)\ndf.loc[0, 'a'] = 3", reads: has("lst", "df"), maybe: has("lst", "df")},
		{name: "arguments may be mutated", code: "np.random.shuffle(arr)\nf(key=d)", maybe: has("arr", "d", "np", "f")},
		{name: "pure builtins do not mutate their arguments", code: "print(big)\nn = len(big)", reads: has("big"), maybe: names{not: []string{"big"}}},
		{name: "mutation through an in-cell alias", code: "row = table['a'][0]\nrow.append(1)", maybe: has("row", "table")},
		{name: "iterating may consume or mutate items", code: "for r in rows:\n    r.append(0)", maybe: has("rows")},

		// del.
		{name: "del", code: "del a, b[0]", reads: has("a", "b"), deleted: has("a"), writes: has("a"), maybe: has("b")},
		{name: "del of a name bound in the cell does not read", code: "t = 1\ndel t\nt", reads: has("t"), deleted: has("t")},
		{name: "del of attribute", code: "del obj.attr", reads: has("obj"), maybe: has("obj"), deleted: names{not: []string{"obj"}}},

		// Comprehension scopes and walrus.
		{name: "comprehension scope", code: "r = [i * k for i in items if i > lim]",
			reads: names{has: []string{"items", "k", "lim"}, not: []string{"i"}}, writes: names{has: []string{"r"}, not: []string{"i"}}},
		{name: "nested comprehension", code: "flat = [c for row in grid for c in row if c != skip]",
			reads: names{has: []string{"grid", "skip"}, not: []string{"row", "c"}}},
		{name: "dict and set comprehensions and generator", code: "m = {k: v for k, v in pairs}\ns = {x for x in xs}\ng = sum(y for y in ys)",
			reads: names{has: []string{"pairs", "xs", "ys"}, not: []string{"k", "v", "x", "y"}}, writes: names{not: []string{"k", "v", "x", "y"}}},
		{name: "comprehension variable does not leak", code: "[i for i in range(3)]\nprint(i)", reads: has("i")},
		{name: "walrus in comprehension leaks", code: "[y := f(x) for x in xs]", reads: names{has: []string{"f", "xs"}, not: []string{"x"}}, writes: has("y")},
		{name: "walrus at module level binds", code: "(n := 10)\nprint(n)", reads: names{not: []string{"n"}}, writes: has("n")},

		// Functions, closures, globals.
		{name: "nonlocal inside function", code: "def outer():\n    c = 0\n    def inner():\n        nonlocal c\n        c += g\n    return inner",
			writes: has("outer"), reads: names{not: []string{"c", "g"}}, defs: map[string]names{"outer": {has: []string{"g"}, not: []string{"c"}}}},
		{name: "name bound only in a nested function is global in the outer", code: "def f():\n    def g():\n        x = 1\n    return x\nf()",
			reads: has("x"), defs: map[string]names{"f": has("x")}},
		{name: "decorators and defaults run at definition", code: "@deco(opt)\ndef f(a=default, *args, b: Ann = kwd, **kw):\n    return a + glob",
			reads: names{has: []string{"deco", "opt", "default", "kwd", "Ann"}, not: []string{"args", "kw", "a"}}, writes: has("f"),
			defs: map[string]names{"f": has("glob")}},
		{name: "defaults and annotations run at definition, the body later", code: "def f(a=default, *args, b: Ann = kwd, **kw) -> Ret:\n    return a + glob",
			reads: names{has: []string{"default", "kwd", "Ann", "Ret"}, not: []string{"glob", "args", "kw", "a", "b"}}},
		{name: "a decorator may call the function", code: "@register\ndef f():\n    return glob", reads: has("register", "glob"), calls: has("register")},
		{name: "calling a function defined here reads its globals", code: "def f():\n    return glob\nf()", reads: has("glob"), writes: has("f"), calls: has("f")},
		{name: "passing a function defined here reads its globals", code: "def f(v):\n    return v + off\nout = list(map(f, xs))", reads: has("off", "xs")},
		{name: "globals bound before the call are not read", code: "def f():\n    return g\ng = 1\nf()", reads: names{not: []string{"g"}}},
		{name: "a defined but unused function reads nothing yet", code: "def f():\n    return glob", reads: names{not: []string{"glob"}}, defs: map[string]names{"f": has("glob")}},
		{name: "global in function", code: "def setg():\n    global G\n    G = 1\nsetg()", writes: has("G", "setg"), reads: names{not: []string{"G"}},
			defs: map[string]names{"setg": has("G")}},
		{name: "global mutated in function", code: "def add(v):\n    results.append(v)\nadd(1)", maybe: has("results"), reads: has("results")},
		{name: "functions calling functions defined here", code: "def a(v):\n    return b(v) + 1\ndef b(v):\n    return v * base\na(2)",
			reads: has("base"), calls: has("a", "b")},
		{name: "recursion terminates", code: "def f(n):\n    return f(n - 1) if n else z\nf(3)", reads: has("z")},

		// Lambdas.
		{name: "lambda", code: "f = lambda q, r=dflt: q + outer", reads: names{has: []string{"dflt", "outer"}, not: []string{"q", "r"}}, writes: has("f"),
			defs: map[string]names{"f": has("outer")}},
		{name: "lambda as sort key", code: "s = sorted(xs, key=lambda v: w[v])", reads: names{has: []string{"xs", "w"}, not: []string{"v"}}},
		{name: "lambda default", code: "fs = [lambda i=i: i * m for i in range(3)]", reads: names{has: []string{"m", "range"}, not: []string{"i"}}},

		// Classes.
		{name: "class body", code: "class C(Base, metaclass=Meta):\n    k = K\n    j = k + 1\n    def m(self):\n        return self.k + G",
			reads: names{has: []string{"Base", "Meta", "K"}, not: []string{"k", "j", "self", "G"}}, writes: names{has: []string{"C"}, not: []string{"k", "j", "m"}},
			defs: map[string]names{"C": has("G")}},
		{name: "instantiating a class defined here reads its methods' globals", code: "class C:\n    def __init__(self):\n        self.v = G\nc = C()",
			reads: has("G"), writes: has("C", "c")},
		{name: "class attribute mutated through the class", code: "class K:\n    n = 0\n    def __init__(self):\n        K.n += 1\nk = K()", maybe: has("K")},
		{name: "class body comprehension cannot see class names", code: "class C:\n    a = 1\n    b = [a for _ in range(2)]", reads: has("a")},

		// try / for / with / match.
		{name: "try except name", code: "try:\n    v = risky()\nexcept ValueError as e:\n    print(e)\n    v = None\nfinally:\n    done = True\ndone",
			reads: names{has: []string{"risky", "ValueError"}, not: []string{"done"}}, writes: has("v", "e", "done"), deleted: has("e")},
		{name: "except name is gone after the handler", code: "try:\n    pass\nexcept Exception as err:\n    pass\nerr", reads: has("err")},
		{name: "for target", code: "for i in range(n):\n    t = i\nprint(i)", reads: has("n", "i"), writes: has("i", "t")},
		{name: "for target is bound inside the body", code: "for i in range(3):\n    print(i)", reads: names{not: []string{"i"}}},
		{name: "with as", code: "with open(p) as fh:\n    data = fh.read()\nprint(fh.closed)", reads: names{has: []string{"p", "open"}, not: []string{"fh"}}, writes: has("fh", "data")},
		{name: "with body may be suppressed", code: "with suppress(E):\n    x = 1\nx", reads: has("x", "suppress", "E")},
		{name: "match", code: "match cmd:\n    case [x, y] if x > lim:\n        out = x\n    case {'k': v, **rest}:\n        out = v\n    case Point(x=0, y=yy):\n        pass\n    case Color.RED:\n        pass",
			reads: names{has: []string{"cmd", "lim", "Point", "Color"}, not: []string{"x", "v", "yy"}}, writes: has("x", "y", "out", "v", "rest", "yy")},

		// f-strings, star-args, imports.
		{name: "f-string", code: "s = f'{name!r:>{width}} {obj.attr}'", reads: has("name", "width", "obj"), writes: has("s")},
		{name: "star args", code: "out = g(*xs, **opts)", reads: has("g", "xs", "opts"), maybe: has("xs", "opts")},
		{name: "import aliases", code: "import numpy as np, os.path\nfrom math import sqrt as s, pi\nnp.zeros(1)",
			writes: has("np", "os", "s", "pi"), reads: names{not: []string{"np", "numpy", "math", "sqrt"}}},
		{name: "import in a function binds a local", code: "def f():\n    import json\n    return json.dumps(1)\nf()", reads: names{not: []string{"json"}}},
		{name: "top-level await", code: "r = await fetch(url)", reads: has("fetch", "url"), writes: has("r")},

		// Dynamic code.
		{name: "exec is dynamic", code: "exec('z = 1')", dynamic: true},
		{name: "eval in a function is dynamic", code: "def f(s):\n    return eval(s)", dynamic: true},
		{name: "a function using eval may touch any name when called", code: "def f(s):\n    return eval(s)", dynamic: true, defs: map[string]names{"f": has("*")}},
		{name: "a method using globals() marks its class", code: "class C:\n    def get(self, n):\n        return globals()[n]", dynamic: true, defs: map[string]names{"C": has("*")}},
		{name: "a function without eval touches only its names", code: "def f(s):\n    return s + glob", defs: map[string]names{"f": {has: []string{"glob"}, not: []string{"*"}}}},
		{name: "@names in a query inside a function are its uses", code: "def top(df):\n    return df.query('a > @limit')", defs: map[string]names{"top": has("limit")}},
		{name: "globals() is dynamic", code: "globals()['q'] = 3", dynamic: true},
		{name: "vars() without arguments is dynamic", code: "print(vars())", dynamic: true},
		{name: "vars(obj) is not dynamic", code: "d = vars(obj)", maybe: has("obj")},
		{name: "locals() in a function is not dynamic", code: "def f(a):\n    return locals()"},
		{name: "locals() at top level is dynamic", code: "l = locals()", dynamic: true},
		{name: "star import is dynamic", code: "from os.path import *", dynamic: true},
		{name: "__import__ is dynamic", code: "m = __import__('os')", dynamic: true},
		{name: "sys.modules reaches the namespace", code: "import sys\nv = getattr(sys.modules['__main__'], name)", dynamic: true},
		{name: "__main__ import is dynamic", code: "import __main__\n__main__.x = 1", dynamic: true},
		{name: "get_ipython internals are dynamic", code: "get_ipython().user_ns['x'] = 1", dynamic: true},

		// Magics, shell and help.
		{name: "time magic is analysed", code: "%time w = q * 2", reads: has("q"), writes: has("w"), magics: has("time")},
		{name: "timeit with options", code: "%timeit -n1 -r 3 y = -x", reads: has("x"), magics: has("timeit")},
		{name: "timeit bindings are not for sure", code: "%timeit t = 1\nt", reads: has("t")},
		{name: "cell magic body is analysed", code: "%%time\nw = q * 2\nprint(w)", reads: names{has: []string{"q"}, not: []string{"w"}}, writes: has("w"), magics: has("time")},
		{name: "capture binds its name", code: "%%capture out\nx = q", reads: has("q"), writes: has("out", "x"), magics: has("capture")},
		{name: "capture around a line magic", code: "%%capture\n%time y = 21 * 2", writes: has("y"), magics: has("capture", "time")},
		{name: "safe magic", code: "%matplotlib inline\nimport matplotlib.pyplot as plt", magics: has("matplotlib"), writes: has("plt")},
		{name: "magic assigned", code: "home = %env HOME", writes: has("home"), magics: has("env")},
		{name: "shell command", code: "!ls -l", reads: names{not: []string{"ls"}}, shell: true},
		{name: "shell output assigned", code: "files = !ls", writes: has("files"), shell: true},
		{name: "shell command expanding names", code: "!echo $x {y + 1} $$HOME", reads: has("x", "y"), shell: true},
		{name: "bash cell magic", code: "%%bash\necho hi", shell: true, magics: has("bash")},
		{name: "help query reads the object", code: "obj.method?", reads: has("obj"), magics: has("pinfo")},
		{name: "double help query", code: "func??", reads: has("func"), magics: has("pinfo2")},
		{name: "xdel deletes", code: "%xdel big", deleted: has("big"), magics: has("xdel")},
		{name: "who lists every name", code: "%who", dynamic: true, magics: has("who")},
		{name: "unknown magic is dynamic", code: "%run script.py", dynamic: true, magics: has("run")},
		{name: "ferry cell magic body is analysed", code: "%%ferry remote\nm = big.mean()", reads: has("big"), writes: has("m"), magics: has("ferry")},

		{name: "syntax error", code: "def (:", unparsable: true},
		{name: "indentation error", code: "x = 1\n  y = 2", unparsable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := a.Analyze(ctx, tt.code)
			if err != nil {
				t.Fatal(err)
			}
			tt.reads.check(t, "reads", r.Reads)
			tt.writes.check(t, "writes", r.Writes)
			tt.maybe.check(t, "maybe", r.Maybe)
			tt.deleted.check(t, "deleted", r.Deleted)
			tt.calls.check(t, "calls", r.Calls)
			tt.magics.check(t, "magics", r.Magics)
			for def, want := range tt.defs {
				got, ok := r.Defs[def]
				if !ok {
					t.Errorf("defs = %v, missing %q", r.Defs, def)
				}
				want.check(t, "defs["+def+"]", got)
				if _, ok := r.DefEffects[def]; !ok {
					t.Errorf("def_effects = %v, missing %q", r.DefEffects, def)
				}
			}
			for _, w := range r.Writes {
				if !slices.Contains(r.Maybe, w) {
					t.Errorf("written %q is not in maybe %v", w, r.Maybe)
				}
			}
			if r.Dynamic != tt.dynamic {
				t.Errorf("dynamic = %v, want %v", r.Dynamic, tt.dynamic)
			}
			if r.Shell != tt.shell {
				t.Errorf("shell = %v, want %v", r.Shell, tt.shell)
			}
			if r.Unparsable != tt.unparsable || (r.Error != "") != tt.unparsable {
				t.Errorf("unparsable = %v, error = %q, want unparsable %v", r.Unparsable, r.Error, tt.unparsable)
			}
		})
	}
}

func TestDefEffects(t *testing.T) {
	a := newAnalyzer(t)
	r, err := a.Analyze(context.Background(), "def bump(by=1):\n    global counter, gone\n    counter += by\n    log.append(by)\n    del gone\n    return helper(by)")
	if err != nil {
		t.Fatal(err)
	}
	e := r.DefEffects["bump"]
	has("counter", "log", "helper").check(t, "reads", e.Reads)
	has("counter", "gone").check(t, "writes", e.Writes)
	has("log").check(t, "maybe", e.Maybe)
	has("helper").check(t, "calls", e.Calls)
	names{has: []string{"counter", "log", "helper", "gone"}, not: []string{"by", "bump"}}.check(t, "defs", r.Defs["bump"])
	// Defining it writes the globals it assigns (when called) but reads none.
	has("bump", "counter", "gone").check(t, "writes", r.Writes)
	names{not: []string{"counter", "log"}}.check(t, "reads", r.Reads)
}

func TestAnalyzeCachesByCode(t *testing.T) {
	a := newAnalyzer(t)
	ctx := context.Background()
	first, err := a.Analyze(ctx, "cached = source")
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // a cached answer needs no helper
	a.sem <- struct{}{}
	a.cmd = nil
	a.python = "/nonexistent/python"
	<-a.sem
	again, err := a.Analyze(ctx, "cached = source")
	if err != nil || !slices.Equal(first.Reads, again.Reads) {
		t.Fatalf("cached result: %+v, %v; first %+v", again, err, first)
	}
	if _, err := a.Analyze(ctx, "not cached"); err == nil || !strings.Contains(err.Error(), "/nonexistent/python") {
		t.Fatalf("uncached with a missing interpreter: err = %v", err)
	}
}

// The helper's script comes on its stdin, not from a file that a killed
// Ferry would leave behind in TMPDIR.
func TestAnalyzerLeavesNoFile(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	a := newAnalyzer(t)
	r, err := a.Analyze(context.Background(), "y = x + 1")
	if err != nil || !slices.Contains(r.Reads, "x") {
		t.Fatalf("analysis %+v, %v", r, err)
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s is in TMPDIR while the helper runs", e.Name())
	}
}

func TestAnalyzerRestartsAfterHelperDies(t *testing.T) {
	a := newAnalyzer(t)
	ctx := context.Background()
	if _, err := a.Analyze(ctx, "x = 1"); err != nil {
		t.Fatal(err)
	}
	a.sem <- struct{}{}
	_ = a.cmd.Process.Kill()
	<-a.sem
	// The first call after the death fails (and is marked dynamic); the
	// helper is then restarted.
	if r, err := a.Analyze(ctx, "y = 2"); err != nil && !r.Dynamic {
		t.Fatalf("failed analysis not marked dynamic: %+v", r)
	}
	r, err := a.Analyze(ctx, "z = w")
	if err != nil || !slices.Contains(r.Reads, "w") {
		t.Fatalf("after restart: %+v, %v", r, err)
	}
}

func TestAnalyzeHonoursContext(t *testing.T) {
	a := newAnalyzer(t)
	if _, err := a.Analyze(context.Background(), "warm = 1"); err != nil {
		t.Fatal(err)
	}
	// A helper that never answers: the call returns when ctx ends.
	a.sem <- struct{}{}
	_ = a.cmd.Process.Signal(syscall.SIGSTOP)
	<-a.sem
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := a.Analyze(ctx, "stuck = 1")
	if !errors.Is(err, context.DeadlineExceeded) || !r.Dynamic {
		t.Fatalf("stuck helper: %+v, %v", r, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// Waiting callers honour their context too, and the helper recovers.
	r, err = a.Analyze(context.Background(), "after = before")
	if err != nil || !slices.Contains(r.Reads, "before") {
		t.Fatalf("after a stuck helper: %+v, %v", r, err)
	}
}

func TestAnalyzeConcurrent(t *testing.T) {
	a := newAnalyzer(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code := "v" + strings.Repeat("x", i) + " = src"
			r, err := a.Analyze(context.Background(), code)
			if err != nil || !slices.Contains(r.Reads, "src") {
				t.Errorf("%q: %+v, %v", code, r, err)
			}
		}()
	}
	wg.Wait()
}

// uses renders Files as "op path" strings, for names checks.
func uses(fs []FileUse) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Op+" "+f.Path)
	}
	return out
}

func TestFacts(t *testing.T) {
	a := newAnalyzer(t)
	tests := []struct {
		name, code string
		in         string // check DefEffects[in] instead of the cell
		files      names
		imports    names
		env        names
		envWrites  names
		settings   names
		attrStores names
		modAttrs   names
		side       names
		// Exact booleans.
		filesUnknown, envUnknown, chdir, shell bool
	}{
		// open and friends.
		{name: "open without mode reads", code: `open("data/a.txt")`, files: has("read data/a.txt"), side: names{not: []string{"file-write"}}},
		{name: "open for writing", code: `open("out.txt", "w")`, files: names{has: []string{"write out.txt"}, not: []string{"read out.txt"}}, side: has("file-write")},
		{name: "open r+ reads and writes", code: `open("db.bin", "r+b")`, files: has("read db.bin", "write db.bin")},
		{name: "open append reads and writes", code: `fh = open(file="log.txt", mode="a")`, files: has("read log.txt", "write log.txt")},
		{name: "io.open", code: "import io\nio.open('x.txt')", files: has("read x.txt"), imports: has("io")},
		{name: "os.open by flags", code: "os.open('f.bin', os.O_WRONLY | os.O_CREAT)", files: has("write f.bin")},
		{name: "path normalised", code: `open("./data//sub/../a.csv")`, files: has("read data/a.csv")},
		{name: "name bound to a literal", code: "p = 'data/x.csv'\nopen(p)", files: has("read data/x.csv")},
		{name: "f-string of literals", code: "d = 'data'\nopen(f'{d}/x.csv')\nopen(f'plain.txt')", files: has("read data/x.csv", "read plain.txt")},
		{name: "concatenation and os.path.join", code: "open('data/' + 'a.csv')\nopen(os.path.join('data', 'b.csv'))", files: has("read data/a.csv", "read data/b.csv")},
		{name: "pathlib chains", code: "from pathlib import Path\nopen(Path('a') / 'b' / 'c.txt')\nopen(Path('a').joinpath('d.txt'))",
			files: has("read a/b/c.txt", "read a/d.txt"), imports: has("pathlib")},
		{name: "conditional binding is not a literal", code: "if c:\n    p = 'a.txt'\nopen(p)", filesUnknown: true, files: names{not: []string{"read a.txt"}}},
		{name: "open on a name from another cell", code: "open(path)", filesUnknown: true},
		{name: "open with a substituted f-string", code: "open(f'data/{name}.csv')", filesUnknown: true},
		{name: "open with an unknown mode may write", code: "open('x.txt', mode)", files: has("read x.txt", "write x.txt"), side: has("file-write")},
		{name: "open passed as a value", code: "o = open\no('x')", filesUnknown: true},
		{name: "open file objects are not paths", code: "with open('m.pkl', 'rb') as f:\n    m = pickle.load(f)\n    d = pd.read_csv(f)",
			files: has("read m.pkl")},
		{name: "a StringIO is not a path", code: "buf = io.BytesIO()\nfig.savefig(buf)\npd.read_csv(io.StringIO(s))"},
		{name: "a descriptor is not a path", code: "open(0)"},
		{name: "a string not passed to a file function is no file", code: "x = 'data/x.csv'\nprint(x)", files: names{not: []string{"read data/x.csv"}}},

		// numpy, pandas, images, models.
		{name: "numpy reads", code: "import numpy as np\nnp.load('a.npy')\nnp.loadtxt('b.txt')\nnp.genfromtxt('c.csv')\nnp.fromfile('d.bin')",
			files: has("read a.npy", "read b.txt", "read c.csv", "read d.bin")},
		{name: "numpy memmap defaults to r+", code: "np.memmap('m.dat', mode='r')\nnp.memmap('n.dat')", files: has("read m.dat", "read n.dat", "write n.dat")},
		{name: "numpy writes", code: "np.save('a', x)\nnp.savez('b.npz', x=x)\nnp.savez_compressed('c', x=x)\nnp.savetxt('d.txt', x)\nx.tofile('e.bin')",
			files: has("write a.npy", "write b.npz", "write c.npz", "write d.txt", "write e.bin"), side: has("file-write")},
		{name: "pandas readers", code: "pd.read_csv('a.csv')\npd.read_parquet('b.parquet')\npd.read_excel(io='c.xlsx')\npd.read_pickle('d.pkl')\npd.read_json('e.json')",
			files: has("read a.csv", "read b.parquet", "read c.xlsx", "read d.pkl", "read e.json")},
		{name: "pandas writers on anything", code: "df.to_csv('a.csv')\nresult.frame.to_parquet('b.parquet')\nto_write.to_excel('c.xlsx')\ns.to_json(path_or_buf='d.json')",
			files: has("write a.csv", "write b.parquet", "write c.xlsx", "write d.json"), side: has("file-write")},
		{name: "to_numpy and to_csv() without a path write no file", code: "x = df.to_numpy()\ns = df.to_csv()\nh = df.to_html()",
			files: names{not: []string{"write ."}}, side: names{not: []string{"file-write"}}},
		{name: "IPython display objects read their file", code: "from IPython.display import Image, Video\nImage('python.png')\nImage(filename='b.png')\nVideo('c.mp4')",
			files: has("read python.png", "read b.png", "read c.mp4")},
		{name: "a bare Image imported earlier is IPython's", code: "Image('my_figure.png')", files: has("read my_figure.png")},
		{name: "an Image of a URL reads no file", code: "from IPython.display import Image\nImage('https://example.com/x.png')",
			files: names{not: []string{"read https:/example.com/x.png"}}},
		{name: "savefig", code: "plt.savefig('fig.png')\nfig.savefig('figs/b.pdf')", files: has("write fig.png", "write figs/b.pdf")},
		{name: "savefig to a computed path", code: "fig.savefig(out)", filesUnknown: true, side: has("file-write")},
		{name: "PIL open and save", code: "from PIL import Image\nim = Image.open('a.png')\nim.save('b.png')", files: has("read a.png", "write b.png"), imports: has("PIL")},
		{name: "torch and joblib", code: "torch.load('m.pt')\ntorch.save(m, 'n.pt')\njoblib.dump(m, 'j.pkl')\njoblib.load('k.pkl')",
			files: has("read m.pt", "write n.pt", "write j.pkl", "read k.pkl")},
		{name: "pickle through open", code: "pickle.dump(m, open('m.pkl', 'wb'))", files: has("write m.pkl")},
		{name: "rasterio by mode", code: "rasterio.open('a.tif')\nrasterio.open('b.tif', 'w')", files: has("read a.tif", "write b.tif")},

		// Directories and globs.
		{name: "glob", code: "import glob\nglob.glob('data/*.csv')\nglob.iglob('**/*.py', recursive=True)", files: has("glob data/*.csv", "glob **/*.py")},
		{name: "Path glob joins", code: "Path('data').glob('*.csv')\nPath('src').rglob('*.py')", files: has("glob data/*.csv", "glob src/**/*.py")},
		{name: "listing", code: "os.listdir()\nos.listdir('data')\nos.walk('src')\nos.scandir('x')\nPath('y').iterdir()",
			files: has("list .", "list data", "list src", "list x", "list y")},
		{name: "deleting", code: "os.remove('a')\nos.unlink('b')\nos.rmdir('c')\nshutil.rmtree('d')\nPath('e').unlink()\nPath('f').rmdir()",
			files: has("delete a", "delete b", "delete c", "delete d", "delete e", "delete f"), side: has("file-write")},
		{name: "moves", code: "os.rename('a', 'b')\nshutil.move('c', 'd')\nos.replace('e', 'f')", files: has("delete a", "read a", "write b", "delete c", "write d", "write f")},
		{name: "copies", code: "shutil.copy('a', 'b')\nshutil.copyfile('c', 'd')\nshutil.copytree('e', 'f/')", files: has("read a", "write b", "read c", "write d", "read e", "write f")},
		{name: "making directories", code: "os.makedirs('out/x', exist_ok=True)\nos.mkdir('y')\nPath('z').mkdir(parents=True)", files: has("write out/x", "write y", "write z")},
		{name: "existence tests", code: "os.path.exists('cfg.yaml')\nos.path.isfile('a')\nPath('b').exists()\nPath('c').is_dir()",
			files: has("exists cfg.yaml", "exists a", "exists b", "exists c"), side: names{not: []string{"file-write"}}},
		{name: "Path text methods", code: "p = Path('d')\n(p / 'a.txt').write_text('hi')\n(p / 'b.txt').read_text()\nPath('c').read_bytes()\nPath('t').touch()",
			files: has("write d/a.txt", "read d/b.txt", "read c", "write t")},
		{name: "Path methods on an unknown path", code: "p.read_text()", filesUnknown: true},
		{name: "Path of a variable", code: "Path(var).exists()", filesUnknown: true},
		{name: "rename and replace on non-paths are no files", code: "df = df.rename(columns={'a': 'b'})\ns = s.replace('a', 'b')"},
		{name: "URLs are network, not files", code: "pd.read_csv('https://example.com/x.csv')", side: has("network"), files: names{not: []string{"read https:/example.com/x.csv"}}},

		// Functions defined in the cell.
		{name: "a function reading its parameter", code: "def load(path):\n    with open(path) as fh:\n        return fh.read()", in: "load", filesUnknown: true},
		{name: "the cell itself does not run the function", code: "def load(path):\n    return pd.read_csv(path)"},
		{name: "a function with a local literal", code: "def f():\n    p = 'x.csv'\n    return open(p)", in: "f", files: has("read x.csv")},
		{name: "a function reading a global path is unknown", code: "P = 'x'\ndef f():\n    return open(P)", in: "f", filesUnknown: true},
		{name: "calling a function defined here adds its files", code: "def save():\n    df.to_csv('out.csv')\nsave()", files: has("write out.csv"), side: has("file-write")},
		{name: "a method's files count when the class is used", code: "class C:\n    def save(self):\n        open('x', 'w')\nC().save()", files: has("write x")},
		{name: "function env and settings", code: "def g():\n    os.environ['K'] = 'v'\n    np.set_printoptions(precision=2)\n    return os.getenv('J')",
			in: "g", env: has("J"), envWrites: has("K"), settings: has("numpy.printoptions")},

		// IPython.
		{name: "%run reads the script", code: "%run script.py", files: has("read script.py"), filesUnknown: true, envUnknown: true},
		{name: "%load reads the file", code: "%load snippet.py", files: has("read snippet.py")},
		{name: "%%writefile", code: "%%writefile out.txt\nhello\n", files: names{has: []string{"write out.txt"}, not: []string{"read out.txt"}}, side: has("file-write")},
		{name: "%%writefile -a", code: "%%writefile -a out.txt\nhello\n", files: has("read out.txt", "write out.txt")},
		{name: "%cd", code: "%cd data", chdir: true},
		{name: "%pushd and %popd", code: "%pushd data\n%popd", chdir: true},
		{name: "os.chdir", code: "os.chdir('x')", chdir: true},
		{name: "%ls", code: "%ls", files: has("list .")},
		{name: "shell command", code: "!ls", shell: true, filesUnknown: true, side: has("shell")},
		{name: "bash cell", code: "%%bash\nrm -rf x", shell: true, filesUnknown: true, side: has("shell")},
		{name: "%sx", code: "%sx ls", shell: true, filesUnknown: true},
		{name: "os.system", code: "os.system('ls')", shell: true, filesUnknown: true, side: has("shell")},
		{name: "subprocess", code: "import subprocess\nsubprocess.run(['ls'])", shell: true, filesUnknown: true, side: has("shell")},
		{name: "exec may do anything", code: "exec(src)", filesUnknown: true, envUnknown: true},
		{name: "%pip", code: "%pip install x", side: has("network")},

		// Imports.
		{name: "imports", code: "import a.b as c\nfrom x.y import z\nfrom . import w\nfrom .rel import v\nimportlib.import_module('m.n')\n__import__('q')",
			imports: names{has: []string{"a", "x", "m", "q"}, not: []string{"c", "b", "y", "z", "w", "rel"}}},

		// Environment.
		{name: "environment reads", code: "os.environ['A']\nos.environ.get('B')\nos.getenv('C')\n'D' in os.environ\nos.path.expandvars('$E/${F}')",
			env: has("A", "B", "C", "D", "E", "F")},
		{name: "environ imported by name", code: "from os import environ\nenviron['X']", env: has("X")},
		{name: "%env reads", code: "%env HOME", env: has("HOME")},
		{name: "%env writes", code: "%env A=1\n%env B 2\n%set_env C 3", envWrites: has("A", "B", "C"), env: names{not: []string{"A", "B", "C"}}},
		{name: "environment writes", code: "os.environ['A'] = '1'\ndel os.environ['B']\nos.environ.setdefault('C', 'x')\nos.environ.pop('D')\nos.putenv('E', '1')\nos.unsetenv('F')",
			envWrites: has("A", "B", "C", "D", "E", "F")},
		{name: "augmented environment write reads too", code: "os.environ['PATH'] += ':x'", env: has("PATH"), envWrites: has("PATH")},
		{name: "iterating the environment", code: "for k in os.environ:\n    pass", envUnknown: true},
		{name: "copying the environment", code: "env = dict(os.environ)", envUnknown: true},
		{name: "updating the environment", code: "os.environ.update(A='1')", envUnknown: true},
		{name: "a computed key", code: "os.environ[key]", envUnknown: true},
		{name: "bare %env", code: "%env", envUnknown: true},

		// Settings.
		{name: "numpy print options", code: "np.set_printoptions(precision=3)", settings: has("numpy.printoptions")},
		{name: "numpy printoptions context does not persist", code: "with np.printoptions(precision=2):\n    print(a)", settings: names{not: []string{"numpy.printoptions"}}},
		{name: "pandas options", code: "pd.set_option('display.max_rows', 5)\npd.options.display.width = 100", settings: has("pandas.options"), attrStores: has("pd.options")},
		{name: "matplotlib rc", code: "plt.rcParams['figure.figsize'] = (3, 4)\nmpl.rcParams.update({})\nplt.style.use('ggplot')\nsns.set_theme()\nplt.rc('font', size=8)",
			settings: has("matplotlib.rc")},
		{name: "matplotlib backend", code: "%matplotlib inline\nimport matplotlib\nmatplotlib.use('Agg')", settings: has("matplotlib.backend")},
		{name: "logging", code: "logging.basicConfig(level=10)\nlogging.getLogger('x').setLevel(10)", settings: has("logging")},
		{name: "warnings", code: "warnings.filterwarnings('ignore')", settings: has("warnings")},
		{name: "sympy printing", code: "import sympy\nsympy.init_printing()", settings: has("ipython.formatters")},
		{name: "sympy printing imported bare", code: "from sympy import init_printing\ninit_printing(use_latex='mathjax')", settings: has("ipython.formatters")},
		{name: "a display printer", code: "get_ipython().display_formatter.formatters['text/plain'].for_type(int, f)", settings: has("ipython.formatters")},
		{name: "IPython config magics", code: "%config InlineBackend.figure_format = 'svg'\n%load_ext autoreload\n%autoreload 2\n%precision 3", settings: has("ipython.config")},
		{name: "registering a magic", code: "from IPython.core.magic import register_line_magic\n@register_line_magic\ndef hi(line):\n    return line", settings: has("ipython.magics")},
		{name: "sys.path", code: "sys.path.append('src')\nsys.path.insert(0, 'x')", settings: has("sys.path")},
		{name: "sys.path rebound", code: "sys.path = ['a']", settings: has("sys.path")},
		{name: "threads, sklearn, umask, recursion", code: "torch.set_num_threads(2)\nsklearn.set_config(display='text')\nos.umask(0)\nsys.setrecursionlimit(5000)",
			settings: has("torch.threads", "sklearn.config", "umask", "recursionlimit")},
		{name: "module attributes", code: "import mymod\nmymod.VERBOSE = True\nobj.attr = 3\nobj.a.b = 4",
			attrStores: has("mymod.VERBOSE", "obj.attr", "obj.a"), modAttrs: names{has: []string{"mymod.VERBOSE"}, not: []string{"obj.attr"}}, settings: has("module.attr")},
		{name: "attribute store on a local is not a global store", code: "def f(o):\n    o.x = 1", in: "f", attrStores: names{not: []string{"o.x"}}},
		{name: "no module.attr without an import", code: "obj.attr = 3", settings: names{not: []string{"module.attr"}}},

		// Network.
		{name: "network calls", code: "import requests\nrequests.get('http://x')", side: has("network")},
		{name: "urllib", code: "from urllib.request import urlopen\nurlopen('http://x')", side: has("network")},
		{name: "time is not an effect", code: "import time\ntime.sleep(1)", side: names{not: []string{"network", "shell", "file-write", "time"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := a.Analyze(ctx, tt.code)
			if err != nil {
				t.Fatal(err)
			}
			if r.Unparsable {
				t.Fatalf("unparsable: %s", r.Error)
			}
			f := r.Facts
			if tt.in != "" {
				e, ok := r.DefEffects[tt.in]
				if !ok {
					t.Fatalf("def_effects = %v, missing %q", r.DefEffects, tt.in)
				}
				f = e.Facts
			}
			tt.files.check(t, "files", uses(f.Files))
			tt.imports.check(t, "imports", f.Imports)
			tt.env.check(t, "env", f.Env)
			tt.envWrites.check(t, "env_writes", f.EnvWrites)
			tt.settings.check(t, "settings", f.Settings)
			tt.attrStores.check(t, "attr_stores", f.AttrStores)
			tt.modAttrs.check(t, "module_attrs", r.ModuleAttrs)
			tt.side.check(t, "side_effects", f.SideEffects)
			if f.FilesUnknown != tt.filesUnknown {
				t.Errorf("files_unknown = %v, want %v (files %v)", f.FilesUnknown, tt.filesUnknown, f.Files)
			}
			if f.EnvUnknown != tt.envUnknown {
				t.Errorf("env_unknown = %v, want %v", f.EnvUnknown, tt.envUnknown)
			}
			if f.Chdir != tt.chdir {
				t.Errorf("chdir = %v, want %v", f.Chdir, tt.chdir)
			}
			if tt.in == "" && r.Shell != tt.shell {
				t.Errorf("shell = %v, want %v", r.Shell, tt.shell)
			}
			for _, l := range [][]string{f.Imports, f.Env, f.EnvWrites, f.Settings, f.AttrStores, f.SideEffects} {
				if !slices.IsSorted(l) {
					t.Errorf("not sorted: %v", l)
				}
			}
			if !slices.IsSortedFunc(f.Files, func(x, y FileUse) int { return cmp.Or(cmp.Compare(x.Path, y.Path), cmp.Compare(x.Op, y.Op)) }) {
				t.Errorf("files not sorted by path and op: %v", f.Files)
			}
			if slices.Contains(f.SideEffects, "file-write") != slices.ContainsFunc(f.Files, func(u FileUse) bool { return u.Op == "write" || u.Op == "delete" }) && !f.FilesUnknown {
				t.Errorf("side_effects %v disagree with files %v", f.SideEffects, f.Files)
			}
		})
	}
}

func TestFailedAnalysisIsUnknown(t *testing.T) {
	a := New("/nonexistent/python")
	defer a.Close()
	r, err := a.Analyze(context.Background(), "x = 1")
	if err == nil || !r.Dynamic || !r.FilesUnknown || !r.EnvUnknown {
		t.Fatalf("failed analysis: %+v, %v", r, err)
	}
}
