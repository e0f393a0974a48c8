"""Unit tests of the agent's helpers for what lies outside the namespace:
_ferry_audit (files and side effects a cell touches) and _ferry_proc (the
process state a notebook sets). Run by agent_test.go with /usr/bin/python3."""

import logging
import os
import socket
import subprocess
import sys
import tempfile
import unittest
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _ferry_audit as audit  # noqa: E402
import _ferry_proc as proc  # noqa: E402
import agent  # noqa: E402


class Shell:
    def __init__(self):
        self.user_ns = {}
        self.user_ns_hidden = {}
        self.configurables = []


class AuditTests(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.old = os.getcwd()
        os.chdir(self.dir)
        audit.set_root(self.dir)
        audit.install(Shell())
        os.makedirs("data")
        with open("data/a.csv", "w") as f:
            f.write("a\n1\n")

    def tearDown(self):
        audit.take()
        os.chdir(self.old)

    def test_records_reads_writes_deletes_and_listings_under_the_root(self):
        audit.start()
        with open("data/a.csv") as f:
            f.read()
        with open("out.txt", "w") as f:
            f.write("x")
        os.listdir("data")
        import glob

        glob.glob("data/*.csv")
        with open("gone.txt", "w") as f:
            f.write("y")
        os.remove("gone.txt")
        os.rename("out.txt", "moved.txt")
        rec = audit.take()
        self.assertEqual(rec.reads, {"data/a.csv"})
        self.assertEqual(rec.writes, {"moved.txt"})
        self.assertEqual(rec.deletes, {"gone.txt", "out.txt"})
        self.assertEqual(rec.lists, {"data"})
        self.assertTrue(any(e.startswith("wrote ") for e in rec.effects), rec.effects)

    def test_the_import_systems_listing_of_the_root_is_not_the_cells(self):
        # The path finder lists the working directory (sys.path's "") to
        # fill its cache; a cell that imports is not listing the folder.
        import importlib

        sys.path.insert(0, "")
        try:
            importlib.invalidate_caches()
            audit.start()
            try:
                import ferry_no_such_module  # noqa: F401
            except ImportError:
                pass
            rec = audit.take()
            self.assertEqual(rec.lists, set())
            audit.start()
            os.listdir(".")  # the cell's own listing still counts
            rec = audit.take()
            self.assertEqual(rec.lists, {"."})
        finally:
            sys.path.remove("")

    def test_nothing_is_recorded_outside_a_cell(self):
        audit.take()
        with open("quiet.txt", "w") as f:
            f.write("z")
        self.assertIsNone(audit.take())

    def test_subprocess_and_network_are_effects(self):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        audit.start()
        subprocess.run(["true"])
        c = socket.create_connection(srv.getsockname())
        c.close()
        srv.close()
        rec = audit.take()
        self.assertTrue(any(e.startswith("ran ") and "true" in e for e in rec.effects), rec.effects)
        self.assertTrue(any(e.startswith("network connection") for e in rec.effects), rec.effects)

    def test_env_and_chdir_flag_the_process_state(self):
        audit.start()
        os.environ["FERRY_AUDIT_PROBE"] = "1"
        rec = audit.take()
        self.assertTrue(rec.proc)
        del os.environ["FERRY_AUDIT_PROBE"]

    def test_keys_and_versions(self):
        self.assertEqual(audit.key(os.path.join(self.dir, "data", "a.csv")), "data/a.csv")
        self.assertIsNone(audit.key(os.path.join(self.dir, "__pycache__", "m.pyc")))
        self.assertIsNone(audit.key(os.path.join(sys.prefix, "lib", "x.py")))
        own = os.path.join(tempfile.gettempdir(), "ferry-own-%d.txt" % os.getpid())
        self.assertEqual(audit.key(own), own)
        size, v = audit.version_of("data/a.csv")
        self.assertEqual(size, 4)
        self.assertTrue(v.startswith("sha256:"))
        self.assertIsNone(audit.version_of("missing.csv"))
        inv, truncated = audit.inventory()
        self.assertEqual(sorted(inv), ["data/a.csv"])
        self.assertFalse(truncated)

    def test_files_move_between_roots_through_pack_and_load(self):
        """A file under one root packs and loads under another, in place of a
        variable; the report then sees no change of it."""
        src, dst = Shell(), Shell()
        agent._shell = src
        name = agent.FILE_PREFIX + "data/a.csv"
        frames, packed, unmovable = agent.pack([name])
        self.assertEqual((packed, unmovable), ([name], {}))
        raw = sum(memoryview(f).nbytes for f in frames)
        inc = agent._Incoming(raw)
        for z, piece, n in agent._chunks(frames, True):
            inc.add(z, piece, n)
        other = tempfile.mkdtemp()
        audit.set_root(other)
        agent._shell = dst
        self.assertEqual(agent.load(inc.blob), [name])
        with open(os.path.join(other, "data", "a.csv")) as f:
            self.assertEqual(f.read(), "a\n1\n")
        self.assertNotIn(name, dst.user_ns)
        agent.delete([name])
        self.assertFalse(os.path.exists(os.path.join(other, "data", "a.csv")))


class Holder:
    """Holds a weak reference in an attribute and pickles without it, as a
    matplotlib Figure does."""

    def __init__(self, target):
        import weakref

        self.value = 3
        self.ref = weakref.ref(target)

    def __getstate__(self):
        return {"value": self.value}


class Plain:
    pass


class MovabilityTests(unittest.TestCase):
    def test_a_class_that_pickles_itself_is_not_pinned_for_what_it_drops(self):
        t = Plain()
        self.assertIsNone(agent._contained_unmovable(Holder(t)))

    def test_a_weak_reference_held_plainly_still_pins(self):
        import weakref

        p, t = Plain(), Plain()
        p.ref = weakref.ref(t)
        self.assertIn("weak reference", agent._contained_unmovable(p) or "")


class PayloadIdentityTests(unittest.TestCase):
    def test_a_view_is_a_view_of_its_array_after_a_move(self):
        import numpy as np

        src, dst = Shell(), Shell()
        x = np.arange(100.0)
        src.user_ns.update(x=x, v=x[10:20], y=np.ones(5))
        agent._shell = src
        frames, _, _ = agent.pack(["x", "v", "y"])
        inc = agent._Incoming(sum(memoryview(f).nbytes for f in frames))
        for z, piece, n in agent._chunks(frames, False):
            inc.add(z, piece, n)
        agent._shell = dst
        agent.load(inc.blob)
        X, V = dst.user_ns["x"], dst.user_ns["v"]
        self.assertIs(V.base, X)
        V[0] = -1
        self.assertEqual(X[10], -1)
        self.assertIsNotNone(dst.user_ns["y"].base, "an array without views should stay a view of the received buffer (no copy)")


class ProcTests(unittest.TestCase):
    def setUp(self):
        self.shell = Shell()
        self.filters = list(warnings.filters)
        self.handlers = list(logging.root.handlers)
        self.level = logging.root.level
        proc.baseline(self.shell)

    def tearDown(self):
        warnings.filters[:] = self.filters
        for h in list(logging.root.handlers):
            if h not in self.handlers:
                logging.root.removeHandler(h)
        logging.root.setLevel(self.level)
        os.environ.pop("FERRY_PROC_PROBE", None)

    def test_capture_then_apply_restores_what_the_notebook_set(self):
        os.environ["FERRY_PROC_PROBE"] = "yes"
        warnings.filterwarnings("ignore", message="ferry-quiet")
        logging.basicConfig(level=logging.INFO, format="LOG %(message)s")
        st = proc.capture(self.shell)
        self.assertEqual(st["env"], {"FERRY_PROC_PROBE": "yes"})
        self.assertEqual(len(st["warnings"]), 1)
        self.assertEqual(st["logging"]["level"], logging.INFO)
        self.assertEqual(st["logging"]["handlers"][0]["fmt"], "LOG %(message)s")
        # Another kernel: its own baseline, none of those settings.
        del os.environ["FERRY_PROC_PROBE"]
        warnings.filters[:] = self.filters
        for h in list(logging.root.handlers):
            if h not in self.handlers:
                logging.root.removeHandler(h)
        logging.root.setLevel(self.level)
        self.assertEqual(proc.apply(self.shell, st), [])
        self.assertEqual(os.environ.get("FERRY_PROC_PROBE"), "yes")
        with warnings.catch_warnings(record=True) as w:
            warnings.warn("ferry-quiet please")
        self.assertEqual(w, [])
        self.assertEqual(logging.root.level, logging.INFO)
        self.assertTrue(any(getattr(h.formatter, "_fmt", "") == "LOG %(message)s" for h in logging.root.handlers))

    def test_display_printers_the_notebook_registered_travel_by_type_name(self):
        from IPython.core.formatters import DisplayFormatter

        def make_class():
            return type("Card", (), {"__module__": "__main__"})

        here, there = Shell(), Shell()
        here.display_formatter, there.display_formatter = DisplayFormatter(), DisplayFormatter()
        proc.baseline(here)
        Card = make_class()
        here.display_formatter.formatters["text/html"].for_type(Card, lambda o: "<b>card</b>")
        here.display_formatter.formatters["text/plain"].for_type_by_name("collections", "Counter", lambda o, p, c: p.text("C!"))
        st = proc.capture(here)
        self.assertEqual(sorted(st["formatters"]), ["text/html", "text/plain"])
        self.assertEqual(st["formatters"]["text/html"][0][:2], ("__main__", "Card"))
        proc.baseline(there)
        self.assertEqual(proc.apply(there, st), [])
        data, _ = there.display_formatter.format(make_class()())  # the class moved: another object
        self.assertEqual(data.get("text/html"), "<b>card</b>")
        import collections

        data, _ = there.display_formatter.format(collections.Counter("ab"))
        self.assertEqual(data["text/plain"], "C!")
        self.assertEqual(proc.capture(there)["formatters"].keys(), st["formatters"].keys(), "applied printers are the state there too")

    def test_apply_removes_what_the_newest_state_no_longer_has(self):
        os.environ["FERRY_PROC_PROBE"] = "old"
        proc.apply(self.shell, {"env": {}})
        self.assertNotIn("FERRY_PROC_PROBE", os.environ)

    def test_numpy_print_options(self):
        import numpy as np

        old = np.get_printoptions()
        try:
            np.set_printoptions(precision=2)
            st = proc.capture(self.shell)
            np.set_printoptions(**old)
            proc.apply(self.shell, st)
            self.assertEqual(str(np.array([1.23456])), "[1.23]")
        finally:
            np.set_printoptions(**old)

    def test_pandas_options(self):
        import pandas as pd

        try:
            pd.set_option("display.max_rows", 7)
            st = proc.capture(self.shell)
            self.assertEqual(st["pandas"].get("display.max_rows"), 7)
            pd.reset_option("display.max_rows")
            proc.apply(self.shell, st)
            self.assertEqual(pd.get_option("display.max_rows"), 7)
        finally:
            pd.reset_option("display.max_rows")

    def test_the_cwd_travels_relative_to_the_root(self):
        root = tempfile.mkdtemp()
        os.makedirs(os.path.join(root, "sub"))
        old = os.getcwd()
        try:
            audit.set_root(root)
            os.chdir(os.path.join(root, "sub"))
            st = proc.capture(self.shell)
            self.assertEqual(st["cwd"], ("rel", "sub"))
            other = tempfile.mkdtemp()
            audit.set_root(other)
            os.chdir(other)
            proc.apply(self.shell, st)
            self.assertEqual(os.getcwd(), os.path.realpath(os.path.join(other, "sub")))
        finally:
            os.chdir(old)


if __name__ == "__main__":
    unittest.main()
