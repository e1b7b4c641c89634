"""The Python client (client/python/rnnserve_client.py) against the real server, with torch as
the oracle, computed live: random torch.nn.RNNs (uni- and bidirectional, time-major and
batch_first, tanh and relu, with and without h_0) exported with tools/export_pytorch.py and
served by rnnserve. RnnServeClient.forward and a chunked StreamChannel session, in raw and
values encodings, must match torch within 1e-5; so must example_stream.py's own check, which
runs as a user would run it.
"""

import os
import subprocess
import sys
import unittest

import numpy as np

import harness as h

rc = h.kit.client_module()

EXAMPLE = os.path.join(h.ROOT, "client", "python", "example_stream.py")


class PythonClientTest(h.ServerTestCase):
    SERVER_NAME = "python-client"
    SEED = 40
    MODELS = {
        "uni": dict(input_size=5, hidden_size=7, num_layers=2),
        "uni_bf_relu": dict(input_size=3, hidden_size=6, nonlinearity="relu", batch_first=True),
        "bi": dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True),
        "bi_bf": dict(input_size=6, hidden_size=4, batch_first=True, bidirectional=True),
    }

    def client(self, raw):
        client = rc.RnnServeClient(self.server.target, raw=raw, timeout=h.CALL_TIMEOUT)
        self.addCleanup(client.close)
        return client

    def cases(self):
        for name, rnn in sorted(self.rnns.items()):
            for raw in (True, False):
                for with_h0 in (False, True):
                    yield name, rnn, raw, with_h0

    def test_forward_matches_torch(self):
        rng = np.random.default_rng(1)
        for name, rnn, raw, with_h0 in self.cases():
            with self.subTest(model=name, raw=raw, h0=with_h0):
                x = h.random_input(rng, rnn, steps=6, batch=3)
                h0 = h.random_state(rng, rnn, batch=3) if with_h0 else None
                out, h_n = self.client(raw).forward(name, x, h0)
                want_out, want_h = h.torch_forward(rnn, x, h0)
                h.assert_close(out, want_out, f"{name} forward output")
                h.assert_close(h_n, want_h, f"{name} forward h_n")

    def test_chunked_stream_matches_torch(self):
        rng = np.random.default_rng(2)
        for name, rnn, raw, with_h0 in self.cases():
            with self.subTest(model=name, raw=raw, h0=with_h0):
                axis = h.time_axis(rnn)
                x = h.random_input(rng, rnn, steps=9, batch=2)
                h0 = h.random_state(rng, rnn, batch=2) if with_h0 else None
                chunks = h.split_time(x, h.random_split(rng, 9, 3), axis)
                want_out, want_h = h.torch_forward(rnn, x, h0)
                outputs, steps = [], 0
                with self.client(raw).open_stream() as stream:
                    for i, chunk in enumerate(chunks):
                        last = i == len(chunks) - 1
                        if i == 0:
                            r = stream.start(name, h0=h0, chunk=chunk, chunk_index=0)
                        else:
                            r = stream.send(chunk, end=last, chunk_index=i)
                        steps += chunk.shape[axis]
                        self.assertEqual(r.steps_seen, steps)
                        self.assertEqual(r.ended, last)
                        self.assertEqual(r.chunk_index, i)
                        prefix = np.concatenate(chunks[:i + 1], axis=axis)
                        if rnn.bidirectional and not last:
                            self.assertIsNone(r.output, f"{name}: output before end")
                        else:
                            outputs.append(r.output)
                        if not rnn.bidirectional or last:
                            h.assert_close(r.h_n, h.torch_forward(rnn, prefix, h0)[1],
                                           f"{name} chunk {i} h_n")
                h.assert_close(np.concatenate(outputs, axis=axis), want_out,
                               f"{name} streamed output")
                h.assert_close(r.h_n, want_h, f"{name} streamed h_n")

    def test_session_state_export_matches_torch(self):
        rng = np.random.default_rng(3)
        rnn = self.rnns["uni"]
        client = self.client(True)
        x = h.random_input(rng, rnn, steps=5, batch=2)
        with client.open_stream() as stream:
            first = stream.start("uni", chunk=x[:2])
            stream.send(x[2:])
            state = client.get_session(first.session_id)
            h.assert_close(state["h_n"], h.torch_forward(rnn, x)[1], "get_session h_n")
            closed = client.close_session(first.session_id)
            h.assert_close(closed["h_n"], h.torch_forward(rnn, x)[1], "close_session h_n")
        with self.assertRaises(rc.RnnServeError) as caught:
            client.get_session(first.session_id)
        self.assertEqual(caught.exception.code, h.grpc.StatusCode.NOT_FOUND)

    def test_example_stream_checks_against_torch(self):
        for name in ("uni", "bi_bf"):
            with self.subTest(model=name):
                result = subprocess.run(
                    [sys.executable, EXAMPLE, "--server", self.server.target, "--model", name,
                     "--model-dir", os.path.join(self.repo, name), "--steps", "11",
                     "--chunk-steps", "4"],
                    capture_output=True, text=True, timeout=h.CALL_TIMEOUT * 2)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                self.assertIn("OK: streamed result matches torch", result.stdout)


if __name__ == "__main__":
    unittest.main()
