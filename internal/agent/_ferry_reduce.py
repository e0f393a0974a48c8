"""How objects that decorators and class factories build in the notebook's
__main__ travel (issue 14: notebooks nobody here wrote). Installed by
Ferry as sys.modules["_ferry_reduce"] before the agent, whose pickler asks
reduce(obj) first; None means "pickle it the ordinary (cloudpickle) way".

Each case is one that cloudpickle gets wrong for an object made in
__main__, found on public notebooks:

- functools.lru_cache / functools.cache: pickled by qualified name, which
  the target may not have ("Can't get attribute 'fib'"): it travels as the
  function and its cached entries, cached again there with those entries,
  so a function is not called again there for arguments cached here (it
  may print, or read a file). CPython has no API for a C lru_cache's
  entries: they are found through the garbage collector's view of the
  wrapper (its LRU list's keys and results, oldest first, then its dict),
  and an unbounded cache's dict is filled directly, a bounded one's by
  calling it once per entry with a stand-in that answers the cached
  result. What does not carry: cache_info()'s hit and miss counts.
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
        return _lru_cached, (obj.__wrapped__, obj.cache_parameters(), _lru_entries(obj))
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


class _Mark:
    """Stands for the lru_cache's keyword marker inside a key in transit."""

    def __reduce__(self):
        return _mark, ()


_MARK = _Mark()


def _mark():
    return _MARK


def _lru_parts(w):
    """(cache dict, keyword marker, [(key, result)] oldest first, or None)
    of a C lru_cache wrapper, read through gc.get_referents, which lists
    its LRU links' keys and results (oldest first), its dict, its function
    and its marker; None if that layout is not what is found."""
    import gc

    refs = gc.get_referents(w)
    func = getattr(w, "__wrapped__", None)
    for i in range(1, len(refs) - 1):
        if isinstance(refs[i - 1], dict) and (refs[i] is func or isinstance(refs[i], _Seed)) and type(refs[i + 1]) is object:
            cache, mark = refs[i - 1], refs[i + 1]
            if w.cache_parameters().get("maxsize") is None:
                return cache, mark, None
            links = refs[1:i - 1]  # (key, result, the link's type) per entry
            if len(links) != 3 * len(cache) or any(
                    not (isinstance(t, type) and t.__name__ == "_lru_list_elem") for t in links[2::3]):
                return None
            return cache, mark, list(zip(links[0::3], links[1::3]))
    return None


def _lru_entries(w):
    """The cached (key, result) pairs, oldest first, with the marker as
    _MARK; None when they cannot be read (the cache then starts empty)."""
    try:
        parts = _lru_parts(w)
        if parts is None:
            return None
        cache, mark, pairs = parts
        if pairs is None:
            pairs = list(cache.items())
        swap = lambda k: tuple(_MARK if x is mark else x for x in k) if type(k) is tuple else k
        return [(swap(k), r) for k, r in pairs]
    except Exception:
        return None


def _args_of(key, typed, mark):
    """The (args, kwargs) of a call whose lru_cache key is key."""
    if type(key) is not tuple:
        return (key,), {}  # one int or str argument is its own key
    if mark in key:
        m = key.index(mark)
        rest = len(key) - m - 1
        nkw = (rest - m) // 3 if typed else rest // 2
        kw = key[m + 1:m + 1 + 2 * nkw]
        return key[:m], dict(zip(kw[0::2], kw[1::2]))
    return (key[:len(key) // 2] if typed else key), {}


class _Seed:
    """The function a bounded cache is rebuilt around: it answers the cached
    results while the cache is filled, then calls the notebook's function."""

    def __init__(self, f, results):
        self.f, self.results = f, results

    def __call__(self, *args, **kwargs):
        if self.results:
            return self.results.pop()
        return self.f(*args, **kwargs)


def _lru_cached(f, params, entries=None):
    maxsize, typed = params.get("maxsize"), params.get("typed", False)
    if not entries:
        return functools.lru_cache(maxsize=maxsize, typed=typed)(f)
    if maxsize is None:
        w = functools.lru_cache(maxsize=None, typed=typed)(f)
        parts = _lru_parts(w)
        if parts is not None:
            cache, mark, _ = parts
            for k, r in entries:
                cache[tuple(mark if x is _MARK else x for x in k) if type(k) is tuple else k] = r
        return w
    seed = _Seed(f, [])
    w = functools.lru_cache(maxsize=maxsize, typed=typed)(seed)
    functools.update_wrapper(w, f)
    for k, r in entries:
        args, kwargs = _args_of(k, typed, _MARK)
        seed.results.append(r)
        w(*args, **kwargs)
    seed.results = None
    return w


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
