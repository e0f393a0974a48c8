// Package transparency holds the notebooks that check Ferry's central
// promise: a notebook gives the same outputs whichever cells run where.
// The tests run each one all-local and under pingpong and random placement
// and compare outputs.
package transparency

// Case is a small notebook: its code cells in order.
type Case struct {
	Name  string
	Cells []string
}

// Cases cover what state migration must get right.
var Cases = []Case{
	{"aliasing", []string{"a = [1]\nb = a", "b.append(2)", "print(a, a is b)", "a.append(3)\nprint(b)"}},
	{"list_mutation", []string{"l = [3, 1, 2]", "l.sort()\nl[0] = 10", "l.extend([7])", "print(l, len(l))"}},
	{"dict_mutation", []string{"d = {'a': 1}", "d['b'] = 2\nd.update(c=3)", "del d['a']", "print(sorted(d.items()))"}},
	{"numpy_inplace", []string{"import numpy as np\nx = np.arange(6.0)", "x[3] = 100", "x += 1\nv = x[1:3]", "v[:] = -1\nprint(x)", "print(x.sum(), v)"}},
	{"pandas_mutation", []string{"import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3], 'b': [4.0, 5.0, 6.0]})", "df.loc[1, 'a'] = 20", "df['c'] = df.a * df.b", "print(df.to_string())", "df.drop(columns=['b'], inplace=True)\nprint(df.shape, list(df.columns))"}},
	{"closures", []string{"def make(n):\n    def add(x):\n        return x + n\n    return add", "f = make(3)", "print(f(2))", "g = make(10)\nprint(f(1), g(1))"}},
	{"classes", []string{"class Acc:\n    def __init__(self):\n        self.total = 0\n    def add(self, v):\n        self.total += v\n        return self", "acc = Acc()", "acc.add(5).add(6);", "print(acc.total, type(acc).__name__, isinstance(acc, Acc))"}},
	{"decorators", []string{"registry = {}\ndef register(f):\n    registry[f.__name__] = f\n    return f", "@register\ndef double(x):\n    return 2 * x", "@register\ndef square(x):\n    return x * x", "print(sorted(registry), registry['double'](4), square(5))"}},
	{"global_through_function", []string{"counter = 0\ndef bump(by=1):\n    global counter\n    counter += by", "bump()", "bump(5)", "print(counter)"}},
	{"function_uses_later_global", []string{"def scale(v):\n    return v * factor", "factor = 2", "print(scale(3))", "factor = 7", "print(scale(3))"}},
	{"exec_and_globals", []string{"exec('z = 5')", "print(z)", "globals()['w'] = z * 2", "print(w)"}},
	{"deletions", []string{"x = 1\ny = 2", "del x", "try:\n    print(x)\nexcept NameError as e:\n    print('NameError:', e)", "print(y)"}},
	{"rng", []string{"import random\nimport numpy as np\nrandom.seed(42)\nnp.random.seed(7)", "print(random.random())", "print(np.random.rand(3))", "print(random.randint(0, 1000), np.random.randint(0, 1000))"}},
	{"rng_generator", []string{"import numpy as np\nrng = np.random.default_rng(5)", "a = rng.normal(size=3)", "print(a, rng.integers(0, 100))"}},
	{"import_aliases", []string{"import numpy as np\nfrom collections import OrderedDict as OD\nimport os.path", "od = OD(a=np.int64(3))", "print(type(od).__name__, od['a'] + 1, os.path.join('a', 'b'))"}},
	{"generator_pinned", []string{"g = (i * i for i in range(5))", "print(next(g))", "print(next(g), next(g))", "print(list(g))"}},
	{"open_file_pinned", []string{"import tempfile, os\npath = os.path.join(tempfile.mkdtemp(), 'f.txt')\nfh = open(path, 'w')", "fh.write('hello\\n')", "fh.close()", "print(open(path).read().strip())"}},
	{"exception_mid_cell", []string{"x = 1", "x = 2\nraise ValueError('boom')\nx = 3", "print(x)"}},
	{"magics_and_shell", []string{"%%capture\n%time y = 21 * 2", "print(y)", "!echo shell says hi", "%who int"}},
	// A command's output describes the machine it runs on (the cloud is
	// another user in another directory): the corpus's `!ls -l` printed
	// the cloud's user as a file's owner. Shell cells stay on the laptop.
	{"shell_describes_its_machine", []string{"open('made.txt', 'w').write('hi')", "!ls -l made.txt | cut -d' ' -f3,4,5", "x = 2", "!whoami && pwd | wc -c", "print(x)"}},
	{"large_array", []string{"import numpy as np\nbig = np.arange(13_500_000, dtype=np.float64)", "print(big.nbytes > 100e6, big[-1])", "big[::2] = 0\ns = big.sum()", "print(s, big[:4])"}},
	{"shared_subobjects", []string{"inner = [1]\nouter = {'a': inner, 'b': inner}", "print(outer['a'] is outer['b'], outer['a'] is inner)", "inner.append(2)", "print(outer)"}},
	{"lambdas_in_containers", []string{"ops = {'inc': lambda v: v + 1, 'neg': lambda v: -v}", "print(ops['inc'](1), ops['neg'](2))", "ops['dbl'] = lambda v: v * 2", "print(sorted(ops), ops['dbl'](21))"}},
	{"functions_calling_functions", []string{"def a(v):\n    return b(v) + 1", "def b(v):\n    return v * base", "base = 10", "print(a(2))"}},
	{"comprehension_walrus", []string{"data = [1, 5, 2, 8]", "big = [y for x in data if (y := x * 2) > 4]", "print(big, y)"}},
	{"immutables", []string{"s = 'abc'\nt = (1, [2])\nb = b'xy'", "s += 'd'\nt[1].append(3)", "print(s, t, b)"}},
	{"class_attribute", []string{"class K:\n    count = 0\n    def __init__(self):\n        K.count += 1", "k1 = K()", "k2 = K()", "print(K.count, k1.count, type(k2) is K)"}},
	{"display_outputs", []string{"from IPython.display import display, HTML\nimport pandas as pd\ndf = pd.DataFrame({'x': [1, 2]})", "display(HTML('<b>bold</b>'))", "df", "print(df.x.sum())\ndf.x.sum()"}},
	{"sets_and_tuples", []string{"s = {1, 2}\nt = (s,)", "s.add(3)", "print(sorted(t[0]), t[0] is s)"}},
	{"object_into_container_later", []string{"obj = {'v': 1}", "holder = [obj]", "obj['v'] = 2", "print(holder[0]['v'], holder[0] is obj)"}},
	{"raising_cell_mutation", []string{"data = [1, 2, 3]", "data.append(4)\nraise ValueError('after the append')", "print(data)", "data.append(5)\nraise KeyError('again')", "print(data, len(data))"}},
	{"matplotlib_figure_moves", []string{"import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(3, 2))\nax.plot([1, 2, 3]);", "ax.set_title('moved')\nax.plot([3, 2, 1]);", "print(len(ax.lines), ax.get_title(), list(fig.get_size_inches()))"}},
	{"closures_share_state", []string{"def make_logger(store):\n    def add(v):\n        store.append(v)\n    return add\nlog = []\nadd = make_logger(log)", "add('a')", "print(log)", "add('b')\nfrom functools import partial\nput = partial(list.append, log)", "put('c')", "print(log, len(log))"}},
	{"decorated_functions", []string{"from functools import lru_cache, wraps\n@lru_cache(maxsize=None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)", "print(fib(30))", "def traced(f):\n    @wraps(f)\n    def inner(*a):\n        return ('traced', f(*a))\n    return inner\n@traced\ndef sq(x):\n    return x * x", "print(sq(4), sq.__name__, fib(20), fib.cache_parameters()['maxsize'])", "from dataclasses import dataclass\nfrom enum import Enum\n@dataclass\nclass P:\n    x: int\n    y: int = 2\nclass Color(Enum):\n    RED = 1\np = P(1)\nc = Color.RED", "print(p, c, c is Color.RED, P(1) == p)"}},
	{"decorator_built_objects", []string{"import functools\nfrom typing import NamedTuple\nclass Pt(NamedTuple):\n    x: int\n    y: int = 0\n    def norm(self):\n        return abs(self.x) + abs(self.y)\np = Pt(-1, 2)", "print(p, p.norm(), p._replace(y=5), hasattr(p, '__dict__'))", "@functools.singledispatch\ndef show(v):\n    return 'obj'\n@show.register(int)\ndef show_int(v):\n    return 'int %d' % v", "print(show(3), show('a'))", "class Circle:\n    def __init__(self, r):\n        self.r = r\n    @functools.cached_property\n    def area(self):\n        print('computing')\n        return 3 * self.r ** 2\nc = Circle(2)\nprint(c.area)", "print(c.area, Circle(1).area)", "from dataclasses import dataclass\n@dataclass(slots=True)\nclass Q:\n    a: int\nq = Q(1)", "print(q, hasattr(q, '__dict__'))"}},
	{"cached_functions_keep_their_cache", []string{"import functools\n@functools.cache\ndef load(x):\n    print('loading', x)\n    return [x * 2]", "print(load(1))", "r = load(1)\nprint(load(2))", "print(load(2), load.cache_info().currsize, r is load(1))", "@functools.lru_cache(maxsize=2)\ndef area(n):\n    print('computing', n)\n    return n * n", "print(area(2), area(3))", "print(area(2), area(4))", "print(area(3), area(2), area.cache_info().currsize)"}},
	{"instance_methods_use_globals", []string{"factor = 3\nclass S:\n    def apply(self, v):\n        return v * factor", "s = S()", "factor = 5", "print(s.apply(2))", "factor = 7\nt = S()", "print(t.apply(1), s.apply(1))"}},
	{"code_in_values_uses_globals", []string{"factor = 3\ndef make_scaler():\n    def scale(v):\n        return v * factor\n    return scale\nclass S:\n    def apply(self, v):\n        return v * factor\nscale = make_scaler()", "from functools import partial\nmodels = [S(), S()]\nbound = models[0].apply\np = partial(scale, 2)", "factor = 5", "print(scale(2), models[1].apply(2), bound(2), p())", "factor = 7", "print(p(), bound(1), scale(1))"}},
	{"names_in_strings", []string{"import pandas as pd\ndf = pd.DataFrame({'a': range(10)})", "limit = 6", "print(df.query('a > @limit').a.tolist())", "k = 3", "df.eval('b = a * @k', inplace=True)\nprint(df.b.sum())"}},
	{"names_through_eval_in_functions", []string{"def lookup(expr):\n    return eval(expr)", "print(lookup('1 + 1'))", "limit = 4", "print(lookup('limit * 2'))", "limit = 6", "print(lookup('limit'))", "def make_getter():\n    return lambda n: eval(n)\nget = make_getter()\nlimit = 8", "print(get('limit'))", "import pandas as pd\ndf = pd.DataFrame({'a': range(10)})\ndef top(d):\n    return d.query('a > @limit').a.tolist()", "print(top(df))"}},
	{"view_identity", []string{"import numpy as np\nx = np.arange(30.0)\nv = x[10:20]", "v[:] = -1", "print(v.base is x, x[9:12])", "w = x[::3]\nprint(w.base is x, v.base is x)"}},
	{"traceback_shows_moved_source", []string{"def risky(v):\n    total = v * 2\n    return total / (v - v)", "import traceback\ntry:\n    risky(3)\nexcept ZeroDivisionError:\n    print([l.strip() for l in traceback.format_exc().splitlines() if 'return total' in l])"}},
	{"output_history", []string{"6*7", "_ + 1", "print(_, __, Out[1], _1)", "x = 5", "print(In[1], '|', _i, '|', _ii, len(In))", "Out[2] * 2"}},
	{"traceback_cell_numbers", []string{"def f():\n    return 1 / 0", "x = 1", "import re, sys\nfrom IPython.core.ultratb import VerboseTB\ntry:\n    f()\nexcept ZeroDivisionError:\n    print(re.findall(r'Cell In ?\\[\\d+\\]', VerboseTB(color_scheme='NoColor').text(*sys.exc_info())))"}},
	{"display_printers", []string{"class Card:\n    def __init__(self, v):\n        self.v = v", "get_ipython().display_formatter.formatters['text/plain'].for_type(Card, lambda o, p, cycle: p.text('Card(%d)' % o.v))", "c = Card(3)", "c", "Card(4)", "c.v += 1\nc"}},
	// sympy's init_printing registers LaTeX and pretty-text printers
	// (closures over its settings) for sympy's types and builtins, in
	// the kernel that ran it (the corpus's nbval-latex-example).
	{"sympy_init_printing", []string{"import sympy\nsympy.init_printing()", "x = sympy.Symbol('x')", "x**2 + 1", "sympy.sqrt(x) / 2", "[x, 2 * x]"}},
	{"stdout_stderr", []string{"import sys\nprint('out')\nprint('err', file=sys.stderr)", "v = 3", "print(v, file=sys.stderr)"}},
}

// MustMove are the cases whose values can all travel: under pingpong every
// second cell must run in the cloud. A value that cannot move pins its
// cell where it lives, and a failed load leaves the cell where its data
// is; both keep the outputs equal to all-local and so would hide that
// Ferry could not carry what a notebook made.
var MustMove = map[string]bool{"decorator_built_objects": true, "closures_share_state": true, "decorated_functions": true, "matplotlib_figure_moves": true,
	"view_identity": true, "instance_methods_use_globals": true, "names_in_strings": true,
	"code_in_values_uses_globals": true, "names_through_eval_in_functions": true,
	"cached_functions_keep_their_cache": true}
