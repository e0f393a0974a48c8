"""What a value reaches, for the agent's report: the objects it holds
directly (children, which alias groups follow) and the notebook globals
the code it carries reads when called (uses). Installed by Ferry as
sys.modules["_ferry_graph"] before the agent.

The analysis records the globals of a function or class where it is
defined (def f, class S). A value made otherwise carries code too and
needs those globals where it is used (issue 14, from notebooks nobody
here wrote): an instance of a notebook class (s.apply(2) reads factor),
a function a factory returned (add = make_logger(log)), a bound method
(f = s.apply), a functools.partial of a notebook function, a list of
models or a dict of callbacks. uses(obj) finds that code by walking what
obj holds, bounded as alias groups are.
"""

import dis
import sys
import types

import _ferry_reduce as _reduce

_GLOBAL_OPS = {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME"}
# Code calling these may touch any name: its uses then hold ANY (Go's
# state.AnyName), and a cell calling it counts as dynamic.
_DYNAMIC = {"eval", "exec", "globals"}
ANY = "*"
_ATOMIC = (int, float, complex, str, bool, type(None), range, bytes)


def _cell_full(c):
    try:
        c.cell_contents
        return True
    except ValueError:  # an empty cell (a variable not bound yet)
        return False


def children(o):
    """(label, object) pairs o holds directly, bounded; not inside arrays,
    modules or classes. A function's closure cells and defaults, a bound
    method's object and a partial's function and arguments are held: a
    function and the list its closure appends to share an object."""
    try:
        if isinstance(o, dict):
            return [("[%r]" % (k,), v) for k, v in list(o.items())[:1000]]
        if isinstance(o, (list, tuple, set, frozenset)):
            return [("[%d]" % i, v) for i, v in enumerate(list(o)[:1000])]
        if isinstance(o, types.FunctionType):
            # What a function carries with it travels with it: closure
            # cells and defaults (log = []; add = make_logger(log) must
            # move add and log together, or add appends to a copy).
            out = [(".__closure__[%d]" % i, c.cell_contents) for i, c in enumerate(o.__closure__ or ()) if _cell_full(c)]
            out += [(".__defaults__[%d]" % i, v) for i, v in enumerate(o.__defaults__ or ())]
            out += [(".__kwdefaults__[%r]" % (k,), v) for k, v in (o.__kwdefaults__ or {}).items()]
            return out
        if isinstance(o, types.MethodType):
            return [(".__self__", o.__self__)]
        if isinstance(o, (type, types.ModuleType, types.BuiltinFunctionType)):
            return []
        if type(o).__name__ == "_lru_cache_wrapper":
            # Its cached results travel with it (_ferry_reduce): r =
            # load(1) and the cache's [1] are one object.
            entries = _reduce._lru_entries(o) or []
            return [(".__wrapped__", getattr(o, "__wrapped__", None))] + [
                (".cache[%d]" % i, r) for i, (_, r) in enumerate(entries[:1000])]
        if type(o).__module__ == "functools" and type(o).__name__ == "partial":
            return [(".func", o.func)] + [(".args[%d]" % i, v) for i, v in enumerate(o.args)] + [
                (".keywords[%r]" % (k,), v) for k, v in o.keywords.items()]
        np = sys.modules.get("numpy")
        if np is not None and isinstance(o, np.ndarray):
            return [(".base", o.base)] if o.base is not None else []
        mgr = getattr(o, "_mgr", None)
        if mgr is not None and type(o).__module__.startswith("pandas"):
            arrays = getattr(mgr, "arrays", None)
            return [(".values", a) for a in list(arrays or [])[:1000]]
        d = getattr(o, "__dict__", None)
        if isinstance(d, dict):
            return [("." + str(k), v) for k, v in list(d.items())[:1000]]
    except Exception:
        pass
    return []


_code_globals = {}  # code object -> the global names it (and code nested in it) uses


def code_globals(co):
    """The global names code co reads, writes or deletes, with those of the
    functions, classes and comprehensions defined inside it."""
    hit = _code_globals.get(co)
    if hit is not None:
        return hit
    names = set()
    try:
        for ins in dis.get_instructions(co):
            if ins.opname in _GLOBAL_OPS and isinstance(ins.argval, str):
                names.add(ins.argval)
    except Exception:
        names.update(co.co_names)  # unsure: every name it mentions
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            names |= code_globals(c)
    if names & _DYNAMIC:
        names.add(ANY)
    names = frozenset(names)
    if len(_code_globals) > 20000:
        _code_globals.clear()
    _code_globals[co] = names
    return names


def _code_of(o, ns):
    """The notebook function behind o (a function, method, staticmethod,
    classmethod, a cache or wraps wrapper of one), or None."""
    for _ in range(4):
        if isinstance(o, types.FunctionType):
            return o if o.__globals__ is ns else None
        if isinstance(o, (types.MethodType, staticmethod, classmethod)):
            o = o.__func__
        elif hasattr(o, "__wrapped__") and not isinstance(o, type):
            o = o.__wrapped__
        else:
            return None
    return None


def _class_members(cls):
    """The callables a class defined in the notebook holds: methods,
    properties' accessors, cached properties."""
    out = []
    for v in list(vars(cls).values())[:1000]:
        if isinstance(v, property):
            out += [f for f in (v.fget, v.fset, v.fdel) if f is not None]
        elif type(v).__name__ == "cached_property":
            out.append(getattr(v, "func", None))
        else:
            out.append(v)
    return out


def uses(obj, ns, limit=2000, depth=3):
    """The global names the notebook code obj carries reads when called
    (its notebook functions, the methods of its notebook classes and of its
    instances' classes), looking a few levels into what it holds (bounded).
    Empty for plain data. Names of builtins not bound in ns are left out."""
    if isinstance(obj, _ATOMIC) or isinstance(obj, types.ModuleType):
        return []
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return []
    found, seen, stack = set(), set(), [(obj, 0)]
    classes = set()
    while stack and len(seen) < limit:
        o, d = stack.pop()
        if isinstance(o, _ATOMIC) or isinstance(o, types.ModuleType) or id(o) in seen:
            continue
        seen.add(id(o))
        f = _code_of(o, ns)
        if f is not None:
            found |= code_globals(f.__code__)
        if isinstance(o, type):
            cls = o
        else:
            cls = type(o)
        if cls.__module__ == "__main__" and id(cls) not in classes:
            # A notebook class: its methods' globals, and its notebook
            # bases'; an instance needs what its class's methods use.
            for c in cls.__mro__:
                if c.__module__ == "__main__" and id(c) not in classes:
                    classes.add(id(c))
                    for m in _class_members(c):
                        g = _code_of(m, ns)
                        if g is not None:
                            found |= code_globals(g.__code__)
                        elif m is not None and not isinstance(m, _ATOMIC) and d < depth:
                            stack.append((m, d + 1))  # a nested class, a partial …
        if d < depth:
            stack.extend((c, d + 1) for _, c in children(o))
    import builtins

    return sorted(n for n in found if n in ns or n not in builtins.__dict__)
