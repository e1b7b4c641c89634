"""rnnserve-client (the CLI binary) against a real rnnserve process, numbers compared with torch.

Seeded torch.nn.RNNs (unidirectional, bidirectional, batch_first) are exported into a model
repository and served by $RNNSERVE_BIN on a port it picks (--port=0, read from its listening
line). The CLI at $RNNSERVE_CLIENT_BIN runs `forward` and `stream` with --json, --input x.npy,
--h0 and --save_output/--save_h_n, in both tensor encodings; its printed JSON and its saved .npy
files must match torch's output and h_n, computed live here, within 1e-5. An LSTM with proj_size
and a GRU are served too: --c0/--save_c_n for forward and a chunked stream, `info`'s cell and
shapes, and the server's refusal of --c0 for models without cell state.

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

# name -> torch.nn.GRU / torch.nn.LSTM arguments (testkit.make_rnn's module=...)
CELL_MODELS = {
    "lstm_proj": dict(module="LSTM", input_size=4, hidden_size=6, proj_size=3, num_layers=2),
    "gru": dict(module="GRU", input_size=3, hidden_size=5, num_layers=2, batch_first=True),
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
        cls.modules.update({name: testkit.make_rnn(2000 + seed, **kwargs)
                            for seed, (name, kwargs) in enumerate(sorted(CELL_MODELS.items()))})
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

    def cell_inputs(self, name, steps, batch, seed):
        """Random x (time-major), h_0 (L*D, N, H_out) and, for an LSTM, c_0 (L*D, N, H)."""
        rnn = self.modules[name]
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, steps, rnn.input_size) if rnn.batch_first else
                                (steps, batch, rnn.input_size)).astype(np.float32)
        h_shape, c_shape = testkit.state_shapes(rnn, batch)
        h0 = rng.standard_normal(h_shape).astype(np.float32)
        c0 = rng.standard_normal(c_shape).astype(np.float32) if c_shape else None
        return x, h0, c0

    def save_inputs(self, x, h0, c0):
        np.save(self.path("x.npy"), x)
        np.save(self.path("h0.npy"), h0)
        if c0 is not None:
            np.save(self.path("c0.npy"), c0)

    def test_lstm_proj_forward_with_h0_and_c0(self):
        rnn = self.modules["lstm_proj"]
        for encoding in ("--raw", "--noraw"):
            with self.subTest(encoding=encoding):
                x, h0, c0 = self.cell_inputs("lstm_proj", 6, 3, seed=31)
                self.save_inputs(x, h0, c0)
                out = self.cli(encoding, "--json", "forward", "lstm_proj",
                               "--input", self.path("x.npy"), "--h0", self.path("h0.npy"),
                               "--c0", self.path("c0.npy"), "--save_output", self.path("y.npy"),
                               "--save_h_n", self.path("h_n.npy"),
                               "--save_c_n", self.path("c_n.npy"))
                want_out, want_h_n, want_c_n = testkit.torch_forward_state(rnn, x, h0, c0)
                self.assertEqual(want_h_n.shape, (2, 3, 3))  # H_out = proj_size
                self.assertEqual(want_c_n.shape, (2, 3, 6))
                printed = json.loads(out)
                self.assertClose(from_json(printed["output"]), want_out, "printed output")
                self.assertClose(from_json(printed["h_n"]), want_h_n, "printed h_n")
                self.assertClose(from_json(printed["c_n"]), want_c_n, "printed c_n")
                self.assertClose(np.load(self.path("y.npy")), want_out, "saved output")
                self.assertClose(np.load(self.path("h_n.npy")), want_h_n, "saved h_n")
                self.assertClose(np.load(self.path("c_n.npy")), want_c_n, "saved c_n")

    def test_lstm_proj_chunked_stream_with_h0_and_c0(self):
        rnn = self.modules["lstm_proj"]
        for encoding in ("--raw", "--noraw"):
            with self.subTest(encoding=encoding):
                x, h0, c0 = self.cell_inputs("lstm_proj", 7, 2, seed=37)
                self.save_inputs(x, h0, c0)
                out = self.cli(encoding, "--json", "stream", "lstm_proj", "--chunk_steps", "3",
                               "--input", self.path("x.npy"), "--h0", self.path("h0.npy"),
                               "--c0", self.path("c0.npy"), "--save_output", self.path("y.npy"),
                               "--save_h_n", self.path("h_n.npy"),
                               "--save_c_n", self.path("c_n.npy"))
                want_out, want_h_n, want_c_n = testkit.torch_forward_state(rnn, x, h0, c0)
                lines = [json.loads(line) for line in out.splitlines()]
                self.assertEqual([line["steps"] for line in lines], [3, 3, 1])
                for line in lines:
                    first, count = line["first_step"], line["steps"]
                    _, h_k, c_k = testkit.torch_forward_state(rnn, x[:first + count], h0, c0)
                    what = f"chunk {line['chunk']}"
                    self.assertClose(from_json(line["output"]), want_out[first:first + count],
                                     f"{what} output")
                    self.assertClose(from_json(line["h_n"]), h_k, f"{what} h_n")
                    self.assertClose(from_json(line["c_n"]), c_k, f"{what} c_n")
                self.assertClose(np.load(self.path("y.npy")), want_out, "saved output")
                self.assertClose(np.load(self.path("h_n.npy")), want_h_n, "saved h_n")
                self.assertClose(np.load(self.path("c_n.npy")), want_c_n, "saved c_n")
                # The session stays open: `session close` saves the same final state.
                session_id = lines[0]["session_id"]
                self.cli("session", "close", session_id, "--save_h_n", self.path("h_s.npy"),
                         "--save_c_n", self.path("c_s.npy"))
                self.assertClose(np.load(self.path("h_s.npy")), want_h_n, "closed session h_n")
                self.assertClose(np.load(self.path("c_s.npy")), want_c_n, "closed session c_n")

    def test_gru_forward_and_stream(self):
        rnn = self.modules["gru"]
        x, h0, _ = self.cell_inputs("gru", 5, 2, seed=41)
        self.save_inputs(x, h0, None)
        want_out, want_h_n, _ = testkit.torch_forward_state(rnn, x, h0)
        printed = json.loads(self.cli("--json", "forward", "gru", "--input", self.path("x.npy"),
                                      "--h0", self.path("h0.npy")))
        self.assertClose(from_json(printed["output"]), want_out, "forward output")
        self.assertClose(from_json(printed["h_n"]), want_h_n, "forward h_n")
        self.assertNotIn("c_n", printed)
        self.cli("stream", "gru", "--chunk_steps", "2", "--end", "--input", self.path("x.npy"),
                 "--h0", self.path("h0.npy"), "--save_output", self.path("y.npy"),
                 "--save_h_n", self.path("h_n.npy"))
        self.assertClose(np.load(self.path("y.npy")), want_out, "streamed output")
        self.assertClose(np.load(self.path("h_n.npy")), want_h_n, "streamed h_n")

    def test_c0_refused_by_models_without_cell_state(self):
        for name, module, rows_batch_hidden in (("gru", "GRU(3, 5", (2, 1, 5)),
                                                ("uni", "RNN(5, 7", (2, 1, 7))):
            for command in ("forward", "stream"):
                with self.subTest(model=name, command=command):
                    x = np.zeros((1, 2, self.modules[name].input_size), np.float32)
                    np.save(self.path("x.npy"), x)
                    np.save(self.path("c0.npy"), np.zeros(rows_batch_hidden, np.float32))
                    done = subprocess.run(
                        [self.client, "--server", self.server.target, command, name,
                         "--input", self.path("x.npy"), "--c0", self.path("c0.npy")],
                        capture_output=True, text=True, timeout=CLI_TIMEOUT)
                    self.assertEqual(done.returncode, 1, done.stderr)
                    self.assertIn("rnnserve-client: INVALID_ARGUMENT: ", done.stderr)
                    self.assertIn("has no cell state: only an LSTM takes c_0", done.stderr)
                    self.assertIn(module, done.stderr)  # the message names the module

    def test_info_shows_module_and_state_shapes(self):
        text = self.cli("info", "lstm_proj")
        self.assertIn("cell        LSTM (proj_size 3)\n", text)
        self.assertIn("state       (L*D, N, H_out) [2, -1, 3]\n", text)
        self.assertIn("cell state  (L*D, N, H) [2, -1, 6]\n", text)
        self.assertRegex(text, r"module      LSTM\(4, 6, proj_size=3, num_layers=2")
        text = self.cli("info", "gru")
        self.assertIn("cell        GRU\n", text)
        self.assertIn("state       (L*D, N, H) [2, -1, 5]\n", text)
        self.assertIn("cell state  none", text)
        printed = json.loads(self.cli("--json", "info", "lstm_proj"))
        self.assertEqual(printed["config"]["module"], "LSTM")
        self.assertEqual(printed["cell_state_shape"], [2, -1, 6])

    def test_help_lists_the_subcommands_and_flags(self):
        done = subprocess.run([self.client, "--help"], capture_output=True, text=True,
                              timeout=CLI_TIMEOUT)
        text = done.stdout + done.stderr
        for expected in ("session close ID", "--chunk_steps", "--save_output", "--max_chunks",
                         "--c0", "--save_c_n", "--save_h_n", "cell-state"):
            self.assertIn(expected, text)


if __name__ == "__main__":
    unittest.main()
