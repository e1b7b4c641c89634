"""rnnserve-client (the CLI binary) against a real rnnserve process, numbers compared with torch.

Seeded torch.nn.RNNs (unidirectional, bidirectional, batch_first) are exported into a model
repository and served by $RNNSERVE_BIN on a port it picks (--port=0, read from its listening
line). The CLI at $RNNSERVE_CLIENT_BIN runs `forward` and `stream` with --json, --input x.npy,
--h0 and --save_output/--save_h_n, in both tensor encodings; its printed JSON and its saved .npy
files must match torch's output and h_n, computed live here, within 1e-5.

    RNNSERVE_BIN=build/server/rnnserve RNNSERVE_CLIENT_BIN=build/client/rnnserve-client \\
    /usr/bin/python3 tests/pykit/run_tests.py test_cli_torch   (from tests/client)

Every wait is bounded; nothing sleeps in place of synchronisation.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
import torch

import rnnserve_testkit as testkit

ATOL = 1e-5
CLI_TIMEOUT = 60.0

torch.set_num_threads(1)  # the CPUs are shared with the server under test

# name -> torch.nn.RNN arguments
MODELS = {
    "uni": dict(input_size=5, hidden_size=7, num_layers=2),
    "bidir_bf": dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True,
                     batch_first=True, nonlinearity="relu"),
    "uni_bf": dict(input_size=3, hidden_size=5, batch_first=True, bias=False),
}


def client_binary():
    """$RNNSERVE_CLIENT_BIN (ctest sets it); AssertionError when it is not an executable, so a
    missing CLI fails the test instead of skipping it."""
    path = os.environ.get("RNNSERVE_CLIENT_BIN", "")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"$RNNSERVE_CLIENT_BIN={path!r} is not an executable (ctest sets it)")
    return path


def torch_run(rnn, x, h0=None):
    with torch.inference_mode():
        xt = torch.from_numpy(x.astype(np.float32))
        out, h_n = rnn(xt) if h0 is None else rnn(xt, torch.from_numpy(h0))
    return out.numpy(), h_n.numpy()


def from_json(tensor):
    return np.asarray(tensor["values"], dtype=np.float32).reshape(tensor["shape"])


class CliTorchTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.client = client_binary()
        cls.work = tempfile.mkdtemp(prefix="rnnserve-cli-torch-")
        cls.modules = {name: testkit.make_rnn(1000 + seed, **kwargs)
                       for seed, (name, kwargs) in enumerate(sorted(MODELS.items()))}
        repository = testkit.export_repository(os.path.join(cls.work, "models"), cls.modules)
        cls.server = testkit.ServerProcess(model_repository=repository, metrics=False).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    def cli(self, *args):
        done = subprocess.run([self.client, "--server", self.server.target, *args],
                              capture_output=True, text=True, timeout=CLI_TIMEOUT)
        self.assertEqual(done.returncode, 0,
                         f"rnnserve-client {' '.join(args)}: {done.stderr}\n"
                         f"rnnserve stderr:\n{self.server.stderr_tail()}")
        return done.stdout

    def path(self, name):
        return os.path.join(self.work, name)

    def assertClose(self, actual, expected, what):
        self.assertEqual(actual.shape, expected.shape, what)
        diff = float(np.abs(actual.astype(np.float64) - expected).max()) if actual.size else 0.0
        self.assertLessEqual(diff, ATOL, f"{what}: max |cli - torch| = {diff}")

    def inputs(self, name, steps, batch, seed, dtype=np.float32):
        """Random input in the model's layout (batch None: unbatched) and a random h_0."""
        cfg = MODELS[name]
        rows = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
        rng = np.random.default_rng(seed)
        c, h = cfg["input_size"], cfg["hidden_size"]
        if batch is None:
            x, h0 = rng.standard_normal((steps, c)), rng.standard_normal((rows, h))
        else:
            x = rng.standard_normal((batch, steps, c) if cfg.get("batch_first") else
                                    (steps, batch, c))
            h0 = rng.standard_normal((rows, batch, h))
        return x.astype(dtype), h0.astype(np.float32)

    def test_forward_matches_torch(self):
        for name in sorted(MODELS):
            for encoding in ("--raw", "--noraw"):
                for batch in (3, None):
                    with self.subTest(model=name, encoding=encoding, batch=batch):
                        # float64 input: the CLI converts it to float32, as torch does here.
                        x, h0 = self.inputs(name, 6, batch, seed=len(name),
                                            dtype=np.float64 if batch else np.float32)
                        np.save(self.path("x.npy"), x)
                        np.save(self.path("h0.npy"), h0)
                        out = self.cli(encoding, "--json", "forward", name,
                                       "--input", self.path("x.npy"),
                                       "--h0", self.path("h0.npy"),
                                       "--save_output", self.path("y.npy"),
                                       "--save_h_n", self.path("h_n.npy"))
                        want_out, want_h_n = torch_run(self.modules[name], x, h0)
                        printed = json.loads(out)
                        self.assertClose(from_json(printed["output"]), want_out, "printed output")
                        self.assertClose(from_json(printed["h_n"]), want_h_n, "printed h_n")
                        self.assertClose(np.load(self.path("y.npy")), want_out, "saved output")
                        self.assertClose(np.load(self.path("h_n.npy")), want_h_n, "saved h_n")

    def test_chunked_stream_matches_torch(self):
        for name in sorted(MODELS):
            bidirectional = MODELS[name].get("bidirectional", False)
            batch_first = MODELS[name].get("batch_first", False)
            for encoding in ("--raw", "--noraw"):
                for batch in (2, None):
                    with self.subTest(model=name, encoding=encoding, batch=batch):
                        x, h0 = self.inputs(name, 7, batch, seed=7 + len(name))
                        np.save(self.path("x.npy"), x)
                        np.save(self.path("h0.npy"), h0)
                        out = self.cli(encoding, "--json", "stream", name, "--chunk_steps", "3",
                                       "--end", "--input", self.path("x.npy"),
                                       "--h0", self.path("h0.npy"),
                                       "--save_output", self.path("y.npy"),
                                       "--save_h_n", self.path("h_n.npy"))
                        want_out, want_h_n = torch_run(self.modules[name], x, h0)
                        lines = [json.loads(line) for line in out.splitlines()]
                        self.assertEqual([line["steps"] for line in lines], [3, 3, 1])
                        self.assertEqual([line["ended"] for line in lines], [False, False, True])
                        axis = 1 if batch_first and batch else 0
                        for line in lines:
                            if bidirectional and not line["ended"]:
                                self.assertIsNone(line["output"])  # answers at --end
                                continue
                            first = 0 if bidirectional else line["first_step"]
                            count = 7 if bidirectional else line["steps"]
                            want = np.take(want_out, range(first, first + count), axis=axis)
                            self.assertClose(from_json(line["output"]), want,
                                             f"chunk {line['chunk']} output")
                        self.assertClose(from_json(lines[-1]["h_n"]), want_h_n, "final h_n")
                        self.assertClose(np.load(self.path("y.npy")), want_out, "saved output")
                        self.assertClose(np.load(self.path("h_n.npy")), want_h_n, "saved h_n")

    def test_help_lists_the_subcommands_and_flags(self):
        done = subprocess.run([self.client, "--help"], capture_output=True, text=True,
                              timeout=CLI_TIMEOUT)
        text = done.stdout + done.stderr
        for expected in ("session close ID", "--chunk_steps", "--save_output", "--max_chunks"):
            self.assertIn(expected, text)


if __name__ == "__main__":
    unittest.main()
