"""`buf curl` (JSON over gRPC, schema from the server's reflection) against a real rnnserve,
numbers compared with torch: the README's RNN Forward, an LSTM with proj_size Forward with h0 and
c0 in JSON (hN and cN back), ListModels/GetModel showing module and cellStateShape, and a
bidirectional Stream of several chunks through one `buf curl` call (--data @- with one JSON
message per request, as docs/client.md shows). A user's model taking token ids (Embedding ->
LSTM -> Linear head, exported with export_module) gets its input as JSON `ids`, in Forward and
in a Stream, and GetModel shows its pipeline and inputKind.

buf is tools/node/node_modules/.bin/buf (scripts/install-deps.sh installs it); a missing buf
fails the test (rnnserve_testkit.require_tool), it never skips.

    RNNSERVE_BIN=build/server/rnnserve /usr/bin/python3 tests/pykit/run_tests.py test_buf_curl
    (from tests/client)

Every wait is bounded; nothing sleeps in place of synchronisation.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
import torch

import rnnserve_testkit as testkit

ATOL = 1e-5
BUF_TIMEOUT = testkit.scaled(60.0)

torch.set_num_threads(1)  # the CPUs are shared with the server under test

MODELS = {
    # The README's example model: the demo's shape, RNN(100, 10, num_layers=2).
    "demo": dict(input_size=100, hidden_size=10, num_layers=2),
    "lstm_proj": dict(module="LSTM", input_size=3, hidden_size=5, proj_size=2, num_layers=2),
    "gru": dict(module="GRU", input_size=3, hidden_size=4),
}


class TokenModel(torch.nn.Module):
    """A user's model taking token ids: the head applied to every step of the LSTM's output."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 4)
        self.rnn = torch.nn.LSTM(4, 6)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, tokens, hx=None):
        out, state = self.rnn(self.embed(tokens), hx)
        return self.head(out), state


def buf_binary():
    return testkit.require_tool(os.path.join(testkit.ROOT, "tools", "node", "node_modules",
                                             ".bin", "buf"),
                                "bash scripts/install-deps.sh (npm installs buf under tools/node)")


def tensor_json(a):
    """A numpy array as the proto's JSON Tensor (shape and repeated float values)."""
    return {"shape": list(a.shape), "values": [float(v) for v in a.astype(np.float32).ravel()]}


def from_json(tensor):
    """A JSON Tensor (int64 shape printed as strings) as a numpy array."""
    shape = [int(d) for d in tensor["shape"]]
    return np.asarray(tensor.get("values", []), dtype=np.float32).reshape(shape)


def json_documents(text):
    """The concatenated JSON documents buf prints (one per response, pretty-printed)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        doc, end = decoder.raw_decode(text, at)
        docs.append(doc)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return docs


class BufCurlTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.buf = buf_binary()
        cls.work = tempfile.mkdtemp(prefix="rnnserve-buf-curl-")
        cls.modules = {name: testkit.make_rnn(3000 + seed, **kwargs)
                       for seed, (name, kwargs) in enumerate(sorted(MODELS.items()))}
        repository = testkit.export_repository(os.path.join(cls.work, "models"), cls.modules)
        import export_pytorch  # tools/, on the kit's path
        torch.manual_seed(3100)
        cls.lm = TokenModel().eval()
        export_pytorch.export_module(cls.lm, os.path.join(repository, "lm"), rnn="rnn",
                                     head="head", input_layer="embed")
        cls.server = testkit.ServerProcess(model_repository=repository, metrics=False).start()
        cls.url = f"http://{cls.server.target}/rnnserve.v1.RnnService"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.work, ignore_errors=True)

    def curl(self, method, data=None, stdin=None):
        """buf curl's printed responses (parsed) for one call; data: one request as a dict,
        stdin: several requests (a client-streaming or bidi method) read with --data @-."""
        args = [self.buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
        args += ["--data", "@-" if stdin is not None else json.dumps(data)]
        done = subprocess.run(args + [f"{self.url}/{method}"], input=stdin, capture_output=True,
                              text=True, timeout=BUF_TIMEOUT)
        self.assertEqual(done.returncode, 0,
                         f"buf curl {method}: {done.stderr}\n"
                         f"rnnserve stderr:\n{self.server.stderr_tail()}")
        return json_documents(done.stdout)

    def assertClose(self, actual, expected, what):
        self.assertEqual(actual.shape, expected.shape, what)
        diff = float(np.abs(actual.astype(np.float64) - expected).max()) if actual.size else 0.0
        self.assertLessEqual(diff, ATOL, f"{what}: max |buf curl - torch| = {diff}")

    def test_readme_rnn_forward(self):
        # README: input (T=1, N=1, C=100) as JSON values; the answer's output and hN.
        x = np.random.default_rng(1).standard_normal((1, 1, 100)).astype(np.float32)
        [response] = self.curl("Forward", {"model": "demo", "input": tensor_json(x)})
        out, h_n, _ = testkit.torch_forward_state(self.modules["demo"], x)
        self.assertClose(from_json(response["output"]), out, "output")
        self.assertClose(from_json(response["hN"]), h_n, "hN")
        self.assertNotIn("cN", response)

    def test_lstm_proj_forward_with_h0_and_c0(self):
        rnn = self.modules["lstm_proj"]
        rng = np.random.default_rng(2)
        x = rng.standard_normal((4, 2, 3)).astype(np.float32)
        h_shape, c_shape = testkit.state_shapes(rnn, 2)
        h0 = rng.standard_normal(h_shape).astype(np.float32)
        c0 = rng.standard_normal(c_shape).astype(np.float32)
        [response] = self.curl("Forward", {"model": "lstm_proj", "input": tensor_json(x),
                                           "h0": tensor_json(h0), "c0": tensor_json(c0)})
        out, h_n, c_n = testkit.torch_forward_state(rnn, x, h0, c0)
        self.assertEqual(h_n.shape, (2, 2, 2))  # H_out = proj_size
        self.assertEqual(c_n.shape, (2, 2, 5))
        self.assertClose(from_json(response["output"]), out, "output")
        self.assertClose(from_json(response["hN"]), h_n, "hN")
        self.assertClose(from_json(response["cN"]), c_n, "cN")

    def test_list_and_get_model_show_module_and_cell_state_shape(self):
        [listed] = self.curl("ListModels", {})
        by_name = {m["name"]: m for m in listed["models"]}
        self.assertEqual(sorted(by_name), sorted(list(MODELS) + ["lm"]))
        self.assertEqual(by_name["lstm_proj"]["config"]["module"], "LSTM")
        self.assertEqual(by_name["gru"]["config"]["module"], "GRU")
        [info] = self.curl("GetModel", {"model": "lstm_proj"})
        self.assertEqual(info["config"]["module"], "LSTM")
        self.assertEqual(info["config"]["projSize"], "2")  # int64: a JSON string
        self.assertTrue(info["module"].startswith("LSTM(3, 5, proj_size=2, num_layers=2"),
                        info["module"])
        self.assertEqual([int(d) for d in info["stateShape"]], [2, -1, 2])
        self.assertEqual([int(d) for d in info["cellStateShape"]], [2, -1, 5])
        [gru] = self.curl("GetModel", {"model": "gru"})
        self.assertNotIn("cellStateShape", gru)  # empty repeated field: no cell state

    def test_lstm_stream_of_several_chunks_in_one_call(self):
        # One bidirectional Stream call: start with h0 and c0 and a first chunk, two more
        # chunks, then end; each response matches torch on the timesteps so far.
        rnn = self.modules["lstm_proj"]
        rng = np.random.default_rng(3)
        steps = (2, 1, 3)
        x = rng.standard_normal((sum(steps), 1, 3)).astype(np.float32)
        h_shape, c_shape = testkit.state_shapes(rnn, 1)
        h0 = rng.standard_normal(h_shape).astype(np.float32)
        c0 = rng.standard_normal(c_shape).astype(np.float32)
        requests, at = [], 0
        for k, n in enumerate(steps):
            request = {"sessionId": "buf-lstm", "requestId": str(k + 1),
                       "input": tensor_json(x[at:at + n]), "chunkIndex": str(k)}
            if k == 0:
                request.update(model="lstm_proj", start=True, h0=tensor_json(h0),
                               c0=tensor_json(c0))
            requests.append(request)
            at += n
        requests.append({"sessionId": "buf-lstm", "requestId": "4", "end": True})
        responses = self.curl("Stream", stdin="\n".join(json.dumps(r) for r in requests) + "\n")
        self.assertEqual([r["requestId"] for r in responses], ["1", "2", "3", "4"])
        for r in responses:
            self.assertNotIn("errorCode", r, r.get("errorMessage"))
        at = 0
        for k, n in enumerate(steps):
            out, h_n, c_n = testkit.torch_forward_state(rnn, x[:at + n], h0, c0)
            what = f"chunk {k}"
            self.assertEqual(int(responses[k]["stepsSeen"]), at + n, what)
            self.assertClose(from_json(responses[k]["output"]), out[at:at + n], f"{what}: output")
            self.assertClose(from_json(responses[k]["hN"]), h_n, f"{what}: hN")
            self.assertClose(from_json(responses[k]["cN"]), c_n, f"{what}: cN")
            at += n
        self.assertTrue(responses[3]["ended"])
        self.assertClose(from_json(responses[3]["cN"]), c_n, "cN at end")

    def curl_error(self, method, data):
        """(exit status, stderr) of a buf curl call expected to fail."""
        args = [self.buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                "--data", json.dumps(data), f"{self.url}/{method}"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=BUF_TIMEOUT)
        return done.returncode, done.stderr

    def test_token_ids_forward_stream_and_model_info(self):
        [info] = self.curl("GetModel", {"model": "lm"})
        self.assertEqual(info["pipeline"], "Embedding(20, 4) -> LSTM(4, 6) -> "
                         "Linear(in_features=6, out_features=3, bias=True)")
        self.assertEqual(info["inputKind"], "ids")
        self.assertEqual([int(d) for d in info["inputShape"]], [-1, -1])
        self.assertEqual([int(d) for d in info["outputShape"]], [-1, -1, 3])
        self.assertEqual([layer["stage"] for layer in info["layers"]],
                         ["input_layer", "core", "head"])

        tokens = np.random.default_rng(4).integers(0, 20, size=(5, 2))  # (T, N)
        with torch.inference_mode():
            out, (h_n, c_n) = self.lm(torch.from_numpy(tokens))
        # int64 in JSON: numbers or strings, both accepted.
        [response] = self.curl("Forward", {"model": "lm", "input": {
            "shape": [5, 2], "ids": [str(t) if i % 2 else int(t)
                                     for i, t in enumerate(tokens.ravel())]}})
        self.assertClose(from_json(response["output"]), out.numpy(), "output")
        self.assertClose(from_json(response["hN"]), h_n.numpy(), "hN")
        self.assertClose(from_json(response["cN"]), c_n.numpy(), "cN")

        requests = [{"sessionId": "buf-lm", "requestId": "1", "model": "lm", "start": True,
                     "input": {"shape": [2, 2], "ids": tokens[:2].ravel().tolist()}},
                    {"sessionId": "buf-lm", "requestId": "2",
                     "input": {"shape": [2, 2], "ids": [20, 0, 0, 0]}},  # out of range
                    {"sessionId": "buf-lm", "requestId": "3", "end": True,
                     "input": {"shape": [3, 2], "ids": tokens[2:].ravel().tolist()}}]
        responses = self.curl("Stream", stdin="\n".join(json.dumps(r) for r in requests) + "\n")
        self.assertEqual([r["requestId"] for r in responses], ["1", "2", "3"])
        self.assertEqual(responses[1]["errorCode"], 3, responses[1])  # INVALID_ARGUMENT
        self.assertIn("20", responses[1]["errorMessage"])
        for k in (0, 2):
            self.assertNotIn("errorCode", responses[k], responses[k].get("errorMessage"))
        streamed = np.concatenate([from_json(responses[0]["output"]),
                                   from_json(responses[2]["output"])])
        self.assertClose(streamed, out.numpy(), "streamed output (the refused chunk left the "
                         "session as it was)")
        self.assertClose(from_json(responses[2]["cN"]), c_n.numpy(), "streamed cN")

        # Floats sent to an ids model: refused, naming the field to use.
        code, stderr = self.curl_error("Forward", {"model": "lm", "input": {
            "shape": [1, 1], "values": [1.0]}})
        self.assertNotEqual(code, 0)
        self.assertIn("ids", stderr)


if __name__ == "__main__":
    unittest.main()
