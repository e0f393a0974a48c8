"""How objects that decorators and class factories build in the notebook's
__main__ travel (issue 14: notebooks nobody here wrote). Installed by
Ferry as sys.modules["_ferry_reduce"] before the agent, whose pickler asks
reduce(obj) first; None means "pickle it the ordinary (cloudpickle) way".

Each case is one that cloudpickle gets wrong for an object made in
__main__, found on public notebooks:

- functools.lru_cache / functools.cache: pickled by qualified name, which
  the target may not have ("Can't get attribute 'fib'"): it travels as the
  function and is cached again there. The cache starts empty at the target
  (CPython gives no way to read a C lru_cache's entries), so a cached
  function is called again there for arguments cached here.
- functools.singledispatch: its wrapper's closure holds a WeakKeyDictionary
  ("cannot pickle 'weakref.ReferenceType' object"): it travels as the
  function and its registered implementations, dispatched again there.
- functools.cached_property: holds an RLock on Python 3.11 ("cannot pickle
  '_thread.RLock' object"), pinning the class and every instance: it
  travels as its function and attribute name.
- typing.NamedTuple classes: cloudpickle rebuilds a class from its
  __orig_bases__, and typing's NamedTupleMeta then fails at the target
  (KeyError: '__module__'). Any class with __slots__ (namedtuples,
  dataclass(slots=True)) is also rebuilt without its slots, so its
  instances grew a __dict__: the class is rebuilt from its real bases,
  with its __slots__.
"""

import functools
import sys
import types


def reduce(obj, is_main_function, class_reduce):
    """A reduce tuple for obj, or None. is_main_function(f) says whether f
    is a function defined in the notebook; class_reduce(cls) is the
    pickler's ordinary reduce of a class."""
    t = type(obj)
    if t.__name__ == "_lru_cache_wrapper" and is_main_function(getattr(obj, "__wrapped__", None)):
        return _lru_cached, (obj.__wrapped__, obj.cache_parameters())
    if t is types.FunctionType and obj.__globals__ is functools.__dict__ and obj.__code__.co_name == "wrapper" \
            and "registry" in obj.__dict__ and "dispatch" in obj.__dict__ and is_main_function(getattr(obj, "__wrapped__", None)):
        impls = [(cls, f) for cls, f in obj.registry.items() if cls is not object]
        extra = {k: v for k, v in obj.__dict__.items() if k not in _SINGLEDISPATCH_OWN}
        return _singledispatched, (obj.__wrapped__, impls, extra)
    if t is functools.cached_property:
        return _cached_property, (obj.func, obj.attrname, obj.__doc__)
    if isinstance(obj, type) and obj.__module__ == "__main__" and "__slots__" in obj.__dict__:
        return _with_real_bases(obj, class_reduce(obj))
    return None


_SINGLEDISPATCH_OWN = {"register", "dispatch", "registry", "_clear_cache", "__wrapped__"}


def _lru_cached(f, params):
    return functools.lru_cache(maxsize=params.get("maxsize"), typed=params.get("typed", False))(f)


def _singledispatched(func, impls, extra):
    f = functools.singledispatch(func)
    for cls, impl in impls:
        f.register(cls, impl)
    f.__dict__.update(extra)
    return f


def _cached_property(func, attrname, doc):
    p = functools.cached_property(func)
    p.attrname = attrname
    p.__doc__ = doc
    return p


def _with_real_bases(cls, rv):
    """cloudpickle's reduce of a class, rebuilt from cls.__bases__ (not the
    __orig_bases__ typing.NamedTuple leaves) and with its __slots__."""
    cp = sys.modules.get("cloudpickle.cloudpickle")
    if not isinstance(rv, tuple) or cp is None or rv[0] is not getattr(cp, "_make_skeleton_class", None):
        return rv
    args = list(rv[1])  # (metaclass, name, bases, type_kwargs, tracker id, extra)
    if any(b is getattr(sys.modules.get("typing"), "NamedTuple", None) for b in args[2]):
        args[2] = cls.__bases__
    args[3] = dict(args[3], __slots__=cls.__dict__["__slots__"])
    return (rv[0], tuple(args)) + tuple(rv[2:])
