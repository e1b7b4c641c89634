"""The Python client as a user installs it: `pip install ./client/python` into a fresh venv
(Debian's python3 -m venv --system-site-packages, offline: --no-build-isolation --no-index),
the stubs generated at build time; then, from another folder with no repository on sys.path,
the installed package (blocking and asyncio) streams against a real rnnserve, and torch checks
the outputs.

    RNNSERVE_BIN=build/server/rnnserve /usr/bin/python3 tests/pykit/run_tests.py \\
        test_python_package   (from tests/client)
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np

import rnnserve_testkit as kit

PACKAGE = os.path.join(kit.ROOT, "client", "python")
SYSTEM_PYTHON = "/usr/bin/python3"
MODEL = dict(input_size=3, hidden_size=5, num_layers=2)

# Runs in the venv, from an empty folder: the installed package only.
USER_SCRIPT = r"""
import asyncio, json, sys
import numpy as np
import rnnserve_client
from rnnserve_client import RnnServeClient
from rnnserve_client.aio import AsyncRnnServeClient

target, x_path, out_path = sys.argv[1:4]
x = np.load(x_path)
with RnnServeClient(target) as client:
    with client.open_stream() as stream:
        outs = [stream.start("m", chunk=x[:2]).output, stream.send(x[2:5]).output]
        last = stream.send(x[5:], end=True)
        outs.append(last.output)

async def run():
    async with AsyncRnnServeClient(target) as client:
        out, _ = await client.forward("m", x)
        async with client.open_stream() as stream:
            a = await stream.start("m", session_id="aio-1", chunk=x[:4])
            b = await stream.send(x[4:], end=True)
        return out, [a.output, b.output]

forward_out, aio_outs = asyncio.run(run())
np.savez(out_path, stream=np.concatenate(outs), aio=np.concatenate(aio_outs),
         forward=forward_out, h_n=last.h_n)
print(json.dumps({"module": rnnserve_client.__file__, "stubs": rnnserve_client.pb2.__file__}))
"""


class PythonPackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rnnserve-pypkg-")
        repo = os.path.join(cls.tmp, "models")
        cls.rnn = kit.write_model(os.path.join(repo, "m"), seed=21, **MODEL)
        cls.server = kit.ServerProcess(model_repository=repo, name="pypkg")
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_checked(self, args, **kwargs):
        result = subprocess.run(args, capture_output=True, text=True, timeout=kit.scaled(180),
                                **kwargs)
        self.assertEqual(result.returncode, 0,
                         f"{' '.join(args)}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return result

    def test_pip_installed_package_streams_against_a_server(self):
        venv = os.path.join(self.tmp, "venv")
        self.run_checked([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv])
        python = os.path.join(venv, "bin", "python")
        self.run_checked([python, "-m", "pip", "install", "--quiet", "--no-build-isolation",
                          "--no-index", PACKAGE])
        self.server.wait_serving()
        user = os.path.join(self.tmp, "elsewhere")
        os.makedirs(user)
        x = np.random.default_rng(5).standard_normal((8, 2, 3), dtype=np.float32)
        np.save(os.path.join(user, "x.npy"), x)
        script = os.path.join(user, "use_client.py")
        with open(script, "w") as f:
            f.write(USER_SCRIPT)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "RNNSERVE_PB_DIR")}
        result = self.run_checked([python, script, self.server.target, "x.npy", "out.npz"],
                                  cwd=user, env=env)
        where = json.loads(result.stdout.strip().splitlines()[-1])
        site = os.path.join(venv, "lib")
        for path in where.values():  # the installed copy and its build-time stubs
            self.assertTrue(os.path.realpath(path).startswith(os.path.realpath(site)), where)
        self.assertIn(os.path.join("rnnserve_client", "_pb"), where["stubs"])
        got = np.load(os.path.join(user, "out.npz"))
        want_out, want_h = kit.torch_forward(self.rnn, x)
        for name in ("stream", "aio", "forward"):
            np.testing.assert_allclose(got[name], want_out, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(got["h_n"], want_h, atol=1e-5)


if __name__ == "__main__":
    unittest.main()
