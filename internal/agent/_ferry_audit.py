"""What a user's cell touches outside its namespace, seen at run time.

Part of Ferry's agent (agent.py), installed next to it as
sys.modules["_ferry_audit"]. One audit hook (PEP 578, sys.addaudithook) sees
the interpreter's own events while a cell runs:

=====================  =====================================================
event                  recorded as
=====================  =====================================================
open                   a read or a write of a file (by mode and flags)
os.listdir/scandir     a listing of a directory (not the import system's)
glob.glob              a listing of the pattern's directory
os.remove/rmdir        a deletion
os.rename/replace      a deletion of the source, a write of the target
shutil.copyfile/...    a read of the source, a write of the target
shutil.rmtree/move     deletions (and a write)
socket.connect/sendto  an effect: a network connection
urllib.Request         an effect: a request to a URL
subprocess.Popen,      an effect: a subprocess (``!cmd`` and %%bash run
os.system/exec/spawn/  through these)
fork/posix_spawn
os.putenv/unsetenv,    the process state may have changed (the report then
os.chdir               takes a new snapshot of it: _ferry_proc)
=====================  =====================================================

Files outside the root count too when they are the notebook's own: under
the user's home or the temporary folder, but not in the tools' dot-folders
(~/.cache, ~/.ipython …) or Python's installation. They are named by their
absolute path and, if moved, land at the same path on the other side.

Recording is on only while a user's cell runs: between IPython's
pre_run_cell and post_run_cell events, which silent requests (Ferry's own
hidden work and its replays) do not fire, and only on the thread that runs
the cell (IPython's history thread and Ferry's hashing threads are not the
notebook). Files count only under the root, the kernel's working directory
when the agent was installed: the notebook's folder on the laptop, Ferry's
working directory for this notebook in the cloud. Their paths are relative
to it, with "/" separators, so they mean the same on both sides. Writes
anywhere, under the root or not, are effects: a cell that wrote a file is
never re-run behind the user's back.

The hook is cheap when off (one global test) and never raises into the
user's code: a failure inside it is swallowed.
"""

import hashlib
import os
import sys
import threading

# Files larger than this are versioned by size and modification time, not
# by content: hashing 1 GB after every cell that wrote it costs seconds.
HASH_LIMIT = 256 << 20
# An inventory of the root lists at most this many files.
INVENTORY_LIMIT = 20000
# Folders never tracked: caches and checkpoints the tools write themselves.
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".git", ".hg", ".svn", "node_modules", ".mypy_cache", ".pytest_cache", ".venv"}

root = os.path.realpath(os.getcwd())
_thread = None  # the thread recording, while a cell runs
_on = False
_cell = None  # the record of the running cell


class Record:
    """What one cell did."""

    def __init__(self):
        self.reads = set()
        self.writes = set()
        self.deletes = set()
        self.lists = set()
        self.effects = []
        self.proc = False

    def effect(self, what):
        if len(self.effects) < 20 and what not in self.effects:
            self.effects.append(what)


def set_root(path):
    global root
    root = os.path.realpath(path)


def rel(path):
    """path as root-relative "a/b" if it is under the root, else None."""
    try:
        if isinstance(path, int):
            return None
        p = os.fsdecode(path)
        p = os.path.abspath(p)
    except Exception:
        return None
    if p == root:
        return "."
    if not p.startswith(root + os.sep):
        return None
    r = p[len(root) + 1:]
    parts = r.split(os.sep)
    if any(x in SKIP_DIRS for x in parts):
        return None
    return "/".join(parts)


def _user_dirs():
    """Folders outside the root where a notebook keeps its own files (the
    user's home, the temporary folder), and, inside them, the tools' own
    caches and settings, which are not the notebook's."""
    import tempfile

    home = os.path.realpath(os.path.expanduser("~"))
    tmp = os.path.realpath(tempfile.gettempdir())
    return (home, tmp), (os.path.join(home, "."), sys.prefix, sys.base_prefix)


_USER, _TOOLS = _user_dirs()


def key(path):
    """The name a file is tracked by: root-relative under the root; its
    absolute path if it is the notebook's own file elsewhere (under the
    home or temporary folder, not in a dot-folder of tools); else None."""
    r = rel(path)
    if r is not None:
        return None if r == "." else r
    try:
        p = os.path.abspath(os.fsdecode(path))
    except Exception:
        return None
    if any(p.startswith(t) for t in _TOOLS):
        return None
    if any(p.startswith(u + os.sep) for u in _USER):
        parts = p.split(os.sep)
        if not any(x in SKIP_DIRS for x in parts):
            return p
    return None


def _desc(path):
    try:
        return os.fsdecode(path) if not isinstance(path, int) else "fd %d" % path
    except Exception:
        return repr(path)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _opened(c, path, mode, flags):
    if isinstance(path, int):
        return
    if isinstance(mode, str):
        write = any(ch in mode for ch in "wax+")
        read = "r" in mode or "+" in mode or "a" in mode
    else:
        write = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        read = not (isinstance(flags, int) and flags & os.O_WRONLY)
    r = key(path)
    if write:
        c.effect("wrote " + (r if r is not None else _desc(path)))
        if r is not None:
            c.writes.add(r)
            c.deletes.discard(r)
    if read and r is not None and r not in c.writes:
        c.reads.add(r)


def _deleted(c, path):
    r = key(path)
    c.effect("deleted " + (r if r is not None else _desc(path)))
    if r is not None:
        c.deletes.add(r)
        c.writes.discard(r)


def _written(c, path):
    r = key(path)
    c.effect("wrote " + (r if r is not None else _desc(path)))
    if r is not None:
        c.writes.add(r)
        c.deletes.discard(r)


def _by_import():
    """Whether the Python code that raised the event is the import system:
    its path finder lists every sys.path folder, the notebook's own ("" is
    the working directory) among them, to fill its cache whenever that
    folder changed. Recording that as the cell listing the root made a
    cell that imported something after a file was written there need every
    file of the folder the next time it ran: the remote-sensing bench's
    training cell, re-run with an edit, then priced ~100 MB of scene files
    it never reads (the oracle kept it on the laptop, 16 s against 2 s)."""
    f = sys._getframe(1)
    while f is not None and f.f_code.co_filename == __file__:
        f = f.f_back
    return f is not None and f.f_code.co_filename.startswith("<frozen importlib")


def _listed(c, path):
    if _by_import():
        return
    r = rel("." if path is None else path)
    if r is None:
        r = key("." if path is None else path)
    if r is not None:
        c.lists.add(r)


def _hook(event, args):
    if not _on or threading.get_ident() != _thread:
        return
    try:
        h = _HANDLERS.get(event)
        if h is not None:
            h(_cell, args)
    except Exception:
        pass


def _glob(c, a):
    pattern = os.fsdecode(a[0])
    if len(a) > 2 and a[2] is not None:  # root_dir
        pattern = os.path.join(os.fsdecode(a[2]), pattern)
    head = pattern
    while any(ch in head for ch in "*?["):
        head = os.path.dirname(head)
    _listed(c, head or ".")


_HANDLERS = {
    "open": lambda c, a: _opened(c, a[0], a[1] if len(a) > 1 else None, a[2] if len(a) > 2 else None),
    "os.listdir": lambda c, a: _listed(c, a[0] if a else None),
    "os.scandir": lambda c, a: _listed(c, a[0] if a else None),
    "glob.glob": _glob,
    "glob.glob/2": _glob,
    "os.remove": lambda c, a: _deleted(c, a[0]),
    "os.rmdir": lambda c, a: c.effect("removed folder " + _desc(a[0])),
    "os.mkdir": lambda c, a: c.effect("made folder " + _desc(a[0])),
    "os.rename": lambda c, a: (_deleted(c, a[0]), _written(c, a[1])),
    "os.replace": lambda c, a: (_deleted(c, a[0]), _written(c, a[1])),
    "os.truncate": lambda c, a: _written(c, a[0]),
    "os.link": lambda c, a: _written(c, a[1]),
    "os.symlink": lambda c, a: _written(c, a[1]),
    "shutil.copyfile": lambda c, a: (c.reads.add(key(a[0])) if key(a[0]) else None, _written(c, a[1])),
    "shutil.copytree": lambda c, a: c.effect("copied folder %s to %s" % (_desc(a[0]), _desc(a[1]))),
    "shutil.rmtree": lambda c, a: c.effect("removed folder " + _desc(a[0])),
    "shutil.move": lambda c, a: (_deleted(c, a[0]), _written(c, a[1])),
    "shutil.unpack_archive": lambda c, a: c.effect("unpacked " + _desc(a[0])),
    "shutil.make_archive": lambda c, a: c.effect("made archive " + _desc(a[0])),
    "socket.connect": lambda c, a: c.effect("network connection to %s" % (a[1],)),
    "socket.sendto": lambda c, a: c.effect("network datagram to %s" % (a[1],)),
    "urllib.Request": lambda c, a: c.effect("%s request to %s" % (a[3] or "GET", a[0])),
    "subprocess.Popen": lambda c, a: c.effect("ran %s" % (_cmd(a[1]),)),
    "os.system": lambda c, a: c.effect("ran %s" % (_cmd(a[0]),)),
    "os.exec": lambda c, a: c.effect("exec %s" % (_desc(a[0]),)),
    "os.spawn": lambda c, a: c.effect("ran %s" % (_desc(a[1]),)),
    "os.posix_spawn": lambda c, a: c.effect("ran %s" % (_desc(a[0]),)),
    "os.fork": lambda c, a: c.effect("forked a process"),
    "os.forkpty": lambda c, a: c.effect("ran a shell command"),
    "os.kill": lambda c, a: c.effect("signalled process %s" % (a[0],)),
    "sqlite3.connect": lambda c, a: c.effect("opened database %s" % (_desc(a[0]),)),
    "os.putenv": lambda c, a: setattr(c, "proc", True),
    "os.unsetenv": lambda c, a: setattr(c, "proc", True),
    "os.chdir": lambda c, a: setattr(c, "proc", True),
}


def _cmd(args):
    try:
        if isinstance(args, (list, tuple)):
            s = " ".join(os.fsdecode(x) if isinstance(x, (str, bytes)) else str(x) for x in args)
        else:
            s = os.fsdecode(args) if isinstance(args, (str, bytes)) else str(args)
    except Exception:
        s = repr(args)
    return s if len(s) <= 80 else s[:77] + "..."


def install(shell):
    """Add the hook once per process and follow the shell's cell events."""
    if not getattr(sys, "_ferry_audit_hooked", False):
        # A hook cannot be removed: it looks up the current module, so an
        # agent installed again (a new Ferry) takes over the same hook.
        sys.addaudithook(lambda e, a: sys.modules.get("_ferry_audit", _Null)._hook(e, a))
        sys._ferry_audit_hooked = True
    ev = getattr(shell, "events", None)
    if ev is not None:
        for name, f in (("pre_run_cell", _pre), ("post_run_cell", _post)):
            try:
                ev.unregister(name, f)
            except ValueError:
                pass
            ev.register(name, f)


class _Null:
    @staticmethod
    def _hook(e, a):
        pass


def _pre(info=None):
    global _on, _cell, _thread
    _cell = Record()
    _thread = threading.get_ident()
    _on = True


def _post(result=None):
    global _on
    _on = False


def take():
    """The record of the cell just run (and recording stops), or None."""
    global _cell, _on
    _on = False
    c, _cell = _cell, None
    return c


def start():
    """Start a record by hand (tests, and front ends without events)."""
    _pre()


def version_of(r):
    """(size, version) of the root-relative file r, or None if it is gone.
    The version is a content hash up to HASH_LIMIT bytes, else size and
    modification time."""
    p = path_of(r)
    try:
        st = os.stat(p)
    except OSError:
        return None
    if not os.path.isfile(p):
        return None
    if st.st_size > HASH_LIMIT:
        return st.st_size, "stat:%d:%d" % (st.st_size, st.st_mtime_ns)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return st.st_size, "sha256:" + h.hexdigest()[:32]


def inventory():
    """The files under the root, root-relative, with size and mtime (ns),
    at most INVENTORY_LIMIT; truncated says whether there were more."""
    out, truncated = {}, False
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            if len(out) >= INVENTORY_LIMIT:
                truncated = True
                break
            out["/".join(os.path.relpath(p, root).split(os.sep))] = [st.st_size, st.st_mtime_ns]
        if truncated:
            break
    return out, truncated


def path_of(r):
    """The path of a tracked file: r itself if absolute, else under the root."""
    if r.startswith("/"):
        return r
    return os.path.join(root, *r.split("/"))


def read_file(r):
    """The bytes of root-relative file r as a buffer, without a copy for
    large files (a read-only mmap)."""
    p = path_of(r)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < (1 << 20):
            return f.read()
        import mmap

        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def write_file(r, data):
    """Write root-relative file r atomically (a temporary name, then rename),
    making its folders."""
    p = path_of(r)
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    tmp = p + ".ferry-part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, p)


def remove_file(r):
    try:
        os.remove(path_of(r))
    except FileNotFoundError:
        pass


def stat_of(r):
    """(size, mtime ns) of tracked file r, or None if it is gone."""
    try:
        st = os.stat(path_of(r))
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
