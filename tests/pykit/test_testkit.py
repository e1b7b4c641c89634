"""The test kit's own tests: the runner fails a module that runs no test, skips one, fails
one or cannot be imported; the metrics parser refuses what is not Prometheus text; the waits
are bounded; require_tool fails naming the tool; ListeningProcess reads the ports a server
printed and reports a server that exits before listening."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rnnserve_testkit as kit  # noqa: E402

RUNNER = os.path.join(HERE, "run_tests.py")


class RunnerTest(unittest.TestCase):
    def run_module(self, source):
        folder = tempfile.mkdtemp(prefix="rnnserve-pykit-")
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        with open(os.path.join(folder, "test_sample.py"), "w") as f:
            f.write(textwrap.dedent(source))
        result = subprocess.run([sys.executable, RUNNER, "--dir", folder, "test_sample"],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
        return result.returncode, result.stdout + result.stderr

    def test_passing_module_passes(self):
        code, output = self.run_module("""
            import unittest
            class T(unittest.TestCase):
                def test_ok(self):
                    self.assertEqual(1 + 1, 2)
            """)
        self.assertEqual(code, 0, output)
        self.assertIn("Ran 1 test", output)

    def test_module_without_tests_fails(self):
        code, output = self.run_module("""
            import unittest
            class T:  # lost its unittest.TestCase base
                def test_ok(self):
                    pass
            """)
        self.assertNotEqual(code, 0, output)
        self.assertIn("no test ran", output)

    def test_skipped_test_fails(self):
        code, output = self.run_module("""
            import unittest
            class T(unittest.TestCase):
                @unittest.skip("nginx is not installed")
                def test_needs_nginx(self):
                    pass
                def test_ok(self):
                    pass
            """)
        self.assertNotEqual(code, 0, output)
        self.assertIn("nginx is not installed", output)

    def test_failing_test_fails(self):
        code, output = self.run_module("""
            import unittest
            class T(unittest.TestCase):
                def test_bad(self):
                    self.assertEqual(1, 2)
            """)
        self.assertNotEqual(code, 0, output)
        self.assertIn("1 failure(s)", output)

    def test_unimportable_module_fails(self):
        code, output = self.run_module("import no_such_module_here\n")
        self.assertNotEqual(code, 0, output)
        self.assertIn("no_such_module_here", output)


class KitTest(unittest.TestCase):
    def test_metrics_parse_and_refuse(self):
        samples, types = kit.parse_samples(
            '# HELP a_total x\n# TYPE a_total counter\na_total{code="OK",m="x"} 3\n'
            'a_total{code="NOT_FOUND",m="x"} 2\nb 1.5\n')
        self.assertEqual(types, {"a_total": "counter"})
        self.assertEqual(kit.metric_sum(samples, "a_total"), 5)
        self.assertEqual(kit.metric_sum(samples, "a_total", code="OK"), 3)
        exact = kit.parse_metrics('a_total{code="OK"} 3\n')
        self.assertEqual(kit.metric(exact, "a_total", code="OK"), 3)
        with self.assertRaises(AssertionError):
            kit.metric(exact, "a_total", code="NOT_FOUND")
        with self.assertRaises(AssertionError):
            kit.parse_samples("a_total{code=\"OK\"} 3 extra words\n")

    def test_wait_until_is_bounded(self):
        t0 = time.monotonic()
        with self.assertRaisesRegex(AssertionError, "waiting for never"):
            kit.wait_until(lambda: False, 0.2, "never")
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(kit.wait_until(lambda: 7, 1, "a value"), 7)

    def test_require_tool_names_the_missing_tool(self):
        self.assertEqual(kit.require_tool("sh", "-"), shutil.which("sh"))
        with self.assertRaisesRegex(AssertionError, "no-such-tool-x is missing.*apt-get x"):
            kit.require_tool("no-such-tool-x", "apt-get x")

    def test_listening_process_reads_ports_and_stops(self):
        script = ("import signal, sys\n"
                  "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
                  "print('to stderr', file=sys.stderr, flush=True)\n"
                  "print('fake listening on 127.0.0.1:4321 (gRPC), metrics on 127.0.0.1:-1',"
                  " flush=True)\n"
                  "signal.sigwait([signal.SIGTERM])\n"
                  "sys.exit(7)\n")
        server = kit.ListeningProcess([sys.executable, "-c", script], name="fake").start()
        self.assertEqual((server.port, server.metrics_port), (4321, -1))
        self.assertEqual(server.target, "127.0.0.1:4321")
        self.assertTrue(server.alive())
        self.assertEqual(server.stop(timeout=10), 7)  # it got the SIGTERM
        self.assertFalse(server.alive())
        self.assertIn("to stderr", server.stderr_text())

    def test_listening_process_that_exits_is_reported(self):
        script = "import sys; print('bad flag', file=sys.stderr); sys.exit(3)"
        with self.assertRaisesRegex(AssertionError,
                                    "exited with 3 before listening(.|\n)*bad flag"):
            kit.ListeningProcess([sys.executable, "-c", script], name="fake").start()

    def test_sanitizer_report_fails_the_stop(self):
        script = ("import sys, time\n"
                  "print('fake listening on 127.0.0.1:1 (gRPC), metrics on 127.0.0.1:-1',"
                  " flush=True)\n"
                  "time.sleep(60)\n")  # until stop()'s SIGTERM ends it
        clean = kit.ListeningProcess([sys.executable, "-c", script], name="clean").start()
        self.assertEqual(clean.stop(timeout=10), -15)
        leaky = kit.ListeningProcess(
            [sys.executable, "-c", "import sys; print('==7==ERROR: LeakSanitizer: detected "
             "memory leaks', file=sys.stderr, flush=True)\n" + script], name="leaky").start()
        with self.assertRaisesRegex(AssertionError, "leaky: the sanitizers reported"):
            leaky.stop(timeout=10)
        self.assertIsNone(kit.sanitizer_report("all fine\nruntime error: in a message\n"))
        self.assertIsNotNone(kit.sanitizer_report(
            "x\nserver/a.cc:12:5: runtime error: signed integer overflow\n"))


if __name__ == "__main__":
    unittest.main()
