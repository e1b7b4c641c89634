"""A missing tool fails the deployment checks, naming it: each of nginx, yamllint and node is
hidden from PATH in turn (a folder of links to everything else on PATH), and the manifest
check and the replica test must then exit non-zero saying what is missing, where they once
reported Passed having checked less.

    (cd tests/deploy && /usr/bin/python3 ../pykit/run_tests.py test_missing_tools)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import deploy_harness as harness

RUNNER = os.path.join(harness.ROOT, "tests", "pykit", "run_tests.py")
HERE = os.path.dirname(os.path.abspath(__file__))


def path_without(tool):
    """A temporary folder of links to every executable on PATH except `tool`: (folder, env)."""
    shadow = tempfile.mkdtemp(prefix=f"rnnserve-no-{tool}-")
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            link = os.path.join(shadow, name)
            target = os.path.join(folder, name)
            if name != tool and not os.path.lexists(link) and os.access(target, os.X_OK):
                os.symlink(target, link)
    env = dict(os.environ, PATH=shadow)
    return shadow, env


class MissingToolsTest(unittest.TestCase):
    def run_without(self, tool, command, cwd=harness.ROOT):
        shadow, env = path_without(tool)
        self.addCleanup(shutil.rmtree, shadow, ignore_errors=True)
        self.assertIsNone(shutil.which(tool, path=env["PATH"]), f"{tool} still visible")
        result = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout + result.stderr

    def test_manifest_check_fails_without_each_tool(self):
        for tool in ("nginx", "yamllint", "node"):
            with self.subTest(tool=tool):
                code, output = self.run_without(
                    tool, ["bash", os.path.join(harness.ROOT, "deploy", "check-manifests.sh")])
                self.assertNotEqual(code, 0, output)
                self.assertIn(f"{tool} is missing", output)
                self.assertNotIn("check-manifests: OK", output)

    def test_replica_test_fails_without_nginx(self):
        code, output = self.run_without(
            "nginx", [sys.executable, RUNNER, "--dir", HERE, "test_replicas"], cwd=HERE)
        self.assertNotEqual(code, 0, output)
        self.assertIn("nginx is missing", output)

    def test_nginx_config_check_fails_without_nginx(self):
        code, output = self.run_without(
            "nginx", [sys.executable, os.path.join(HERE, "deploy_harness.py"), "--nginx-test",
                      os.path.join(harness.ROOT, "deploy", "kubernetes", "nginx.conf")])
        self.assertNotEqual(code, 0, output)
        self.assertIn("nginx is missing", output)


if __name__ == "__main__":
    unittest.main()
