"""The Jupyter project's kernel conformance suite (jupyter_kernel_test),
run against the installed "ferry" kernelspec. The Go test in cmd/ferry
installs a kernelspec for the freshly built binary and points JUPYTER_PATH
at it, so this never tests a stale kernel."""

import os
import unittest

import jupyter_kernel_test


class FerryKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = os.environ.get("FERRY_KERNEL_NAME", "ferry")
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "print?"
    code_generate_error = "raise ValueError('ferry conformance')"
    code_execute_result = [{"code": "1+2+3", "result": "6"}, {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"}]
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"


class FerryIdentity(unittest.TestCase):
    """Make sure the suite above talked to Ferry, not to plain ipykernel,
    and to the binary the Go test just built."""

    def test_implementation_is_ferry(self):
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import start_new_kernel

        spec = KernelSpecManager().get_kernel_spec(FerryKernelTests.kernel_name)
        want = os.environ.get("FERRY_TEST_BINARY")
        if want:
            self.assertEqual(spec.argv[0], want, "the kernelspec Jupyter finds is not the freshly built ferry")
        self.assertEqual(spec.argv[1:4], ["kernel", "-f", "{connection_file}"])
        self.assertEqual(spec.interrupt_mode, "message")

        km, kc = start_new_kernel(kernel_name=FerryKernelTests.kernel_name)
        try:
            msg_id = kc.kernel_info()
            # Readiness checks may leave earlier kernel_info replies queued.
            while True:
                reply = kc.get_shell_msg(timeout=30)
                if reply["parent_header"].get("msg_id") == msg_id:
                    break
            self.assertEqual(reply["content"]["implementation"], "ferry")
            self.assertEqual(reply["content"]["protocol_version"], "5.3")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


if __name__ == "__main__":
    unittest.main()
