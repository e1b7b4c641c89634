"""The client libraries resume by themselves, against a real rnnserve (torch is the oracle):

- a stream whose connection is cut (server alive, session kept) is reopened and the unanswered
  chunk resent with its chunk_index (Python blocking and asyncio, and the C++ library with
  pipelined chunks);
- a session its server lost (closed behind the client's back, as a replaced replica loses it)
  is started again from the last h_n with the next chunk_index and the chunk resent, the caller
  seeing steps_seen and outputs of an uninterrupted run (also with omit_state, and with a
  server-assigned id, which is kept);
- an LSTM session is restarted from its last h_n and c_n (Python, asyncio and C++);
- a bidirectional session is replayed from its start;
- with resume off, a broken stream raises once (not again on close);
- a response with `draining` moves the next request to a new call, nothing sent twice (against
  a stand-in server in this process that drains as the API contract says, until the real
  server's drain lands).

Replicas, SIGKILL, scale-out and SIGTERM: tests/deploy/test_replica_faults.py.

    RNNSERVE_BIN=build/server/rnnserve RNNSERVE_RESUME_DRIVER=build/tests/client/resume_driver \\
    /usr/bin/python3 tests/pykit/run_tests.py test_resume   (from tests/client)
"""

import asyncio
import os
import threading
from concurrent import futures
import shutil
import tempfile
import unittest

import grpc
import numpy as np

import rnnserve_testkit as kit
from resume_kit import CppSession, CutProxy

rc = kit.client_module()
from rnnserve_client import aio  # noqa: E402  (after client_module() set the stubs)

ATOL = 1e-5
UNI = dict(input_size=4, hidden_size=6, num_layers=2)
BI = dict(input_size=3, hidden_size=5, bidirectional=True)
LSTM = dict(module="LSTM", input_size=4, hidden_size=6, proj_size=3, num_layers=2)


class DrainingServicer(rc.pb2_grpc.RnnServiceServicer):
    """A stand-in rnnserve that drains as the contract says: the first call answers the
    request it read with draining = true, then ends with UNAVAILABLE; later calls serve.
    Outputs are 2 * input; records (call, chunk_index) of every request read."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = 0
        self.seen = []
        self.steps = {}

    def GetModel(self, request, context):
        return rc.pb2.ModelInfo(name=request.model)

    def Stream(self, requests, context):
        with self.lock:
            self.calls += 1
            call = self.calls
        for req in requests:
            x = rc.from_tensor(req.input)
            with self.lock:
                self.seen.append((call, req.chunk_index))
                self.steps[req.session_id] = self.steps.get(req.session_id, 0) + len(x)
                steps = self.steps[req.session_id]
            yield rc.pb2.StreamResponse(
                request_id=req.request_id, session_id=req.session_id,
                chunk_index=req.chunk_index, steps_seen=steps, output=rc.to_tensor(2 * x),
                h_n=rc.to_tensor(x[-1:]), draining=call == 1)
            if call == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "draining: this server shuts down")


class DrainNoticeTest(unittest.TestCase):
    def setUp(self):
        self.servicer = DrainingServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        rc.pb2_grpc.add_RnnServiceServicer_to_server(self.servicer, self.server)
        self.target = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()
        self.addCleanup(self.server.stop, None)
        self.tmp = tempfile.mkdtemp(prefix="rnnserve-drain-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.chunks = [np.full((t, 1, 2), i + 1, np.float32) for i, t in enumerate((2, 1, 3))]

    def test_python_moves_to_a_new_call_after_draining(self):
        with rc.RnnServeClient(self.target) as client, client.open_stream() as stream:
            results = [stream.start("m", session_id="d", chunk=self.chunks[0])]
            results += [stream.send(c) for c in self.chunks[1:]]
            self.assertEqual(stream.resumes, 0)  # no failure: a planned switch
        self.assertEqual([r.chunk_index for r in results], [0, 1, 2])
        self.assertEqual([r.steps_seen for r in results], [2, 3, 6])
        for r, c in zip(results, self.chunks):
            np.testing.assert_array_equal(r.output, 2 * c)
        self.assertEqual(self.servicer.seen, [(1, 0), (2, 1), (2, 2)])  # nothing sent twice

    def test_cpp_moves_to_a_new_call_after_draining(self):
        session = CppSession(self.target, "m", "d", os.path.join(self.tmp, "cpp"), self.chunks)
        self.assertEqual(session.command("send 1"), (1, 2, 0))
        self.assertEqual(session.command("send 2"), (3, 6, 0))
        self.assertIn("OK", session.finish())
        for out, c in zip(session.outputs(3), self.chunks):
            np.testing.assert_array_equal(out, 2 * c)
        self.assertEqual(self.servicer.seen, [(1, 0), (2, 1), (2, 2)])


class ResumeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rnnserve-resume-")
        repo = os.path.join(cls.tmp, "models")
        cls.uni = kit.write_model(os.path.join(repo, "uni"), seed=11, **UNI)
        cls.bi = kit.write_model(os.path.join(repo, "bi"), seed=12, **BI)
        cls.lstm = kit.write_model(os.path.join(repo, "lstm"), seed=13, **LSTM)
        cls.server = kit.ServerProcess(model_repository=repo, name="resume")
        cls.server.start()
        cls.server.wait_serving()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.rng = np.random.default_rng(abs(hash(self.id())) % 2**32)
        self.proxy = CutProxy(self.server.target)
        self.addCleanup(self.proxy.close)

    def chunks(self, rnn, sizes, batch=2):
        return [self.rng.standard_normal((t, batch, rnn.input_size), dtype=np.float32)
                for t in sizes]

    def client(self, target=None, **kwargs):
        client = rc.RnnServeClient(target or self.proxy.target, timeout=30, **kwargs)
        self.addCleanup(client.close)
        return client

    def assert_torch(self, rnn, chunks, outputs, h_n=None, h0=None):
        want_out, want_h = kit.torch_forward(rnn, np.concatenate(chunks), h0)
        np.testing.assert_allclose(np.concatenate(outputs), want_out, atol=ATOL)
        if h_n is not None:
            np.testing.assert_allclose(h_n, want_h, atol=ATOL)

    def lose(self, session_id):
        """The server forgets the session, as a replaced replica would."""
        self.client(self.server.target).close_session(session_id)

    def test_python_resends_across_cut_connections(self):
        chunks = self.chunks(self.uni, [3, 2, 4, 1, 5])
        outputs, steps = [], 0
        with self.client().open_stream() as stream:
            for i, chunk in enumerate(chunks):
                if i:
                    self.proxy.cut()
                r = (stream.start("uni", session_id="cut-py", chunk=chunk) if i == 0
                     else stream.send(chunk))
                steps += len(chunk)
                self.assertEqual((r.steps_seen, r.chunk_index, r.duplicate), (steps, i, False))
                outputs.append(r.output)
            self.assertGreaterEqual(stream.resumes, len(chunks) - 1)
        self.assert_torch(self.uni, chunks, outputs, r.h_n)

    def test_python_async_resends_across_cut_connections(self):
        chunks = self.chunks(self.uni, [2, 3, 3, 1])

        async def run():
            async with aio.AsyncRnnServeClient(self.proxy.target) as client:
                async with client.open_stream() as stream:
                    outputs = []
                    for i, chunk in enumerate(chunks):
                        if i:
                            self.proxy.cut()
                        r = await (stream.start("uni", session_id="cut-aio", chunk=chunk)
                                   if i == 0 else stream.send(chunk))
                        outputs.append(r.output)
                    self.assertGreaterEqual(stream.resumes, len(chunks) - 1)
                    self.assertEqual(r.steps_seen, 9)
                    return outputs, r.h_n
        outputs, h_n = asyncio.run(run())
        self.assert_torch(self.uni, chunks, outputs, h_n)

    def test_python_restarts_a_lost_session_from_its_last_state(self):
        # Needs `start` with chunk_index (the resumed session keeps its numbering).
        chunks = self.chunks(self.uni, [3, 2, 4, 2])
        outputs = []
        with self.client().open_stream() as stream:
            for i, chunk in enumerate(chunks):
                if i == 2:
                    self.lose("lost-py")
                r = (stream.start("uni", session_id="lost-py", chunk=chunk, omit_state=True)
                     if i == 0 else stream.send(chunk, omit_state=True))
                self.assertIsNone(r.h_n)  # omitted for the caller, kept by the library
                self.assertEqual(r.chunk_index, i)
                outputs.append(r.output)
            self.assertEqual(r.steps_seen, 11)
            self.assertEqual(stream.resumes, 1)
            state = self.client().get_session("lost-py")
            self.assertEqual(state["next_chunk_index"], 4)
        self.assert_torch(self.uni, chunks, outputs, state["h_n"])

    def test_python_restarts_a_session_lost_before_its_first_chunk(self):
        # Server-assigned id, initial state h0: the restart carries h0 and the same id.
        h0 = self.rng.standard_normal((2, 2, 6), dtype=np.float32)
        chunks = self.chunks(self.uni, [4, 3])
        with self.client().open_stream() as stream:
            first = stream.start("uni", h0=h0)
            self.lose(first.session_id)
            r0 = stream.send(chunks[0])
            r1 = stream.send(chunks[1])
            self.assertEqual((r0.session_id, r1.session_id), (first.session_id,) * 2)
            self.assertEqual((r0.chunk_index, r1.chunk_index, r1.steps_seen), (0, 1, 7))
            self.assertEqual(stream.resumes, 1)
        self.assert_torch(self.uni, chunks, [r0.output, r1.output], r1.h_n, h0=h0)

    def test_python_replays_a_lost_bidirectional_session(self):
        chunks = self.chunks(self.bi, [3, 2, 4])
        with self.client().open_stream() as stream:
            stream.start("bi", session_id="lost-bi", chunk=chunks[0])
            stream.send(chunks[1])
            self.lose("lost-bi")
            r = stream.send(chunks[2], end=True)
            self.assertTrue(r.ended)
            self.assertEqual(r.steps_seen, 9)
            self.assertEqual(stream.resumes, 1)
        self.assert_torch(self.bi, chunks, [r.output], r.h_n)

    def test_python_restarts_a_lost_lstm_session_with_h_n_and_c_n(self):
        # An LSTM's state is (h, c): a restart from h_n alone would continue from c = 0.
        h0 = self.rng.standard_normal((2, 2, 3), dtype=np.float32)
        c0 = self.rng.standard_normal((2, 2, 6), dtype=np.float32)
        chunks = self.chunks(self.lstm, [3, 2, 4])
        with self.client().open_stream() as stream:
            r0 = stream.start("lstm", session_id="lost-lstm", h0=h0, c0=c0, chunk=chunks[0],
                              omit_state=True)
            self.assertIsNone(r0.c_n)  # omitted for the caller, kept by the library
            self.lose("lost-lstm")
            r1 = stream.send(chunks[1])
            self.lose("lost-lstm")
            r2 = stream.send(chunks[2])
            self.assertEqual(stream.resumes, 2)
        want_out, want_h, want_c = kit.torch_forward_state(self.lstm, np.concatenate(chunks),
                                                           h0, c0)
        np.testing.assert_allclose(np.concatenate([r0.output, r1.output, r2.output]), want_out,
                                   atol=ATOL)
        np.testing.assert_allclose(r2.h_n, want_h, atol=ATOL)
        np.testing.assert_allclose(r2.c_n, want_c, atol=ATOL)
        # forward() returns torch's LSTM shape: (output, (h_n, c_n)).
        out, (h_n, c_n) = self.client().forward("lstm", np.concatenate(chunks), h0, c0)
        np.testing.assert_allclose(out, want_out, atol=ATOL)
        np.testing.assert_allclose(c_n, want_c, atol=ATOL)
        state = self.client(self.server.target).get_session("lost-lstm")
        np.testing.assert_allclose(state["c_n"], want_c, atol=ATOL)

    def test_asyncio_restarts_a_lost_lstm_session_with_c_n(self):
        chunks = self.chunks(self.lstm, [2, 3])

        async def run():
            async with aio.AsyncRnnServeClient(self.server.target) as client:
                async with client.open_stream() as stream:
                    r0 = await stream.start("lstm", session_id="lost-lstm-aio", chunk=chunks[0])
                    self.lose("lost-lstm-aio")
                    r1 = await stream.send(chunks[1])
                    return [r0.output, r1.output], r1.c_n
        outputs, c_n = asyncio.run(run())
        want_out, _, want_c = kit.torch_forward_state(self.lstm, np.concatenate(chunks))
        np.testing.assert_allclose(np.concatenate(outputs), want_out, atol=ATOL)
        np.testing.assert_allclose(c_n, want_c, atol=ATOL)

    def test_resume_off_raises_the_error_once(self):
        chunks = self.chunks(self.uni, [2, 2])
        stream = self.client(resume=False).open_stream()
        stream.start("uni", session_id="no-resume", chunk=chunks[0])
        self.proxy.cut()
        with self.assertRaises(rc.RnnServeError) as caught:
            stream.send(chunks[1])
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
        stream.close()  # the error was raised once; closing does not raise it again
        # Nothing was resent: the session is where the first chunk left it.
        self.assertEqual(self.client(self.server.target).get_session("no-resume")["steps_seen"], 2)

    def test_cpp_resends_pipelined_chunks_across_cut_connections(self):
        chunks = self.chunks(self.uni, [2, 3, 1, 4, 2, 2, 3])
        session = CppSession(self.proxy.target, "uni", "cut-cpp",
                             os.path.join(self.tmp, "cut-cpp"), chunks)
        self.assertEqual(session.command("send 1"), (1, 2, 0))
        self.proxy.cut()
        answered, steps, resumes = session.command("send 3")
        self.assertEqual((answered, steps), (4, 10))
        self.assertGreaterEqual(resumes, 1)
        self.proxy.cut()
        self.assertEqual(session.command("send 3")[:2], (7, 17))
        self.assertIn("OK", session.finish())
        self.assert_torch(self.uni, chunks, session.outputs(7), session.h_n())

    def test_cpp_restarts_a_lost_session_from_its_last_state(self):
        # Needs `start` with chunk_index (the resumed session keeps its numbering).
        chunks = self.chunks(self.uni, [3, 1, 2, 4])
        session = CppSession(self.proxy.target, "uni", "lost-cpp",
                             os.path.join(self.tmp, "lost-cpp"), chunks)
        self.assertEqual(session.command("send 2")[:2], (2, 4))
        self.lose("lost-cpp")
        self.assertEqual(session.command("send 2"), (4, 10, 1))
        self.assertEqual(session.command("end")[1], 10)
        self.assertIn("OK", session.finish())
        self.assert_torch(self.uni, chunks, session.outputs(4), session.h_n())

    def test_cpp_restarts_a_lost_lstm_session_with_c_n(self):
        chunks = self.chunks(self.lstm, [2, 3, 1])
        session = CppSession(self.proxy.target, "lstm", "lost-cpp-lstm",
                             os.path.join(self.tmp, "lost-cpp-lstm"), chunks)
        self.assertEqual(session.command("send 1")[:2], (1, 2))
        self.lose("lost-cpp-lstm")
        self.assertEqual(session.command("send 2"), (3, 6, 1))
        self.assertIn("OK", session.finish())
        self.assert_torch(self.lstm, chunks, session.outputs(3), session.h_n())


if __name__ == "__main__":
    unittest.main()
