"""Every refusal with its gRPC code and a message naming what was expected and what came,
and no harm done: a refused chunk leaves its session as it was, the stream goes on, and a
long-lived bystander session (advanced before every test) still matches torch at the end.

ErrorsTest shares one server with default flags; LimitsTest starts a server per test with
the flag under test (--max_sessions, --max_state_bytes, --evict_idle_after,
--max_message_bytes); NonFiniteAllowedTest runs with --allow_non_finite. Draining is in
test_drain, malformed messages in test_faults.
"""

import re
import unittest
import zlib

import grpc
import numpy as np

import harness as h

MODELS = {
    "m": dict(input_size=3, hidden_size=4, num_layers=2),  # state: 2 rows x N x 4 floats
    "bf": dict(input_size=2, hidden_size=3, batch_first=True, nonlinearity="relu"),
}
Code = grpc.StatusCode
# Model m's state memory per session of N=1, as the server counts it (two buffers).
M_STATE_BYTES = 2 * (2 * 1 * 4) * 4
# Session memory besides state: its id (and principal, "" here) plus a fixed overhead
# (kSessionOverheadBytes in core/serving/serving_options.h).
SESSION_OVERHEAD_BYTES = 512


def id_bytes(session_id):
    return len(session_id) + SESSION_OVERHEAD_BYTES


def code_of(response):
    return h.grpc_code_name(response.error_code)


class ServerCase(h.ServerTestCase):
    """The models above, and helpers to check refusals and the sessions around them."""

    MODELS = MODELS
    SEED = 20

    def expect_error(self, response, code, *substrings):
        """A response refused with `code` whose message contains every substring."""
        self.assertEqual(code_of(response), code.name,
                         f"expected {code.name}, got: {response.error_message!r}")
        for s in substrings:
            self.assertIn(s, response.error_message)
        self.assertTrue(h.is_empty(response.output), "a refused request has no output")
        return response

    def start_session(self, stream, session_id, name="m", batch=2, steps=3, seed=0):
        """Starts a session with one chunk; returns its ReferenceSession."""
        ref = h.ReferenceSession(self.rnns[name], seed=seed, batch=batch)
        x = ref.random_chunk(steps)
        out, h_n = ref.feed(x)
        r = stream.call(session_id=session_id, model=name, start=True, input=x)
        h.check_chunk(self, r, out, h_n, f"{session_id} first chunk")
        return ref

    def advance(self, stream, session_id, ref, end=False, what="", **fields):
        """One more valid chunk of the session, checked against torch."""
        x = ref.random_chunk()
        out, h_n = ref.feed(x)
        r = stream.call(session_id=session_id, input=x, end=end, **fields)
        h.check_chunk(self, r, out, h_n, what or f"{session_id} chunk")
        self.assertEqual(r.steps_seen, ref.steps, what)
        return r

    def assert_unchanged(self, stub, stream, session_id, ref):
        """The session's state is exactly torch's, and it goes on correctly."""
        info = self.get_session(stub, session_id)
        self.assertEqual(info.steps_seen, ref.steps, f"{session_id} steps_seen")
        h.assert_close(h.from_tensor(info.h_n), ref.h, f"{session_id} state")
        self.advance(stream, session_id, ref, what=f"{session_id} after the error")

    def assert_serves_correct_session(self, server, name="bf"):
        """A new session on a new stream matches torch chunk by chunk."""
        with server.stream(server.channel()) as stream:
            ref = self.start_session(stream, "", name=name, batch=2, seed=99)
            self.advance(stream, stream.last_session_id, ref, end=True)
            self.assertEqual(stream.close(), Code.OK)


class ErrorsTest(ServerCase):
    SERVER_NAME = "errors"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One stream carries the bystander and every refused request: it must go on.
        cls.stream = cls.server.stream()
        cls.bystander = None

    @classmethod
    def tearDownClass(cls):
        cls.stream.close()
        super().tearDownClass()

    def setUp(self):
        # The bystander advances before every test, so errors land between its chunks.
        cls = type(self)
        if cls.bystander is None:
            cls.bystander = self.start_session(self.stream, "bystander", name="m", seed=1)
        else:
            self.advance(self.stream, "bystander", cls.bystander, what="bystander")

    def victim(self, session_id, name="m", batch=2):
        return self.start_session(self.stream, session_id, name=name, batch=batch,
                                  seed=zlib.crc32(session_id.encode()) % 1000)

    def expect_forward_error(self, code, substrings, model, x, h0=None):
        """Forward(model, x, h0) fails with `code`; x may be a ready Tensor message."""
        request = h.pb2().ForwardRequest(model=model)
        request.input.CopyFrom(x if isinstance(x, h.pb2().Tensor) else h.to_tensor(x))
        if h0 is not None:
            request.h_0.CopyFrom(h.to_tensor(h0))
        self.assert_rpc_error(code, substrings, self.stub.Forward, request)

    # -- unknown names

    def test_unknown_model(self):
        x = np.zeros((2, 1, 3), np.float32)
        r = self.stream.call(session_id="unknown-model", model="nope", start=True, input=x)
        self.expect_error(r, Code.NOT_FOUND, "unknown model 'nope'")
        self.assert_rpc_error(Code.NOT_FOUND, ["unknown session 'unknown-model'"],
                              self.get_session, self.stub, "unknown-model")
        self.expect_forward_error(Code.NOT_FOUND, ["unknown model 'nope'"], "nope", x)
        self.assert_rpc_error(Code.NOT_FOUND, ["unknown model 'nope'"], self.stub.GetModel,
                              h.pb2().GetModelRequest(model="nope"))

    def test_unknown_session(self):
        x = np.zeros((2, 1, 3), np.float32)
        r = self.stream.call(session_id="ghost", input=x)
        self.expect_error(r, Code.NOT_FOUND, "unknown session 'ghost'")
        self.assertEqual(r.session_id, "ghost")
        self.assert_rpc_error(Code.NOT_FOUND, ["unknown session 'ghost'"],
                              self.get_session, self.stub, "ghost")
        self.assert_rpc_error(Code.NOT_FOUND, ["unknown session 'ghost'"],
                              self.stub.CloseSession,
                              h.pb2().CloseSessionRequest(session_id="ghost"))

    def test_missing_model_or_session_id(self):
        x = np.zeros((2, 1, 3), np.float32)
        self.expect_error(self.stream.call(session_id="no-model", start=True, input=x),
                          Code.INVALID_ARGUMENT, "start=true needs `model`")
        self.expect_error(self.stream.call(input=x), Code.INVALID_ARGUMENT,
                          "`session_id` is empty")

    def test_other_model_on_a_later_chunk(self):
        ref = self.victim("model-switch")
        r = self.stream.call(session_id="model-switch", model="bf",
                             input=np.zeros((2, 2, 3), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "runs model 'm'", "not 'bf'")
        self.assert_unchanged(self.stub, self.stream, "model-switch", ref)

    # -- shapes and encodings

    def test_wrong_input_size(self):
        ref = self.victim("input-size")
        r = self.stream.call(session_id="input-size", input=np.zeros((2, 2, 5), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "input_size", "Expected 3, got 5")
        self.assert_unchanged(self.stub, self.stream, "input-size", ref)
        self.expect_forward_error(Code.INVALID_ARGUMENT, ["Expected 3, got 5"], "m",
                                  np.zeros((2, 2, 5), np.float32))

    def test_wrong_rank(self):
        ref = self.victim("rank")
        for shape, rank in (((1, 2, 2, 3), "4D"), ((3,), "1D")):
            with self.subTest(shape=shape):
                r = self.stream.call(session_id="rank", input=np.zeros(shape, np.float32))
                self.expect_error(r, Code.INVALID_ARGUMENT, "2D or 3D", f"got {rank}")
                self.expect_forward_error(Code.INVALID_ARGUMENT, ["2D or 3D", f"got {rank}"],
                                          "m", np.zeros(shape, np.float32))
        self.assert_unchanged(self.stub, self.stream, "rank", ref)

    def test_zero_dim_input_is_refused(self):
        # Forward refuses a scalar input ("got 0D"); a streamed chunk must be refused alike,
        # not acknowledged as an applied chunk with no output.
        ref = self.victim("zero-dim")
        scalar = h.pb2().Tensor(values=[0.5])  # shape () holds one value
        self.expect_forward_error(Code.INVALID_ARGUMENT, ["got 0D"], "m", scalar)
        r = self.stream.call(session_id="zero-dim", input=scalar, chunk_index=1)
        info = self.get_session(self.stub, "zero-dim")
        self.expect_error(r, Code.INVALID_ARGUMENT, "2D or 3D", "got 0D")
        self.assertEqual(info.next_chunk_index, 1, "the refused chunk was counted")
        self.assert_unchanged(self.stub, self.stream, "zero-dim", ref)

    def test_batch_size_change_within_a_session(self):
        ref = self.victim("batch-change", batch=2)
        r = self.stream.call(session_id="batch-change", input=np.zeros((2, 3, 3), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "N=2", "N=3", "(2, 3, 3)")
        self.assert_unchanged(self.stub, self.stream, "batch-change", ref)
        ref = self.victim("batch-change-bf", name="bf", batch=2)
        r = self.stream.call(session_id="batch-change-bf", input=np.zeros((1, 4, 2), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "N=2", "N=1")
        self.assert_unchanged(self.stub, self.stream, "batch-change-bf", ref)

    def test_switch_between_batched_and_unbatched(self):
        ref = self.victim("batched", batch=2)
        r = self.stream.call(session_id="batched", input=np.zeros((4, 3), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "batched 3-D", "(4, 3)")
        self.assert_unchanged(self.stub, self.stream, "batched", ref)
        ref = self.victim("unbatched", batch=None)
        r = self.stream.call(session_id="unbatched", input=np.zeros((4, 1, 3), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "unbatched 2-D", "(4, 1, 3)")
        self.assert_unchanged(self.stub, self.stream, "unbatched", ref)

    def test_data_length_differs_from_shape(self):
        for encoding, tensor, counts in (
                ("values", h.pb2().Tensor(shape=[2, 2, 3], values=[0.5] * 11),
                 ["`values` holds 11 values", "needs 12"]),
                ("raw", h.pb2().Tensor(shape=[2, 2, 3], raw=b"\0" * 44),
                 ["`raw` holds 44 bytes", "needs 48"])):
            with self.subTest(encoding=encoding):
                session_id = f"{encoding}-length"
                ref = self.victim(session_id)
                r = self.stream.call(session_id=session_id, input=tensor)
                self.expect_error(r, Code.INVALID_ARGUMENT, "(2, 2, 3)", *counts)
                self.assert_unchanged(self.stub, self.stream, session_id, ref)
                self.expect_forward_error(Code.INVALID_ARGUMENT, counts, "m", tensor)

    def test_both_values_and_raw(self):
        ref = self.victim("both-encodings")
        tensor = h.pb2().Tensor(shape=[1, 2, 3], values=[0.5] * 6, raw=b"\0" * 24)
        r = self.stream.call(session_id="both-encodings", input=tensor)
        self.expect_error(r, Code.INVALID_ARGUMENT, "exactly one of `values`, `raw` and `ids`",
                          "got `values` and `raw`")
        self.assert_unchanged(self.stub, self.stream, "both-encodings", ref)
        self.expect_forward_error(Code.INVALID_ARGUMENT, ["got `values` and `raw`"], "m", tensor)

    def test_non_finite_input(self):
        ref = self.victim("non-finite")
        for value, text in ((np.nan, "(nan)"), (np.inf, "(inf)"), (-np.inf, "(-inf)")):
            with self.subTest(value=value):
                x = np.zeros((2, 2, 3), np.float32)
                x.flat[7] = value
                for encoding in ("values", "raw"):
                    r = self.stream.call(encoding, session_id="non-finite", input=x)
                    self.expect_error(r, Code.INVALID_ARGUMENT, "non-finite", text,
                                      "flat index 7", "--allow_non_finite")
                self.expect_forward_error(Code.INVALID_ARGUMENT, [text, "flat index 7"], "m", x)
        self.assert_unchanged(self.stub, self.stream, "non-finite", ref)
        h0 = np.zeros((2, 1, 4), np.float32)
        h0[1, 0, 2] = np.nan
        r = self.stream.call(session_id="non-finite-h0", model="m", start=True, h_0=h0)
        self.expect_error(r, Code.INVALID_ARGUMENT, "h_0", "(nan)", "flat index 6")

    # -- session rules

    def test_start_with_an_existing_id(self):
        ref = self.victim("taken")
        r = self.stream.call(session_id="taken", model="m", start=True,
                             input=np.zeros((1, 2, 3), np.float32))
        self.expect_error(r, Code.ALREADY_EXISTS, "session 'taken'", "already live")
        self.assert_unchanged(self.stub, self.stream, "taken", ref)

    def test_h0_on_a_request_without_start(self):
        ref = self.victim("late-h0")
        r = self.stream.call(session_id="late-h0", input=np.zeros((1, 2, 3), np.float32),
                             h_0=np.zeros((2, 2, 4), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "h_0 is only accepted with start=true")
        self.assert_unchanged(self.stub, self.stream, "late-h0", ref)

    def test_h0_of_the_wrong_shape_at_start(self):
        r = self.stream.call(session_id="bad-h0", model="m", start=True,
                             h_0=np.zeros((2, 2, 5), np.float32))
        self.expect_error(r, Code.INVALID_ARGUMENT, "(2, N, 4)", "(2, 2, 5)")
        self.assert_rpc_error(Code.NOT_FOUND, ["unknown session 'bad-h0'"],
                              self.get_session, self.stub, "bad-h0")
        self.expect_forward_error(Code.INVALID_ARGUMENT, ["(2, 3, 4)", "[2, 2, 5]"], "m",
                                  np.zeros((2, 3, 3), np.float32),
                                  h0=np.zeros((2, 2, 5), np.float32))

    def test_refused_start_leaves_no_session(self):
        # A start request whose chunk is refused has no effect: no session remains to block
        # a corrected retry with the same id.
        x = np.ones((2, 1, 3), np.float32)
        out, h_n = h.torch_forward(self.rnns["m"], x)
        for what, fields, code, text in (
                ("wrong input_size", dict(input=np.zeros((2, 1, 5), np.float32)),
                 Code.INVALID_ARGUMENT, "Expected 3, got 5"),
                ("NaN input", dict(input=np.full((2, 1, 3), np.nan, np.float32)),
                 Code.INVALID_ARGUMENT, "non-finite"),
                # (A start's chunk_index is no gap: it begins the numbering, test_memory.py.)
                ("bad idempotency_key", dict(input=x, idempotency_key="tab\there"),
                 Code.INVALID_ARGUMENT, "idempotency_key must be 1 to 128"),
                ("h_0 and input disagree on N", dict(input=x, h_0=np.zeros((2, 2, 4),
                                                                            np.float32)),
                 Code.INVALID_ARGUMENT, "N=2")):
            with self.subTest(what):
                session_id = f"half-started-{what.replace(' ', '-')}"
                r = self.stream.call(session_id=session_id, model="m", start=True, **fields)
                self.expect_error(r, code, text)
                self.assert_rpc_error(Code.NOT_FOUND, [session_id], self.get_session,
                                      self.stub, session_id)
                r = self.stream.call(session_id=session_id, model="m", start=True, input=x,
                                     end=True)
                h.check_chunk(self, r, out, h_n, "retried start")

    def test_zz_bystander_session_is_intact(self):
        # Runs last (unittest sorts by name): the bystander lived through every test above.
        ref = type(self).bystander
        info = self.get_session(self.stub, "bystander")
        self.assertEqual(info.steps_seen, ref.steps)
        h.assert_close(h.from_tensor(info.h_n), ref.h, "bystander state")
        self.advance(self.stream, "bystander", ref, end=True, what="bystander's last chunk")
        type(self).bystander = None
        self.assert_serves_correct_session(self.server)


class NonFiniteAllowedTest(ServerCase):
    SERVER_NAME = "nonfinite"
    SERVER_FLAGS = ["--allow_non_finite"]

    def test_nan_and_inf_accepted_with_allow_non_finite(self):
        rnn = self.rnns["m"]
        x = np.random.default_rng(5).standard_normal((3, 2, 3)).astype(np.float32)
        x[0, 0, 1] = np.inf
        x[1, 1, 2] = np.nan
        h0 = np.zeros((2, 2, 4), np.float32)
        h0[0, 1, 0] = -np.inf
        out, h_n = h.torch_forward(rnn, x, h0)
        self.assertTrue(np.isnan(out).any() and np.isfinite(out).any())
        with self.server.stream() as stream:
            for encoding in ("values", "raw"):
                r = stream.call(encoding, model="m", start=True, input=x, h_0=h0, end=True)
                h.check_chunk(self, r, out, h_n, f"non-finite chunk ({encoding})")
            self.assertEqual(stream.close(), Code.OK)
        reply = self.stub.Forward(h.pb2().ForwardRequest(model="m", input=h.to_tensor(x),
                                                         h_0=h.to_tensor(h0)),
                                  timeout=h.CALL_TIMEOUT)
        h.assert_close(h.from_tensor(reply.output), out, "Forward output")
        h.assert_close(h.from_tensor(reply.h_n), h_n, "Forward h_n")


class LimitsTest(ServerCase):
    """A server per test, with the flag under test."""

    SERVER_NAME = "limits"
    START_SERVER = False

    def serve(self, *flags, name, metrics=False):
        server = h.ServerProcess(model_repository=self.repo, name=name, flags=list(flags),
                                 metrics=metrics)
        server.start()
        self.addCleanup(server.stop)
        return server

    def test_too_many_sessions(self):
        server = self.serve("--max_sessions=3", name="max-sessions")
        stub = server.stub()
        with server.stream() as stream:
            refs = {sid: self.start_session(stream, sid, batch=1, seed=i)
                    for i, sid in enumerate(("one", "two", "three"))}
            for fields in (dict(input=np.zeros((1, 1, 3), np.float32)), {}):
                r = stream.call(session_id="four", model="m", start=True, **fields)
                self.expect_error(r, Code.RESOURCE_EXHAUSTED, "too many sessions",
                                  "3 are live", "limit is 3", "--max_sessions")
            stub.CloseSession(h.pb2().CloseSessionRequest(session_id="two"),
                              timeout=h.CALL_TIMEOUT)
            refs["four"] = self.start_session(stream, "four", batch=1, seed=4)
            for sid in ("one", "three", "four"):
                self.assert_unchanged(stub, stream, sid, refs[sid])
            self.assertEqual(stream.close(), Code.OK)
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_state_memory_over_budget(self):
        # Two sessions' state, and the ids of three.
        budget = 2 * M_STATE_BYTES + 3 * id_bytes("a")
        server = self.serve(f"--max_state_bytes={budget}", "--evict_idle_after=1h",
                            name="max-state")
        stub = server.stub()
        with server.stream() as stream:
            a = self.start_session(stream, "a", batch=1, seed=1)
            b = self.start_session(stream, "b", batch=1, seed=2)
            # A third session's first chunk would need state memory: refused, nothing evicted.
            h.check_ok(stream.call(session_id="c", model="m", start=True))
            c = h.ReferenceSession(self.rnns["m"], seed=3, batch=1)
            r = stream.call(session_id="c", input=np.zeros((2, 1, 3), np.float32))
            self.expect_error(r, Code.RESOURCE_EXHAUSTED, "session memory is full",
                              f"{budget} of {budget} bytes", f"needs {M_STATE_BYTES} more",
                              "its state", "--max_state_bytes")
            # So is a state import (its ids do not fit either).
            r = stream.call(session_id="d", model="m", start=True,
                            h_0=np.zeros((2, 1, 4), np.float32))
            self.expect_error(r, Code.RESOURCE_EXHAUSTED, "session memory is full",
                              f"needs {id_bytes('d')} more")
            self.assert_unchanged(stub, stream, "a", a)
            self.assert_unchanged(stub, stream, "b", b)
            # Closing a session frees its memory for c.
            stub.CloseSession(h.pb2().CloseSessionRequest(session_id="a"),
                              timeout=h.CALL_TIMEOUT)
            self.advance(stream, "c", c, what="c once memory is free")
            self.assert_unchanged(stub, stream, "b", b)
            for sid in ("b", "c"):
                stub.CloseSession(h.pb2().CloseSessionRequest(session_id=sid),
                                  timeout=h.CALL_TIMEOUT)
            self.assertEqual(stream.close(), Code.OK)
        self.assert_serves_correct_session(server)
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_idle_sessions_are_evicted_for_new_ones(self):
        budget = 2 * M_STATE_BYTES + sum(id_bytes(i) for i in ("old", "newer", "newest"))
        server = self.serve(f"--max_state_bytes={budget}", "--evict_idle_after=0s",
                            name="evict", metrics=True)
        stub = server.stub()
        with server.stream() as stream:
            self.start_session(stream, "old", batch=1, seed=1)
            newer = self.start_session(stream, "newer", batch=1, seed=2)
            newest = self.start_session(stream, "newest", batch=1, seed=3)  # evicts "old"
            r = stream.call(session_id="old", input=np.zeros((1, 1, 3), np.float32))
            self.expect_error(r, Code.NOT_FOUND, "session 'old'", "evicted")
            self.assert_rpc_error(Code.NOT_FOUND, ["session 'old'", "evicted"],
                                  self.get_session, stub, "old")
            self.assert_unchanged(stub, stream, "newer", newer)
            self.assert_unchanged(stub, stream, "newest", newest)
            self.assertEqual(stream.close(), Code.OK)
        metrics = h.parse_metrics(server.scrape())
        self.assertEqual(h.metric(metrics, "rnnserve_sessions_ended_total", reason="evicted"), 1)
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_oversized_message(self):
        limit = 4096
        server = self.serve(f"--max_message_bytes={limit}", name="max-message")
        stub = server.stub()
        with server.stream() as stream:
            ref = self.start_session(stream, "small", batch=1, seed=1)
            big = np.ones((700, 1, 3), np.float32)  # 8400 bytes of raw input
            doomed = server.stream(server.channel())
            with self.assertRaises(grpc.RpcError) as caught:
                doomed.call("raw", session_id="small", input=big)
            self.assertEqual(caught.exception.code(), Code.RESOURCE_EXHAUSTED)
            self.assert_size_message(caught.exception.details(), limit)
            self.assertEqual(doomed.status, Code.RESOURCE_EXHAUSTED)
            error = self.assert_rpc_error(
                Code.RESOURCE_EXHAUSTED, [], stub.Forward,
                h.pb2().ForwardRequest(model="m", input=h.to_tensor(big, "raw")))
            self.assert_size_message(error.details(), limit)
            # The oversized chunk was never applied; the other stream goes on.
            self.assert_unchanged(stub, stream, "small", ref)
            self.assertEqual(stream.close(), Code.OK)
        self.assert_serves_correct_session(server)
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def assert_size_message(self, details, limit):
        match = re.search(r"\((\d+) vs\. (\d+)\)", details)
        self.assertIsNotNone(match, f"no sizes in {details!r}")
        self.assertGreater(int(match.group(1)), limit, details)
        self.assertEqual(int(match.group(2)), limit, details)


if __name__ == "__main__":
    unittest.main()
