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
     "defs":    {name: globals its body uses, "*" if it may touch any name
                (eval, exec, globals() in its body)}: for every function and class
                the cell defines at top level (and `f = lambda ...`), what a
                later call may read, write or mutate,
     "def_effects": {name: {"reads", "writes", "maybe", "calls"}}: the same,
                split by kind, so the state layer can compute transitive
                effects across cells,
     "magics":  magics used (line and cell), "shell": whether it runs
                !commands or shell cell magics,
     facts (each omitted when empty; see the Facts class for what is
     recognised; def_effects entries carry them too):
     "files": [{"path", "op"}] with op read/write/list/glob/delete/exists,
     "files_unknown", "imports", "env", "env_writes", "env_unknown",
     "chdir", "settings", "attr_stores", "side_effects" (shell, network,
     file-write), and for the cell only "module_attrs",
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
import posixpath
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
               "logstop", "logon", "logoff", "logstate", "tb", "killbgscripts", "timeit_done", "gui", "pycat",
               "load", "set_env", "pushd", "popd", "dirs", "pdb", "autoawait", "mamba"}
# Cell magics that run their body in a shell or another program.
SHELL_MAGICS = {"bash", "sh", "script", "system", "sx", "perl", "ruby", "python", "python2", "python3", "pypy"}
# Magics that look at one object, named by their argument (x? is pinfo).
# Methods whose first argument is an expression naming notebook variables
# inside a string: pandas' "@name" (query, eval) and numexpr.evaluate,
# which reads bare names from the caller's frame.
STRING_EXPR_METHODS = {"query", "eval", "evaluate"}
STRING_NAME_RE = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
IDENT_RE = re.compile(r"(?<![.\w@])([A-Za-z_][A-Za-z0-9_]*)")

OBJECT_MAGICS = {"pinfo", "pinfo2", "pdoc", "pdef", "psource", "pfile"}

GLOBAL, LOCAL = "global", "local"
_COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda) + _COMPS


class Effects:
    """What some code does to global names."""

    def __init__(self):
        self.reads, self.writes, self.maybe, self.deleted, self.calls = set(), set(), set(), set(), set()
        # What it does outside the namespace (see Facts).
        self.files = set()  # (path, op)
        self.files_unknown = self.env_unknown = self.chdir = False
        self.imports, self.env, self.env_writes = set(), set(), set()
        self.settings, self.attr_stores, self.side_effects = set(), set(), set()
        # Whether calling it may touch any name (eval, exec, globals() in
        # its body): a cell calling it is then dynamic too.
        self.dynamic = False

    def merge_facts(self, o):
        self.files |= o.files
        self.files_unknown |= o.files_unknown
        self.env_unknown |= o.env_unknown
        self.chdir |= o.chdir
        for k in ("imports", "env", "env_writes", "settings", "attr_stores", "side_effects"):
            getattr(self, k).update(getattr(o, k))

    def facts_json(self):
        out = {"files": [{"path": p, "op": op} for p, op in sorted(self.files)],
               "files_unknown": self.files_unknown, "imports": sorted(self.imports), "env": sorted(self.env),
               "env_writes": sorted(self.env_writes), "env_unknown": self.env_unknown, "chdir": self.chdir,
               "settings": sorted(self.settings), "attr_stores": sorted(self.attr_stores),
               "side_effects": sorted(self.side_effects)}
        return {k: v for k, v in out.items() if v}

    def as_json(self):
        out = {"reads": sorted(self.reads), "writes": sorted(self.writes), "maybe": sorted(self.maybe),
               "calls": sorted(self.calls)}
        out.update(self.facts_json())
        return out

    def uses(self):
        return self.reads | self.writes | self.maybe | self.deleted | self.calls


class Result(Effects):
    def __init__(self):
        super().__init__()
        self.defs = {}  # name -> Effects of a function or class defined in the cell
        self.magics = set()
        self.module_attrs = set()
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
        # For Facts: names bound here to a path literal or an open file,
        # names bound by imports (to the dotted module), names bound otherwise.
        self.literals, self.imports, self.shadowed = {}, {}, set()


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
        self.facts = Facts(self)

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

    def _dynamic(self):
        """The code here may touch any name: the cell if it runs now, and
        whoever calls the function whose body this is (issue 14: a
        notebook function using eval made only its defining cell
        dynamic; a cell calling it elsewhere lacked the names)."""
        self.res.dynamic = True
        if not self.scope.immediate and self.scope.owner is not None:
            self.scope.owner.dynamic = True

    def _load(self, name):
        if name in DYNAMIC_NAMES:
            if name in ("exec", "eval", "execfile", "breakpoint"):
                self.facts.anything()
            self._dynamic()
        if self._resolve(name) != GLOBAL:
            return
        if self.scope.immediate:
            if name not in self.module.defined:
                self.res.reads.add(name)
            self._use_def(name)
        else:
            self.scope.owner.reads.add(name)

    def _store(self, name):
        self.facts.forget(name)
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
        self.facts.forget(name)
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
            self.res.merge_facts(fx)
            self.res.dynamic |= fx.dynamic
            todo.extend(self.res.defs[n] for n in fx.reads | fx.calls if n in self.res.defs)

    # --------------------------------------------------------- visitors

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load):
            self.facts.name_load(node)
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self._store(node.id)
        else:
            self._delete(node.id)

    def _target(self, t, value=None, aug=False):
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
            self.facts.store_target(t)
            self.visit(t.value)
            self._mutate(t)
        elif isinstance(t, ast.Subscript):
            self.facts.store_target(t)
            self.facts.env_subscript(t, aug=aug)
            self.visit(t.value)
            self.visit(t.slice)
            self._mutate(t)
        else:
            self.visit(t)

    def visit_Assign(self, node):
        fx = self.visit(node.value)
        for t in node.targets:
            self._target(t, node.value)
            self.facts.bound(t, node.value)
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
            self._target(t, aug=True)

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
                self._dynamic()
            self._store(a.asname or a.name.split(".")[0])
            self.facts.import_(a.name)
            self.facts.imported_as(a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0])

    def visit_ImportFrom(self, node):
        if (node.module or "").split(".")[0] == "__main__":
            self._dynamic()
        for a in node.names:
            if a.name == "*":
                self._dynamic()
                continue
            self._store(a.asname or a.name)
            if node.level == 0 and node.module:
                self.facts.imported_as(a.asname or a.name, node.module + "." + a.name)
        self.facts.import_(node.module, node.level)

    def visit_Global(self, node):
        pass

    visit_Nonlocal = visit_Global

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr == "modules":
            self._dynamic()  # sys.modules["__main__"] reaches every name
        if isinstance(node.ctx, ast.Load):
            self.facts.env_node(node)
        self.generic_visit(node)

    def visit_Subscript(self, node):
        if isinstance(node.ctx, ast.Load):
            self.facts.env_subscript(node)
        self.generic_visit(node)

    def visit_Compare(self, node):
        self.facts.compare(node)
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
            self.facts.decorator(d)
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
            self.scope.def_owner.merge_facts(fx)
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
        self.facts.call(node)
        if isinstance(f, ast.Name):
            self._called(f.id)
            if f.id == "get_ipython":
                self._dynamic()  # get_ipython().user_ns, .push(), .run_cell() ...
            if f.id in NOARG_DYNAMIC and not node.args and not node.keywords:
                self._dynamic()
            if f.id == "locals" and self.scope.immediate:
                self._dynamic()
        elif isinstance(f, ast.Attribute):
            self._mutate(f.value)  # a method call may mutate its object
            if f.attr in STRING_EXPR_METHODS:
                # df.query("a > @limit"), df.eval(...), numexpr.evaluate:
                # names referenced inside the string are reads too.
                for a in node.args[:1] + [k.value for k in node.keywords if k.arg in ("expr", "ex")]:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        for n in STRING_NAME_RE.findall(a.value):
                            self._load(n)
                        if f.attr == "evaluate":
                            for n in IDENT_RE.findall(a.value):
                                self._load(n)
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
            if f.attr in ANY_SETTINGS_CALLS:
                self.facts.setting(ANY_SETTINGS_CALLS[f.attr])  # register_magic_function
            self.facts.anything()
            self._dynamic()  # get_ipython().user_ns, .push, .run_cell ...
            return
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if f.attr in ("system", "getoutput"):
            self.res.shell = True
            self.facts.shell()
            self._expand(args[0] if args else None)
            return
        name = args[0] if args else None
        if name is None or len(args) < 2 or args[1] is None:
            self.facts.anything()
            self._dynamic()
            return
        self.res.magics.add(name)
        line = args[1]
        body = args[2] if f.attr == "run_cell_magic" and len(args) > 2 else None
        if f.attr == "run_cell_magic" and body is None:
            self.facts.anything()
            self._dynamic()
            return
        self.facts.magic(name, line, body)
        if name in SHELL_MAGICS:
            self.res.shell = True
            if "--out" in line or "--err" in line or "--proc" in line:
                self._dynamic()  # binds a name given in the line
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
                self._dynamic()
            if body is not None:
                self._sub(body, cond=True)
            return
        self._dynamic()

    def _sub(self, code, quiet=False, cond=False):
        """Analyse code a magic runs in the user namespace, as if inline;
        cond: its bindings may not happen."""
        try:
            tree = _parse(_tm.transform_cell(code) if _tm is not None else code)
        except (SyntaxError, ValueError):
            if not quiet:
                self._dynamic()
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
            self._dynamic()
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
                self.facts.bound(it.optional_vars, it.context_expr)
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


# =====================================================================
# Files, environment, imports and process settings
# =====================================================================


class _F:
    """One path argument of a file function: op is a FileUse op, or "open"
    (the op follows a mode argument at `mode`, default `mode_default`)."""

    __slots__ = ("op", "pos", "kws", "default", "mode", "mode_default", "suffix")

    def __init__(self, op, pos=0, kws=(), default=None, mode=None, mode_default="r", suffix=None):
        self.op, self.pos, self.kws, self.default = op, pos, kws, default
        self.mode, self.mode_default, self.suffix = mode, mode_default, suffix


def _ops(op, pos=0, *kws, **kw):
    return [_F(op, pos, kws, **kw)]


def _opener(*kws, mode=1, mode_default="r"):
    return [_F("open", 0, kws, mode=mode, mode_default=mode_default)]


_MOVE = [_F("read", 0, ("src",)), _F("delete", 0, ("src",)), _F("write", 1, ("dst",))]
_COPY = [_F("read", 0, ("src",)), _F("write", 1, ("dst",))]
_PD_PATH = ("filepath_or_buffer", "path", "io", "path_or_buf", "path_or_buffer")
_TO_PATH = ("path_or_buf", "path", "excel_writer", "buf", "path_or_buffer", "fname")

# Functions by their qualified name (after in-cell imports and the usual
# aliases: np, pd, plt, mpl, sns, Image, Path ...).
FILE_CALLS = {
    "open": _opener("file"), "io.open": _opener("file"), "builtins.open": _opener("file"),
    "codecs.open": _opener("filename"), "gzip.open": _opener("filename", mode_default="rb"),
    "bz2.open": _opener("filename", mode_default="rb"), "lzma.open": _opener("filename", mode_default="rb"),
    "tarfile.open": _opener("name"), "zipfile.ZipFile": _opener("file"), "h5py.File": _opener("name"),
    "rasterio.open": _opener("fp"), "numpy.memmap": _opener("filename", mode_default="r+"),
    "PIL.Image.open": _ops("read", 0, "fp"),
    # IPython's display objects read a file named as their data or
    # filename (nbclient's inline-image notebook: Image('python.png') ran
    # where the file was not). A bare Image(...) whose import is in an
    # earlier cell resolves to PIL.Image by USUAL_NAMES; that module is
    # not callable, so such a call is IPython's Image.
    "IPython.display.Image": _ops("read", 0, "data", "filename"),
    "IPython.core.display.Image": _ops("read", 0, "data", "filename"),
    "PIL.Image": _ops("read", 0, "data", "filename"),
    "IPython.display.Video": _ops("read", 0, "data", "filename"),
    "IPython.display.Audio": _ops("read", 0, "data", "filename"),
    "IPython.display.SVG": _ops("read", 0, "data", "filename"),
    "numpy.load": _ops("read", 0, "file"), "numpy.fromfile": _ops("read", 0, "file"),
    "torch.load": _ops("read", 0, "f"), "joblib.load": _ops("read", 0, "filename"),
    "scipy.io.loadmat": _ops("read", 0, "file_name"), "xarray.open_dataset": _ops("read", 0, "filename_or_obj"),
    "xarray.open_dataarray": _ops("read", 0, "filename_or_obj"), "pyarrow.parquet.read_table": _ops("read", 0, "source"),
    "dotenv.load_dotenv": _ops("read", 0, "dotenv_path", default=".env"),
    "numpy.save": _ops("write", 0, "file", suffix=".npy"), "numpy.savez": _ops("write", 0, "file", suffix=".npz"),
    "numpy.savez_compressed": _ops("write", 0, "file", suffix=".npz"), "torch.save": _ops("write", 1, "f"),
    "joblib.dump": _ops("write", 1, "filename"), "scipy.io.savemat": _ops("write", 0, "file_name"),
    "glob.glob": _ops("glob", 0, "pathname"), "glob.iglob": _ops("glob", 0, "pathname"),
    "os.listdir": _ops("list", 0, "path", default="."), "os.scandir": _ops("list", 0, "path", default="."),
    "os.walk": _ops("list", 0, "top"), "os.fwalk": _ops("list", 0, "top", default="."),
    "os.remove": _ops("delete", 0, "path"), "os.unlink": _ops("delete", 0, "path"),
    "os.rmdir": _ops("delete", 0, "path"), "os.removedirs": _ops("delete", 0, "name"),
    "shutil.rmtree": _ops("delete", 0, "path"),
    "os.rename": _MOVE, "os.replace": _MOVE, "os.renames": _MOVE, "shutil.move": _MOVE,
    "shutil.copy": _COPY, "shutil.copy2": _COPY, "shutil.copyfile": _COPY, "shutil.copytree": _COPY,
    "os.makedirs": _ops("write", 0, "name"), "os.mkdir": _ops("write", 0, "path"),
    "os.path.exists": _ops("exists", 0, "path"), "os.path.isfile": _ops("exists", 0, "path"),
    "os.path.isdir": _ops("exists", 0, "s"), "os.path.lexists": _ops("exists", 0, "path"),
    "os.path.islink": _ops("exists", 0, "path"), "os.path.getsize": _ops("exists", 0, "filename"),
    "os.path.getmtime": _ops("exists", 0, "filename"), "os.path.getctime": _ops("exists", 0, "filename"),
    "os.stat": _ops("exists", 0, "path"), "os.lstat": _ops("exists", 0, "path"), "os.access": _ops("exists", 0, "path"),
}
# Functions and methods by their last name, whatever they are called on
# (the names are distinctive enough): pandas readers and writers, numpy
# text files, savefig, tofile, imread/imwrite.
ANY_FILE_CALLS = {n: _ops("read", 0, *_PD_PATH) for n in (
    "read_csv", "read_table", "read_parquet", "read_json", "read_excel", "read_pickle", "read_feather", "read_hdf",
    "read_fwf", "read_html", "read_xml", "read_orc", "read_stata", "read_sas", "read_spss")}
ANY_FILE_CALLS.update({n: _ops("write", 0, *_TO_PATH) for n in (
    "to_csv", "to_parquet", "to_json", "to_excel", "to_pickle", "to_feather", "to_hdf", "to_html", "to_latex",
    "to_markdown", "to_stata", "to_xml", "to_orc", "to_netcdf")})
ANY_FILE_CALLS.update({
    "loadtxt": _ops("read", 0, "fname"), "genfromtxt": _ops("read", 0, "fname"), "imread": _ops("read", 0, "fname", "filename", "uri"),
    "savetxt": _ops("write", 0, "fname"), "savefig": _ops("write", 0, "fname"), "tofile": _ops("write", 0, "fid", "file"),
    "imwrite": _ops("write", 0, "filename", "uri"), "imsave": _ops("write", 0, "fname"),
    "savez_compressed": _ops("write", 0, "file", suffix=".npz"),
})
# pathlib methods on a path: op, and whether the op takes a path argument.
PATH_METHODS = {
    "read_text": "read", "read_bytes": "read", "open": "open",
    "write_text": "write", "write_bytes": "write", "touch": "write", "mkdir": "write",
    "unlink": "delete", "rmdir": "delete", "iterdir": "list", "glob": "glob", "rglob": "glob",
    "exists": "exists", "is_file": "exists", "is_dir": "exists", "stat": "exists",
    "rename": "move", "replace": "move",
}
# Of those, the ones that mark an unknown receiver as a path in use, with
# the positional arguments a pathlib call has (more: not a Path).
PATH_METHODS_ANY = {"read_text": 0, "read_bytes": 0, "write_text": 1, "write_bytes": 1, "touch": 0, "mkdir": 0,
                    "unlink": 0, "iterdir": 0, "glob": 1, "rglob": 1, "exists": 0, "is_file": 0, "is_dir": 0}
PATH_CTORS = {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.PurePosixPath"}
PATH_JOINS = {"os.path.join", "posixpath.join"}
PATH_SAME = {"str", "os.fspath", "os.path.normpath", "posixpath.normpath", "os.path.expanduser"}
STREAMS = {"io.StringIO", "io.BytesIO", "sys.stdout", "sys.stderr", "sys.stdin", "sys.stdout.buffer"}
FILE_CALLS["glob"] = FILE_CALLS["glob.glob"]  # from glob import glob, in some cell
FILE_CALLS_MODULES = {"os", "os.path", "glob", "shutil", "pathlib.Path"}
OPENERS = set(k for k, v in FILE_CALLS.items() if v[0].op == "open") | {"PIL.Image.open"}

ENVIRON = {"os.environ", "os.environb"}
ENV_READ_CALLS = {"os.getenv", "os.environ.get", "os.getenvb", "os.environb.get"}
ENV_WRITE_CALLS = {"os.putenv", "os.unsetenv"}
ENV_RW_CALLS = {"os.environ.setdefault", "os.environ.pop", "os.environb.setdefault", "os.environb.pop"}
CHDIR_CALLS = {"os.chdir", "os.fchdir"}
IMPORT_CALLS = {"importlib.import_module", "__import__"}
SHELL_CALLS = {"os.system", "os.popen", "pty.spawn", "asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell"}
NETWORK_MODULES = {"requests", "urllib", "urllib3", "http", "socket", "smtplib", "ftplib", "httpx", "aiohttp", "boto3",
                   "botocore", "paramiko", "websocket", "websockets", "telnetlib", "poplib", "imaplib", "xmlrpc"}
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")

_RC = "matplotlib.rc"
SETTINGS_CALLS = {
    "numpy.set_printoptions": "numpy.printoptions", "numpy.seterr": "numpy.seterr", "numpy.seterrcall": "numpy.seterr",
    "pandas.set_option": "pandas.options", "pandas.reset_option": "pandas.options",
    "matplotlib.rc": _RC, "matplotlib.pyplot.rc": _RC, "matplotlib.rcdefaults": _RC, "matplotlib.pyplot.rcdefaults": _RC,
    "matplotlib.rc_file": _RC, "matplotlib.pyplot.rc_file": _RC, "matplotlib.rc_file_defaults": _RC,
    "matplotlib.style.use": _RC, "matplotlib.pyplot.style.use": _RC,
    "seaborn.set": _RC, "seaborn.set_theme": _RC, "seaborn.set_style": _RC, "seaborn.set_context": _RC,
    "seaborn.set_palette": _RC, "seaborn.reset_defaults": _RC, "seaborn.reset_orig": _RC,
    "matplotlib.use": "matplotlib.backend", "matplotlib.pyplot.switch_backend": "matplotlib.backend",
    "matplotlib.pyplot.ion": "matplotlib.backend", "matplotlib.pyplot.ioff": "matplotlib.backend",
    "logging.basicConfig": "logging", "logging.disable": "logging", "logging.captureWarnings": "logging",
    "logging.setLoggerClass": "logging",
    "warnings.filterwarnings": "warnings", "warnings.simplefilter": "warnings", "warnings.resetwarnings": "warnings",
    "site.addsitedir": "sys.path",
    "torch.set_num_threads": "torch.threads", "torch.set_num_interop_threads": "torch.threads",
    "torch.set_default_dtype": "torch.defaults", "torch.set_default_tensor_type": "torch.defaults",
    "torch.set_default_device": "torch.defaults", "torch.use_deterministic_algorithms": "torch.defaults",
    "torch.set_float32_matmul_precision": "torch.defaults", "torch.set_printoptions": "torch.defaults",
    "sklearn.set_config": "sklearn.config", "os.umask": "umask", "sys.setrecursionlimit": "recursionlimit",
    "random.seed": "random.seed", "numpy.random.seed": "random.seed", "torch.manual_seed": "random.seed",
    "tensorflow.random.set_seed": "random.seed", "locale.setlocale": "locale",
    # IPython display printers for sympy's types and builtins, in this
    # kernel only (the corpus's nbval-latex-example printed sqrt(x)/2 for
    # the pretty form on the other kernel).
    "sympy.init_printing": "ipython.formatters", "sympy.interactive.init_printing": "ipython.formatters",
    "sympy.interactive.printing.init_printing": "ipython.formatters", "sympy.init_session": "ipython.formatters",
}
# By last name, on anything (or called bare after a from-import).
ANY_SETTINGS_CALLS = {
    "setLevel": "logging", "addHandler": "logging", "removeHandler": "logging",
    "filterwarnings": "warnings", "simplefilter": "warnings",
    "register_line_magic": "ipython.magics", "register_cell_magic": "ipython.magics",
    "register_line_cell_magic": "ipython.magics", "register_magic_function": "ipython.magics",
    "register_magics": "ipython.magics",
    "init_printing": "ipython.formatters", "for_type": "ipython.formatters", "for_type_by_name": "ipython.formatters",
}
LIST_MUTATORS = {"append", "insert", "extend", "remove", "pop", "clear", "reverse", "sort", "__setitem__"}
DICT_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__"}
MAGIC_SETTINGS = {"matplotlib": "matplotlib.backend", "pylab": "matplotlib.backend", "alias": "ipython.magics",
                  "unalias": "ipython.magics"}
MAGIC_SETTINGS.update((m, "ipython.config") for m in (
    "config", "precision", "xmode", "colors", "autoreload", "aimport", "load_ext", "reload_ext", "unload_ext", "pdb",
    "autocall", "automagic", "autoawait", "doctest_mode", "pprint"))
# Magics that touch neither files nor the environment (others that are not
# recognised here may do anything).
NO_FILE_MAGICS = {"who", "whos", "who_ls", "reset", "reset_selective", "xdel", "time", "timeit", "prun", "capture",
                  "ferry", "pwd", "history", "lsmagic", "magic", "dhist", "automagic", "autocall", "pprint",
                  "html", "javascript", "js", "latex", "markdown", "svg", "quickref", "clear", "cls", "tb",
                  "pinfo", "pinfo2", "pdoc", "pdef", "psource", "pfile"}

# The usual names of modules and functions imported in some earlier cell.
USUAL_NAMES = {"np": "numpy", "pd": "pandas", "plt": "matplotlib.pyplot", "mpl": "matplotlib", "sns": "seaborn",
               "tf": "tensorflow", "Image": "PIL.Image", "Path": "pathlib.Path", "PurePath": "pathlib.PurePath",
               "PosixPath": "pathlib.PosixPath", "environ": "os.environ", "getenv": "os.getenv",
               "rcParams": "matplotlib.rcParams", "rmtree": "shutil.rmtree", "copyfile": "shutil.copyfile",
               "copytree": "shutil.copytree", "iglob": "glob.iglob", "listdir": "os.listdir",
               "makedirs": "os.makedirs", "urlopen": "urllib.request.urlopen", "load_dotenv": "dotenv.load_dotenv"}
_HANDLE = object()  # a name bound to an open file object


class Facts:
    """What a cell does outside the notebook's names: files, environment
    variables, imports, the working directory, process settings and side
    effects. They go where name effects go (CellScan._fx: the cell now, or
    the Effects of the function whose body this is).

    Names are qualified through the cell's imports (import numpy as np,
    from os import path) and, for names the cell does not bind, the usual
    ones (USUAL_NAMES: np, pd, plt, sns, Image, Path ...).

    A path argument is resolved when it is a str or bytes literal, an
    f-string whose parts resolve, "a" + "b", os.path.join / posixpath.join,
    Path(...), p / "x", p.joinpath(...), p.parent, str(p) / os.fspath(p),
    or a name bound (unconditionally, in the same scope of this cell) to
    one; it is normalised by posixpath.normpath. An open file object
    (a name bound by `with open(...) as f` or `f = open(...)`), an int
    (a descriptor) or a StringIO is not a path. Anything else sets
    files_unknown; URLs are "network", not files.

        files  read     open/io.open/codecs/gzip/bz2/lzma/tarfile/zipfile/
                        h5py/rasterio/np.memmap by mode (no mode: read;
                        w/x: write; a or +: read and write), os.open by
                        flags, PIL.Image.open, np.load/fromfile/loadtxt/
                        genfromtxt, pandas read_*, torch.load, joblib.load,
                        scipy.io.loadmat, xarray.open_*, imread, dotenv
                        (".env"), Path.read_text/read_bytes/open, %run,
                        %load, shutil.copy* and moves (the source)
               write    np.save/savez*/savetxt, .tofile, any .to_csv/
                        .to_parquet/... (to_* writers) with a path,
                        .savefig, .save(path), imwrite/imsave, torch.save,
                        joblib.dump, scipy.io.savemat, Path.write_text/
                        write_bytes/touch/mkdir, os.makedirs/mkdir,
                        copies and moves (the destination), %%writefile
                        (-a: read too)
               list     os.listdir/scandir (default "."), os.walk,
                        Path.iterdir, %ls
               glob     glob.glob/iglob (with root_dir), Path.glob/rglob
                        (joined to the path)
               delete   os.remove/unlink/rmdir/removedirs, shutil.rmtree,
                        Path.unlink/rmdir, moves (the source)
               exists   os.path.exists/isfile/isdir/lexists/islink/
                        getsize/getmtime/getctime, os.stat/lstat/access,
                        Path.exists/is_file/is_dir/stat
        files_unknown   any of those with an unresolved path; pathlib
                        methods on an unknown object; open passed as a
                        value; shell (!, %%bash, %sx, %system, os.system,
                        os.popen, os.exec*, os.spawn*, subprocess);
                        exec/eval; %run; unrecognised magics
        imports         import a.b / from a.b import c -> "a" (not
                        relative), importlib.import_module("x"),
                        __import__("x")
        env             os.environ["X"], os.environ.get/os.getenv("X"),
                        "X" in os.environ, %env X, os.path.expandvars
        env_writes      os.environ["X"] = / del, os.environ.setdefault/pop
                        (read too), os.putenv/unsetenv, %env X=1,
                        %env X 1, %set_env X 1
        env_unknown     any other use of os.environ (iterated, copied,
                        .update, a computed key, passed on), %env alone,
                        load_dotenv, exec/eval
        chdir           os.chdir/fchdir, %cd, %pushd, %popd
        settings        SETTINGS_CALLS, ANY_SETTINGS_CALLS, MAGIC_SETTINGS,
                        pd.options.x.y = v, rcParams[k] = v / .update,
                        sys.path[...] = / sys.path = / sys.path.append...,
                        torch.backends.* = v, register_*_magic decorators;
                        "module.attr" when module_attrs is not empty
        attr_stores     "X.attr" for every X.attr... = v (and del, +=)
                        where X is a global name
        module_attrs    (the cell only) those whose X an import statement
                        in the cell binds
        side_effects    "shell", "network" (a call into NETWORK_MODULES, a
                        URL given as a path, %pip, %conda), "file-write" (a
                        write or delete, or an unresolved path given to a
                        function that writes)
    """

    def __init__(self, scan):
        self.scan = scan
        self.env_ok = set()  # ids of os.environ nodes already accounted for
        self.callee = set()  # ids of names in call position
        self.imported = set()  # names module-level imports in the cell bind

    # ----------------------------------------------------- names

    def fx(self):
        return self.scan._fx()

    def qual(self, node):
        """The dotted name an expression spells (np.save -> numpy.save), or None."""
        if isinstance(node, ast.Attribute):
            b = self.qual(node.value)
            return b + "." + node.attr if b else None
        if not isinstance(node, ast.Name):
            return None
        name, sc = node.id, self.scan
        if sc._resolve(name) == LOCAL:
            s = sc.scope
            while s is not None:
                if name in s.imports:
                    return s.imports[name]
                if s.kind in ("function", "comprehension") and (name in s.bound or name in s.nonlocals):
                    return None  # a local variable
                s = s.parent
            return None
        m = sc.module
        if name in m.imports:
            return m.imports[name]
        if name in m.shadowed:
            return None
        return USUAL_NAMES.get(name, name)

    def _binding_scope(self, name):
        s = self.scan.scope
        while s.kind == "comprehension":
            s = s.parent
        if s.kind == "module" or name in s.globals:
            return self.scan.module
        return s

    def forget(self, name):
        """name is rebound: it is no longer a literal, a file or an import."""
        s = self._binding_scope(name)
        s.literals.pop(name, None)
        s.imports.pop(name, None)
        s.shadowed.add(name)

    def bound(self, target, value):
        """After target = value (or with value as target): remember a path
        literal or an open file, when bound for sure."""
        sc = self.scan
        if not isinstance(target, ast.Name) or sc.cond != sc.scope.cond_base:
            return
        if sc.scope.kind not in ("module", "function") or target.id in sc.scope.globals:
            return
        if self.opens(value) or (isinstance(value, ast.Call) and self.qual(value.func) in STREAMS | {"StringIO", "BytesIO"}):
            sc.scope.literals[target.id] = _HANDLE
            return
        v = self.text(value)
        if v is not None:
            sc.scope.literals[target.id] = v

    def imported_as(self, name, module):
        s = self._binding_scope(name)
        s.imports[name] = module
        if s is self.scan.module:
            self.imported.add(name)

    def _literal(self, name):
        sc = self.scan
        if sc._resolve(name) == GLOBAL:
            # A function body runs later, when a global may hold anything.
            return sc.module.literals.get(name) if sc.scope.immediate else None
        s = sc.scope
        return s.literals.get(name) if s.kind == "function" and name in s.bound else None

    # ----------------------------------------------------- paths

    def text(self, node, depth=0):
        """(path, is_pathlib) for an expression that spells a literal path, or None."""
        if depth > 20:
            return None
        d = depth + 1
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return node.value, False
            if isinstance(node.value, bytes):
                return node.value.decode("utf-8", "surrogateescape"), False
            return None
        if isinstance(node, ast.JoinedStr):
            out = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    out.append(str(v.value))
                elif isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None:
                    t = self.text(v.value, d)
                    if t is None:
                        return None
                    out.append(t[0])
                else:
                    return None
            return "".join(out), False
        if isinstance(node, ast.Name):
            v = self._literal(node.id)
            return None if v is None or v is _HANDLE else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
            a, b = self.text(node.left, d), self.text(node.right, d)
            if a is None or b is None:
                return None
            if isinstance(node.op, ast.Add):
                return (a[0] + b[0], False) if not (a[1] or b[1]) else None
            return (posixpath.join(a[0], b[0]), True) if a[1] or b[1] else None
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            v = self.text(node.value, d)
            return (posixpath.dirname(posixpath.normpath(v[0])) or ".", True) if v and v[1] else None
        if not isinstance(node, ast.Call) or any(isinstance(a, ast.Starred) for a in node.args) or \
                any(k.arg is None for k in node.keywords):
            return None
        q = self.qual(node.func)
        if q in PATH_CTORS or q in PATH_JOINS:
            parts = [self.text(a, d) for a in node.args]
            if any(p is None for p in parts) or node.keywords:
                return None
            return posixpath.join(*[p[0] for p in parts]) if parts else ".", q in PATH_CTORS
        if q in PATH_SAME and len(node.args) == 1:
            v = self.text(node.args[0], d)
            return (v[0], False) if v else None
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in ("joinpath", "with_suffix", "with_name", "expanduser",
                                                      "absolute", "resolve"):
            base = self.text(f.value, d)
            if base is None or not base[1]:
                return None
            parts = [self.text(a, d) for a in node.args]
            if any(p is None for p in parts):
                return None
            p = [x[0] for x in parts]
            if f.attr == "joinpath":
                return posixpath.join(base[0], *p), True
            if f.attr == "with_suffix" and len(p) == 1:
                return posixpath.splitext(base[0])[0] + p[0], True
            if f.attr == "with_name" and len(p) == 1:
                return posixpath.join(posixpath.dirname(base[0]), p[0]), True
            return (base[0], True) if not p else None
        return None

    def pathish(self, node):
        """Whether node is certainly a pathlib path (resolved or not)."""
        while True:
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                node = node.left
            elif isinstance(node, ast.Attribute) and node.attr == "parent":
                node = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "joinpath", "with_suffix", "with_name", "expanduser", "absolute", "resolve"):
                node = node.func.value
            else:
                break
        if isinstance(node, ast.Call):
            return self.qual(node.func) in PATH_CTORS or (
                isinstance(node.func, ast.Attribute) and self.qual(node.func.value) in PATH_CTORS)  # Path.home()
        if isinstance(node, ast.Name):
            v = self._literal(node.id)
            return v is not None and v is not _HANDLE and v[1]
        return False

    def opens(self, node):
        """Whether node is a call that returns an open file."""
        if not isinstance(node, ast.Call):
            return False
        if self.qual(node.func) in OPENERS:
            return True
        f = node.func
        return isinstance(f, ast.Attribute) and f.attr == "open" and self.pathish(f.value)

    def not_a_path(self, node):
        if isinstance(node, ast.Constant):
            return not isinstance(node.value, (str, bytes))
        if isinstance(node, ast.Name) and self._literal(node.id) is _HANDLE:
            return True
        if self.opens(node):
            return True
        q = self.qual(node.func if isinstance(node, ast.Call) else node)
        return q in STREAMS or q in ("StringIO", "BytesIO")

    # ----------------------------------------------------- recording

    def file(self, path, op):
        fx = self.fx()
        if URL.match(path):
            fx.side_effects.add("network")
            return
        fx.files.add((posixpath.normpath(path), op))
        if op in ("write", "delete"):
            fx.side_effects.add("file-write")

    def unknown(self, write=False):
        fx = self.fx()
        fx.files_unknown = True
        if write:
            fx.side_effects.add("file-write")

    def path_arg(self, node, ops, suffix=None):
        """A path argument used for ops; True if it resolved. suffix: what
        the function appends to a name without it (np.save)."""
        if node is None or self.not_a_path(node):
            return False
        v = self.text(node)
        if v is None:
            self.unknown(write=bool(set(ops) & {"write", "delete"}))
            return False
        path = v[0] if suffix is None or v[0].endswith(suffix) else v[0] + suffix
        for op in ops:
            self.file(path, op)
        return True

    def shell(self):
        fx = self.fx()
        fx.side_effects.add("shell")
        fx.files_unknown = True

    def anything(self):
        """Code analysis cannot see may touch any file and variable."""
        fx = self.fx()
        fx.files_unknown = fx.env_unknown = True

    def setting(self, tag):
        self.fx().settings.add(tag)

    @staticmethod
    def _arg(node, pos, kws):
        for k in node.keywords:
            if k.arg in kws:
                return k.value
        if pos is not None and pos < len(node.args) and not any(isinstance(a, ast.Starred) for a in node.args[:pos + 1]):
            return node.args[pos]
        return None

    def _mode(self, node, spec):
        """The ops of an open-like call from its mode argument."""
        m = self._arg(node, spec.mode, ("mode",))
        if m is None:
            mode = spec.mode_default
        else:
            v = self.text(m)
            mode = v[0] if v else None
        if mode is None:
            return ["read", "write"]
        ops = []
        if "r" in mode or "a" in mode or "+" in mode:
            ops.append("read")
        if any(c in mode for c in "wxa+"):
            ops.append("write")
        return ops or ["read"]

    def _spec(self, node, specs):
        for sp in specs:
            ops = self._mode(node, sp) if sp.op == "open" else [sp.op]
            a = self._arg(node, sp.pos, sp.kws)
            if a is None:
                if sp.default is not None:
                    for op in ops:
                        self.file(sp.default, op)
                elif any(isinstance(x, ast.Starred) for x in node.args) or any(k.arg is None for k in node.keywords):
                    self.unknown(write=bool(set(ops) & {"write", "delete"}))
                continue
            if sp.op == "glob":
                root = self._arg(node, None, ("root_dir",))
                v, r = self.text(a), (self.text(root) if root is not None else ("", False))
                if v is None or r is None:
                    self.unknown()
                else:
                    self.file(posixpath.join(r[0], v[0]), "glob")
                continue
            self.path_arg(a, ops, sp.suffix)

    # ----------------------------------------------------- calls

    def call(self, node):
        f = node.func
        self.callee.add(id(f))
        fx = self.fx()
        q = self.qual(f)
        last = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) and q else None)
        if q is not None:
            root = q.split(".")[0]
            if root in NETWORK_MODULES:
                fx.side_effects.add("network")
            if q in SHELL_CALLS or root == "subprocess" or re.match(r"os\.(exec|spawn|posix_spawn)", q):
                self.shell()
            if q in ("exec", "eval", "execfile"):
                self.anything()
            if q in SETTINGS_CALLS or q.startswith("logging.config."):
                self.setting(SETTINGS_CALLS.get(q, "logging"))
            if q in CHDIR_CALLS:
                fx.chdir = True
            if q in IMPORT_CALLS and node.args:
                v = self.text(node.args[0])
                if v and v[0] and not v[0].startswith("."):
                    fx.imports.add(v[0].split(".")[0])
            if q == "dotenv.load_dotenv":
                fx.env_unknown = True
            self._env_call(node, q)
            if q in FILE_CALLS:
                self._spec(node, FILE_CALLS[q])
                return
            if q == "os.open":
                self._os_open(node)
                return
        if last in ANY_SETTINGS_CALLS:
            self.setting(ANY_SETTINGS_CALLS[last])
        if isinstance(f, ast.Attribute):
            rq = self.qual(f.value)
            if rq == "sys.path" and f.attr in LIST_MUTATORS:
                self.setting("sys.path")
            if rq is not None and rq.split(".")[-1] == "rcParams" and f.attr in DICT_MUTATORS:
                self.setting(_RC)
        if last in ANY_FILE_CALLS:
            self._spec(node, ANY_FILE_CALLS[last])
            return
        if isinstance(f, ast.Attribute):
            if f.attr == "save" and node.args:
                self.path_arg(node.args[0], ["write"])
                return
            self._path_method(node)

    def _os_open(self, node):
        flags = self._arg(node, 1, ("flags",))
        words = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(flags or ast.Constant(0))
                 if isinstance(n, (ast.Attribute, ast.Name))}
        if flags is None or words <= {"os", "O_RDONLY", "O_BINARY", "O_CLOEXEC", "O_NOFOLLOW"} and not (
                isinstance(flags, ast.Name)):
            ops = ["read"]
        elif "O_WRONLY" in words and "O_RDWR" not in words:
            ops = ["write"] if not ({"O_APPEND"} & words) else ["read", "write"]
        else:
            ops = ["read", "write"]
        self.path_arg(self._arg(node, 0, ("path",)), ops)

    def _path_method(self, node):
        f = node.func
        op = PATH_METHODS.get(f.attr)
        if op is None:
            return
        recv = f.value
        if self.pathish(recv):
            v = self.text(recv)
        elif f.attr in PATH_METHODS_ANY and len(node.args) <= PATH_METHODS_ANY[f.attr] and \
                self.qual(recv) not in FILE_CALLS_MODULES:
            v = None
        elif f.attr == "open" and node.args:
            # x.open(path, mode): an opener analysis does not know.
            self.path_arg(node.args[0], self._mode(node, _F("open", 0, mode=1)))
            return
        elif f.attr == "open" and not node.args and not node.keywords and isinstance(recv, ast.Name):
            v = None  # p.open(): p is likely a Path from another cell
        else:
            return
        if op == "open":
            ops = self._mode(node, _F("open", None, mode=0))
        elif op == "move":
            ops = ["read", "delete"]
        else:
            ops = [op]
        if v is None:
            self.unknown(write=bool(set(ops) & {"write", "delete"}))
        elif op in ("glob",):
            pat = self._arg(node, 0, ("pattern",))
            t = self.text(pat) if pat is not None else None
            if t is None:
                self.unknown()
            else:
                self.file(posixpath.join(v[0], "**", t[0]) if f.attr == "rglob" else posixpath.join(v[0], t[0]), "glob")
        else:
            for o in ops:
                self.file(v[0], o)
        if op == "move":
            self.path_arg(self._arg(node, 0, ("target",)), ["write"])

    def _env_call(self, node, q):
        fx = self.fx()
        f = node.func
        if q in ("os.path.expandvars", "posixpath.expandvars") and node.args:
            v = self.text(node.args[0])
            if v is None:
                fx.env_unknown = True
            else:
                fx.env.update(m.group(1) or m.group(2) for m in re.finditer(r"\$(?:(\w+)|\{([^}]*)\})", v[0]))
            return
        if isinstance(f, ast.Attribute) and self.qual(f.value) in ENVIRON:
            self.env_ok.add(id(f.value))
        if q in ENV_READ_CALLS or q in ENV_WRITE_CALLS or q in ENV_RW_CALLS:
            key = self._arg(node, 0, ("key", "name"))
            v = self.text(key) if key is not None else None
            if v is None:
                fx.env_unknown = True
            elif q in ENV_READ_CALLS:
                fx.env.add(v[0])
            elif q in ENV_WRITE_CALLS:
                fx.env_writes.add(v[0])
            else:
                fx.env.add(v[0])
                fx.env_writes.add(v[0])
        elif isinstance(f, ast.Attribute) and self.qual(f.value) in ENVIRON:
            fx.env_unknown = True  # .copy(), .items(), .update(...) ...

    def env_node(self, node):
        """A load of os.environ (Name or Attribute) not accounted for."""
        if id(node) not in self.env_ok and self.qual(node) in ENVIRON:
            self.fx().env_unknown = True

    def env_subscript(self, node, aug=False):
        """os.environ[k] loaded, stored or deleted."""
        if self.qual(node.value) not in ENVIRON:
            return
        self.env_ok.add(id(node.value))
        fx = self.fx()
        v = self.text(node.slice)
        if v is None:
            fx.env_unknown = True
        elif isinstance(node.ctx, ast.Load) or aug:
            fx.env.add(v[0])
        if v is not None and not isinstance(node.ctx, ast.Load):
            fx.env_writes.add(v[0])

    def compare(self, node):
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)) and self.qual(right) in ENVIRON:
                v = self.text(left)
                self.env_ok.add(id(right))
                if v is None:
                    self.fx().env_unknown = True
                else:
                    self.fx().env.add(v[0])
            left = right

    def name_load(self, node):
        if node.id == "open" and id(node) not in self.callee and self.qual(node) == "open":
            self.unknown(write=True)  # open passed on as a value
        self.env_node(node)

    # ----------------------------------------------------- stores

    def store_target(self, t):
        """An attribute or item target (assignment, augmented, del)."""
        if isinstance(t, ast.Subscript):
            q = self.qual(t.value)
            if q == "sys.path":
                self.setting("sys.path")
            elif q is not None and q.split(".")[-1] == "rcParams":
                self.setting(_RC)
            return
        n = t
        while isinstance(n.value, ast.Attribute):
            n = n.value
        if isinstance(n.value, ast.Name) and self.scan._resolve(n.value.id) == GLOBAL:
            self.fx().attr_stores.add(n.value.id + "." + n.attr)
        q = self.qual(t) or ""
        if q == "sys.path":
            self.setting("sys.path")
        elif q.startswith("pandas.options."):
            self.setting("pandas.options")
        elif q.startswith("torch.backends."):
            self.setting("torch.defaults")
        elif q.startswith("matplotlib.rcParams") or q.startswith("matplotlib.pyplot.rcParams"):
            self.setting(_RC)

    def decorator(self, d):
        q = self.qual(d) if not isinstance(d, ast.Call) else None
        if q is not None and q.split(".")[-1] in ANY_SETTINGS_CALLS:
            self.setting(ANY_SETTINGS_CALLS[q.split(".")[-1]])

    def import_(self, module, level=0):
        if level == 0 and module:
            self.fx().imports.add(module.split(".")[0])

    # ----------------------------------------------------- magics

    def magic(self, name, line, body):
        fx = self.fx()
        words = [w for w in line.split() if not w.startswith("-")]
        dyn = any(c in line for c in "${")  # IPython expands names in the line
        if name in MAGIC_SETTINGS:
            self.setting(MAGIC_SETTINGS[name])
        if name in SHELL_MAGICS:
            self.shell()
        elif name in ("cd", "pushd", "popd"):
            fx.chdir = True
        elif name in ("pip", "conda", "mamba"):
            fx.side_effects.add("network")
        elif name in ("ls", "ll", "lf", "lk", "lx", "ldir"):
            if dyn or any(c in line for c in ">|;&`"):
                self.shell()
            elif name == "ls":
                for w in words or ["."]:
                    self.file(w, "list")
            else:
                self.file(".", "list")
        elif name == "env":
            s = line.strip()
            m = re.match(r"([^=\s]+)\s*[=\s]", s)
            if not s:
                fx.env_unknown = True
            elif m:
                fx.env_writes.add(m.group(1))
            else:
                fx.env.add(s)
        elif name == "set_env":
            if words:
                fx.env_writes.add(words[0])
            else:
                fx.env_unknown = True
        elif name == "writefile":
            ops = ["read", "write"] if re.search(r"(^|\s)(-a|--append)\b", line) else ["write"]
            if not words or dyn:
                self.unknown(write=True)
            else:
                for op in ops:
                    self.file(words[-1], op)
        elif name in ("run", "load"):
            if name == "run":
                self.anything()
            if words and not dyn and not (name == "run" and re.search(r"(^|\s)-m\b", line)):
                self.file(words[0], "read")
            elif name == "load" and not words:
                pass
            else:
                self.unknown()
        elif name not in SAFE_MAGICS and name not in NO_FILE_MAGICS and name not in MAGIC_SETTINGS:
            self.anything()

    def finish(self, res):
        res.module_attrs = {s for s in res.attr_stores if s.split(".")[0] in self.imported}
        if res.module_attrs:
            res.settings.add("module.attr")
        if "shell" in res.side_effects:
            res.shell = True


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
    scan.facts.finish(res)
    return res


def to_json(res, rid):
    return {
        "id": rid,
        "reads": sorted(res.reads),
        "writes": sorted(res.writes),
        "maybe": sorted(res.maybe),
        "deleted": sorted(res.deleted),
        "calls": sorted(res.calls),
        # "*" among a definition's uses: calling it may touch any name.
        "defs": {n: sorted(fx.uses() - {n}) + (["*"] if fx.dynamic else []) for n, fx in res.defs.items()},
        "def_effects": {n: fx.as_json() for n, fx in res.defs.items()},
        **res.facts_json(),
        "module_attrs": sorted(res.module_attrs),
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
            out.update(dynamic=True, files_unknown=True, env_unknown=True, error="%s: %s" % (type(e).__name__, e))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
