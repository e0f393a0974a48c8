package analysis

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"
)

const python = "/usr/bin/python3"

func newAnalyzer(t *testing.T) *Analyzer {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s missing: run 'bash scripts/setup.sh' (apt-get install python3-ipykernel)", python)
	}
	a := New(python)
	t.Cleanup(a.Close)
	return a
}

func TestAnalyze(t *testing.T) {
	a := newAnalyzer(t)
	tests := []struct {
		name                        string
		code                        string
		reads, writes, maybe, notRd []string
		deleted                     []string
		dynamic, parseErr           bool
	}{
		{name: "assign then read is not a read", code: "x = 1\ny = x + z", reads: []string{"z"}, writes: []string{"x", "y"}, notRd: []string{"x"}},
		{name: "augmented assignment reads", code: "n += 1", reads: []string{"n"}, writes: []string{"n"}, maybe: []string{"n"}},
		{name: "item and attribute assignment mutate", code: "a[3] = 1\nb.c = 2\nd[k].e = v", reads: []string{"a", "b", "d", "k", "v"}, maybe: []string{"a", "b", "d"}},
		{name: "method call may mutate", code: "lst.append(1)\ndf.loc[0, 'a'] = 3", reads: []string{"lst", "df"}, maybe: []string{"lst", "df"}},
		{name: "comprehension scope", code: "r = [i * k for i in items if i > lim]", reads: []string{"items", "k", "lim"}, writes: []string{"r"}, notRd: []string{"i"}},
		{name: "walrus in comprehension leaks", code: "[y := f(x) for x in xs]", reads: []string{"f", "xs"}, writes: []string{"y"}, notRd: []string{"x"}},
		{name: "del", code: "del a, b[0]", reads: []string{"a", "b"}, deleted: []string{"a"}, maybe: []string{"b"}},
		{name: "nonlocal inside function", code: "def outer():\n    c = 0\n    def inner():\n        nonlocal c\n        c += g\n    return inner", writes: []string{"outer"}, notRd: []string{"c", "g"}},
		{name: "f-string", code: "s = f'{name!r:>{width}}'", reads: []string{"name", "width"}, writes: []string{"s"}},
		{name: "decorators and defaults run at definition", code: "@deco(opt)\ndef f(a=default, *args, **kw):\n    return a + glob", reads: []string{"deco", "opt", "default"}, writes: []string{"f"}, notRd: []string{"glob", "args", "kw"}},
		{name: "calling a function defined here reads its globals", code: "def f():\n    return glob\nf()", reads: []string{"glob"}, writes: []string{"f"}},
		{name: "star args", code: "out = g(*xs, **opts)", reads: []string{"g", "xs", "opts"}, maybe: []string{"xs", "opts"}},
		{name: "global in function", code: "def setg():\n    global G\n    G = 1\nsetg()", writes: []string{"G", "setg"}},
		{name: "conditional binding still reads", code: "if c:\n    x = 1\nprint(x)", reads: []string{"c", "x"}},
		{name: "for target and with as", code: "for i in range(n):\n    t = i\nwith open(p) as fh:\n    data = fh.read()", reads: []string{"n", "p"}, writes: []string{"i", "t", "fh", "data"}},
		{name: "try except name", code: "try:\n    v = risky()\nexcept ValueError as e:\n    v = None", reads: []string{"risky"}, writes: []string{"v", "e"}},
		{name: "import aliases", code: "import numpy as np, os.path\nfrom math import sqrt as s", writes: []string{"np", "os", "s"}},
		{name: "class body", code: "class C(Base):\n    k = K\n    def m(self):\n        return self.k + G", reads: []string{"Base", "K"}, writes: []string{"C"}},
		{name: "lambda", code: "f = lambda q, r=dflt: q + outer", reads: []string{"dflt", "outer"}, writes: []string{"f"}, notRd: []string{"q", "r"}},
		{name: "match", code: "match cmd:\n    case [x, y]:\n        out = x\n    case {'k': v, **rest}:\n        out = v", reads: []string{"cmd"}, writes: []string{"x", "y", "out", "v", "rest"}},
		{name: "exec is dynamic", code: "exec('z = 1')", dynamic: true},
		{name: "globals() is dynamic", code: "globals()['q'] = 3", dynamic: true},
		{name: "star import is dynamic", code: "from os.path import *", dynamic: true},
		{name: "time magic is analysed", code: "%time w = q * 2", reads: []string{"q"}, writes: []string{"w"}},
		{name: "cell magic body is analysed", code: "%%time\nw = q * 2", reads: []string{"q"}, writes: []string{"w"}},
		{name: "shell command", code: "!ls -l", notRd: []string{"ls"}},
		{name: "shell command expanding a name", code: "!echo $x", dynamic: true},
		{name: "help query reads the object", code: "obj.method?", reads: []string{"obj"}},
		{name: "who lists every name", code: "%who", dynamic: true},
		{name: "unknown magic is dynamic", code: "%run script.py", dynamic: true},
		{name: "syntax error", code: "def (:", parseErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := a.Analyze(ctx, tt.code)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []string) {
				for _, w := range want {
					if !slices.Contains(got, w) {
						t.Errorf("%s = %v, missing %q", what, got, w)
					}
				}
			}
			check("reads", r.Reads, tt.reads)
			check("writes", r.Writes, tt.writes)
			check("maybe", r.Maybe, tt.maybe)
			check("deleted", r.Deleted, tt.deleted)
			for _, n := range tt.notRd {
				if slices.Contains(r.Reads, n) {
					t.Errorf("reads = %v, should not contain %q", r.Reads, n)
				}
			}
			if r.Dynamic != tt.dynamic {
				t.Errorf("dynamic = %v, want %v", r.Dynamic, tt.dynamic)
			}
			if (r.Error != "") != tt.parseErr {
				t.Errorf("error = %q, want error: %v", r.Error, tt.parseErr)
			}
		})
	}
}

func TestAnalyzerRestartsAfterHelperDies(t *testing.T) {
	a := newAnalyzer(t)
	ctx := context.Background()
	if _, err := a.Analyze(ctx, "x = 1"); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	_ = a.cmd.Process.Kill()
	a.mu.Unlock()
	// The first call after the death may fail; the helper is then restarted.
	if _, err := a.Analyze(ctx, "y = 2"); err == nil {
		return
	}
	r, err := a.Analyze(ctx, "z = w")
	if err != nil || !slices.Contains(r.Reads, "w") {
		t.Fatalf("after restart: %+v, %v", r, err)
	}
}
