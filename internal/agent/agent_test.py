"""Unit tests of agent.py in-process, with a stand-in shell namespace.
Run by agent_test.go with /usr/bin/python3."""

import json
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent  # noqa: E402


class Shell:
    def __init__(self):
        self.user_ns = {}
        self.user_ns_hidden = {}


def move(src, dst, names):
    """Pack names in src and load them in dst, as two kernels would."""
    agent._shell = src
    frames, packed, unmovable = agent.pack(names)
    raw = sum(memoryview(f).nbytes for f in frames)
    inc = agent._Incoming(raw)
    for z, piece, n in agent._chunks(frames, True):
        inc.add(z, piece, n)
    inc.hasher.hexdigest()
    agent._shell = dst
    return agent.load(inc.blob), unmovable


class AgentTests(unittest.TestCase):
    def setUp(self):
        agent._prints.clear()
        self.a, self.b = Shell(), Shell()
        agent._shell = self.a

    def report(self, maybe=(), dynamic=False):
        return json.loads(repr(agent.report(list(maybe), dynamic)))

    def test_report_new_changed_deleted(self):
        ns = self.a.user_ns
        ns.update(x=1, l=[1], _private=2, _=5, In=[], _i3="code")
        r = self.report()
        self.assertEqual(set(r["changed"]) - {agent.RNG}, {"x", "l", "_private"})
        ns["l"].append(2)
        self.assertNotIn("l", self.report()["changed"], "not in maybe: checked by identity only")
        ns["l"].append(3)
        self.assertIn("l", self.report(["l"])["changed"])
        del ns["x"]
        self.assertEqual(self.report()["deleted"], ["x"])

    def test_alias_group_marks_partner_changed(self):
        ns = self.a.user_ns
        inner = [1]
        ns.update(a=inner, holder={"k": inner})
        r = self.report()
        self.assertEqual(r["changed"]["a"]["group"], r["changed"]["holder"]["group"])
        inner.append(2)
        self.assertIn("holder", self.report(["a"])["changed"])

    def test_unmovable(self):
        ns = self.a.user_ns
        ns["g"] = (i for i in range(3))
        ns["f"] = open(os.devnull)
        r = self.report()
        self.assertFalse(r["changed"]["g"]["movable"])
        self.assertEqual(r["changed"]["f"]["reason"], "open file or stream")
        _, unmovable = move(self.a, self.b, ["g", "f"])
        self.assertEqual(set(unmovable), {"g", "f"})
        ns["f"].close()

    def test_roundtrip_keeps_identity_views_functions_rng(self):
        agent._Pickler = agent._pickler_class()  # made before numpy is imported, as in a fresh kernel
        import numpy as np

        ns = self.a.user_ns
        x = np.arange(10.0)
        ns.update(x=x, y=x, v=x[2:5], k=3)
        exec("def f(a):\n    return a + k", ns)
        exec("class C:\n    def __init__(self):\n        self.v = 7", ns)
        ns["c"] = ns["C"]()
        random.seed(11)
        names, _ = move(self.a, self.b, ["x", "y", "v", "k", "f", "C", "c", agent.RNG])
        got = self.b.user_ns
        self.assertIs(got["x"], got["y"])
        got["v"][0] = -1
        self.assertEqual(got["x"][2], -1, "a view must stay a view of its array")
        self.assertTrue(got["x"].flags.writeable)
        self.assertEqual(got["f"](1), 4)
        got["k"] = 10
        self.assertEqual(got["f"](1), 11, "a moved function must see its new namespace")
        self.assertIsInstance(got["c"], got["C"])
        expect = random.random()
        random.seed(11)
        move(self.a, self.b, [agent.RNG])
        self.assertEqual(random.random(), expect)

    def test_hash_mismatch_is_rejected(self):
        self.a.user_ns["x"] = list(range(100))
        agent._shell = self.a
        frames, _, _ = agent.pack(["x"])

        class Comm:
            sent = []

            def send(self, data, buffers=None):
                self.sent.append(data)

        comm = Comm()
        raw = sum(memoryview(f).nbytes for f in frames)
        agent._shell = self.b
        agent._handle(comm, {"op": "begin", "id": "t", "raw_size": raw}, [])
        for seq, (z, piece, n) in enumerate(agent._chunks(frames, False)):
            agent._handle(comm, {"op": "chunk", "id": "t", "seq": seq, "z": z, "raw": n}, [piece])
        agent._handle(comm, {"op": "load", "id": "t", "hash": "0" * 64, "chunks": seq + 1}, [])
        self.assertEqual(comm.sent[-1]["op"], "error")
        self.assertNotIn("x", self.b.user_ns)

    def test_comm_requires_the_secret(self):
        agent._secret = "right"

        class Comm:
            closed = None

            def close(self, data=None):
                self.closed = data

            def on_msg(self, f):
                raise AssertionError("registered a handler for an unauthorised comm")

        c = Comm()
        agent._on_open(c, {"content": {"data": {"secret": "wrong"}}})
        self.assertEqual(c.closed, {"error": "unauthorised"})


if __name__ == "__main__":
    unittest.main()
