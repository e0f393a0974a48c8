"""Ferry's cell analysis helper: which notebook names a cell reads and writes.

Runs as one long-lived process of the notebook's interpreter. Protocol: one
JSON object per line on stdin, {"id": n, "code": "..."}; one JSON object per
line on stdout:

    {"id": n,
     "reads":   names loaded from the notebook namespace before the cell
                binds them for sure (builtins included: a user may rebind
                them, and the caller only moves names it knows),
     "writes":  names the cell may bind or delete, including `global` names
                assigned by functions it defines,
     "maybe":   names whose objects the cell may change in place (attribute
                or item assignment, augmented assignment, method calls,
                arguments of calls, iteration, with-targets), plus every
                name in "writes": a name rebound to a new object at the
                freed address of its old one is caught only by content,
     "deleted": names the cell may delete,
     "calls":   names called (directly, or by functions defined in the cell
                that the cell uses),
     "defs":    {name: globals its body uses}: for every function and class
                the cell defines at top level (and `f = lambda ...`), what a
                later call may read, write or mutate,
     "def_effects": {name: {"reads", "writes", "maybe", "calls"}}: the same,
                split by kind, so the state layer can compute transitive
                effects across cells,
     "magics":  magics used (line and cell), "shell": whether it runs
                !commands or shell cell magics,
     "dynamic": the cell may touch any name (exec, eval, globals(), vars(),
                locals(), star imports, __import__, sys.modules, __main__,
                get_ipython() internals, unknown magics ...),
     "unparsable": the cell does not parse; "error": why}

Python's own ast is used after IPython's input transformations, so magics,
!shell and ? help parse. Scopes follow Python's rules: function bodies,
lambdas and methods run later (their globals are recorded per definition and
become the cell's reads when the cell uses the definition), class bodies and
comprehensions run now, comprehension variables are local while walrus
targets bind in the enclosing scope, nonlocal and closure names are not
globals. Bindings inside blocks that may not run (if, loops, try, with
bodies, match cases, short-circuit operands) do not hide later reads.
What analysis misses, the agent's namespace diff after the cell still
catches; where unsure this file errs towards more reads and mutations.
"""

import ast
import contextlib
import json
import re
import sys

try:
    from IPython.core.inputtransformer2 import TransformerManager

    _tm = TransformerManager()
except Exception:  # plain Python still works, without magics
    _tm = None

# Loading any of these means the cell can reach names analysis cannot see.
DYNAMIC_NAMES = {"exec", "eval", "globals", "__import__", "execfile", "breakpoint", "__main__"}
# These are dynamic only when called without arguments (they then mean the
# current namespace; inside a function, locals() is the function's own).
NOARG_DYNAMIC = {"vars", "dir"}
# Builtins that never change their arguments nor consume iterators: their
# arguments are not "maybe mutated" (so print(big) does not cost a hash).
PURE_CALLS = {"print", "len", "type", "isinstance", "issubclass", "id", "hash", "repr", "callable",
              "display", "str", "format", "bool", "ascii"}
# Magics whose argument or body is Python code run in the user namespace.
CODE_MAGICS = {"time", "timeit", "prun", "capture", "ferry"}
# Magics that touch no user names.
SAFE_MAGICS = {"matplotlib", "config", "pwd", "ls", "env", "history", "pip", "conda", "load_ext", "reload_ext",
               "unload_ext", "precision", "xmode", "autoreload", "aimport", "lsmagic", "magic", "cd", "dhist",
               "pylab", "alias", "unalias", "colors", "automagic", "autocall", "pprint", "doctest_mode",
               "writefile", "html", "javascript", "js", "latex", "markdown", "svg", "sx", "system",
               "bookmark", "clear", "cls", "notebook", "save", "pastebin", "quickref", "page", "logstart",
               "logstop", "logon", "logoff", "logstate", "tb", "killbgscripts", "timeit_done", "gui", "pycat"}
# Cell magics that run their body in a shell or another program.
SHELL_MAGICS = {"bash", "sh", "script", "system", "sx", "perl", "ruby", "python", "python2", "python3", "pypy"}
# Magics that look at one object, named by their argument (x? is pinfo).
OBJECT_MAGICS = {"pinfo", "pinfo2", "pdoc", "pdef", "psource", "pfile"}

GLOBAL, LOCAL = "global", "local"
_COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda) + _COMPS


class Effects:
    """What some code does to global names."""

    def __init__(self):
        self.reads, self.writes, self.maybe, self.deleted, self.calls = set(), set(), set(), set(), set()

    def as_json(self):
        return {"reads": sorted(self.reads), "writes": sorted(self.writes), "maybe": sorted(self.maybe),
                "calls": sorted(self.calls)}

    def uses(self):
        return self.reads | self.writes | self.maybe | self.deleted | self.calls


class Result(Effects):
    def __init__(self):
        super().__init__()
        self.defs = {}  # name -> Effects of a function or class defined in the cell
        self.magics = set()
        self.shell = False
        self.dynamic = False
        self.unparsable = False
        self.error = ""


class Scope:
    """A Python scope. module, class and comprehension scopes whose parents
    run now run now ("immediate"); function bodies run later, and what they
    do to globals is collected in their owner's Effects."""

    def __init__(self, kind, parent=None, owner=None):
        self.kind = kind
        self.parent = parent
        self.bound, self.globals, self.nonlocals = set(), set(), set()
        self.defined = set()  # bound for sure so far (module and class scopes)
        self.immediate = kind == "module" or (kind in ("class", "comprehension") and parent.immediate)
        # Effects that deferred code in this scope adds to.
        self.owner = owner
        # For an immediate class: the class's Effects, where its methods go.
        self.def_owner = None
        self.cond_base = 0


def _target_names(t, out):
    if isinstance(t, ast.Name):
        out.add(t.id)
    elif isinstance(t, (ast.Tuple, ast.List)):
        for e in t.elts:
            _target_names(e, out)
    elif isinstance(t, ast.Starred):
        _target_names(t.value, out)


def _base_name(node):
    """The variable an expression like a.b[c].d() starts from."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.NamedExpr):
            node = node.target
        else:
            break
    return node.id if isinstance(node, ast.Name) else None


class Bindings(ast.NodeVisitor):
    """Names a scope binds anywhere in its body, and its global/nonlocal
    declarations, without entering nested scopes (whose defaults,
    decorators, bases and first iterables do belong to this scope)."""

    def __init__(self, scope):
        self.s = scope

    def collect(self, nodes):
        for n in nodes:
            self.visit(n)
        self.s.bound -= self.s.globals | self.s.nonlocals

    def visit_Name(self, node):
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.s.bound.add(node.id)

    def visit_Global(self, node):
        self.s.globals.update(node.names)

    def visit_Nonlocal(self, node):
        self.s.nonlocals.update(node.names)

    def visit_Import(self, node):
        for a in node.names:
            self.s.bound.add(a.asname or a.name.split(".")[0])

    def visit_ImportFrom(self, node):
        for a in node.names:
            if a.name != "*":
                self.s.bound.add(a.asname or a.name)

    def visit_ExceptHandler(self, node):
        if node.name:
            self.s.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node):
        if node.name:
            self.s.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node):
        if node.name:
            self.s.bound.add(node.name)

    def visit_MatchMapping(self, node):
        if node.rest:
            self.s.bound.add(node.rest)
        self.generic_visit(node)

    def _outer_parts(self, node):
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        if isinstance(node, ast.ClassDef):
            for b in node.bases + [k.value for k in node.keywords]:
                self.visit(b)
        else:
            a = node.args
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                self.visit(d)

    def visit_FunctionDef(self, node):
        self.s.bound.add(node.name)
        self._outer_parts(node)

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self._outer_parts(node)

    def _comp(self, node):
        self.visit(node.generators[0].iter)
        # Walrus targets anywhere in the comprehension bind here.
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
                self.s.bound.add(n.target.id)
            for c in ast.iter_child_nodes(n):
                if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                    stack.append(c)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comp


class CellScan(ast.NodeVisitor):
    def __init__(self, res):
        self.res = res
        self.module = Scope("module")
        self.scope = self.module
        self.cond = 0  # >0 inside code that may not run
        # In-cell aliases at module level: x = g[0] makes a mutation of x a
        # possible mutation of g.
        self.aliases = {}

    # ------------------------------------------------------------ scopes

    def _push(self, kind, body, owner=None, extra_bound=()):
        s = Scope(kind, self.scope, owner if owner is not None else self.scope.owner)
        s.bound.update(extra_bound)
        Bindings(s).collect(body)
        s.cond_base = self.cond
        self.scope = s
        return s

    def _pop(self):
        self.scope = self.scope.parent

    def _resolve(self, name):
        s = self.scope
        if s.kind == "module" or name in s.globals:
            return GLOBAL
        if name in s.nonlocals:
            return LOCAL
        if s.kind == "function" and name in s.bound:
            return LOCAL
        if s.kind == "comprehension" and name in s.bound:
            return LOCAL
        if s.kind == "class" and name in s.defined:
            return LOCAL
        # Free: enclosing functions (and comprehensions) hold closures;
        # class scopes are not visible to nested scopes.
        p = s.parent
        while p is not None:
            if p.kind == "module" or name in p.globals:
                return GLOBAL
            if p.kind in ("function", "comprehension") and (name in p.bound or name in p.nonlocals):
                return LOCAL
            p = p.parent
        return GLOBAL

    # ----------------------------------------------------- name effects

    def _fx(self):
        """Where effects on globals go: the cell (now) or an owner (later)."""
        return self.res if self.scope.immediate else self.scope.owner

    def _load(self, name):
        if name in DYNAMIC_NAMES:
            self.res.dynamic = True
        if self._resolve(name) != GLOBAL:
            return
        if self.scope.immediate:
            if name not in self.module.defined:
                self.res.reads.add(name)
            self._use_def(name)
        else:
            self.scope.owner.reads.add(name)

    def _store(self, name):
        s = self.scope
        if s.kind == "comprehension":  # a walrus: binds in the enclosing non-comprehension scope
            while s.kind == "comprehension":
                s = s.parent
        if s.kind == "module" or name in s.globals:
            if s.immediate:
                self.res.writes.add(name)
                self.module.defined.add(name)  # until the end of a block that may not run
                if self.cond == s.cond_base:
                    self.res.defs.pop(name, None)  # no longer the function defined here
            else:
                s.owner.writes.add(name)
        elif s.kind == "class":
            s.defined.add(name)

    def _delete(self, name, implicit=False):
        """del name; implicit: Python's own deletion of an except handler's
        name, which needs nothing to exist."""
        if self._resolve(name) == GLOBAL:
            fx = self._fx()
            fx.deleted.add(name)
            fx.writes.add(name)
            if self.scope.immediate:
                if not implicit and name not in self.module.defined:
                    self.res.reads.add(name)  # del needs the name to exist
                self.module.defined.discard(name)
                if self.cond == 0:
                    self.res.defs.pop(name, None)
        elif self.scope.kind == "class":
            self.scope.defined.discard(name)

    def _mutate(self, node):
        """The object node's base name refers to may change in place."""
        name = _base_name(node)
        if name is None or self._resolve(name) != GLOBAL:
            return
        fx = self._fx()
        fx.maybe.add(name)
        if self.scope.immediate:
            fx.maybe.update(self.aliases.get(name, ()))

    def _alias(self, target, value):
        """Remember that target (a module-level name) may share objects with
        the names value is built from."""
        if not (self.scope.kind == "module" and isinstance(target, ast.Name)):
            return
        srcs = set()
        for n in ast.walk(value):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id != target.id:
                srcs.add(n.id)
                srcs.update(self.aliases.get(n.id, ()))
        if srcs:
            self.aliases[target.id] = srcs
        else:
            self.aliases.pop(target.id, None)

    def _use_def(self, name):
        """The cell uses a function or class it defined: what that does to
        globals when called happens now (over-approximated: it may be)."""
        if name in self.res.defs:
            self._apply(self.res.defs[name])

    def _apply(self, fx):
        seen, todo = set(), [fx]
        while todo:
            fx = todo.pop()
            if id(fx) in seen:
                continue
            seen.add(id(fx))
            for r in fx.reads:
                if r not in self.module.defined:
                    self.res.reads.add(r)
            self.res.writes |= fx.writes
            self.res.deleted |= fx.deleted
            # A function may mutate what it reads through local aliases.
            self.res.maybe |= fx.maybe | fx.reads | fx.writes
            self.res.calls |= fx.calls
            todo.extend(self.res.defs[n] for n in fx.reads | fx.calls if n in self.res.defs)

    # --------------------------------------------------------- visitors

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:
            self._delete(node.id)

    def _target(self, t, value=None):
        """Assign to a target: names bind, attributes and items mutate."""
        if isinstance(t, ast.Name):
            self._store(t.id)
            if value is not None:
                self._alias(t, value)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._target(e, value)
        elif isinstance(t, ast.Starred):
            self._target(t.value, value)
        elif isinstance(t, ast.Attribute):
            self.visit(t.value)
            self._mutate(t)
        elif isinstance(t, ast.Subscript):
            self.visit(t.value)
            self.visit(t.slice)
            self._mutate(t)
        else:
            self.visit(t)

    def visit_Assign(self, node):
        fx = self.visit(node.value)
        for t in node.targets:
            self._target(t, node.value)
            if isinstance(node.value, ast.Lambda) and isinstance(t, ast.Name) and self.scope.kind == "module":
                self.res.defs[t.id] = fx

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
        if self.scope.immediate:
            self.visit(node.annotation)  # evaluated at module and class level
        if node.value is not None or not isinstance(node.target, ast.Name):
            self._target(node.target, node.value)

    def visit_AugAssign(self, node):
        self.visit(node.value)
        t = node.target
        if isinstance(t, ast.Name):
            self._load(t.id)
            self._mutate(t)
            self._store(t.id)
        else:
            self._target(t)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        self._store(node.target.id)

    def visit_Delete(self, node):
        for t in node.targets:
            if isinstance(t, ast.Name):
                self._delete(t.id)
            elif isinstance(t, (ast.Tuple, ast.List)):
                self.visit_Delete(ast.Delete(targets=t.elts))
            else:
                self._target(t)

    def visit_Import(self, node):
        for a in node.names:
            if a.name.split(".")[0] == "__main__":
                self.res.dynamic = True
            self._store(a.asname or a.name.split(".")[0])

    def visit_ImportFrom(self, node):
        if (node.module or "").split(".")[0] == "__main__":
            self.res.dynamic = True
        for a in node.names:
            if a.name == "*":
                self.res.dynamic = True
                continue
            self._store(a.asname or a.name)

    def visit_Global(self, node):
        pass

    visit_Nonlocal = visit_Global

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr == "modules":
            self.res.dynamic = True  # sys.modules["__main__"] reaches every name
        self.generic_visit(node)

    # -- definitions

    def _owner_for_def(self):
        """The Effects a new definition's body adds to: its own at module
        level, its class's for a method, the enclosing one when nested."""
        s = self.scope
        if not s.immediate:
            return s.owner
        if s.def_owner is not None:
            return s.def_owner
        return Effects()

    def _decorators(self, node):
        for d in node.decorator_list:
            self.visit(d)
            if isinstance(d, ast.Name):
                self._called(d.id)  # @register calls register(f)

    def _called(self, name):
        if self._resolve(name) == GLOBAL:
            fx = self._fx()
            fx.calls.add(name)
            # Calling a class or function may change it (class attributes,
            # function attributes, caches).
            fx.maybe.add(name)

    def _function(self, node, owner):
        """Visit a def or lambda: defaults, decorators and annotations now,
        the body as deferred code adding to owner."""
        a = node.args
        if not isinstance(node, ast.Lambda):
            self._decorators(node)
        for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
            self.visit(d)
        params = [x for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None]
        if not isinstance(node, ast.Lambda):
            for arg in params:
                if arg.annotation is not None:
                    self.visit(arg.annotation)
            if node.returns is not None:
                self.visit(node.returns)
        body = node.body if isinstance(node.body, list) else [node.body]
        saved = self.cond
        s = self._push("function", body, extra_bound={x.arg for x in params})
        s.owner = owner
        for st in body:
            self.visit(st)
        self._pop()
        self.cond = saved

    def _defined(self, node, fx):
        """Bind a def or class name; remember its effects if top-level."""
        self._store(node.name)
        if self.scope.kind == "module":
            # The globals it assigns are the cell's writes: any later call
            # (from anywhere) may bind them.
            self.res.writes |= fx.writes
            self.res.defs[node.name] = fx
            if node.decorator_list:  # a decorator may call it right away
                self._use_def(node.name)

    def visit_FunctionDef(self, node):
        fx = self._owner_for_def()
        self._function(node, fx)
        self._defined(node, fx)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        if not self.scope.immediate:
            self._function(node, self.scope.owner)
            return self.scope.owner
        fx = Effects()
        self._function(node, fx)
        # Its body runs whenever the lambda is called, which may be now
        # (sorted(key=...)): count it as used here, and as a method's body
        # for a lambda in a class body.
        self._apply(fx)
        if self.scope.def_owner is not None:
            for k in ("reads", "writes", "maybe", "deleted", "calls"):
                getattr(self.scope.def_owner, k).update(getattr(fx, k))
        return fx

    def visit_ClassDef(self, node):
        self._decorators(node)
        for b in node.bases + [k.value for k in node.keywords]:
            self.visit(b)
        fx = self._owner_for_def()
        s = self._push("class", node.body)
        if s.immediate:
            s.def_owner = fx
        else:
            s.owner = fx
        for st in node.body:
            self.visit(st)
        self._pop()
        self._defined(node, fx)

    # -- comprehensions: the first iterable is evaluated outside

    def _comprehension(self, node, elts):
        gens = node.generators
        self.visit(gens[0].iter)
        self._mutate(gens[0].iter)  # iterating may consume an iterator
        local = set()
        for g in gens:
            _target_names(g.target, local)
        with self._maybe_runs():  # zero iterations bind no walrus target
            s = self._push("comprehension", [], extra_bound=local)
            s.cond_base = -1
            for i, g in enumerate(gens):
                if i:
                    self.visit(g.iter)
                    self._mutate(g.iter)
                self._comp_target(g.target)
                for c in g.ifs:
                    self.visit(c)
            for e in elts:
                self.visit(e)
            self._pop()

    def _comp_target(self, t):
        if isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._comp_target(e)
        elif isinstance(t, ast.Starred):
            self._comp_target(t.value)
        elif not isinstance(t, ast.Name):  # for d[k] in ...: mutates d
            self._target(t)

    def visit_ListComp(self, node):
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self._comprehension(node, [node.key, node.value])

    # -- calls and magics

    def visit_Call(self, node):
        f = node.func
        if self._is_ipython_call(f):
            self._magic(node)
            return
        if isinstance(f, ast.Name):
            self._called(f.id)
            if f.id == "get_ipython":
                self.res.dynamic = True  # get_ipython().user_ns, .push(), .run_cell() ...
            if f.id in NOARG_DYNAMIC and not node.args and not node.keywords:
                self.res.dynamic = True
            if f.id == "locals" and self.scope.immediate:
                self.res.dynamic = True
        elif isinstance(f, ast.Attribute):
            self._mutate(f.value)  # a method call may mutate its object
        self.visit(f)
        pure = isinstance(f, ast.Name) and f.id in PURE_CALLS and f.id not in self.res.writes
        for a in list(node.args) + [k.value for k in node.keywords]:
            self.visit(a)
            if not pure:
                self._mutate(a)  # the callee may mutate its arguments

    @staticmethod
    def _is_ipython_call(f):
        return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name)
                and f.value.func.id == "get_ipython")

    def _magic(self, node):
        f = node.func
        if f.attr not in ("run_line_magic", "run_cell_magic", "system", "getoutput"):
            self.res.dynamic = True  # get_ipython().user_ns, .push, .run_cell ...
            return
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if f.attr in ("system", "getoutput"):
            self.res.shell = True
            self._expand(args[0] if args else None)
            return
        name = args[0] if args else None
        if name is None or len(args) < 2 or args[1] is None:
            self.res.dynamic = True
            return
        self.res.magics.add(name)
        line = args[1]
        body = args[2] if f.attr == "run_cell_magic" and len(args) > 2 else None
        if f.attr == "run_cell_magic" and body is None:
            self.res.dynamic = True
            return
        if name in SHELL_MAGICS:
            self.res.shell = True
            if "--out" in line or "--err" in line or "--proc" in line:
                self.res.dynamic = True  # binds a name given in the line
            return
        if name == "ferry":  # Ferry's own; a cell magic pins the body
            if body is not None:
                self._sub(body)
            return
        if name in SAFE_MAGICS:
            self._expand(line)
            return
        if name in OBJECT_MAGICS:
            head = line.strip().split(".")[0].split("(")[0].split("[")[0]
            if head.isidentifier():
                self._load(head)
                return
        if name == "xdel" and line.strip().isidentifier():
            self._delete(line.strip())
            return
        if name in CODE_MAGICS:
            if name == "capture":
                words = [w for w in line.split() if not w.startswith("-")]
                if words and words[0].isidentifier():
                    self._store(words[0])  # %%capture out binds out
                self._sub(body or "")
                return
            if name == "time":
                self._sub(line if body is None else body)
                return
            # timeit / prun: options first, then code (the setup, for the
            # cell form). Timed code runs in a function: its bindings may
            # not persist, so they bind nothing for sure.
            for code in _option_suffixes(line):
                if self._sub(code, quiet=True, cond=True):
                    break
            else:
                self.res.dynamic = True
            if body is not None:
                self._sub(body, cond=True)
            return
        self.res.dynamic = True

    def _sub(self, code, quiet=False, cond=False):
        """Analyse code a magic runs in the user namespace, as if inline;
        cond: its bindings may not happen."""
        try:
            tree = _parse(_tm.transform_cell(code) if _tm is not None else code)
        except (SyntaxError, ValueError):
            if not quiet:
                self.res.dynamic = True
            return False
        if cond:
            self._cond(tree.body)
        else:
            for st in tree.body:
                self.visit(st)
        return True

    def _expand(self, text):
        """IPython expands $name and {expr} in shell commands and magic
        lines with user names."""
        if text is None:
            self.res.dynamic = True
            return
        text = text.replace("$$", "")
        for m in re.finditer(r"\$(\w+)", text):
            self._load(m.group(1))
        for m in re.finditer(r"\{([^{}]*)\}", text):
            try:
                expr = ast.parse(m.group(1).strip() or "None", mode="eval")
            except SyntaxError:
                continue  # a literal brace (a shell ${VAR}, a glob {a,b})
            self.visit(expr.body)

    # -- blocks that may not run: their bindings hide later reads inside
    # the block (which runs in order once it runs), not after it

    @contextlib.contextmanager
    def _maybe_runs(self):
        scopes = []
        s = self.scope
        while s is not None:
            if s.kind in ("module", "class") and s.immediate:
                scopes.append((s, set(s.defined)))
            s = s.parent
        self.cond += 1
        try:
            yield
        finally:
            self.cond -= 1
            for s, before in scopes:
                s.defined &= before  # deletions inside stay

    def _cond(self, nodes):
        with self._maybe_runs():
            for n in nodes:
                self.visit(n)

    def visit_If(self, node):
        self.visit(node.test)
        self._cond(node.body)
        self._cond(node.orelse)

    # The test runs at least once; body and else each may not.
    visit_While = visit_If

    def visit_IfExp(self, node):
        self.visit(node.test)
        self._cond([node.body])
        self._cond([node.orelse])

    def visit_BoolOp(self, node):
        self.visit(node.values[0])
        self._cond(node.values[1:])

    def visit_For(self, node):
        self.visit(node.iter)
        self._mutate(node.iter)  # iterating may consume an iterator; the body may mutate items
        with self._maybe_runs():
            self._target(node.target, node.iter)
            for s in node.body:
                self.visit(s)
        self._cond(node.orelse)

    visit_AsyncFor = visit_For

    def visit_Try(self, node):
        # The body may stop anywhere; else runs after all of it.
        self._cond(node.body + node.orelse)
        for h in node.handlers:
            with self._maybe_runs():
                if h.type is not None:
                    self.visit(h.type)
                if h.name:
                    self._store(h.name)
                for s in h.body:
                    self.visit(s)
                if h.name:
                    self._delete(h.name, implicit=True)  # Python deletes it after the handler
        for s in node.finalbody:
            self.visit(s)

    visit_TryStar = visit_Try

    def visit_With(self, node):
        for it in node.items:
            self.visit(it.context_expr)
            self._mutate(it.context_expr)
            if it.optional_vars is not None:
                self._target(it.optional_vars, it.context_expr)
        # A context manager may suppress an exception and skip the rest.
        self._cond(node.body)

    visit_AsyncWith = visit_With

    def visit_Match(self, node):
        self.visit(node.subject)
        self._mutate(node.subject)  # mapping and class patterns call methods
        for c in node.cases:
            with self._maybe_runs():
                self._pattern(c.pattern)
                if c.guard is not None:
                    self.visit(c.guard)
                for s in c.body:
                    self.visit(s)

    def _pattern(self, p):
        """Visit a match pattern: captures bind, values and classes load."""
        for n in ast.walk(p):
            if isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
                self._store(n.name)
            elif isinstance(n, ast.MatchMapping):
                if n.rest:
                    self._store(n.rest)
                for k in n.keys:
                    self.visit(k)
            elif isinstance(n, ast.MatchValue):
                self.visit(n.value)
            elif isinstance(n, ast.MatchClass):
                self.visit(n.cls)


def _option_suffixes(line):
    """%timeit / %prun lines: the whole line, then the line without its
    first option tokens, one more at a time (an option may take a value)."""
    yield line
    rest = line
    for _ in range(8):
        m = re.match(r"\s*(\S+)\s*", rest)
        if m is None or (not m.group(1).startswith("-") and not _after_option(line, rest)):
            return
        rest = rest[m.end():]
        yield rest


def _after_option(line, rest):
    """Whether rest follows an option token that may take a value."""
    before = line[: len(line) - len(rest)].split()
    return bool(before) and re.fullmatch(r"-[A-Za-z]", before[-1]) is not None


def _parse(src):
    # IPython runs top-level await (autoawait); accept it.
    return compile(src, "<cell>", "exec", ast.PyCF_ONLY_AST | getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0))


def analyze(code):
    res = Result()
    src = code
    if _tm is not None:
        try:
            src = _tm.transform_cell(code)
        except Exception as e:  # IPython could not even split the cell
            res.unparsable = True
            res.error = "transform: %s" % e
            return res
    try:
        tree = _parse(src)
    except (SyntaxError, ValueError) as e:
        res.unparsable = True
        res.error = "%s: %s (line %s)" % (type(e).__name__, getattr(e, "msg", e), getattr(e, "lineno", "?"))
        return res
    scan = CellScan(res)
    try:
        for stmt in tree.body:
            scan.visit(stmt)
    except RecursionError:
        res.dynamic = True
        res.error = "cell too deeply nested to analyse"
    # A name written may be a new object at its old object's address.
    res.maybe |= res.writes
    res.reads.discard("get_ipython")
    res.maybe.discard("get_ipython")
    return res


def to_json(res, rid):
    return {
        "id": rid,
        "reads": sorted(res.reads),
        "writes": sorted(res.writes),
        "maybe": sorted(res.maybe),
        "deleted": sorted(res.deleted),
        "calls": sorted(res.calls),
        "defs": {n: sorted(fx.uses() - {n}) for n, fx in res.defs.items()},
        "def_effects": {n: fx.as_json() for n, fx in res.defs.items()},
        "magics": sorted(res.magics),
        "shell": res.shell,
        "dynamic": res.dynamic,
        "unparsable": res.unparsable,
        "error": res.error,
    }


def main():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for line in sys.stdin:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            out = to_json(analyze(req.get("code", "")), rid)
        except Exception as e:  # a bug here must not stop the session
            out = to_json(Result(), rid)
            out.update(dynamic=True, error="%s: %s" % (type(e).__name__, e))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
