"""IPython's history across kernels: one numbering, one In, the Out a cell reads.

Each kernel keeps its own execution count, In and Out, but the front end sees
one notebook. Before a cell runs, Ferry puts into the execute_request's
metadata (key META_KEY) what this kernel lacks:

- "count": the number the front end gives the cell. The kernel takes it as
  its own, so In[n], Out[n], _n, _in and a traceback's "Cell In[n]" use the
  front end's numbers whichever kernel ran the cells before.
- "inputs": {n: code} of the counted cells this kernel did not run (they ran
  in the other kernel, or Ferry answered them): In, _ih, _i, _ii, _iii and
  _in read as all-local.
- "last": the numbers of the three newest results (0: none), when the cell
  reads _, __ or ___: this kernel's display hook takes them as its own, so
  the values it had (moved here first) become _, __ and ___.

A pre_run_cell hook applies it: no round trip, and nothing when the kernel is
already in step (every cell on one side). Out entries travel between kernels
as pseudo-variables OUT_PREFIX + n, moved by Ferry only when a cell reads _,
Out, _oh or _n; the agent's pack and load call get_out and set_out.
"""

OUT_PREFIX = "__ferry_out__:"
META_KEY = "ferry_history"

_shell = None


def install(shell):
    """Watch for Ferry's history notes before each cell."""
    global _shell
    _shell = shell
    events = getattr(shell, "events", None)
    if events is not None:
        try:
            events.unregister("pre_run_cell", _pre_run_cell)
        except ValueError:
            pass
        events.register("pre_run_cell", _pre_run_cell)


def _pre_run_cell(info=None):
    try:
        kernel = getattr(_shell, "kernel", None)
        get_parent = getattr(kernel, "get_parent", None)
        parent = get_parent("shell") if get_parent is not None else {}
        sync = (parent.get("metadata") or {}).get(META_KEY)
        if isinstance(sync, dict):
            apply(sync)
    except Exception:  # history must never stop the user's cell
        pass


def apply(sync, shell=None):
    """Bring this kernel's history in step with the front end's (see the
    module's docstring for sync's keys)."""
    shell = shell or _shell
    hm = getattr(shell, "history_manager", None)
    ns = shell.user_ns
    count = int(sync.get("count") or 0)
    inputs = {int(k): str(v) for k, v in (sync.get("inputs") or {}).items()}
    if hm is not None and count > 0:
        raw, parsed = hm.input_hist_raw, hm.input_hist_parsed
        # In is a list indexed by number: entries this kernel never ran
        # are filled in (with "" where Ferry has no input either), and
        # ones Ferry knows better replace them.
        for n in range(1, count):
            src = inputs.get(n)
            if n < len(raw):
                if src is None:
                    continue
                raw[n], parsed[n] = src.rstrip("\n"), _transformed(shell, src)
            else:
                src = src or ""
                raw.append(src.rstrip("\n"))
                parsed.append(_transformed(shell, src))
            ns["_i%d" % n] = raw[n]
        # store_inputs shifts these into _i, _ii and _iii as the cell
        # starts: the inputs of the three cells before it.
        prev = [raw[n] if 0 < n < len(raw) else "" for n in (count - 1, count - 2, count - 3)]
        hm._i00, hm._i, hm._ii = prev
        shell.execution_count = count
    last = sync.get("last")
    if isinstance(last, list):
        oh = ns.get("_oh")
        oh = oh if isinstance(oh, dict) else {}
        vals = [oh.get(int(n), "") if n else "" for n in (list(last) + [0, 0, 0])[:3]]
        dh = getattr(shell, "displayhook", None)
        for name, v in zip(("_", "__", "___"), vals):
            if dh is not None:
                setattr(dh, name, v)
            ns[name] = v


def _transformed(shell, src):
    try:
        return shell.transform_cell(src).rstrip("\n")
    except Exception:
        return src.rstrip("\n")


def is_out(name):
    return name.startswith(OUT_PREFIX)


def _number(name):
    return int(name[len(OUT_PREFIX):])


def get_out(name, ns):
    """The value of Out[n] for OUT_PREFIX + n (KeyError when this kernel
    has none)."""
    oh = ns.get("_oh")
    if not isinstance(oh, dict):
        raise KeyError(name)
    return oh[_number(name)]


def set_out(name, value, ns):
    """Make value this kernel's Out[n] and _n."""
    n = _number(name)
    oh = ns.get("_oh")
    if isinstance(oh, dict):
        oh[n] = value
    ns["_%d" % n] = value
