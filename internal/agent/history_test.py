"""Tests of _ferry_history on a real IPython shell (no kernel needed)."""

import linecache
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _ferry_history as history  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402


class HistoryTests(unittest.TestCase):
    def setUp(self):
        self.sh = InteractiveShell.instance()
        self.sh.reset(new_session=True)
        self.sh.execution_count = 1

    def run_cell(self, code):
        return self.sh.run_cell(code, store_history=True)

    def test_inputs_and_count_from_the_other_kernel(self):
        ns = self.sh.user_ns
        self.run_cell("a = 1")  # In[1] ran here; 2 and 3 ran elsewhere
        history.apply({"count": 4, "inputs": {"2": "6*7", "3": "b = 2\n"}}, self.sh)
        self.run_cell("c = 3")
        self.assertEqual(ns["In"][1:5], ["a = 1", "6*7", "b = 2", "c = 3"])
        self.assertEqual((ns["_i"], ns["_ii"], ns["_iii"]), ("b = 2", "6*7", "a = 1"))
        self.assertEqual((ns["_i2"], ns["_i4"]), ("6*7", "c = 3"))
        self.assertEqual(self.sh.execution_count, 5, "the next cell gets the front end's next number")

    def test_unknown_inputs_are_empty_not_shifted(self):
        history.apply({"count": 3}, self.sh)
        self.run_cell("x = 1")
        self.assertEqual(self.sh.user_ns["In"][3], "x = 1", "In is indexed by the front end's number")
        self.assertEqual(self.sh.user_ns["In"][1:3], ["", ""])

    def test_last_results_moved_here_become_underscores(self):
        ns = self.sh.user_ns
        history.set_out(history.OUT_PREFIX + "2", 42, ns)
        history.set_out(history.OUT_PREFIX + "1", "first", ns)
        history.apply({"count": 3, "last": [2, 1, 0]}, self.sh)
        res = self.run_cell("_ + 1")
        self.assertEqual(res.result, 43)
        self.assertEqual((ns["_"], ns["__"], ns["___"]), (43, 42, "first"))
        self.assertEqual((ns["Out"][3], ns["_2"]), (43, 42))
        self.assertEqual(history.get_out(history.OUT_PREFIX + "3", ns), 43)
        with self.assertRaises(KeyError):
            history.get_out(history.OUT_PREFIX + "9", ns)

    def test_traceback_cells_carry_the_front_ends_number(self):
        history.apply({"count": 7}, self.sh)
        self.run_cell("def f():\n    return 1 / 0")
        names = [f for f in linecache.cache if "ipython-input-7-" in f]
        self.assertTrue(names, "cell 7 is compiled as In[7]")

    def test_bad_notes_never_raise_in_the_hook(self):
        class Kernel:
            def get_parent(self, channel):
                return {"metadata": {history.META_KEY: {"count": "x"}}}

        self.sh.kernel = Kernel()
        try:
            history.install(self.sh)
            history._pre_run_cell()
            self.run_cell("y = 1")
            self.assertEqual(self.sh.user_ns["y"], 1)
        finally:
            self.sh.events.unregister("pre_run_cell", history._pre_run_cell)
            del self.sh.kernel


if __name__ == "__main__":
    unittest.main()
