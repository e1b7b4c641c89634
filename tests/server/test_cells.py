"""GRU and LSTM models (with and without proj_size, bidirectional included) through the real
server against live torch: Forward and Stream in both tensor encodings, random chunk splits
(K chunks == one call), many sessions batched together, duplicate chunk_index, state export
(GetSession h_n + c_n) and import (start with h_0 + c_0) across two server processes,
ModelInfo's module and state shapes, and the refusals: c_0 on a model without cell state,
c_0 without start."""

import threading
import unittest

import numpy as np

import harness as h

MODELS = {
    "gru": dict(module="GRU", input_size=3, hidden_size=5, num_layers=2),
    "gru_bi": dict(module="GRU", input_size=3, hidden_size=4, bidirectional=True,
                   batch_first=True, bias=False),
    "lstm": dict(module="LSTM", input_size=3, hidden_size=5, num_layers=2),
    "lstm_bf": dict(module="LSTM", input_size=2, hidden_size=4, batch_first=True),
    "lstm_proj": dict(module="LSTM", input_size=3, hidden_size=6, proj_size=2, num_layers=2),
    "lstm_proj_bi": dict(module="LSTM", input_size=2, hidden_size=5, proj_size=3,
                         bidirectional=True, num_layers=2, batch_first=True),
    "rnn": dict(input_size=3, hidden_size=4),
}
UNIDIRECTIONAL = ("gru", "lstm", "lstm_bf", "lstm_proj")
INVALID_ARGUMENT = h.code_number(h.grpc.StatusCode.INVALID_ARGUMENT)


def state_floats(rnn, batch):
    """Floats of one session's state (h, then c for an LSTM)."""
    h_shape, c_shape = h.kit.state_shapes(rnn, batch)
    return int(np.prod(h_shape)) + (int(np.prod(c_shape)) if c_shape else 0)


class CellReference:
    """A streamed GRU/LSTM session mirrored in torch: feed() returns (out, h_n, c_n)."""

    def __init__(self, rnn, h0=None, c0=None):
        self.rnn, self.h, self.c = rnn, h0, c0

    def feed(self, x):
        out, self.h, self.c = h.kit.torch_forward_state(self.rnn, x, self.h, self.c)
        return out, self.h, self.c


class CellsTest(h.ServerTestCase):
    MODELS = MODELS
    SEED = 120

    def check_state(self, message, expected_h, expected_c, what):
        h.assert_close(h.from_tensor(message.h_n), expected_h, f"{what}: h_n")
        if expected_c is None:
            self.assertFalse(message.HasField("c_n"), f"{what}: c_n on a model without c")
        else:
            h.assert_close(h.from_tensor(message.c_n), expected_c, f"{what}: c_n")

    def test_forward_matches_torch(self):
        rng = np.random.default_rng(1)
        for name, rnn in sorted(self.rnns.items()):
            lstm = h.kit.has_cell_state(rnn)
            for encoding in ("values", "raw"):
                for batch in (None, 1, 3):
                    for with_state in (False, True):
                        what = f"{name} {encoding} N={batch} state={with_state}"
                        x = h.random_input(rng, rnn, int(rng.integers(1, 6)), batch)
                        h0 = h.random_state(rng, rnn, batch) if with_state else None
                        c0 = h.random_cell_state(rng, rnn, batch) if with_state and lstm \
                            else None
                        request = h.pb2().ForwardRequest(model=name,
                                                         input=h.to_tensor(x, encoding))
                        if h0 is not None:
                            request.h_0.CopyFrom(h.to_tensor(h0, encoding))
                        if c0 is not None:
                            request.c_0.CopyFrom(h.to_tensor(c0, encoding))
                        got = self.stub.Forward(request, timeout=h.CALL_TIMEOUT)
                        out, h_n, c_n = h.kit.torch_forward_state(rnn, x, h0, c0)
                        h.assert_close(h.from_tensor(got.output), out, f"{what}: output")
                        self.check_state(got, h_n, c_n, what)
                        self.assertEqual(h.encoding_of(got.output), encoding, what)

    def test_forward_lstm_with_c0_alone(self):
        # c_0 without h_0: h_0 is zeros (torch needs both; the server fills the missing one).
        rnn = self.rnns["lstm_proj"]
        rng = np.random.default_rng(2)
        x = h.random_input(rng, rnn, 4, 2)
        c0 = h.random_cell_state(rng, rnn, 2)
        got = self.stub.Forward(h.pb2().ForwardRequest(model="lstm_proj", input=h.to_tensor(x),
                                                       c_0=h.to_tensor(c0)),
                                timeout=h.CALL_TIMEOUT)
        out, h_n, c_n = h.kit.torch_forward_state(rnn, x, None, c0)
        h.assert_close(h.from_tensor(got.output), out, "output")
        self.check_state(got, h_n, c_n, "c_0 alone")

    def stream_session(self, stream, name, chunks, encoding, session_id, h0=None, c0=None,
                       start_index=None):
        """Streams `chunks` as one session (start with the first); checks every response
        against torch and returns the responses."""
        rnn = self.rnns[name]
        ref = CellReference(rnn, h0, c0)
        responses = []
        for k, x in enumerate(chunks):
            fields = dict(session_id=session_id, input=x)
            if k == 0:
                fields.update(start=True, model=name, h_0=h0, c_0=c0)
                if start_index is not None:
                    fields["chunk_index"] = start_index
            response = h.check_ok(stream.call(encoding, **fields))
            out, h_n, c_n = ref.feed(x)
            what = f"{name} {encoding} chunk {k}"
            h.assert_close(h.from_tensor(response.output), out, f"{what}: output")
            self.check_state(response, h_n, c_n, what)
            self.assertEqual(h.encoding_of(response.h_n), encoding, what)
            responses.append(response)
        return responses

    def test_stream_chunks_equal_one_call(self):
        rng = np.random.default_rng(3)
        with self.server.stream() as stream:
            for name in UNIDIRECTIONAL:
                rnn = self.rnns[name]
                lstm = h.kit.has_cell_state(rnn)
                for encoding in ("values", "raw"):
                    for batch in (None, 2):
                        steps = int(rng.integers(4, 12))
                        x = h.random_input(rng, rnn, steps, batch)
                        h0 = h.random_state(rng, rnn, batch)
                        c0 = h.random_cell_state(rng, rnn, batch) if lstm else None
                        parts = int(rng.integers(2, min(steps, 5) + 1))
                        axis = h.time_axis(rnn, batch is not None)
                        chunks = h.split_time(x, h.random_split(rng, steps, parts), axis)
                        session_id = f"split-{name}-{encoding}-{batch}"
                        responses = self.stream_session(stream, name, chunks, encoding,
                                                        session_id, h0, c0)
                        out, h_n, c_n = h.kit.torch_forward_state(rnn, x, h0, c0)
                        what = f"{name} {encoding} N={batch} in {parts} chunks"
                        whole = np.concatenate([h.from_tensor(r.output) for r in responses],
                                               axis=axis)
                        h.assert_close(whole, out, f"{what}: concatenated output")
                        self.check_state(responses[-1], h_n, c_n, what)
                        h.check_ok(stream.call(session_id=session_id, end=True))

    def test_bidirectional_sessions_answer_at_end(self):
        rng = np.random.default_rng(4)
        with self.server.stream() as stream:
            for name in ("gru_bi", "lstm_proj_bi"):
                rnn = self.rnns[name]
                for encoding in ("values", "raw"):
                    x = h.random_input(rng, rnn, 7, 2)
                    c0 = h.random_cell_state(rng, rnn, 2) if h.kit.has_cell_state(rnn) else None
                    h0 = h.random_state(rng, rnn, 2)
                    chunks = h.split_time(x, [3, 1, 3], axis=1)
                    session_id = f"bi-{name}-{encoding}"
                    for k, chunk in enumerate(chunks):
                        fields = dict(session_id=session_id, input=chunk, end=k == 2)
                        if k == 0:
                            fields.update(start=True, model=name, h_0=h0, c_0=c0)
                        response = h.check_ok(stream.call(encoding, **fields))
                    out, h_n, c_n = h.kit.torch_forward_state(rnn, x, h0, c0)
                    what = f"{name} {encoding}"
                    h.assert_close(h.from_tensor(response.output), out, f"{what}: output")
                    self.check_state(response, h_n, c_n, what)
                    self.assertTrue(response.ended)

    def test_many_lstm_sessions_batched_together(self):
        # Sessions of one model sent without waiting run in shared StepBatch calls; each must
        # still match its own torch reference.
        rng = np.random.default_rng(5)
        names = ("lstm_proj", "gru")
        sessions = []
        for i in range(12):
            name = names[i % 2]
            rnn = self.rnns[name]
            ref = CellReference(rnn)
            steps = []
            for _ in range(4):
                x = h.random_input(rng, rnn, int(rng.integers(1, 5)), int(1 + i % 3))
                steps.append((x,) + ref.feed(x))
            sessions.append((f"many-{i}", name, steps))
        with self.server.stream() as stream:
            requests = {}
            for k in range(4):
                for i in rng.permutation(len(sessions)).tolist():
                    session_id, name, steps = sessions[i]
                    fields = dict(session_id=session_id, input=steps[k][0], end=k == 3,
                                  chunk_index=k)
                    if k == 0:
                        fields.update(start=True, model=name)
                    requests[stream.send("raw", **fields)] = (i, k)
            responses, _ = stream.recv_many(len(requests), timeout=60)
        for request_id, (i, k) in requests.items():
            session_id, name, steps = sessions[i]
            _, out, h_n, c_n = steps[k]
            response = h.check_ok(responses[request_id])
            what = f"{session_id} chunk {k}"
            h.assert_close(h.from_tensor(response.output), out, f"{what}: output")
            self.check_state(response, h_n, c_n, what)

    def test_get_and_close_session_export_c_n(self):
        rng = np.random.default_rng(6)
        rnn = self.rnns["lstm"]
        ref = CellReference(rnn)
        x = h.random_input(rng, rnn, 3, 2)
        _, h_n, c_n = ref.feed(x)
        with self.server.stream() as stream:
            response = h.check_ok(stream.call(start=True, model="lstm", session_id="export",
                                              input=x, omit_state=True))
            self.assertFalse(response.HasField("h_n"))
            self.assertFalse(response.HasField("c_n"))
        for raw in (False, True):
            info = self.get_session(self.stub, "export", raw=raw)
            self.check_state(info, h_n, c_n, f"GetSession raw={raw}")
            self.assertEqual(h.encoding_of(info.c_n), "raw" if raw else "values")
        # c counts in the session's state memory: two buffers of h and c.
        self.assertEqual(info.state_bytes, 2 * 4 * state_floats(rnn, 2))
        bare = self.get_session(self.stub, "export", omit_state=True)
        self.assertFalse(bare.HasField("h_n"))
        self.assertFalse(bare.HasField("c_n"))
        closed = self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id="export"),
                                        timeout=h.CALL_TIMEOUT)
        self.check_state(closed.session, h_n, c_n, "CloseSession")

    def test_duplicate_chunk_index_replays_with_the_current_state(self):
        rng = np.random.default_rng(10)
        rnn = self.rnns["lstm_bf"]
        ref = CellReference(rnn)
        x0, x1 = h.random_input(rng, rnn, 3, 2), h.random_input(rng, rnn, 2, 2)
        with self.server.stream() as stream:
            h.check_ok(stream.call(start=True, model="lstm_bf", session_id="dup", input=x0,
                                   chunk_index=0))
            ref.feed(x0)
            first = h.check_ok(stream.call("raw", session_id="dup", input=x1, chunk_index=1))
            out, h_n, c_n = ref.feed(x1)
            again = h.check_ok(stream.call("raw", session_id="dup", input=x1, chunk_index=1))
            self.assertTrue(again.duplicate)
            self.assertEqual(again.steps_seen, first.steps_seen)
            h.assert_close(h.from_tensor(again.output), out, "replayed output")
            self.check_state(again, h_n, c_n, "duplicate")
            h.check_ok(stream.call(session_id="dup", end=True))

    def test_c0_refused_without_cell_state(self):
        rng = np.random.default_rng(7)
        for name in ("rnn", "gru"):
            rnn = self.rnns[name]
            x = h.random_input(rng, rnn, 2, 1)
            c0 = np.zeros(h.kit.state_shapes(rnn, 1)[0], np.float32)
            self.assert_rpc_error(
                h.grpc.StatusCode.INVALID_ARGUMENT, ["c_0", "only an LSTM takes c_0"],
                self.stub.Forward,
                h.pb2().ForwardRequest(model=name, input=h.to_tensor(x), c_0=h.to_tensor(c0)))
            with self.server.stream() as stream:
                response = stream.call(start=True, model=name, session_id=f"c0-{name}", input=x,
                                       c_0=c0)
            self.assertEqual(response.error_code, INVALID_ARGUMENT, response.error_message)
            self.assertIn("only an LSTM takes c_0", response.error_message)
            self.assertIn(name, response.error_message)
            self.assert_rpc_error(h.grpc.StatusCode.NOT_FOUND, [], self.get_session, self.stub,
                                  f"c0-{name}")

    def test_c0_only_with_start_and_checked(self):
        rng = np.random.default_rng(8)
        rnn = self.rnns["lstm_proj"]
        ref = CellReference(rnn)
        x = h.random_input(rng, rnn, 2, 2)
        with self.server.stream() as stream:
            first = h.check_ok(stream.call(start=True, model="lstm_proj", session_id="c0-late",
                                           input=x))
            out, h_n, c_n = ref.feed(x)
            self.check_state(first, h_n, c_n, "first chunk")
            c0 = h.random_cell_state(rng, rnn, 2)
            late = stream.call(session_id="c0-late", input=x, c_0=c0)
            self.assertEqual(late.error_code, INVALID_ARGUMENT, late.error_message)
            self.assertIn("c_0 is only accepted with start=true", late.error_message)
            # Not applied: the session goes on from the state it had.
            again = h.check_ok(stream.call(session_id="c0-late", input=x))
            out, h_n, c_n = ref.feed(x)
            h.assert_close(h.from_tensor(again.output), out, "after the refused c_0")
            self.check_state(again, h_n, c_n, "after the refused c_0")
            # A c_0 whose shape does not match h's is refused, naming the shape expected.
            bad = stream.call(start=True, model="lstm_proj", session_id="c0-shape",
                              h_0=h.random_state(rng, rnn, 2), c_0=h.random_state(rng, rnn, 2))
            self.assertEqual(bad.error_code, INVALID_ARGUMENT, bad.error_message)
            self.assertIn("c_0 must have shape (2, 2, 6)", bad.error_message)
            alone = stream.call(start=True, model="lstm_proj", session_id="c0-alone-bad",
                                c_0=np.zeros((2, 2, 2), np.float32))
            self.assertEqual(alone.error_code, INVALID_ARGUMENT, alone.error_message)
            self.assertIn("c_0 must have shape (2, N, 6)", alone.error_message)
            # An h_0 of hidden_size features where h is proj_size wide names H_out.
            wrong_h = stream.call(start=True, model="lstm_proj", session_id="h0-wrong",
                                  h_0=np.zeros((2, 1, 6), np.float32))
            self.assertEqual(wrong_h.error_code, INVALID_ARGUMENT, wrong_h.error_message)
            self.assertIn("h_0 must have shape (2, N, 2)", wrong_h.error_message)

    def test_model_info_describes_module_and_state(self):
        info = self.stub.GetModel(h.pb2().GetModelRequest(model="lstm_proj_bi"),
                                  timeout=h.CALL_TIMEOUT)
        self.assertEqual(info.config.module, "LSTM")
        self.assertEqual(info.config.proj_size, 3)
        self.assertEqual(info.config.nonlinearity, "")
        self.assertEqual(list(info.state_shape), [4, -1, 3])
        self.assertEqual(list(info.cell_state_shape), [4, -1, 5])
        self.assertTrue(info.module.startswith("LSTM(2, 5"), info.module)
        names = [p.name for p in info.parameters]
        self.assertEqual(names, [n for n, _ in self.rnns["lstm_proj_bi"].named_parameters()])
        gru = self.stub.GetModel(h.pb2().GetModelRequest(model="gru"), timeout=h.CALL_TIMEOUT)
        self.assertEqual((gru.config.module, gru.config.proj_size, gru.config.nonlinearity),
                         ("GRU", 0, ""))
        self.assertEqual(list(gru.state_shape), [2, -1, 5])
        self.assertEqual(list(gru.cell_state_shape), [])
        rnn = self.stub.GetModel(h.pb2().GetModelRequest(model="rnn"), timeout=h.CALL_TIMEOUT)
        self.assertEqual((rnn.config.module, rnn.config.nonlinearity), ("RNN", "tanh"))


class CellStateMovesBetweenServersTest(h.ServerTestCase):
    """An LSTM session exported from one server process (GetSession) and imported into
    another (start with h_0, c_0 and chunk_index) gives exactly the outputs of the same
    session running on uninterrupted."""

    MODELS = {name: MODELS[name] for name in ("lstm", "lstm_proj", "gru")}
    SEED = 140

    def test_export_import_identical(self):
        rng = np.random.default_rng(9)
        with h.ServerProcess(model_repository=self.repo, name="rnnserve-b") as other:
            other_stub = other.stub()
            for name in sorted(self.MODELS):
                rnn = self.rnns[name]
                for encoding in ("values", "raw"):
                    chunks = [h.random_input(rng, rnn, int(rng.integers(1, 5)), 2)
                              for _ in range(6)]
                    session_id = f"move-{name}-{encoding}"
                    with self.server.stream() as stream:
                        for k in range(3):
                            fields = dict(session_id=session_id, input=chunks[k], chunk_index=k)
                            if k == 0:
                                fields.update(start=True, model=name)
                            h.check_ok(stream.call(encoding, **fields))
                        exported = self.get_session(self.stub, session_id,
                                                    raw=encoding == "raw")
                        self.assertEqual(exported.next_chunk_index, 3)
                        self.assertEqual(exported.HasField("c_n"), h.kit.has_cell_state(rnn))
                        staying = [h.check_ok(stream.call(encoding, session_id=session_id,
                                                          input=chunks[k], chunk_index=k))
                                   for k in range(3, 6)]
                    with other.stream() as stream:
                        moved = []
                        for k in range(3, 6):
                            fields = dict(session_id=session_id, input=chunks[k], chunk_index=k)
                            if k == 3:
                                fields.update(start=True, model=name, h_0=exported.h_n)
                                if exported.HasField("c_n"):
                                    fields["c_0"] = exported.c_n
                            moved.append(h.check_ok(stream.call(encoding, **fields)))
                    for k, (a, b) in enumerate(zip(staying, moved), start=3):
                        what = f"{name} {encoding} chunk {k}"
                        np.testing.assert_array_equal(h.from_tensor(b.output),
                                                      h.from_tensor(a.output), what)
                        np.testing.assert_array_equal(h.from_tensor(b.h_n), h.from_tensor(a.h_n),
                                                      what)
                        self.assertEqual(b.HasField("c_n"), h.kit.has_cell_state(rnn), what)
                        if b.HasField("c_n"):
                            np.testing.assert_array_equal(h.from_tensor(b.c_n),
                                                          h.from_tensor(a.c_n), what)
                        self.assertEqual(b.steps_seen - a.steps_seen,
                                         -sum(c.shape[0] for c in chunks[:3]), what)
                    # And the moved session is torch's: the whole sequence in one call.
                    out, h_n, c_n = h.kit.torch_forward_state(rnn, np.concatenate(chunks))
                    h.assert_close(h.from_tensor(moved[-1].h_n), h_n, f"{name}: h_n")
                    if c_n is not None:
                        h.assert_close(h.from_tensor(moved[-1].c_n), c_n, f"{name}: c_n")
                    h.assert_close(np.concatenate([h.from_tensor(r.output) for r in moved]),
                                   out[sum(c.shape[0] for c in chunks[:3]):], f"{name}: output")
                    info = self.get_session(other_stub, session_id)
                    self.assertEqual(info.next_chunk_index, 6)


if __name__ == "__main__":
    unittest.main()
