"""A user's own PyTorch model, served end to end as the README's "Serving your model" shows it:
its train.py (read from README.md: an nn.Module around an nn.LSTM with an nn.Linear head,
torch.save()d) runs in the user's folder; the README's one export command (tools/export_pytorch.py
--module-file model.pt --rnn rnn --head head), run from that folder, writes the model folder; the
real rnnserve binary serves it; rnnserve-client streams an .npy through it and the Python client
streams and forwards the same input. Every output must equal the user's model(x), computed live
by torch, within 1e-5 * max(1, |torch|).

A second model takes token ids (nn.Embedding -> nn.GRU -> a Sequential head): the CLI streams an
int64 .npy (sent as Tensor.ids) and the Python client sends integer arrays; `info` shows the
pipeline and the input kind.

    RNNSERVE_BIN=build/server/rnnserve RNNSERVE_CLIENT_BIN=build/client/rnnserve-client \\
    /usr/bin/python3 tests/pykit/run_tests.py test_user_model   (from tests/client)

Every wait is bounded; nothing sleeps in place of synchronisation.
"""

import asyncio
import importlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
import torch

import rnnserve_testkit as testkit

TOLERANCE = 1e-5
TIMEOUT = testkit.scaled(120.0)
EXPORT = os.path.join(testkit.ROOT, "tools", "export_pytorch.py")
PYTHON = "/usr/bin/python3"  # Debian's, with torch, as the README says

torch.set_num_threads(1)  # the CPUs are shared with the server under test



def readme_example():
    """(train.py's text, the export command's arguments after the script, the model's name)
    from README.md's "Serving your model": its first python block and the first
    tools/export_pytorch.py command of its first sh block."""
    with open(os.path.join(testkit.ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Serving your model"):]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    line = next(l for l in commands.splitlines() if "tools/export_pytorch.py" in l)
    args = shlex.split(line)
    args = args[args.index("tools/export_pytorch.py") + 1:]
    out = args[args.index("--out") + 1]
    return script, args, os.path.basename(out)


# Token ids in: an Embedding first.
TOKENS_SCRIPT = '''
import torch
from torch import nn

class TokenTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.rnn = nn.GRU(16, 24)
        self.head = nn.Sequential(nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 6))

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)

torch.manual_seed(1)
model = TokenTagger().eval()
torch.save(model, "tokens.pt")
'''


def client_binary():
    path = os.environ.get("RNNSERVE_CLIENT_BIN", "")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"$RNNSERVE_CLIENT_BIN={path!r} is not an executable (ctest sets it)")
    return path


def run(args, cwd, what):
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode != 0:
        raise AssertionError(f"{what} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class UserModelTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.client = client_binary()
        cls.home = tempfile.mkdtemp(prefix="rnnserve-user-model-")
        cls.server = None
        try:
            train, export_args, cls.name = readme_example()
            for name, script in (("train.py", train), ("tokens.py", TOKENS_SCRIPT)):
                with open(os.path.join(cls.home, name), "w") as f:
                    f.write(script)
                run([PYTHON, name], cls.home, name)
            # The one command, from the user's folder (the classes live in its scripts).
            run([PYTHON, EXPORT] + export_args, cls.home, "README's export command")
            run([PYTHON, EXPORT, "--module-file", "tokens.pt", "--input-layer", "embed",
                 "--rnn", "rnn", "--head", "head", "--out", "models/tokens"], cls.home,
                "export of tokens.pt")
            cls.server = testkit.ServerProcess(
                model_repository=os.path.join(cls.home, "models"), metrics=False).start()
            # The user's own modules, as torch.load gives them back (their classes found in
            # the user's scripts, as the exporter finds them; tools/ is on the kit's path).
            import export_pytorch
            cwd = os.getcwd()
            os.chdir(cls.home)
            try:
                cls.user = export_pytorch.load_module_file("model.pt").eval()
                cls.tokens = export_pytorch.load_module_file("tokens.pt").eval()
            finally:
                os.chdir(cwd)
        except BaseException:
            if cls.server is not None:
                cls.server.stop()
            shutil.rmtree(cls.home, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.home, ignore_errors=True)

    def cli(self, *args):
        return run([self.client, "--server", self.server.target, *args], self.home,
                   f"rnnserve-client {' '.join(args)}\nrnnserve stderr:\n"
                   f"{self.server.stderr_tail()}")

    def assertClose(self, actual, expected, what):
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        self.assertEqual(actual.shape, expected.shape, what)
        scaled = float((np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))).max())
        self.assertLessEqual(scaled, TOLERANCE,
                             f"{what}: max |served - model(x)| / max(1, |model(x)|) = {scaled}")

    def test_readme_model_streams_from_the_cli_and_python(self):
        rnn, head = self.user.rnn, self.user.head
        self.assertIsInstance(rnn, torch.nn.LSTM)
        self.assertTrue(rnn.batch_first)
        x = np.random.default_rng(7).standard_normal((3, 11, rnn.input_size)).astype(np.float32)
        with torch.inference_mode():
            want = self.user(torch.from_numpy(x)).numpy()
            _, (want_h, want_c) = rnn(torch.from_numpy(x))
        self.assertEqual(want.shape, (3, 11, head.out_features))
        np.save(os.path.join(self.home, "x.npy"), x)

        info = self.cli("info", self.name)
        self.assertIn(f"pipeline    {rnn!r} -> {head!r}\n", info)
        self.assertIn(f"input       features (N, T, C) [-1, -1, {rnn.input_size}]\n", info)
        self.assertIn(f"output      [-1, -1, {head.out_features}]\n", info)
        self.assertIn("  head.weight ", info)
        self.assertIn("  rnn.weight_ih_l0 ", info)

        for encoding in ("--raw", "--noraw"):
            with self.subTest(encoding=encoding):
                out = os.path.join(self.home, f"y{encoding}.npy")
                self.cli(encoding, "stream", self.name, "--input", "x.npy", "--chunk_steps", "4",
                         "--end", "--save_output", out)
                self.assertClose(np.load(out), want, f"rnnserve-client stream {encoding}")

        rc = testkit.client_module()
        with rc.RnnServeClient(self.server.target) as client:
            info = client.get_model(self.name)
            self.assertEqual(info.input_kind, "features")
            self.assertEqual(list(info.output_shape), [-1, -1, head.out_features])
            with client.open_stream() as stream:
                parts = [stream.start(self.name, chunk=x[:, :5]).output,
                         stream.send(x[:, 5:6]).output, stream.send(x[:, 6:], end=True).output]
            self.assertClose(np.concatenate(parts, axis=1), want, "Python stream")
            out, (h_n, c_n) = client.forward(self.name, x)
            self.assertClose(out, want, "Python forward")
            self.assertClose(h_n, want_h.numpy(), "Python forward h_n (the core's)")
            self.assertClose(c_n, want_c.numpy(), "Python forward c_n (the core's)")

    def test_token_ids_stream_from_an_int64_npy_and_integer_arrays(self):
        tokens = np.random.default_rng(8).integers(0, 50, size=(9, 2))  # (T, N), int64
        with torch.inference_mode():
            want = self.tokens(torch.from_numpy(tokens)).numpy()
        np.save(os.path.join(self.home, "tokens.npy"), tokens)

        info = self.cli("info", "tokens")
        self.assertIn("pipeline    Embedding(50, 16) -> GRU(16, 24) -> "
                      "Linear(in_features=24, out_features=24, bias=True) -> ReLU() -> "
                      "Linear(in_features=24, out_features=6, bias=True)\n", info)
        self.assertIn("input       ids (T, N) [-1, -1]\n", info)
        models = self.cli("models")
        self.assertIn("input ids (T, N) [-1, -1]", models)

        out = os.path.join(self.home, "tokens_out.npy")
        self.cli("stream", "tokens", "--input", "tokens.npy", "--chunk_steps", "2", "--end",
                 "--save_output", out)
        self.assertClose(np.load(out), want, "rnnserve-client stream of an int64 .npy")
        np.save(os.path.join(self.home, "tokens32.npy"), tokens.astype(np.int32))
        forward = self.cli("--json", "forward", "tokens", "--input", "tokens32.npy",
                           "--save_output", out)
        self.assertIn('"output"', forward)
        self.assertClose(np.load(out), want, "rnnserve-client forward of an int32 .npy")

        rc = testkit.client_module()
        with rc.RnnServeClient(self.server.target) as client:
            self.assertEqual(client.get_model("tokens").input_kind, "ids")
            with client.open_stream() as stream:
                parts = [stream.start("tokens", chunk=tokens[:4]).output,
                         stream.send(ids=tokens[4:].tolist(), end=True).output]
            self.assertClose(np.concatenate(parts, axis=0), want, "Python stream of ids")
            out, h_n = client.forward("tokens", ids=tokens)
            self.assertClose(out, want, "Python forward(ids=)")
            with self.assertRaises(rc.RnnServeError) as refused:
                client.forward("tokens", tokens.astype(np.float32))
            self.assertIn("ids", refused.exception.message)
            with self.assertRaises(TypeError):  # ids= must hold integers
                client.forward("tokens", ids=tokens + 0.5)
            with self.assertRaises(ValueError):  # one input, not two
                client.forward("tokens", tokens, ids=tokens)

        async def asyncio_client():
            aio = importlib.import_module(rc.__name__ + ".aio")
            async with aio.AsyncRnnServeClient(self.server.target) as client:
                out, _ = await client.forward("tokens", ids=tokens)
                async with client.open_stream() as stream:
                    first = await stream.start("tokens", ids=tokens[:3])
                    rest = await stream.send(tokens[3:], end=True)
                return out, np.concatenate([first.output, rest.output], axis=0)

        out, streamed = asyncio.run(asyncio_client())
        self.assertClose(out, want, "asyncio forward(ids=)")
        self.assertClose(streamed, want, "asyncio stream of ids")


if __name__ == "__main__":
    unittest.main()
