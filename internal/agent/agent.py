"""Ferry's agent: the small part of Ferry that lives inside each backend kernel.

Ferry (the Go kernel the front end talks to) installs this module silently in
every ipykernel it runs cells on, as sys.modules["_ferry_agent"], with a
hidden execute_request (silent, store_history=False): nothing is added to
the user's namespace, history, ``_``/``Out`` or execution count. All of its
state lives in this module object.

Entry points
------------
install(secret, shell=None)
    Register the "ferry.state" comm target guarded by secret and take a
    first fingerprint of the namespace.

report(names=(), dynamic=False, proc=False, shared=(), full=False) -> object whose repr is JSON
    Meant as a ``user_expressions`` entry of the user's own execute_request:
    evaluated right after the cell, its answer rides on the execute_reply,
    so the post-cell report costs no extra round trip. It never raises.
    names are those the cell may have mutated (from Ferry's analysis);
    the other names are compared by identity, type and a shallow signature
    (length, shape, an array's strides and data address) only; dynamic
    treats every name as possibly mutated. A possibly mutated value is
    compared by content hash when it is cheap to hash or when another
    location holds its version (shared), else reported changed. The JSON
    is::

        {"changed": {name: {"size", "hash", "kind", "movable", "reason",
                            "group", "module", "ratio"}},
         "deleted": [name, ...], "hashes": {name: hash},
         "error": "..." (only on failure)}

    "hash" is a content hash, or "" when there is none yet: it costs more
    than EAGER_BYTES and is computed in think time (full=True computes it
    now), or it cannot be computed within the cost bound (such a value is
    reported as changed whenever checked, since correct beats small).
    "hashes" are hashes computed in think time since the last report, of
    versions reported before and unchanged since. "ratio" (values of a MiB
    or more) estimates the share of the payload a move would send, from a
    few samples compressed as the transport would. "group" names the alias group: names sharing
    objects (a is b, a list holding an array another name holds, views of
    one array) share a group and must move together. "__ferry_rng__" is the
    pseudo-name of the random and numpy.random global generator states.

serialise(names) -> (payload bytes, hash, unmovable)
deserialise(payload, hash) -> names
    In-process forms of pack and load, for tests and tools: one payload for
    the whole group, its hash checked before anything is unpickled.

dump_session_size() -> {"bytes", "seconds", "error"} (as JSON repr)
    The baseline Ferry is compared against: a full-session dill dump
    written to a byte counter, and how long it took.

Comm protocol (target "ferry.state")
------------------------------------
Ferry opens a comm with target_name "ferry.state" and data
{"secret": <session secret>}; a comm without the secret the agent was
installed with is closed with {"error": "unauthorised"} and ignored, so
another client of the same Jupyter Server cannot inject pickles. Messages
are ``data`` dicts; payload bytes travel as binary buffers of the comm
messages, never base64:

    Ferry -> source  {"op": "pack", "id", "names": [...], "compress": bool,
                      "window": n}
    source -> Ferry  {"op": "begin", "id", "raw_size"}
    source -> Ferry  {"op": "chunk", "id", "seq", "z", "raw"} + 1 buffer  (repeated)
    source -> Ferry  {"op": "paused", "id", "seq"}  (after each window of n chunks)
    Ferry -> source  {"op": "more", "id"}  (once Ferry has relayed the window)
    source -> Ferry  {"op": "packed", "id", "hash", "size", "raw_size",
                      "chunks", "names", "unmovable": {name: reason},
                      "seconds"}
    Ferry -> target  the same begin and chunk messages, forwarded as they
                     come (Ferry never holds the whole payload)
    Ferry -> target  {"op": "load", "id", "hash", "chunks"}
    target -> Ferry  {"op": "loaded", "id", "hash", "names"}
                  or {"op": "error", "id", "error"}  (nothing was loaded)
    Ferry -> target  {"op": "drop", "id"}     (abandon a partial transfer)
    Ferry -> agent   {"op": "delete", "id", "names"} -> {"op": "deleted", "id"}

Chunks are at most CHUNK bytes of the payload (a few MiB, so a transfer
never needs one huge message). With a window of n > 0 chunks the source
sends n chunks per request and waits for "more": IOPub has no flow
control, so without it a source faster than the link would pile the whole
payload up in Ferry's (or the server's) memory; with it Ferry holds at
most a window, while the payload stays where it was, in the source's own
objects (chunks are views of them). n = 0 sends everything at once. A
source keeps one unfinished pack at a time: a new pack drops the old. "z" marks a zstd-compressed chunk (sent
only where a sample shows compression pays), "raw" its uncompressed
length. The hash is a SHA-256 tree hash: SHA-256 over TREE_TAG and, for
every chunk as sent, its tag (b"z" or b"r") and its SHA-256, so both ends
hash chunks on all cores while sending or receiving. The target checks the
chunk count, length and hash before unpickling anything; the source keeps
its copy whatever happens. Any failure answers {"op": "error"}; nothing is
ever raised into the user's output.

Payload
-------
frames: a 64-byte-aligned header (MAGIC, buffer count, pickle length,
buffer lengths), the pickle, then each out-of-band buffer, each padded to
64 bytes so arrays loaded in place are aligned. The pickle (protocol 5,
cloudpickle so functions, lambdas and classes defined in the notebook
travel by value) holds (FORMAT, {name: value}, {name: content hash}) for
the whole group, so aliases and shared sub-objects keep their identity.
Large buffers (numpy, pandas) go out of band without copies and land in
place at the target: loaded arrays are writable views of the received
buffer. Functions defined in the notebook are rebuilt with the target's
namespace as their globals, so they see later changes as they would have.
numpy views travel as views of their root array. Modules travel as imports
by name (an alias like np keeps its name); "__ferry_rng__" carries the
state of random and numpy.random.
"""

import hashlib
import hmac
import io
import json
import os
import pickle
import re
import struct
import sys
import threading
import time
import types
import warnings

import _ferry_audit as _audit
import _ferry_proc as _proc
import _ferry_history as _history
import _ferry_reduce as _reduce
import _ferry_graph as _graph

# The comm protocol and report format version; Go's agent.ProtocolVersion.
PROTOCOL = 6
CHUNK = 8 << 20
# A chunk is sent compressed only when its first PAYS_SAMPLE bytes shrink
# below PAYS of their size (_chunks); _ratio judges its samples the same way.
PAYS_SAMPLE = 64 << 10
PAYS = 0.8
RNG = "__ferry_rng__"
# The process state the notebook set (environment, cwd, sys.path, print
# options, rcParams, logging, warnings filters, IPython settings, magics).
PROC = "__ferry_proc__"
# Files under the root travel as pseudo-variables named by this prefix and
# their root-relative path.
FILE_PREFIX = "__ferry_file__:"
_PSEUDO = (RNG, PROC)
MAGIC = b"FRY1"
FORMAT = "ferry-payload-1"
TREE_TAG = b"ferry-tree-sha256-1"
ALIGN = 64
# Bounds of the fingerprint: pickled bytes hashed per value, objects walked
# for alias groups and for unmovable contents.
PICKLE_BUDGET = 32 << 20
REACH_LIMIT = 2000
REACH_DEPTH = 3
# Names IPython itself keeps in the user namespace.
_IPY = {"In", "Out", "get_ipython", "exit", "quit"}
_IPY_RE = re.compile(r"^(_+|_i+|_i\d+|_\d+|_dh|_oh|_ih|_exit_code|__.*__)$")

_secret = None
_shell = None
_prints = {}  # name -> _FP after the last report or load
_incoming = {}  # transfer id -> _Incoming
_failed = {}  # transfer id -> why receiving it failed (begin/chunk raised)
_outgoing = {}  # transfer id -> _Outgoing (a windowed pack waiting for "more")
_pool = None


def _user_ns():
    return _shell.user_ns


_ipy_names = {}  # name -> whether IPython's own by its spelling (a regex per name per report cost 0.3 µs each)


def _is_user_name(name, ns):
    ipy = _ipy_names.get(name)
    if ipy is None:
        ipy = _ipy_names[name] = bool(name in _IPY or _IPY_RE.match(name))
        if len(_ipy_names) > 100000:
            _ipy_names.clear()
    if ipy:
        return False
    hidden = getattr(_shell, "user_ns_hidden", {})
    return not (name in hidden and hidden[name] is ns.get(name))


class _JSON:
    """An object whose repr is JSON: user_expressions return repr()s."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return json.dumps(self.value, separators=(",", ":"), default=str)

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self))


def _workers():
    """A shared pool for hashing: hashlib releases the GIL on large
    updates, so big buffers hash on every core."""
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="ferry-hash")
    return _pool


def _sha256(b):
    return hashlib.sha256(b).digest()


# ---------------------------------------------------------------- movability

_UNMOVABLE_TYPES = [
    (types.GeneratorType, "generator"),
    (types.CoroutineType, "coroutine"),
    (types.AsyncGeneratorType, "async generator"),
    (types.FrameType, "frame"),
    (types.TracebackType, "traceback"),
]
# (module prefix, type name or None for any, reason)
_UNMOVABLE_NAMES = [
    ("_thread", None, "lock"),
    ("threading", "Thread", "thread"),
    ("threading", None, "lock"),
    ("socket", None, "socket"),
    ("ssl", None, "socket"),
    ("mmap", None, "memory map"),
    ("select", None, "selector"),
    ("selectors", None, "selector"),
    ("subprocess", "Popen", "subprocess"),
    ("multiprocessing", None, "process or pipe"),
    ("concurrent.futures", None, "executor or future"),
    ("asyncio", None, "event loop object"),
    ("weakref", None, "weak reference"),
    ("_weakref", None, "weak reference"),
    ("sqlite3", "Connection", "database connection"),
    ("sqlite3", "Cursor", "database cursor"),
    ("psycopg", None, "database connection"),
    ("psycopg2", None, "database connection"),
    ("pymysql", None, "database connection"),
    ("sqlalchemy.engine", None, "database connection"),
    ("h5py", None, "HDF5 file handle"),
    ("rasterio", "DatasetReader", "open raster dataset"),
    ("rasterio.io", None, "open raster dataset"),
    ("ctypes", None, "C pointer"),
    ("_ctypes", None, "C pointer"),
]


def _unmovable_reason(obj):
    """Why obj itself cannot move, or None."""
    for t, why in _UNMOVABLE_TYPES:
        if isinstance(obj, t):
            return why
    if isinstance(obj, io.IOBase) and not isinstance(obj, (io.BytesIO, io.StringIO)):
        return "open file or stream"
    if isinstance(obj, types.ModuleType):
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str) or sys.modules.get(name) is not obj:
            return "module not importable by name"
        return None
    t = type(obj)
    mod = t.__module__ or ""
    for prefix, name, why in _UNMOVABLE_NAMES:
        if (mod == prefix or mod.startswith(prefix + ".")) and (name is None or t.__name__ == name):
            if prefix == "threading" and name is None and "lock" not in t.__name__.lower() and t.__name__ not in (
                    "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier"):
                continue
            if prefix == "weakref" and t.__name__ in ("WeakValueDictionary", "WeakKeyDictionary", "WeakSet"):
                continue
            return why
    if mod.startswith("torch") and getattr(obj, "is_cuda", False):
        return "GPU tensor"
    return None


_OBJECT_PICKLING = (object.__reduce_ex__, object.__reduce__, getattr(object, "__getstate__", None))


def _pickles_itself(o):
    """Whether o's class defines how it pickles (its own __getstate__,
    __reduce__ or __reduce_ex__), so its attributes are not what travels."""
    t = type(o)
    if t in (list, dict, set, tuple, frozenset) or isinstance(o, types.ModuleType):
        return False
    try:
        return (t.__reduce_ex__ is not object.__reduce_ex__ or t.__reduce__ is not object.__reduce__
                or getattr(t, "__getstate__", None) not in (None, _OBJECT_PICKLING[2]))
    except Exception:
        return False


def _contained_unmovable(obj):
    """Why obj cannot move, looking a few levels into containers and
    instance attributes (bounded); pack still finds anything missed."""
    seen = set()
    stack = [(obj, 0, "")]
    while stack and len(seen) < REACH_LIMIT:
        o, depth, path = stack.pop()
        if isinstance(o, _ATOMIC) or id(o) in seen:
            continue
        seen.add(id(o))
        why = _unmovable_reason(o)
        if why:
            return why if not path else "holds a %s (at %s)" % (why, path)
        if _pickles_itself(o):
            # Its class says what it pickles (a matplotlib Figure drops its
            # weak references): looking inside would pin it for parts it
            # never sends. Should it fail, pack finds it and says why.
            continue
        if depth < REACH_DEPTH:
            for label, child in _children(o):
                stack.append((child, depth + 1, path + label))
    return None


# --------------------------------------------------------------- fingerprint

_ATOMIC = (int, float, complex, str, bool, type(None), range, bytes)
_SIZED = (list, dict, set, bytearray)


# What a value holds directly (closures, defaults, bound methods, partials
# included): _ferry_graph.py.
_children = _graph.children


def _buffer(obj):
    """(description, contiguous memoryview) fully describing obj's
    contents if it is array-like, else None."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return None
        a = obj if obj.flags.c_contiguous else np.ascontiguousarray(obj)
        return ("ndarray %s %s" % (obj.shape, obj.dtype.str)).encode(), memoryview(a).cast("B")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        mv = memoryview(obj)
        if not mv.c_contiguous:
            mv = memoryview(mv.tobytes())
        return type(obj).__name__.encode(), mv.cast("B")
    return None


def _is_buffer_like(obj):
    """Whether _buffer(obj) describes obj, without building it."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return not obj.dtype.hasobject
    return isinstance(obj, (bytes, bytearray, memoryview))


def _buffer_digest(mv):
    """SHA-256 tree hash of a buffer, in parallel for large ones."""
    n = mv.nbytes
    if n <= CHUNK:
        return _sha256(mv)
    parts = list(_workers().map(_sha256, (mv[o:o + CHUNK] for o in range(0, n, CHUNK))))
    return _sha256(struct.pack("<Q", n) + b"".join(parts))


class _Tree:
    """_buffer_digest of n bytes fed piece by piece, in one thread: for
    hashing in think time (pausable between pieces) and for arrays that
    are not contiguous (no full copy is made)."""

    def __init__(self, n):
        self.n, self.h, self.left, self.parts = n, hashlib.sha256(), CHUNK, []

    def update(self, mv):
        if self.n <= CHUNK:
            self.h.update(mv)
            return
        while mv.nbytes:
            k = min(self.left, mv.nbytes)
            self.h.update(mv[:k])
            mv, self.left = mv[k:], self.left - k
            if not self.left:
                self.parts.append(self.h.digest())
                self.h, self.left = hashlib.sha256(), CHUNK

    def digest(self):
        if self.n <= CHUNK:
            return self.h.digest()
        if self.left < CHUNK:
            self.parts.append(self.h.digest())
        return _sha256(struct.pack("<Q", self.n) + b"".join(self.parts))


PIECE = 1 << 20  # bytes hashed between two looks at whether a cell started


def _pieces(obj):
    """obj's bytes in C order, as memoryviews of about PIECE bytes; a
    non-contiguous array is copied a block of rows at a time."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray) and not obj.flags.c_contiguous:
        a = obj
        row = a[0:1].nbytes if len(a) else 0
        k = max(1, PIECE // max(row, 1))
        for i in range(0, len(a), k):
            yield memoryview(np.ascontiguousarray(a[i:i + k])).cast("B")
        return
    if np is not None and isinstance(obj, np.ndarray):
        mv = memoryview(obj).cast("B") if obj.ndim else memoryview(obj.reshape(1)).cast("B")
    else:
        mv = memoryview(obj)
        mv = (mv if mv.c_contiguous else memoryview(mv.tobytes())).cast("B")
    for o in range(0, mv.nbytes, PIECE):
        yield mv[o:o + PIECE]


def _buffer_desc(obj):
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return ("ndarray %s %s" % (obj.shape, obj.dtype.str)).encode()
    return type(obj).__name__.encode()


def _buffer_nbytes(obj):
    nb = getattr(obj, "nbytes", None)
    return nb if isinstance(nb, int) else len(memoryview(obj).cast("B"))


class _TooBig(Exception):
    pass


class _Later(Exception):
    """Hashing would cost more than the budget asked for: try in think time."""


class _Paused(Exception):
    """A cell started while hashing in think time: the hash is dropped."""


class _HashSink:
    """A write-only file that hashes what is written and gives up after
    limit bytes."""

    def __init__(self, h, limit, late, pause):
        self.h, self.n, self.limit, self.late, self.pause = h, 0, limit, late, pause

    def write(self, b):
        self.n += len(b)
        if self.n > self.limit:
            raise _Later() if self.late else _TooBig()
        if self.pause is not None:
            self.pause()
        self.h.update(b)
        return len(b)


def _content_hash(obj, budget=None, pause=None):
    """A hash of obj's value; "" if it cannot be had within PICKLE_BUDGET
    (or at all); None if it would cost more than budget bytes of hashing,
    so it is left for later. pause, if given, is called between pieces and
    raises _Paused to abandon the hash."""
    return _content_and_size(obj, budget, pause)[0]


def _content_and_size(obj, budget=None, pause=None):
    """(hash, bytes) of obj: the hash as _content_hash, and the size of the
    payload a move of obj carries, measured by the same pickling (so it
    costs nothing more), in-band and out-of-band bytes together: a fitted
    model's shallow size is tens of bytes where its trees pickle to
    hundreds of KiB. The size is 0 when unknown (obj could not be
    pickled), and a lower bound when the pickling stopped at its budget or
    was left for later."""
    sink = None
    try:
        if _is_buffer_like(obj):
            h = hashlib.sha256()
            h.update(_buffer_desc(obj))
            n = _buffer_nbytes(obj)
            if budget is not None and n > budget:
                return None, n
            np = sys.modules.get("numpy")
            contiguous = not (np is not None and isinstance(obj, np.ndarray)) or obj.flags.c_contiguous
            if pause is None and contiguous:
                h.update(_buffer_digest(_buffer(obj)[1]))
            else:
                t = _Tree(n)
                for piece in _pieces(obj):
                    if pause is not None:
                        pause()
                    t.update(piece)
                h.update(t.digest())
            return h.hexdigest()[:32], n
        h = hashlib.sha256()
        late = budget is not None and budget < PICKLE_BUDGET
        bufs = []
        sink = _HashSink(h, budget if late else PICKLE_BUDGET, late, pause)
        _pickler(sink, bufs.append).dump(obj)
        raws = [b.raw() for b in bufs]
        n = sink.n + sum(r.nbytes for r in raws)
        if late and n - sink.n > budget:
            return None, n
        for r in raws:
            if pause is None:
                h.update(_buffer_digest(r))
            else:
                t = _Tree(r.nbytes)
                for o in range(0, r.nbytes, PIECE):
                    pause()
                    t.update(r[o:o + PIECE])
                h.update(t.digest())
        return h.hexdigest()[:32], n
    except _Later:
        return None, sink.n if sink is not None else 0
    except _Paused:
        raise
    except _TooBig:
        return "", sink.n if sink is not None else 0
    except Exception:  # unpicklable, or a buffer that will not show its bytes
        return "", 0


def _shallow(obj):
    """A signature costing O(1): catches appends, inserts, new attributes,
    new columns and reshapes even for names the cell was not expected to
    touch (a method of an instance mutating a global, a defaultdict read).
    An array's also has its strides, dtype and data address (a resize in
    place moves the data)."""
    try:
        if isinstance(obj, _SIZED):
            return len(obj)
        np = sys.modules.get("numpy")
        if np is not None and type(obj) is np.ndarray:
            return (obj.shape, obj.strides, obj.dtype.str, obj.__array_interface__["data"][0])
        if type(obj).__name__ == "_lru_cache_wrapper" and type(obj).__module__ == "functools":
            # Its cache travels with it (_ferry_reduce): a call that adds
            # an entry, or reorders a bounded cache, is a change.
            ci = obj.cache_info()
            return (ci.misses, ci.currsize) if ci.maxsize is None else (ci.hits, ci.misses, ci.currsize)
        shape = getattr(type(obj), "shape", None)
        if shape is not None and type(obj).__module__.split(".")[0] in ("numpy", "pandas"):
            return str(obj.shape)
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict) and not isinstance(obj, (type, types.ModuleType)):
            return len(d)
    except Exception:
        pass
    return None


class _FP:
    """A name's fingerprint: identity, type, shallow signature, content.
    content is the content hash, "" if it cannot be had (such a value
    counts as changed whenever checked), or None while it is not computed
    yet (see "Hashing later")."""

    __slots__ = ("id", "type", "shallow", "content", "nbytes")

    def __init__(self, obj, content, nbytes=0):
        self.id, self.type, self.shallow, self.content = id(obj), type(obj), _shallow(obj), content
        # The pickled size measured with the hash (0 if not measured).
        self.nbytes = nbytes

    def same_object(self, obj):
        return self.id == id(obj) and self.type is type(obj) and self.shallow == _shallow(obj)


def _fingerprint(obj, budget=None):
    """obj's fingerprint; its content hash is left for later (None) when
    it would cost more than budget bytes of hashing."""
    if isinstance(obj, types.ModuleType):
        return _FP(obj, "module:" + str(getattr(obj, "__name__", "")))
    return _FP(obj, *_content_and_size(obj, budget))


# ------------------------------------------------------------ hashing later
#
# Issue 15: a notebook rebinding 60-90 MB arrays in most cells ran 1.4-2.1x
# slower through Ferry, because every report hashed (SHA-256) every value
# the cell may have changed before the reply could leave. What a content
# hash is for: (1) deciding that a value the cell may have mutated did not
# change, so a copy elsewhere stays fresh and no move is needed; (2) the
# state map's hash per version, which rebuild and recompute verification
# compare; (3) the hashes a payload carries so the target need not hash.
# None of these needs the hash before the user's next cell:
#
# - (1) matters only when another location holds the version: Ferry names
#   those names (shared) and the report hashes them at once, as before.
#   Any other name the cell may have mutated is reported changed without
#   hashing when hashing costs more than EAGER_BYTES: that is correct (a
#   new version held where it is; at worst a move that a hash would have
#   saved), and a sampled fingerprint could not prove "unchanged" anyway.
# - (2) a hash not computed yet goes out as "" and is worked out in think
#   time by one background thread (hashlib releases the GIL), which starts
#   only after THINK seconds in which the kernel did nothing, looks between
#   pieces of PIECE bytes whether anything happened since, and drops the
#   hash if so (the value may be changing under it). A value replaced
#   before its hash is done is never hashed. Done hashes ride on the next
#   report ("hashes"). A kernel that dies first loses them: its values
#   are then rebuilt without a hash to compare with, as values too big to
#   hash always were.
# - (3) pack computes a missing hash of what it sends (on the move path).
#
# Small values (up to EAGER_BYTES of pickle and buffers, about 0.15 ms of
# SHA-256 here) are hashed at once, as before.

EAGER_BYTES = 256 << 10
THINK = 0.05
_lock = threading.Lock()
_pending = {}  # name -> _FP whose content is still to be computed
_done = {}  # name -> content hash computed since the last report
_epoch = 0  # bumped whenever the kernel does something: code runs, a report, a comm message
_quiet = 0.0  # time.monotonic() of the last such thing
_busy = False  # code is running (IPython's pre_execute .. post_execute, a report)
_wake = threading.Event()
_worker = None


_calm = threading.Event()  # set while no code runs: the worker waits on it without polling


def _activity(busy=None):
    global _epoch, _quiet, _busy
    _epoch += 1
    _quiet = time.monotonic()
    if busy is not None:
        _busy = busy
        if busy:
            _calm.clear()
        else:
            _calm.set()


def _later(n, fp):
    """Leave n's content hash to the think-time worker."""
    global _worker
    with _lock:
        _pending[n] = fp
    if _worker is None:
        _worker = threading.Thread(target=_work, name="ferry-hash-later", daemon=True)
        _worker.start()
    _wake.set()


def _settled(n, fp, h):
    """Record a content hash computed later for fp, if fp is still n's."""
    with _lock:
        if _pending.get(n) is fp:
            del _pending[n]
        if h is not None and _prints.get(n) is fp and fp.content is None:
            fp.content = h
            if h:
                _done[n] = h


def _work():
    while True:
        _wake.wait()
        with _lock:
            item = next(iter(_pending.items()), None)
            if item is None:
                _wake.clear()
                continue
        if _busy:
            # A waiting thread costs the cell nothing; one polling every
            # few ms takes the GIL from it each time.
            _calm.wait(1.0)
            continue
        wait = _quiet + THINK - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.25))
            continue
        n, fp = item
        epoch = _epoch

        def pause():
            if _busy or _epoch != epoch:
                raise _Paused()

        h = None
        try:
            obj = _user_ns().get(n) if _shell is not None else None
            if _prints.get(n) is fp and obj is not None and fp.same_object(obj):
                h = _content_hash(obj, None, pause)
                pause()
            else:
                h = None  # replaced or gone: nothing to hash
            del obj
        except _Paused:
            continue  # stays pending; tried again in the next quiet spell
        except Exception:
            h = ""
        with _lock:
            if _epoch != epoch:
                continue
        _settled(n, fp, h)


def hash_pending():
    """Compute every content hash left for later, now (tests, tools)."""
    with _lock:
        items = list(_pending.items())
    for n, fp in items:
        obj = _user_ns().get(n)
        if _prints.get(n) is fp and obj is not None and fp.same_object(obj):
            _settled(n, fp, _content_hash(obj))
        else:
            _settled(n, fp, None)


def hashes_now(names):
    """The content hashes of names' current versions, computed now where
    they were left for later ("" when a value cannot be hashed): Ferry asks
    when it needs one at once, to check a recomputed value against it."""
    out = {}
    for n in names:
        fp = _prints.get(n)
        if not isinstance(fp, _FP):
            continue
        if fp.content is None:
            obj = _user_ns().get(n)
            if obj is not None and fp.same_object(obj):
                _settled(n, fp, _content_hash(obj))
        out[n] = fp.content or ""
    return _JSON(out)


def _take_done(changed):
    """The hashes computed later since the last report, of versions this
    report does not replace."""
    with _lock:
        done = dict(_done)
        _done.clear()
    return {n: h for n, h in done.items()
            if n not in changed and isinstance(_prints.get(n), _FP) and _prints[n].content == h}


def _size(obj):
    try:
        nb = getattr(obj, "nbytes", None)
        if isinstance(nb, int):
            return nb
        mu = getattr(obj, "memory_usage", None)
        if mu is not None and type(obj).__module__.startswith("pandas"):
            s = mu(index=True, deep=False)
            return int(s.sum()) if hasattr(s, "sum") else int(s)
        if isinstance(obj, (list, tuple, set, frozenset, dict)):
            # The container, plus its items extrapolated from the first
            # 1000. (Scaling the container's own size with them made a
            # list of 100000 ints 83 MB instead of 3.6 MB, and the policy
            # re-ran the cell that made it rather than move it.)
            items = 0
            pairs = obj.items() if isinstance(obj, dict) else ((x, None) for x in obj)
            for i, (k, v) in enumerate(pairs):
                if i >= 1000:
                    return sys.getsizeof(obj) + int(items * len(obj) / 1000)
                items += sys.getsizeof(k) + (sys.getsizeof(v) if v is not None else 0)
            return sys.getsizeof(obj) + items
        return sys.getsizeof(obj)
    except Exception:
        return 0


def _rng_state():
    """A cheap fingerprint of the global random generators' state."""
    import array
    import random

    # The generator's 625 words as bytes, not their repr: 28 µs less per
    # report (the repr was most of this function's 72 µs).
    v, words, gauss = random.getstate()
    h = hashlib.sha256(array.array("Q", words).tobytes())
    h.update(repr((v, gauss)).encode())
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            st = np.random.get_state()
            h.update(st[1].tobytes())
            h.update(repr(st[2:]).encode())
        except Exception:
            pass
    return h.hexdigest()[:32]


def report(names=(), dynamic=False, proc=False, shared=(), full=False, attrs=()):
    """What the cell just run changed. names: those it may have mutated;
    proc: the cell may have changed process settings (from the analysis);
    shared: names whose version another location holds too (their content
    decides whether they changed); full: hash every changed value now
    (replays, whose hashes are compared at once); attrs: "X.attr" stores
    the cell made on names bound to modules, carried with the process
    state from now on."""
    _activity(True)
    try:
        rec = _audit.take()
        ns = _user_ns()
        for a in attrs:
            n, _, attr = a.partition(".")
            m = ns.get(n)
            if isinstance(m, types.ModuleType) and attr:
                _proc.track(m.__name__, attr.split(".")[0])
        out = _report(set(names), dynamic, set(shared), full)
        _outside(out, rec, proc or dynamic)
        done = _take_done(out["changed"])
        if done:
            out["hashes"] = done
        return _JSON(out)
    except BaseException as e:  # never disturb the user's cell, not even on KeyboardInterrupt
        return _JSON({"error": "%s: %s" % (type(e).__name__, e), "changed": {}, "deleted": []})
    finally:
        _activity(False)


_proc_signals = None
_nmodules = 0


def _signals():
    """Cheap signs that process state changed without an audit event. (Not
    the warnings filters: libraries add their own when imported, and the
    analysis names the notebook's own filterwarnings calls.)"""
    import logging

    return (os.getcwd(), len(sys.path), len(logging.root.handlers), logging.root.level)


def _outside(out, rec, proc):
    """Add to a report what the cell did outside its namespace: files
    under the root it wrote or deleted (as FILE_PREFIX pseudo-names), files
    it read and folders it listed, its side effects, the process state if
    it may have changed, and modules imported since the last report."""
    global _proc_signals, _nmodules
    changed, deleted = out["changed"], out["deleted"]
    candidates = set(rec.writes | rec.deletes) if rec is not None else set()
    # Files written before may change later through a handle left open
    # (fh.write in the next cell): their size and mtime tell.
    for r, old in list(_fstat.items()):
        if r not in candidates and _audit.stat_of(r) != old:
            candidates.add(r)
    for r in sorted(candidates):
        n = FILE_PREFIX + r
        st = _audit.stat_of(r)
        if st is None or not os.path.isfile(_audit.path_of(r)):
            _fstat.pop(r, None)
            _prints.pop(n, None)
            deleted.append(n)
            continue
        if len(_fstat) < 1000 or r in _fstat:
            _fstat[r] = st
        v = _audit.version_of(r)
        if v is None or _prints.get(n) == v[1]:
            continue
        _prints[n] = v[1]
        changed[n] = {"size": v[0], "hash": v[1], "kind": "file", "movable": True, "reason": ""}
    if rec is not None:
        if rec.reads:
            out["reads"] = sorted(rec.reads)
        if rec.lists:
            out["lists"] = sorted(rec.lists)
        if rec.effects:
            out["effects"] = list(rec.effects)
        proc = proc or rec.proc
    sig = _signals()
    if proc or sig != _proc_signals:
        _proc_signals = sig
        st = _proc.capture(_shell)
        fp = hashlib.sha256(repr(sorted((k, repr(v)) for k, v in st.items())).encode()).hexdigest()[:32]
        if _prints.get(PROC) != fp:
            _prints[PROC] = fp
            changed[PROC] = {"size": 1000, "hash": fp, "kind": "process", "movable": True, "reason": ""}
    if len(sys.modules) != _nmodules:
        _nmodules = len(sys.modules)
        mods = _module_versions()
        new = {m: v for m, v in mods.items() if _seen_modules.get(m) != v}
        _seen_modules.update(new)
        if new:
            out["imports"] = new
    deleted.sort()


_seen_modules = {}
_fstat = {}  # tracked file -> (size, mtime ns) when last seen by a report or load


def _module_versions():
    """Top-level modules imported, with their version where they say."""
    out = {}
    for name, m in list(sys.modules.items()):
        if "." in name or name.startswith("_") or m is None:
            continue
        v = getattr(m, "__version__", "")
        out[name] = v if isinstance(v, str) else str(v)
    return out


def info():
    """This kernel as Ferry compares it with the other side: Python and
    pickle versions, the modules imported and their versions, the names
    (not values) of its environment variables, its root and the files
    under it."""
    import platform

    try:
        files, truncated = _audit.inventory()
    except Exception:
        files, truncated = {}, True
    mods = _module_versions()
    _seen_modules.update(mods)
    return _JSON({"python": platform.python_version(), "pickle": pickle.HIGHEST_PROTOCOL, "modules": mods,
                  "env": sorted(os.environ), "root": _audit.root, "files": files, "truncated": truncated,
                  "user": _user()})


def _user():
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except Exception:
        return str(os.getuid())


# A value's compression is estimated when it is reported, from a few
# samples compressed as _chunks would send them: planning prices a move by
# what crosses the link before any payload has measured it. Priced raw, the
# tabular bench's X and y with the DataFrame y is a view of (10 MB) made a
# training cell look 2.8 s dearer in the cloud over a 20 Mbit/s uplink;
# they crossed as 1.6 MB.
RATIO_MIN = 1 << 20
RATIO_HEAD = 256 << 10  # in-band pickle bytes kept as a sample
RATIO_PIECES = 8


class _HeadSink:
    """A pickle sink keeping the first RATIO_HEAD bytes, then stopping."""

    def __init__(self):
        self.head = bytearray()

    def write(self, b):
        self.head += memoryview(b).cast("B")[: RATIO_HEAD - len(self.head)]
        if len(self.head) >= RATIO_HEAD:
            raise _TooBig()
        return len(b)


def _ratio(obj):
    """The share of obj's payload a move would send (compressed bytes over
    raw, in (0, 1]), from up to RATIO_PIECES samples of its bytes spread
    over it; 0 when it cannot tell (no zstandard, nothing to sample)."""
    try:
        import zstandard
    except ImportError:
        return 0.0
    try:
        b = _buffer(obj) if _is_buffer_like(obj) else None
        if b is not None:
            bufs = [b[1]]
        else:
            sink, oob = _HeadSink(), []
            try:
                _pickler(sink, oob.append).dump(obj)
            except _TooBig:
                pass
            bufs = [memoryview(bytes(sink.head))] + [r.raw() for r in oob]
        # Each a flat byte view already: _buffer casts, raw() is flat.
        bufs = [m for m in bufs if m.nbytes]
        total = sum(m.nbytes for m in bufs)
        if total < PAYS_SAMPLE:
            return 0.0
        cctx = zstandard.ZstdCompressor(level=1)
        step = max(total // RATIO_PIECES, PAYS_SAMPLE)
        raw = sent = 0
        off = 0  # where the next sample starts, over the buffers laid end to end
        base = 0
        for m in bufs:
            while off < base + m.nbytes:
                piece = m[off - base: off - base + PAYS_SAMPLE]
                raw += piece.nbytes
                c = len(cctx.compress(piece))
                sent += c if c < PAYS * piece.nbytes else piece.nbytes
                off += step
            base += m.nbytes
        return max(min(sent / raw, 1.0), 1e-3) if raw else 0.0
    except Exception:
        return 0.0


def _describe(obj, fp):
    why = _contained_unmovable(obj)
    # The pickled size is what a move carries: a fitted model's shallow
    # size is tens of bytes where its trees pickle to hundreds of KiB.
    # When the pickling gave up at its budget the value is at least that.
    size = fp.nbytes if fp.nbytes > 0 and fp.content else max(fp.nbytes, _size(obj))
    d = {"size": size, "hash": fp.content or "", "kind": type(obj).__name__, "movable": why is None, "reason": why or ""}
    if why is None and size >= RATIO_MIN:
        r = _ratio(obj)
        if r > 0:
            d["ratio"] = round(r, 4)
    if isinstance(obj, types.ModuleType):
        d["module"] = obj.__name__
        d["needs"] = obj.__name__.split(".")[0]
    else:
        # The notebook globals the code it carries reads when called (an
        # instance's methods, a closure a factory made, a partial): they
        # travel with it.
        uses = _graph.uses(obj, _user_ns())
        if uses:
            d["uses"] = uses
        m = getattr(type(obj), "__module__", None) or ""
        top = m.split(".")[0]
        if top and top not in ("builtins", "__main__", "collections", "datetime", "decimal", "fractions") and not top.startswith("_"):
            d["needs"] = top
    return d


_VERSION_RE = re.compile(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", re.M)


def _source_version(spec):
    """__version__ as a module without package metadata spells it in its
    source (read, not imported: importing may have side effects)."""
    origin = getattr(spec, "origin", None) or ""
    if not origin.endswith(".py"):
        return ""
    try:
        with open(origin, encoding="utf-8", errors="replace") as f:
            m = _VERSION_RE.search(f.read(65536))
    except OSError:
        return ""
    return m.group(1) if m else ""


def find_versions(names):
    """{module: version, "" if it has none, None if not installed} for
    top-level module names, without importing them."""
    import importlib.metadata
    import importlib.util

    dists = {}
    try:
        dists = importlib.metadata.packages_distributions()
    except Exception:
        pass
    out = {}
    for n in names:
        m = sys.modules.get(n)
        if m is not None:
            v = getattr(m, "__version__", "")
            out[n] = v if isinstance(v, str) else str(v)
            continue
        try:
            spec = importlib.util.find_spec(n)
        except Exception:
            spec = None
        if spec is None:
            out[n] = None
            continue
        v = ""
        for dist in dists.get(n, [n]):
            try:
                v = importlib.metadata.version(dist)
                break
            except Exception:
                pass
        if not v:
            v = _source_version(spec)
        out[n] = v
    return _JSON(out)


def _report(maybe, dynamic, shared=frozenset(), full=False):
    ns = _user_ns()
    budget = None if full else EAGER_BYTES
    current = [n for n in list(ns) if _is_user_name(n, ns)]
    changed, deleted = {}, []
    cur = set(current)
    for n in list(_prints):
        if n not in _PSEUDO and not n.startswith(FILE_PREFIX) and n not in cur:
            deleted.append(n)
            del _prints[n]
    for n in current:
        obj = ns[n]
        old = _prints.get(n)
        if old is not None and old.same_object(obj):
            if not dynamic and n not in maybe:
                continue  # same object, and the cell is not known to touch it
            if old.content is not None and old.content.startswith("module:"):
                continue
            np = sys.modules.get("numpy")
            if np is not None and isinstance(obj, np.ndarray) and not obj.flags.writeable and obj.base is None:
                continue  # a read-only array owning its data cannot change
            # The cell may have mutated it. Its content decides only if a
            # copy elsewhere would stay fresh (shared) and there is an old
            # hash to compare with; else "changed" is the cheap answer
            # for a big value (see "Hashing later").
            fp = _fingerprint(obj, None if full or (n in shared and old.content) else budget)
            if fp.content and fp.content == old.content:
                _prints[n] = fp
                continue
        else:
            fp = _fingerprint(obj, budget)
        _prints[n] = fp
        if fp.content is None:
            _later(n, fp)
        changed[n] = _describe(obj, fp)
    rng = _rng_state()
    if _prints.get(RNG) != rng:
        _prints[RNG] = rng
        changed[RNG] = {"size": 5000, "hash": rng, "kind": "rng", "movable": True, "reason": ""}
    if not changed:
        return {"changed": changed, "deleted": sorted(deleted)}
    groups = _alias_groups(ns, current, set(changed) - {RNG})
    for n, g in groups.items():
        if n in changed:
            changed[n]["group"] = g
    # A mutation through an alias changes the other names too.
    touched = {changed[n].get("group") for n in changed if n != RNG}
    for n, g in groups.items():
        if n not in changed and g in touched:
            obj = ns[n]
            fp = _prints[n] = _fingerprint(obj, budget)
            if fp.content is None:
                _later(n, fp)
            changed[n] = _describe(obj, fp)
            changed[n]["group"] = g
    return {"changed": changed, "deleted": sorted(deleted)}


def _reach(obj):
    """ids of the mutable objects obj holds, a few levels deep (bounded):
    names whose sets meet share objects."""
    np = sys.modules.get("numpy")
    ids, stack = set(), [(obj, 0)]
    while stack and len(ids) < REACH_LIMIT:
        o, depth = stack.pop()
        if isinstance(o, _ATOMIC) or isinstance(o, (type, types.ModuleType)) or id(o) in ids:
            continue
        if np is not None and isinstance(o, np.ndarray):
            while isinstance(o.base, np.ndarray):  # views of one array meet at its root
                o = o.base
            if o.base is not None:
                ids.add(id(o.base))
        ids.add(id(o))
        if depth < REACH_DEPTH:
            stack.extend((c, depth + 1) for _, c in _children(o))
    return ids


_reaches = {}  # name -> (_reach_key, reach set), reused while unchanged


def _reach_key(obj):
    """What a cached reach set is valid for: the object's identity and
    shallow signature, and for an array the root its memory belongs to. An
    array loaded at the address a freed one had (Ferry deletes a stale copy
    just before loading the new one) is a view of another root: keyed by
    id alone, its partners' views stopped meeting it and a write through
    one left the other stale elsewhere."""
    np = sys.modules.get("numpy")
    root = None
    if np is not None and isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        root = (id(root), id(root.base))
    return (id(obj), _shallow(obj), root)


def _reach_of(n, obj, fresh):
    hit = _reaches.get(n)
    key = _reach_key(obj)
    if hit is not None and n not in fresh and hit[0] == key:
        return hit[1]
    r = set() if isinstance(obj, _ATOMIC) or isinstance(obj, types.ModuleType) else _reach(obj)
    _reaches[n] = (key, r)
    return r


def _alias_groups(ns, names, changed):
    """Alias groups (name -> "g:" + its first member) of the changed names:
    the names connected to them by shared objects. Only these are
    computed; untouched groups keep the labels they were reported with."""
    for n in list(_reaches):
        if n not in ns:
            del _reaches[n]
    reach = {n: _reach_of(n, ns[n], changed) for n in names}
    live = [n for n in names if reach[n]]
    out, done = {}, set()
    for c in sorted(changed):
        if c in done or not reach.get(c):
            continue
        comp, todo = {c}, [c]
        while todo:
            x = reach[todo.pop()]
            for n in live:
                if n not in comp and not x.isdisjoint(reach[n]):
                    comp.add(n)
                    todo.append(n)
        done |= comp
        if len(comp) > 1:
            g = "g:" + min(comp)
            for m in comp:
                out[m] = g
    return out


def forget(names):
    """Drop fingerprints, e.g. after Ferry deleted stale copies."""
    for n in names:
        _prints.pop(n, None)
        _reaches.pop(n, None)


def snapshot():
    """Fingerprint everything now (after install or a load), without reporting."""
    _report(set(), True)


# ------------------------------------------------------------ serialisation


def _source_of(code):
    """The cell source a notebook function was compiled from, as IPython
    keeps it in linecache, so tracebacks elsewhere show its lines."""
    import linecache

    entry = linecache.cache.get(code.co_filename)
    if entry and len(entry) >= 3 and sum(len(line) for line in entry[2]) < (256 << 10):
        # The cell's number too: IPython shows "Cell In[n]" for the files
        # its compiler made, and plain paths for others.
        fmap = getattr(getattr(_shell, "compile", None), "_filename_map", None)
        return code.co_filename, list(entry[2]), fmap.get(code.co_filename) if isinstance(fmap, dict) else None
    return None


def _main_function(code, name, defaults, kwdefaults, closure, fdict, qualname, doc, annotations, source=None):
    if source is not None:
        import linecache

        filename, lines = source[0], source[1]
        if filename not in linecache.cache:
            # No mtime: linecache.checkcache leaves the entry be, as for
            # IPython's own cells.
            linecache.cache[filename] = (sum(len(line) for line in lines), None, lines, filename)
        fmap = getattr(getattr(_shell, "compile", None), "_filename_map", None)
        if len(source) > 2 and source[2] is not None and isinstance(fmap, dict):
            fmap.setdefault(filename, source[2])
    f = types.FunctionType(code, _user_ns(), name, defaults, closure)
    f.__kwdefaults__ = kwdefaults
    f.__dict__.update(fdict)
    f.__qualname__ = qualname
    f.__doc__ = doc
    f.__annotations__ = annotations
    f.__module__ = "__main__"
    return f


_view_roots = set()  # ids of arrays that views in the payload being packed refer to


def _owned_array(buf, dtype, shape):
    import numpy as np

    return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()


def _view_of(root, offset, shape, strides, dtype):
    import numpy as np

    return np.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)


def _view_reduce(np, a):
    """A view travels as (its root array, offset, shape, strides), so after a
    move it is still a view of the same array, as it was at the source."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not root.flags.c_contiguous or root.dtype.hasobject or a.dtype.hasobject:
        return None
    offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if offset < 0 or offset > root.nbytes:
        return None
    return _view_of, (root, offset, a.shape, a.strides, a.dtype)


def _is_main_function(f):
    return isinstance(f, types.FunctionType) and _shell is not None and f.__globals__ is _user_ns()


def _pickler_class():
    import cloudpickle

    class Pickler(cloudpickle.CloudPickler):
        def reducer_override(self, obj):
            np = sys.modules.get("numpy")  # looked up now: numpy may be imported after install
            if np is not None and type(obj) is np.ndarray and isinstance(obj.base, np.ndarray):
                view = _view_reduce(np, obj)
                if view is not None:
                    return view
            if np is not None and type(obj) is np.ndarray and id(obj) in _view_roots and obj.base is None and obj.flags.c_contiguous \
                    and not obj.dtype.hasobject:
                # A root that views in this payload refer to lands as an
                # array owning its memory (one copy at the target), so that
                # v.base is x there as here; others stay views of the
                # received buffer (no copy).
                return _owned_array, (pickle.PickleBuffer(obj), obj.dtype, obj.shape)
            # Objects decorators build in __main__ (lru_cache,
            # singledispatch, cached_property, typing.NamedTuple):
            # _ferry_reduce.py says why each needs its own way.
            rv = _reduce.reduce(obj, _is_main_function, super().reducer_override)
            if rv is not None:
                return rv
            if isinstance(obj, types.FunctionType) and _shell is not None and obj.__globals__ is _user_ns():
                return _main_function, (obj.__code__, obj.__name__, obj.__defaults__, obj.__kwdefaults__,
                                        obj.__closure__, obj.__dict__, obj.__qualname__, obj.__doc__,
                                        obj.__annotations__, _source_of(obj.__code__))
            return super().reducer_override(obj)

    return Pickler


_Pickler = None


def _pickler(f, buffer_callback):
    global _Pickler
    if _Pickler is None:
        _Pickler = _pickler_class()
    return _Pickler(f, protocol=5, buffer_callback=buffer_callback)


def _dumps(obj, buffer_callback):
    f = io.BytesIO()
    _pickler(f, buffer_callback).dump(obj)
    return f.getbuffer()


def _get_rng():
    import random

    st = {"random": random.getstate()}
    np = sys.modules.get("numpy")
    if np is not None:
        st["numpy"] = np.random.get_state()
    return st


def _set_rng(st):
    import random

    random.setstate(st["random"])
    if "numpy" in st:
        import numpy as np

        np.random.set_state(st["numpy"])


def _pad(n):
    return b"\0" * (-n % ALIGN)


def pack(names):
    """Serialise names into (frames, packed names, {name: why unmovable}).
    frames are the payload, in order, without copies of large buffers."""
    ns = _user_ns()
    group, unmovable, hashes = {}, {}, {}
    for n in names:
        if n == RNG:
            group[n] = _get_rng()
            continue
        if n == PROC:
            group[n] = _proc.capture(_shell)
            continue
        if n.startswith(FILE_PREFIX):
            try:
                group[n] = pickle.PickleBuffer(_audit.read_file(n[len(FILE_PREFIX):]))
            except OSError as e:
                unmovable[n] = "the file cannot be read here (%s)" % e
            continue
        if _history.is_out(n):
            try:
                v = _history.get_out(n, ns)
            except (KeyError, ValueError):
                continue  # no such result here: Out[n] stays missing there too
            why = _unmovable_reason(v)
            if why:
                unmovable[n] = why
            else:
                group[n] = v
            continue
        if n not in ns:
            continue
        why = _unmovable_reason(ns[n])
        if why:
            unmovable[n] = why
            continue
        group[n] = ns[n]
    # Content hashes of buffer-like values travel along, so the target
    # need not hash what it just verified.
    # A hash left for later is computed now: the value is about to be
    # shared, and the next report there and here compares with it.
    for n, v in group.items():
        fp = _prints.get(n)
        if n in _PSEUDO or not isinstance(fp, _FP) or not fp.same_object(v):
            continue
        if fp.content is None:
            _settled(n, fp, _content_hash(v))
        if fp.content and _is_buffer_like(v):
            hashes[n] = fp.content
    oob = []
    _view_roots.clear()
    np = sys.modules.get("numpy")
    if np is not None:
        for v in group.values():
            if type(v) is np.ndarray and isinstance(v.base, np.ndarray):
                r = v
                while isinstance(r.base, np.ndarray):
                    r = r.base
                _view_roots.add(id(r))
    try:
        data = _dumps((FORMAT, group, hashes), oob.append)
    except Exception:
        # Find the culprits, report them, and pack the rest.
        ok = {}
        for n, v in group.items():
            try:
                _dumps(v, lambda b: None)
                ok[n] = v
            except Exception as e:
                unmovable[n] = "cannot be serialised (%s: %s)" % (type(e).__name__, str(e)[:200])
        group, oob = ok, []
        hashes = {n: h for n, h in hashes.items() if n in group}
        data = _dumps((FORMAT, group, hashes), oob.append)
    raws = [b.raw() for b in oob]
    header = MAGIC + struct.pack("<IQ", len(raws), data.nbytes) + b"".join(struct.pack("<Q", r.nbytes) for r in raws)
    frames = [header + _pad(len(header)), data, _pad(data.nbytes)]
    for r in raws:
        frames += [r, _pad(r.nbytes)]
    return [f for f in frames if memoryview(f).nbytes], sorted(group), unmovable


def _chunks(frames, compress):
    """Split frames into pieces of at most CHUNK bytes: (compressed, piece,
    raw length). Small frames are coalesced; a piece is compressed only
    when a sample shows it pays."""
    cctx = None
    if compress:
        try:
            import zstandard

            cctx = zstandard.ZstdCompressor(level=1, threads=-1)
        except ImportError:
            cctx = None
    small = bytearray()
    for fr in frames:
        mv = memoryview(fr).cast("B")
        if mv.nbytes < (64 << 10):
            small += mv
            if len(small) < CHUNK:
                continue
            mv, small = memoryview(bytes(small)), bytearray()
        elif small:
            yield False, bytes(small), len(small)
            small = bytearray()
        for off in range(0, mv.nbytes, CHUNK):
            piece = mv[off:off + CHUNK]
            if cctx is not None and piece.nbytes >= PAYS_SAMPLE:
                sample = piece[:PAYS_SAMPLE]
                if len(cctx.compress(sample)) < PAYS * sample.nbytes:
                    yield True, cctx.compress(piece), piece.nbytes
                    continue
            yield False, piece, piece.nbytes
    if small:
        yield False, bytes(small), len(small)


class _Hasher:
    """The payload's tree hash: chunks are hashed on the worker pool while
    the caller sends or receives the next ones."""

    def __init__(self):
        self._parts = []

    def update(self, compressed, piece):
        self._parts.append((b"z" if compressed else b"r", _workers().submit(_sha256, piece)))

    def hexdigest(self):
        h = hashlib.sha256(TREE_TAG)
        for tag, f in self._parts:
            h.update(tag)
            h.update(f.result())
        return h.hexdigest()


class _Incoming:
    """A payload being received: pieces land in one writable buffer at
    their offsets as they arrive, and are hashed on the way."""

    def __init__(self, raw_size):
        self.blob = bytearray(raw_size)
        self.off = 0
        self.n = 0
        self.hasher = _Hasher()
        self.dctx = None

    def add(self, compressed, buf, raw_len):
        mv = memoryview(buf).cast("B")
        self.hasher.update(compressed, mv)
        if compressed:
            if self.dctx is None:
                import zstandard

                self.dctx = zstandard.ZstdDecompressor()
            data = self.dctx.decompress(mv, max_output_size=raw_len)
        else:
            data = mv
        n = memoryview(data).nbytes
        if n != raw_len or self.off + n > len(self.blob):
            raise ValueError("chunk %d has %d bytes, expected %d" % (self.n, n, raw_len))
        self.blob[self.off:self.off + n] = data
        self.off += n
        self.n += 1


def _unframe(blob):
    """The pickle and the buffers of a payload, as views of blob."""
    mv = memoryview(blob).cast("B")
    if bytes(mv[:4]) != MAGIC:
        raise ValueError("not a Ferry payload")
    n, plen = struct.unpack_from("<IQ", mv, 4)
    sizes = struct.unpack_from("<%dQ" % n, mv, 16)
    off = 16 + 8 * n
    off += -off % ALIGN
    data = mv[off:off + plen]
    off += plen + (-plen % ALIGN)
    bufs = []
    for s in sizes:
        if off + s > mv.nbytes:
            raise ValueError("payload truncated")
        bufs.append(mv[off:off + s])
        off += s + (-s % ALIGN)
    return data, bufs


_notes = []  # what the last load said: warnings raised, settings not applied


def load(blob):
    """Inverse of pack over the reassembled, verified payload; assigns into
    the namespace. blob must be writable: arrays loaded from it are.

    Unpickling may import the user's libraries. It runs with IPython's
    builtins in place, as a cell does (pandas, for one, decides at import
    whether it runs in a kernel by looking for get_ipython), and the
    warnings it raises (a model pickled by another scikit-learn version)
    are kept in _notes for Ferry to show in the cell."""
    data, bufs = _unframe(blob)
    del _notes[:]
    trap = getattr(_shell, "builtin_trap", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if trap is not None:
            with trap:
                fmt, group, hashes = pickle.loads(data, buffers=bufs)
        else:
            fmt, group, hashes = pickle.loads(data, buffers=bufs)
    for w in caught:
        _notes.append("%s: %s" % (w.category.__name__, str(w.message).strip().splitlines()[0][:300] if str(w.message).strip() else ""))
    if fmt != FORMAT:
        raise ValueError("payload format %r, want %r" % (fmt, FORMAT))
    ns = _user_ns()
    for k, v in group.items():
        if k == RNG:
            _set_rng(v)
            _prints[RNG] = _rng_state()
            continue
        if k == PROC:
            for why in _proc.apply(_shell, v):
                _notes.append("could not apply " + why)
            continue
        if k.startswith(FILE_PREFIX):
            r = k[len(FILE_PREFIX):]
            _audit.write_file(r, v)
            ver = _audit.version_of(r)
            if ver is not None:
                _prints[k] = ver[1]
                _fstat[r] = _audit.stat_of(r)
            continue
        if _history.is_out(k):
            _history.set_out(k, v, ns)
            continue
        ns[k] = v
        _reaches.pop(k, None)  # a new object: its sharing is computed afresh
        h = hashes.get(k)
        _prints[k] = _FP(v, h) if h else _fingerprint(v)
    return sorted(group)


def serialise(names):
    """names -> (payload bytes, hash, {name: why unmovable}): pack in one
    piece, for callers in this process."""
    frames, _, unmovable = pack(names)
    h = _Hasher()
    out = bytearray()
    for z, piece, _ in _chunks(frames, False):
        h.update(z, piece)
        out += piece
    return bytes(out), h.hexdigest(), unmovable


def deserialise(payload, hexhash):
    """Load a serialise() payload after checking its hash; nothing is
    loaded on a mismatch (ValueError)."""
    inc = _Incoming(len(payload))
    mv = memoryview(payload).cast("B")
    for off in range(0, max(mv.nbytes, 1), CHUNK):
        inc.add(False, mv[off:off + CHUNK], min(CHUNK, mv.nbytes - off))
    if not hmac.compare_digest(inc.hasher.hexdigest(), str(hexhash)):
        raise ValueError("payload hash mismatch; nothing was loaded")
    return load(inc.blob)


def delete(names):
    ns = _user_ns()
    for n in names:
        if n.startswith(FILE_PREFIX):
            _audit.remove_file(n[len(FILE_PREFIX):])
            _fstat.pop(n[len(FILE_PREFIX):], None)
        else:
            ns.pop(n, None)
        _prints.pop(n, None)
        _reaches.pop(n, None)


# -------------------------------------------------------------------- comm


def _data(msg):
    """The data dict of a comm message; {} if it has none or another type."""
    content = msg.get("content") if isinstance(msg, dict) else None
    data = content.get("data") if isinstance(content, dict) else None
    return data if isinstance(data, dict) else {}


def _max_payload():
    """No payload larger than this machine's memory is accepted."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _on_open(comm, msg):
    given = _data(msg).get("secret")
    if _secret is None or not isinstance(given, str) or not hmac.compare_digest(given.encode(), _secret.encode()):
        comm.close({"error": "unauthorised"})
        return

    def on_msg(m):
        d = _data(m)
        try:
            if not isinstance(d.get("id"), (str, type(None))):
                raise ValueError("id must be a string")
            _handle(comm, d, m.get("buffers") or [])
        except Exception as e:
            try:
                tid = d.get("id") if isinstance(d.get("id"), str) else None
                err = type(e).__name__ + (": " + str(e)[:500] if str(e) else "")
                if isinstance(e, MemoryError):
                    err += " (this kernel is out of memory)"
                if tid is not None and d.get("op") in ("begin", "chunk"):
                    # Nobody waits on begin/chunk: the load says why.
                    _failed.setdefault(tid, err)  # the first failure is the cause
                    while len(_failed) > 16:
                        _failed.pop(next(iter(_failed)))
                comm.send({"op": "error", "id": tid, "error": err})
            except Exception:
                pass

    comm.on_msg(on_msg)


class _Outgoing:
    """A payload being sent: its chunk generator and running totals."""

    def __init__(self, frames, names, unmovable, compress, window):
        self.chunks = _chunks(frames, compress)
        self.names, self.unmovable, self.window = names, unmovable, window
        self.raw = sum(memoryview(f).nbytes for f in frames)
        self.hasher = _Hasher()
        self.size = self.seq = 0
        self.seconds = 0.0  # the agent's own time, without waits for "more"


def _send_window(comm, tid, out):
    """Send the next window of chunks, then "paused", or all that is left
    and "packed"."""
    t0 = time.perf_counter()
    n = 0
    for compressed, piece, raw_len in out.chunks:
        out.hasher.update(compressed, piece)
        out.size += memoryview(piece).nbytes
        comm.send({"op": "chunk", "id": tid, "seq": out.seq, "z": compressed, "raw": raw_len}, buffers=[piece])
        out.seq += 1
        n += 1
        if out.window and n >= out.window:
            _outgoing[tid] = out
            out.seconds += time.perf_counter() - t0
            comm.send({"op": "paused", "id": tid, "seq": out.seq})
            return
    _outgoing.pop(tid, None)
    out.seconds += time.perf_counter() - t0
    comm.send({"op": "packed", "id": tid, "hash": out.hasher.hexdigest(), "size": out.size, "raw_size": out.raw, "chunks": out.seq,
               "names": out.names, "unmovable": out.unmovable, "seconds": out.seconds})


def _handle(comm, d, buffers):
    _activity()
    op, tid = d.get("op"), d.get("id")
    if op == "pack":
        _outgoing.clear()
        t0 = time.perf_counter()
        frames, names, unmovable = pack(d.get("names") or [])
        out = _Outgoing(frames, names, unmovable, bool(d.get("compress")), max(0, int(d.get("window") or 0)))
        out.seconds = time.perf_counter() - t0
        comm.send({"op": "begin", "id": tid, "raw_size": out.raw})
        _send_window(comm, tid, out)
    elif op == "more":
        out = _outgoing.get(tid)
        if out is None:
            comm.send({"op": "error", "id": tid, "error": "no such transfer being packed"})
            return
        _send_window(comm, tid, out)
    elif op == "begin":
        _incoming.pop(tid, None)
        _failed.pop(tid, None)
        size = d.get("raw_size")
        if type(size) is not int or not 0 <= size <= _max_payload():
            raise ValueError("payload size %.40r is more than this machine holds; nothing will be loaded" % (size,))
        _incoming[tid] = _Incoming(size)
    elif op == "chunk":
        # A bad chunk drops the transfer: the load answers nothing was loaded.
        inc = _incoming.pop(tid, None)
        if inc is None:
            raise ValueError("chunk without a begun transfer")
        seq, raw = d.get("seq"), d.get("raw")
        if not buffers:
            raise ValueError("chunk without its buffer")
        if type(seq) is not int or seq != inc.n:
            raise ValueError("chunk %.40r arrived where chunk %d was due" % (seq, inc.n))
        if type(raw) is not int or not 0 <= raw <= len(inc.blob) - inc.off:
            raise ValueError("chunk %d declares %.40r bytes where %d remain" % (seq, raw, len(inc.blob) - inc.off))
        inc.add(bool(d.get("z")), buffers[0], raw)
        _incoming[tid] = inc
    elif op == "load":
        inc = _incoming.pop(tid, None)
        if inc is None:
            why = _failed.pop(tid, None)
            if why is not None:
                comm.send({"op": "error", "id": tid, "error": "receiving failed (%s); nothing was loaded" % why})
            else:
                comm.send({"op": "error", "id": tid, "error": "no such transfer; nothing was loaded"})
            return
        got = inc.hasher.hexdigest()
        if inc.n != d.get("chunks") or inc.off != len(inc.blob) or not hmac.compare_digest(got, str(d.get("hash"))):
            comm.send({"op": "error", "id": tid, "error": "payload hash mismatch (%d of %s chunks); nothing was loaded" % (inc.n, d.get("chunks"))})
            return
        names = load(inc.blob)
        comm.send({"op": "loaded", "id": tid, "hash": got, "names": names, "notes": list(_notes)})
    elif op == "drop":
        _incoming.pop(tid, None)
        _outgoing.pop(tid, None)
    elif op == "delete":
        names = d.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("names must be a list of strings")
        delete(names)
        comm.send({"op": "deleted", "id": tid})
    else:
        raise ValueError("unknown op %r" % (op,))


# -------------------------------------------------------------- baseline


def dump_session_size():
    """Size and time of a full-session dill dump: the baseline Ferry beats."""

    class Counter(io.RawIOBase):
        n = 0

        def writable(self):
            return True

        def write(self, b):
            n = memoryview(b).nbytes
            self.n += n
            return n

    c = Counter()
    t0 = time.perf_counter()
    try:
        import dill

        main = sys.modules["__main__"]
        dill.dump_module(c, module=main) if hasattr(dill, "dump_module") else dill.dump_session(c, main=main)
        err = ""
    except Exception as e:
        err = "%s: %s" % (type(e).__name__, str(e)[:200])
    return _JSON({"bytes": c.n, "seconds": time.perf_counter() - t0, "error": err})


def _pre_execute():
    _activity(True)


def _post_execute():
    _activity(False)


def install(secret, shell=None, env=None):
    """Register the comm target, start watching cells (audit hook, process
    baseline) and take a first fingerprint of everything. env are the
    environment variables the user forwarded to this kernel
    (--forward-env); they are part of its baseline."""
    global _secret, _shell, _Pickler, _proc_signals
    _secret = secret
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    _shell = shell
    for k, v in (env or {}).items():
        os.environ[k] = v
    _audit.set_root(os.getcwd())
    _audit.install(shell)
    _history.install(shell)
    _proc.baseline(shell)
    _proc_signals = _signals()
    km = getattr(shell, "kernel", None)
    cm = getattr(km, "comm_manager", None)
    if cm is not None:
        cm.register_target("ferry.state", _on_open)
    # Any code run (the user's cells and Ferry's silent requests alike)
    # pauses hashing in think time.
    ev = getattr(shell, "events", None)
    if ev is not None:
        for name, f in (("pre_execute", _pre_execute), ("post_execute", _post_execute)):
            try:
                ev.unregister(name, f)
            except ValueError:
                pass
            ev.register(name, f)
    try:  # import the serialiser now, not during the first move
        _Pickler = _pickler_class()
    except ImportError:
        pass
    snapshot()
