"""The process state a notebook sets, as one movable value.

Part of Ferry's agent (agent.py), installed next to it as
sys.modules["_ferry_proc"]. The cloud is another process on another
machine: settings a cell makes to its own process do not reach the other
kernel by moving variables. capture() describes them as the difference
from this kernel's own baseline, taken when the agent was installed
(before any user cell); apply() makes this kernel's difference equal to
another's. Ferry moves the captured value as the pseudo-variable
"__ferry_proc__", read by every cell, so a cell finds the settings the
cells before it made, wherever they ran.

What is carried:

=================  =========================================================
key                what
=================  =========================================================
env                os.environ entries set, changed or removed (not the
                   laptop's own environment: that is not copied)
cwd                the working directory, relative to the root
sys_path           entries added to sys.path (root-relative where under it)
numpy              numpy's print options
pandas             pandas options changed from their registered defaults
matplotlib         rcParams changed from matplotlib's defaults
logging            the root logger's level and its stream and file
                   handlers with their formats; levels set on loggers
warnings           filters added to warnings.filters
ipython            %precision, %xmode, and traits set with %config
magics             line and cell magics the notebook registered
attrs              attributes the notebook assigned on modules
                   (mymod.VERBOSE = True), when they are plain data
=================  =========================================================

Values that cannot be carried (a handler of another kind, an option whose
value does not pickle) are left out and named in "skipped", so Ferry can
say so. apply() never raises for one setting: it applies the others and
returns what failed.
"""

import copy
import logging
import os
import re
import sys
import warnings

import _ferry_audit as audit

_base = {}  # this kernel's baseline, from baseline()
_attrs = set()  # (module, attribute) pairs the notebook assigned
# Module attributes travel only when their value is plain data: a flag, a
# number, a path; anything else (an object, a function) might not pickle,
# and one unpicklable setting must not make the whole state unmovable.
_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def track(module, attr):
    """Carry module.attr from now on (the notebook assigned it)."""
    _attrs.add((module, attr))


def _plain(v, depth=0):
    if isinstance(v, _PLAIN):
        return True
    if depth < 3 and isinstance(v, (list, tuple, set, frozenset)):
        return all(_plain(x, depth + 1) for x in v)
    if depth < 3 and isinstance(v, dict):
        return all(_plain(k, depth + 1) and _plain(x, depth + 1) for k, x in v.items())
    return False
_NUMPY_DEFAULTS = {"edgeitems": 3, "threshold": 1000, "floatmode": "maxprec", "precision": 8, "suppress": False, "linewidth": 75,
                   "nanstr": "nan", "infstr": "inf", "sign": "-", "formatter": None, "legacy": False}


def baseline(shell):
    """Remember this kernel's own state before any user cell."""
    _base.clear()
    _base["env"] = dict(os.environ)
    _base["sys_path"] = list(sys.path)
    _base["warnings"] = list(warnings.filters)
    _base["loggers"] = _logger_levels()
    _base["root_handlers"] = list(logging.root.handlers)
    _base["root_level"] = logging.root.level
    _base["traits"] = _traits(shell)
    _base["magics"] = _magic_ids(shell)
    _base["formatters"] = _printer_ids(shell)


def _formatters(shell):
    df = getattr(shell, "display_formatter", None)
    return dict(getattr(df, "formatters", None) or {})


def _printers(f):
    """Formatter f's printers as [((module, name) of the type, printer)]:
    those registered on a type and those registered by name."""
    items = [((getattr(t, "__module__", ""), getattr(t, "__name__", "")), fn)
             for t, fn in list(getattr(f, "type_printers", {}).items())]
    return items + [(tuple(k), fn) for k, fn in list(getattr(f, "deferred_printers", {}).items())]


def _printer_ids(shell):
    """id of each display printer per mime type, by (module, name) of the
    type it formats."""
    return {mime: {key: id(fn) for key, fn in _printers(f)} for mime, f in _formatters(shell).items()}


def _rel_or_abs(p):
    r = audit.rel(p)
    return ("rel", r) if r is not None else ("abs", p)


def _from_rel(t):
    kind, p = t
    return audit.path_of(p) if kind == "rel" and p != "." else (audit.root if kind == "rel" else p)


def _logger_levels():
    out = {}
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and lg.level != logging.NOTSET:
            out[name] = lg.level
    return out


def _configurables(shell):
    out = {}
    for c in list(getattr(shell, "configurables", []) or []):
        out.setdefault(type(c).__name__, c)
    return out


def _traits(shell):
    out = {}
    for name, c in _configurables(shell).items():
        try:
            vals = {}
            for t in c.class_trait_names(config=True):
                try:
                    vals[t] = copy.deepcopy(getattr(c, t))
                except Exception:
                    pass
            out[name] = vals
        except Exception:
            pass
    return out


def _magic_ids(shell):
    mm = getattr(shell, "magics_manager", None)
    if mm is None:
        return {}
    return {kind: {n: id(f) for n, f in table.items()} for kind, table in mm.magics.items()}


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:
        return a is b


def capture(shell):
    """This kernel's process state as a picklable dict (differences from
    its baseline), with "skipped": [what could not be described]."""
    st, skipped = {}, []
    base_env = _base.get("env", {})
    env = {k: v for k, v in os.environ.items() if base_env.get(k) != v}
    for k in base_env:
        if k not in os.environ:
            env[k] = None
    st["env"] = env
    st["cwd"] = _rel_or_abs(os.getcwd())
    base_path = _base.get("sys_path", [])
    st["sys_path"] = [_rel_or_abs(p) for p in sys.path if p not in base_path]
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            st["numpy"] = dict(np.get_printoptions())
        except Exception:
            skipped.append("numpy print options")
    pd = sys.modules.get("pandas")
    if pd is not None:
        try:
            from pandas._config import config as pdc

            opts = {}
            for k, o in pdc._registered_options.items():
                if k in pdc._deprecated_options:
                    continue
                v = pdc._get_option(k, silent=True)
                if not _same(v, o.defval):
                    opts[k] = v
            st["pandas"] = opts
        except Exception:
            skipped.append("pandas options")
    mpl = sys.modules.get("matplotlib")
    if mpl is not None:
        try:
            rc = {}
            for k, v in mpl.rcParams.items():
                if k == "backend" or k.startswith("webagg."):
                    continue
                if not _same(v, mpl.rcParamsDefault.get(k)):
                    rc[k] = v
            st["matplotlib"] = rc
        except Exception:
            skipped.append("matplotlib rcParams")
    st["logging"] = _capture_logging(skipped)
    base_w = _base.get("warnings", [])
    added = []
    for f in warnings.filters:
        if f in base_w:
            continue
        action, msg, cat, mod, lineno = f
        added.append((action, getattr(msg, "pattern", msg), (cat.__module__, cat.__qualname__), getattr(mod, "pattern", mod), lineno))
    st["warnings"] = added
    st["ipython"] = _capture_ipython(shell)
    st["magics"] = _capture_magics(shell)
    st["formatters"] = _capture_formatters(shell, skipped)
    attrs = {}
    for mod, attr in sorted(_attrs):
        m = sys.modules.get(mod)
        if m is None or not hasattr(m, attr):
            continue
        v = getattr(m, attr)
        if _plain(v):
            attrs[mod + ":" + attr] = v
        else:
            skipped.append("%s.%s (a %s, not plain data)" % (mod, attr, type(v).__name__))
    st["attrs"] = attrs
    st["skipped"] = skipped
    return st


def _capture_logging(skipped):
    root = logging.root
    base_h = _base.get("root_handlers", [])
    handlers = []
    for h in root.handlers:
        if h in base_h:
            continue
        fmt = h.formatter
        desc = {"level": h.level, "fmt": getattr(fmt, "_fmt", None), "datefmt": getattr(fmt, "datefmt", None),
                "style": type(getattr(fmt, "_style", None)).__name__}
        if isinstance(h, logging.FileHandler):
            desc["file"] = _rel_or_abs(h.baseFilename)
            desc["mode"] = "a"
        elif isinstance(h, logging.StreamHandler):
            s = getattr(h, "stream", None)
            if s is sys.__stderr__ or s is sys.stderr or getattr(s, "name", "") == "stderr":
                desc["stream"] = "stderr"
            elif s is sys.__stdout__ or s is sys.stdout or getattr(s, "name", "") == "stdout":
                desc["stream"] = "stdout"
            else:
                skipped.append("a logging handler writing to %r" % (s,))
                continue
        else:
            skipped.append("a logging handler of type %s" % type(h).__name__)
            continue
        handlers.append(desc)
    base_l = _base.get("loggers", {})
    levels = {n: lv for n, lv in _logger_levels().items() if base_l.get(n) != lv}
    return {"level": root.level, "handlers": handlers, "levels": levels, "disable": root.manager.disable}


def _capture_ipython(shell):
    out = {}
    try:
        out["precision"] = shell.display_formatter.formatters["text/plain"].float_precision
    except Exception:
        pass
    try:
        out["xmode"] = shell.InteractiveTB.mode
    except Exception:
        pass
    base_t = _base.get("traits", {})
    traits = {}
    for cname, vals in _traits(shell).items():
        b = base_t.get(cname, {})
        d = {t: v for t, v in vals.items() if t in b and not _same(v, b[t])}
        if d:
            traits[cname] = d
    out["traits"] = traits
    return out


def _capture_formatters(shell, skipped):
    """Display printers the notebook registered (for_type, for_type_by_name
    on IPython's formatters): mime -> [(module, qualname, printer)]. A type
    travels by name, so a notebook class finds its printer there as here."""
    base = _base.get("formatters", {})
    out = {}
    for mime, f in _formatters(shell).items():
        b = base.get(mime, {})
        for key, fn in _printers(f):
            if b.get(key) == id(fn):
                continue
            if not callable(fn):
                skipped.append("a %s printer for %s.%s" % (mime, key[0], key[1]))
                continue
            out.setdefault(mime, []).append((key[0], key[1], fn))
    return out


def _capture_magics(shell):
    mm = getattr(shell, "magics_manager", None)
    if mm is None:
        return {}
    base = _base.get("magics", {})
    out = {}
    for kind, table in mm.magics.items():
        for n, f in table.items():
            if base.get(kind, {}).get(n) == id(f):
                continue
            if getattr(f, "__module__", None) == "__main__":
                out.setdefault(kind, {})[n] = f
    return out


def apply(shell, st):
    """Make this kernel's process state what st describes. Returns a list
    of what could not be applied."""
    failed = []
    base_env = _base.get("env", {})
    want = st.get("env", {})
    for k in list(os.environ):
        if k not in want and base_env.get(k) != os.environ.get(k):
            # set here by an earlier cell but no longer in the newest state
            if k in base_env:
                os.environ[k] = base_env[k]
            else:
                del os.environ[k]
    for k, v in want.items():
        try:
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        except Exception as e:
            failed.append("environment variable %s (%s)" % (k, e))
    try:
        cwd = _from_rel(st.get("cwd", ("rel", ".")))
        if os.getcwd() != cwd:
            os.makedirs(cwd, exist_ok=True) if st["cwd"][0] == "rel" else None
            os.chdir(cwd)
    except Exception as e:
        failed.append("working directory (%s)" % e)
    base_path = _base.get("sys_path", [])
    added = [_from_rel(t) for t in st.get("sys_path", [])]
    if added or any(p not in base_path for p in sys.path):
        sys.path[:] = added + [p for p in base_path if p not in added]
    # IPython's first: setting %precision also sets numpy's print
    # precision, which the numpy options below then correct.
    _apply_ipython(shell, st.get("ipython", {}), failed)
    # A library is imported here only to apply a setting that differs from
    # its defaults; one already imported is brought in line either way.
    if "numpy" in st and (st["numpy"] != _NUMPY_DEFAULTS or "numpy" in sys.modules):
        try:
            import numpy as np

            if np.get_printoptions() != st["numpy"]:
                np.set_printoptions(**st["numpy"])
        except Exception as e:
            failed.append("numpy print options (%s)" % e)
    if "pandas" in st and (st["pandas"] or "pandas" in sys.modules):
        try:
            import pandas as pd
            from pandas._config import config as pdc

            for k, o in pdc._registered_options.items():
                if k in pdc._deprecated_options:
                    continue
                want_v = st["pandas"].get(k, o.defval)
                if not _same(pdc._get_option(k, silent=True), want_v):
                    pd.set_option(k, want_v)
        except Exception as e:
            failed.append("pandas options (%s)" % e)
    if "matplotlib" in st and (st["matplotlib"] or "matplotlib" in sys.modules):
        try:
            import matplotlib as mpl

            for k, v in mpl.rcParamsDefault.items():
                if k == "backend" or k.startswith("webagg."):
                    continue
                want_v = st["matplotlib"].get(k, v)
                if not _same(mpl.rcParams.get(k), want_v):
                    mpl.rcParams[k] = want_v
        except Exception as e:
            failed.append("matplotlib rcParams (%s)" % e)
    _apply_logging(st.get("logging"), failed)
    if "warnings" in st:
        try:
            filters = []
            for action, msg, (cmod, cname), mod, lineno in st["warnings"]:
                cat = _resolve(cmod, cname)
                filters.append((action, None if msg is None else re.compile(msg, re.I), cat, None if mod is None else re.compile(mod), lineno))
            base_w = _base.get("warnings", [])
            warnings.filters[:] = filters + [f for f in base_w]
            warnings._filters_mutated()
        except Exception as e:
            failed.append("warnings filters (%s)" % e)
    for key, v in st.get("attrs", {}).items():
        mod, _, attr = key.partition(":")
        try:
            import importlib

            m = importlib.import_module(mod)
            if not _same(getattr(m, attr, _missing), v):
                setattr(m, attr, v)
            track(mod, attr)
        except Exception as e:
            failed.append("%s.%s (%s)" % (mod, attr, e))
    fmts = _formatters(shell)
    for mime, printers in st.get("formatters", {}).items():
        f = fmts.get(mime)
        for mod, qualname, fn in printers:
            if f is None:
                failed.append("a %s printer for %s.%s (no such formatter here)" % (mime, mod, qualname))
                continue
            try:
                _set_printer(f, mod, qualname, fn)
            except Exception as e:
                failed.append("a %s printer for %s.%s (%s)" % (mime, mod, qualname, e))
    for kind, table in st.get("magics", {}).items():
        for n, f in table.items():
            try:
                shell.register_magic_function(f, kind, n)
            except Exception as e:
                failed.append("%%%s magic %s (%s)" % (kind, n, e))
    return failed


_missing = object()


def _set_printer(f, mod, qualname, fn):
    """Register fn for the type named mod.name on formatter f: on a type
    of that name already registered here, and by name (IPython's deferred
    printers, matched by module and __name__ when a value is shown), so a
    notebook class moved here after, a new class object, finds it too."""
    for t in list(getattr(f, "type_printers", {})):
        if getattr(t, "__module__", "") == mod and getattr(t, "__name__", "") == qualname:
            f.type_printers[t] = fn
    f.deferred_printers[(mod, qualname)] = fn


def _resolve(mod, qualname):
    import importlib

    obj = importlib.import_module(mod)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _apply_logging(lg, failed):
    if not lg:
        return
    try:
        root = logging.root
        base_h = _base.get("root_handlers", [])
        for h in list(root.handlers):
            if h not in base_h:
                root.removeHandler(h)
        for d in lg.get("handlers", []):
            if "file" in d:
                h = logging.FileHandler(_from_rel(d["file"]), mode="a")
            else:
                h = logging.StreamHandler(sys.stderr if d.get("stream") == "stderr" else sys.stdout)
            style = {"StrFormatStyle": "{", "StringTemplateStyle": "$"}.get(d.get("style"), "%")
            if d.get("fmt") is not None or d.get("datefmt") is not None:
                h.setFormatter(logging.Formatter(d.get("fmt"), d.get("datefmt"), style=style))
            h.setLevel(d.get("level", 0))
            root.addHandler(h)
        root.setLevel(lg.get("level", logging.WARNING))
        base_l = _base.get("loggers", {})
        want = lg.get("levels", {})
        for name, lv in _logger_levels().items():
            if name not in want and base_l.get(name) != lv:
                logging.getLogger(name).setLevel(base_l.get(name, logging.NOTSET))
        for name, lv in want.items():
            logging.getLogger(name).setLevel(lv)
        logging.disable(lg.get("disable", 0))
    except Exception as e:
        failed.append("logging (%s)" % e)


def _apply_ipython(shell, ip, failed):
    try:
        if "precision" in ip:
            f = shell.display_formatter.formatters["text/plain"]
            if f.float_precision != ip["precision"]:
                f.float_precision = ip["precision"]
    except Exception as e:
        failed.append("%%precision (%s)" % e)
    try:
        if "xmode" in ip and shell.InteractiveTB.mode != ip["xmode"]:
            shell.InteractiveTB.set_mode(ip["xmode"])
    except Exception as e:
        failed.append("%%xmode (%s)" % e)
    confs = _configurables(shell)
    for cname, vals in ip.get("traits", {}).items():
        c = confs.get(cname)
        if c is None:
            failed.append("%%config %s (no such configurable here)" % cname)
            continue
        for t, v in vals.items():
            try:
                if not _same(getattr(c, t), v):
                    setattr(c, t, v)
            except Exception as e:
                failed.append("%%config %s.%s (%s)" % (cname, t, e))
