"""Fair compute (issue 11) against the real binary: long chunks and Forward calls computed in
slices of a few timesteps (--slice_steps=4: hundreds of slices each) still equal torch on the
whole sequence, a session's chunks stay in order, and --max_steps_per_request refuses a longer
request before any work with INVALID_ARGUMENT, naming T and the cap. Fairness itself (a short
chunk answered between a huge chunk's slices) is shown by tests/core/serving/chunk_slicing_test.
"""
import subprocess
import unittest

import numpy as np
from grpc import StatusCode as Code

import harness as h

CAP = 600
STARTUP_TIMEOUT = 60


class SlicingTest(h.ServerTestCase):
    MODELS = {
        "uni": dict(input_size=3, hidden_size=8, num_layers=2),
        "first": dict(input_size=3, hidden_size=8, num_layers=2, batch_first=True),
        "bi": dict(input_size=3, hidden_size=8, num_layers=2, bidirectional=True),
    }
    SERVER_NAME = "rnnserve-slicing"
    # One worker, so every other request has to run between slices.
    SERVER_FLAGS = ("--slice_steps=4", f"--max_steps_per_request={CAP}", "--threads=1")

    def test_sliced_chunks_match_torch(self):
        for model, batch in [("uni", 2), ("first", 3), ("uni", None)]:
            rnn = self.rnns[model]
            ref = h.ReferenceSession(rnn, seed=2, batch=batch)
            with self.subTest(model=model, batch=batch), self.server.stream() as stream:
                # Sent back to back: the second waits for the first's 100-odd slices.
                chunks = [ref.random_chunk(CAP), ref.random_chunk(37), ref.random_chunk(CAP)]
                ids = [stream.send("raw", session_id=f"{model}-{batch}", model=model,
                                   start=i == 0, input=x) for i, x in enumerate(chunks)]
                responses, order = stream.recv_many(len(chunks))
                self.assertEqual(order, ids)  # answered in order
                for i, (x, request_id) in enumerate(zip(chunks, ids)):
                    response = responses[request_id]
                    out, h_n = ref.feed(x)
                    h.check_chunk(self, response, out, h_n, f"{model} chunk {i}")
                self.assertEqual(stream.close(), Code.OK)

    def test_sliced_forward_matches_torch(self):
        rng = np.random.default_rng(3)
        for model in ["uni", "first", "bi"]:
            rnn = self.rnns[model]
            x = h.random_input(rng, rnn, CAP, batch=2)
            h0 = h.random_state(rng, rnn, batch=2)
            with self.subTest(model=model):
                reply = self.stub.Forward(
                    h.pb2().ForwardRequest(model=model, input=h.to_tensor(x, "raw"),
                                           h_0=h.to_tensor(h0, "raw")),
                    timeout=h.CALL_TIMEOUT)
                out, h_n = h.torch_forward(rnn, x, h0)
                h.assert_close(h.from_tensor(reply.output), out, f"{model} output")
                h.assert_close(h.from_tensor(reply.h_n), h_n, f"{model} h_n")

    def test_step_cap_refuses_before_work(self):
        rng = np.random.default_rng(4)
        rnn = self.rnns["uni"]
        ref = h.ReferenceSession(rnn, seed=5, batch=1)
        with self.server.stream() as stream:
            first = ref.random_chunk(3)
            h.check_chunk(self, stream.call("raw", session_id="capped", model="uni", start=True,
                                            input=first), *ref.feed(first), "first chunk")
            over = stream.call("raw", session_id="capped", input=ref.random_chunk(CAP + 1))
            self.assertEqual(over.error_code, h.code_number(Code.INVALID_ARGUMENT),
                             over.error_message)
            for text in [f"T={CAP + 1}", f"limit of {CAP}", "--max_steps_per_request",
                         "nothing was computed or applied"]:
                self.assertIn(text, over.error_message)
            # Not applied: the session goes on from its first chunk.
            self.assertEqual(self.get_session(self.stub, "capped").steps_seen, 3)
            nxt = ref.random_chunk(CAP)
            h.check_chunk(self, stream.call("raw", session_id="capped", input=nxt),
                          *ref.feed(nxt), "chunk at the cap")
            self.assertEqual(stream.close(), Code.OK)
        for model in ["uni", "bi"]:
            x = h.random_input(rng, self.rnns[model], CAP + 1, batch=1)
            with self.subTest(model=model):
                self.assert_rpc_error(Code.INVALID_ARGUMENT, [f"T={CAP + 1}", str(CAP)],
                                      self.stub.Forward,
                                      h.pb2().ForwardRequest(model=model,
                                                             input=h.to_tensor(x, "raw")))


class SlicingFlagTest(unittest.TestCase):
    def test_negative_values_are_refused_naming_the_flag(self):
        for flag in ["--slice_steps=-1", "--max_steps_per_request=-1"]:
            with self.subTest(flag=flag):
                proc = subprocess.run(
                    [h.server_binary(), "--host=127.0.0.1", "--port=0", "--metrics_port=-1",
                     flag],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    timeout=h.scaled(STARTUP_TIMEOUT))
                self.assertNotEqual(proc.returncode, 0, f"{flag} was accepted")
                self.assertIn(flag, proc.stderr.decode(errors="replace"))


if __name__ == "__main__":
    unittest.main()
