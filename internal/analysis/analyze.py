"""Ferry's cell analysis helper: which notebook names a cell reads and writes.

Runs as one long-lived process of the notebook's interpreter. Protocol: one
JSON object per line on stdin, {"id": n, "code": "..."}; one JSON object per
line on stdout, {"id": n, "reads": [...], "writes": [...], "maybe": [...],
"deleted": [...], "calls": [...], "defs": {name: [globals it uses]},
"dynamic": bool, "error": "..."}.

Python's own ast is used after IPython's input transformations, so magics,
!shell and ? help parse. Where code is dynamic (exec, eval, globals(), star
imports, unknown magics ...) "dynamic" is set and the caller treats every
name as read and possibly changed; what analysis misses, the agent's
namespace diff after the cell still catches.
"""

import ast
import json
import sys

try:
    from IPython.core.inputtransformer2 import TransformerManager

    _tm = TransformerManager()
except Exception:  # plain Python still works, without magics
    _tm = None

DYNAMIC_CALLS = {"exec", "eval", "globals", "locals", "vars", "__import__", "execfile", "compile"}
# Magics whose argument is Python code run in the user namespace.
CODE_MAGICS = {"time", "timeit", "prun", "capture"}
# Magics that touch no user names.
SAFE_MAGICS = {"matplotlib", "config", "pwd", "ls", "env", "history", "pip", "conda", "load_ext", "reload_ext", "precision", "xmode", "autoreload", "aimport", "lsmagic", "magic", "cd"}
# Magics that look at one object, named by their argument (x? is pinfo).
OBJECT_MAGICS = {"pinfo", "pinfo2", "pdoc", "pdef", "psource", "pfile"}


class Result:
    def __init__(self):
        self.reads, self.writes, self.maybe, self.deleted, self.calls = set(), set(), set(), set(), set()
        self.defs = {}
        self.dynamic = False
        self.error = ""


def _target_names(t, out):
    if isinstance(t, ast.Name):
        out.add(t.id)
    elif isinstance(t, (ast.Tuple, ast.List)):
        for e in t.elts:
            _target_names(e, out)
    elif isinstance(t, ast.Starred):
        _target_names(t.value, out)


def _base_name(node):
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    if isinstance(node, ast.Call):
        return _base_name(node.func)
    return node.id if isinstance(node, ast.Name) else None


class FunctionScan(ast.NodeVisitor):
    """Globals a function (or class, or lambda) body reads and writes."""

    def __init__(self, res):
        self.res = res
        self.uses, self.assigns = set(), set()

    def scan(self, node):
        args = node.args if not isinstance(node, ast.ClassDef) else None
        local = set()
        if args is not None:
            for a in args.posonlyargs + args.args + args.kwonlyargs:
                local.add(a.arg)
            for a in (args.vararg, args.kwarg):
                if a is not None:
                    local.add(a.arg)
        body = node.body if isinstance(node.body, list) else [node.body]
        glob = set()
        for n in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(n, ast.Global):
                glob.update(n.names)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                local.add(n.id)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                local.add(n.name)
            elif isinstance(n, ast.alias):
                local.add((n.asname or n.name).split(".")[0])
            elif isinstance(n, ast.arg):
                local.add(n.arg)
            elif isinstance(n, ast.ExceptHandler) and n.name:
                local.add(n.name)
        local -= glob
        for n in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(n, ast.Name):
                if n.id in glob and isinstance(n.ctx, (ast.Store, ast.Del)):
                    self.assigns.add(n.id)
                elif n.id not in local:
                    self.uses.add(n.id)
                    if n.id in DYNAMIC_CALLS:
                        self.res.dynamic = True
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in DYNAMIC_CALLS:
                self.res.dynamic = True
        # Decorators and defaults run at definition time, in the cell.
        self.uses |= glob
        return self


class CellScan(ast.NodeVisitor):
    def __init__(self, res):
        self.res = res
        self.defined = set()  # unconditionally bound so far at module level
        self.depth = 0  # >0 inside a conditional / loop block

    # -- names at module level
    def visit_Name(self, node):
        r = self.res
        if isinstance(node.ctx, ast.Load):
            if node.id in DYNAMIC_CALLS:
                r.dynamic = True
            if node.id not in self.defined:
                r.reads.add(node.id)
        elif isinstance(node.ctx, ast.Store):
            r.writes.add(node.id)
            if self.depth == 0:
                self.defined.add(node.id)
        elif isinstance(node.ctx, ast.Del):
            r.deleted.add(node.id)
            r.writes.add(node.id)
            if node.id not in self.defined:
                r.reads.add(node.id)
            self.defined.discard(node.id)

    def visit_Assign(self, node):
        self.visit(node.value)
        for t in node.targets:
            self._store(t)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
            self._store(node.target)
        self.visit(node.annotation)

    def visit_AugAssign(self, node):
        self.visit(node.value)
        name = _base_name(node.target)
        if name:
            if name not in self.defined:
                self.res.reads.add(name)
            self.res.writes.add(name)
            self.res.maybe.add(name)
        if not isinstance(node.target, ast.Name):
            self._visit_target_exprs(node.target)

    def visit_NamedExpr(self, node):
        self.visit(node.value)
        self.res.writes.add(node.target.id)

    def visit_Delete(self, node):
        for t in node.targets:
            if isinstance(t, ast.Name):
                self.visit_Name(t)
            else:
                name = _base_name(t)
                if name:
                    self.res.maybe.add(name)
                    if name not in self.defined:
                        self.res.reads.add(name)
                self._visit_target_exprs(t)

    def _store(self, t):
        if isinstance(t, ast.Name):
            self.visit_Name(t)
        elif isinstance(t, (ast.Tuple, ast.List)):
            for e in t.elts:
                self._store(e)
        elif isinstance(t, ast.Starred):
            self._store(t.value)
        else:  # attribute or item assignment mutates the base object
            name = _base_name(t)
            if name:
                self.res.maybe.add(name)
                if name not in self.defined:
                    self.res.reads.add(name)
            self._visit_target_exprs(t)

    def _visit_target_exprs(self, t):
        # The subscript and the object expression are evaluated (read).
        if isinstance(t, ast.Subscript):
            self.visit(t.value) if not isinstance(t.value, ast.Name) else None
            self.visit(t.slice)
        elif isinstance(t, ast.Attribute) and not isinstance(t.value, ast.Name):
            self.visit(t.value)

    def visit_Import(self, node):
        for a in node.names:
            n = a.asname or a.name.split(".")[0]
            self.res.writes.add(n)
            if self.depth == 0:
                self.defined.add(n)

    def visit_ImportFrom(self, node):
        for a in node.names:
            if a.name == "*":
                self.res.dynamic = True
                continue
            n = a.asname or a.name
            self.res.writes.add(n)
            if self.depth == 0:
                self.defined.add(n)

    def _define(self, node, name):
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        if isinstance(node, ast.ClassDef):
            for b in node.bases + [k.value for k in node.keywords]:
                self.visit(b)
        else:
            for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(d)
        fs = FunctionScan(self.res).scan(node)
        self.res.defs[name] = sorted(fs.uses - {name})
        if isinstance(node, ast.ClassDef):
            # A class body runs now (methods' globals are over-counted,
            # which only moves more than needed).
            self.res.reads |= fs.uses - self.defined - {name}
        self.res.writes |= fs.assigns  # `global` names it assigns (when called)
        self.res.writes.add(name)
        if self.depth == 0:
            self.defined.add(name)

    def visit_FunctionDef(self, node):
        self._define(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._define(node, node.name)

    def visit_Lambda(self, node):
        for d in node.args.defaults:
            self.visit(d)
        fs = FunctionScan(self.res).scan(node)
        for u in fs.uses:
            if u not in self.defined:
                self.res.reads.add(u)

    def _comprehension(self, node, elts):
        # Comprehension variables are local to it; walrus targets leak out.
        local = set()
        for g in node.generators:
            _target_names(g.target, local)
        first = True
        for g in node.generators:
            if first:
                self.visit(g.iter)  # evaluated in the enclosing scope
                first = False
            else:
                self._visit_excluding(g.iter, local)
            for c in g.ifs:
                self._visit_excluding(c, local)
        for e in elts:
            self._visit_excluding(e, local)

    def _visit_excluding(self, node, local):
        for n in ast.walk(node):
            if isinstance(n, ast.NamedExpr):
                self.res.writes.add(n.target.id)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local:
                if n.id in DYNAMIC_CALLS:
                    self.res.dynamic = True
                if n.id not in self.defined:
                    self.res.reads.add(n.id)
            elif isinstance(n, ast.Call):
                self._call_effects(n)

    def visit_ListComp(self, node):
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self._comprehension(node, [node.key, node.value])

    def visit_Call(self, node):
        self._call_effects(node)
        self.generic_visit(node)

    def _call_effects(self, node):
        f = node.func
        if isinstance(f, ast.Name):
            self.res.calls.add(f.id)
            # Calling a class or function may change it (class attributes,
            # function attributes, caches).
            self.res.maybe.add(f.id)
            if f.id in DYNAMIC_CALLS:
                self.res.dynamic = True
            if f.id in ("setattr", "delattr") and node.args:
                b = _base_name(node.args[0])
                if b:
                    self.res.maybe.add(b)
        elif isinstance(f, ast.Attribute):
            # A method call may mutate its object.
            b = _base_name(f.value)
            if b:
                self.res.maybe.add(b)
            if self._is_magic_call(f):
                self._magic(node)
        # Arguments may be mutated by the callee.
        for a in list(node.args) + [k.value for k in node.keywords]:
            b = _base_name(a)
            if b:
                self.res.maybe.add(b)

    @staticmethod
    def _is_magic_call(f):
        return (isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name)
                and f.value.func.id == "get_ipython" and f.attr in ("run_line_magic", "run_cell_magic", "system", "getoutput"))

    def _magic(self, node):
        f = node.func
        args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
        if f.attr in ("system", "getoutput"):
            cmd = args[0] if args else None
            if cmd is None or "$" in cmd or "{" in cmd:
                self.res.dynamic = True  # $var / {expr} expand user names
            return
        name = args[0] if args else None
        if not isinstance(name, str):
            self.res.dynamic = True
            return
        if name in SAFE_MAGICS:
            return
        if name in OBJECT_MAGICS and len(args) > 1 and isinstance(args[1], str):
            head = args[1].strip().split(".")[0].split("(")[0]
            if head.isidentifier():
                if head not in self.defined:
                    self.res.reads.add(head)
                return
        if name in CODE_MAGICS:
            code = (args[2] if f.attr == "run_cell_magic" and len(args) > 2 else args[1] if len(args) > 1 else "") or ""
            line = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            if f.attr == "run_line_magic":
                code = " ".join(w for w in line.split() if not w.startswith("-"))
            sub = analyze(code if isinstance(code, str) else "")
            if sub.error:
                self.res.dynamic = True
            for s in ("reads", "writes", "maybe", "deleted", "calls"):
                getattr(self.res, s).update(getattr(sub, s) - (self.defined if s == "reads" else set()))
            self.res.defs.update(sub.defs)
            self.res.dynamic |= sub.dynamic
            return
        self.res.dynamic = True

    # -- blocks that may not run: their bindings do not shadow later reads
    def _block(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_For(self, node):
        self.visit(node.iter)
        self.depth += 1
        self._store(node.target)
        for s in node.body + node.orelse:
            self.visit(s)
        self.depth -= 1

    visit_AsyncFor = visit_For

    def visit_While(self, node):
        self._block(node)

    def visit_If(self, node):
        self.visit(node.test)
        self.depth += 1
        for s in node.body + node.orelse:
            self.visit(s)
        self.depth -= 1

    def visit_Try(self, node):
        self.depth += 1
        for h in node.handlers:
            if h.name:
                self.res.writes.add(h.name)
                self.res.deleted.add(h.name)  # Python deletes it after the handler
        self.generic_visit(node)
        self.depth -= 1

    visit_TryStar = visit_Try

    def visit_Match(self, node):
        self.visit(node.subject)
        self.depth += 1
        for c in node.cases:
            for n in ast.walk(c.pattern):
                for attr in ("name",):
                    v = getattr(n, attr, None)
                    if isinstance(v, str):
                        self.res.writes.add(v)
                if isinstance(n, ast.MatchMapping) and n.rest:
                    self.res.writes.add(n.rest)
                if isinstance(n, ast.MatchValue):
                    self.visit(n.value)
                if isinstance(n, ast.MatchClass):
                    self.visit(n.cls)
            if c.guard is not None:
                self.visit(c.guard)
            for s in c.body:
                self.visit(s)
        self.depth -= 1

    def visit_With(self, node):
        for it in node.items:
            self.visit(it.context_expr)
            b = _base_name(it.context_expr)
            if b:
                self.res.maybe.add(b)
            if it.optional_vars is not None:
                self._store(it.optional_vars)
        for s in node.body:
            self.visit(s)

    visit_AsyncWith = visit_With

    def visit_Global(self, node):
        pass

    visit_Nonlocal = visit_Global


def analyze(code):
    res = Result()
    src = code
    if _tm is not None:
        try:
            src = _tm.transform_cell(code)
        except Exception as e:
            res.error = "transform: %s" % e
            res.dynamic = True
            return res
    try:
        tree = ast.parse(src)
    except SyntaxError as e:
        res.error = "SyntaxError: %s (line %s)" % (e.msg, e.lineno)
        return res
    scan = CellScan(res)
    for stmt in tree.body:
        scan.visit(stmt)
    # Calling a function defined in this cell reads the globals it uses.
    for c in res.calls:
        for u in res.defs.get(c, []):
            if u not in res.defs:
                res.reads.add(u)
                res.maybe.add(u)
    # Builtin names stay: the caller only moves names the user bound, and a
    # user may rebind a builtin's name.
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
        "defs": res.defs,
        "dynamic": res.dynamic,
        "error": res.error,
    }


def main():
    for line in sys.stdin:
        try:
            req = json.loads(line)
            rid = req.get("id")
            out = to_json(analyze(req.get("code", "")), rid)
        except Exception as e:  # a bug here must not stop the session
            out = {"id": None, "dynamic": True, "error": "%s: %s" % (type(e).__name__, e), "reads": [], "writes": [], "maybe": [], "deleted": [], "calls": [], "defs": {}}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
