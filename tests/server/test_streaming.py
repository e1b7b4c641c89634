"""Streaming sessions and Forward against live torch: uni- and bidirectional, multi-layer,
batch_first, unbatched, tanh and relu models; `values` and `raw` encodings; h_0 import;
omit_state; start-only and end-only requests.

A unidirectional session's chunks, split at random, must give torch's output over the whole
sequence, slice by slice, and after each chunk torch's h_n over the prefix. A bidirectional
session answers with an empty output until `end`, then torch's output over the whole
buffered sequence (= Forward over the concatenation).
"""

import unittest

import numpy as np

import harness as h

MODELS = {
    "uni_tanh": dict(input_size=4, hidden_size=6, num_layers=2),
    "uni_relu_bf": dict(input_size=3, hidden_size=5, num_layers=2, nonlinearity="relu",
                        batch_first=True),
    "uni_nobias": dict(input_size=3, hidden_size=4, bias=False),
    "bi_tanh": dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True),
    "bi_relu_bf": dict(input_size=3, hidden_size=4, num_layers=3, nonlinearity="relu",
                       batch_first=True, bidirectional=True),
}
ENCODINGS = ("values", "raw")


class StreamingTest(h.ServerTestCase):
    MODELS = MODELS
    SERVER_NAME = "streaming"

    # -- helpers

    def stream_session(self, stream, name, x, sizes, encoding, h0=None, session_id="",
                       omit_state=False, start_only=False, end_only=False):
        """Streams x in chunks of `sizes` timesteps as one session and checks every response
        against torch over the whole sequence. Returns the responses."""
        rnn = self.rnns[name]
        batched = x.ndim == 3
        axis = h.time_axis(rnn, batched)
        full_out, full_h = h.torch_forward(rnn, x, h0)
        chunks = h.split_time(x, sizes, axis)
        out_chunks = h.split_time(full_out, sizes, axis)
        what = f"{name} {encoding} {'batched' if batched else 'unbatched'} sizes={sizes}"
        responses = []

        if start_only:
            r = h.check_ok(stream.call(encoding, session_id=session_id, model=name, start=True,
                                       h_0=h0))
            self.assertTrue(h.is_empty(r.output), f"{what}: start-only output")
            self.assertEqual(r.steps_seen, 0)
            if h0 is not None:  # the state is known: h_0 fixed the batch size
                h.assert_close(h.from_tensor(r.h_n), h0, f"{what}: start-only h_n")
            else:
                self.assertTrue(h.is_empty(r.h_n), f"{what}: start-only h_n before any chunk")
            session_id = r.session_id
            responses.append(r)

        steps = 0
        for i, chunk in enumerate(chunks):
            first = i == 0 and not start_only
            last = i == len(chunks) - 1 and not end_only
            fields = dict(session_id=session_id, input=chunk, end=last, omit_state=omit_state)
            if first:
                fields.update(start=True, model=name, h_0=h0)
            r = stream.call(encoding, **fields)
            cwhat = f"{what} chunk {i}"
            h.check_ok(r)
            if first and not session_id:
                self.assertTrue(r.session_id, f"{cwhat}: no session id assigned")
                session_id = r.session_id
            self.assertEqual(r.session_id, session_id, cwhat)
            steps += sizes[i]
            self.assertEqual(r.steps_seen, steps, cwhat)
            self.assertEqual(r.ended, last, cwhat)
            if rnn.bidirectional and not last:
                self.assertTrue(h.is_empty(r.output), f"{cwhat}: bidirectional output before end")
                info = self.get_session(self.stub, session_id, omit_state=True)
                self.assertEqual(info.buffered_steps, steps, cwhat)
            elif rnn.bidirectional:
                h.assert_close(h.from_tensor(r.output), full_out, f"{cwhat}: output at end")
                self.assertEqual(h.encoding_of(r.output), encoding, f"{cwhat}: output encoding")
            else:
                h.assert_close(h.from_tensor(r.output), out_chunks[i], f"{cwhat}: output")
                self.assertEqual(h.encoding_of(r.output), encoding, f"{cwhat}: output encoding")
            if omit_state:
                self.assertFalse(r.HasField("h_n") and not h.is_empty(r.h_n),
                                 f"{cwhat}: h_n sent despite omit_state")
            elif not rnn.bidirectional or last:
                prefix = np.concatenate(chunks[:i + 1], axis=axis)
                h.assert_close(h.from_tensor(r.h_n), h.torch_forward(rnn, prefix, h0)[1],
                               f"{cwhat}: h_n")
                self.assertEqual(h.encoding_of(r.h_n), encoding, f"{cwhat}: h_n encoding")
            responses.append(r)

        if end_only:
            r = h.check_ok(stream.call(encoding, session_id=session_id, end=True,
                                       omit_state=omit_state))
            self.assertTrue(r.ended, f"{what}: end-only")
            self.assertEqual(r.steps_seen, steps, f"{what}: end-only")
            if rnn.bidirectional:
                # No input with this request, so the output is encoded as `values`.
                h.assert_close(h.from_tensor(r.output), full_out, f"{what}: end-only output")
            else:
                self.assertTrue(h.is_empty(r.output), f"{what}: end-only output")
            if not omit_state:
                h.assert_close(h.from_tensor(r.h_n), full_h, f"{what}: end-only h_n")
            responses.append(r)

        # The session is over: it is gone, and it was closed (not expired or evicted).
        self.assert_rpc_error(h.grpc.StatusCode.NOT_FOUND, ["closed"], self.get_session,
                              self.stub, session_id)
        return responses

    def forward(self, name, x, encoding, h0=None):
        request = h.pb2().ForwardRequest(model=name, input=h.to_tensor(x, encoding))
        if h0 is not None:
            request.h_0.CopyFrom(h.to_tensor(h0, encoding))
        return self.stub.Forward(request, timeout=h.CALL_TIMEOUT)

    # -- tests

    def test_models_are_served_as_exported(self):
        reply = self.stub.ListModels(h.pb2().ListModelsRequest(), timeout=h.CALL_TIMEOUT)
        self.assertEqual(sorted(m.name for m in reply.models), sorted(MODELS))
        for info in reply.models:
            rnn = self.rnns[info.name]
            self.assertEqual(info.config.input_size, rnn.input_size, info.name)
            self.assertEqual(info.config.hidden_size, rnn.hidden_size, info.name)
            self.assertEqual(info.config.num_layers, rnn.num_layers, info.name)
            self.assertEqual(info.config.nonlinearity, rnn.nonlinearity, info.name)
            self.assertEqual(info.config.bias, rnn.bias, info.name)
            self.assertEqual(info.config.batch_first, rnn.batch_first, info.name)
            self.assertEqual(info.config.bidirectional, rnn.bidirectional, info.name)
            self.assertEqual(info.streaming_buffers_until_end, rnn.bidirectional, info.name)
            self.assertEqual([p.name for p in info.parameters],
                             [n for n, _ in rnn.named_parameters()], info.name)
            self.assertEqual(info.parameter_count,
                             sum(p.numel() for p in rnn.parameters()), info.name)

    def test_forward_matches_torch(self):
        rng = np.random.default_rng(1)
        for name, rnn in sorted(self.rnns.items()):
            for encoding in ENCODINGS:
                for batch in (3, None):
                    for with_h0 in (False, True):
                        with self.subTest(model=name, encoding=encoding, batch=batch,
                                          h0=with_h0):
                            x = h.random_input(rng, rnn, 7, batch)
                            h0 = h.random_state(rng, rnn, batch) if with_h0 else None
                            reply = self.forward(name, x, encoding, h0)
                            out, h_n = h.torch_forward(rnn, x, h0)
                            h.assert_close(h.from_tensor(reply.output), out, "output")
                            h.assert_close(h.from_tensor(reply.h_n), h_n, "h_n")
                            self.assertEqual(h.encoding_of(reply.output), encoding)
                            self.assertEqual(h.encoding_of(reply.h_n), encoding)

    def test_streamed_chunks_match_forward_and_torch(self):
        rng = np.random.default_rng(2)
        with self.server.stream() as stream:
            for name, rnn in sorted(self.rnns.items()):
                for encoding in ENCODINGS:
                    for batch in (3, None):
                        with self.subTest(model=name, encoding=encoding, batch=batch):
                            parts = int(rng.integers(2, 6))
                            total = int(rng.integers(parts + 1, 16))
                            sizes = h.random_split(rng, total, parts)
                            x = h.random_input(rng, rnn, total, batch)
                            # Half the sessions choose their id, half get one assigned.
                            session_id = f"{name}-{encoding}-{batch}" if batch else ""
                            responses = self.stream_session(stream, name, x, sizes, encoding,
                                                            session_id=session_id)
                            # Streaming == Forward over the concatenation.
                            reply = self.forward(name, x, encoding)
                            axis = h.time_axis(rnn, batch is not None)
                            if rnn.bidirectional:
                                streamed = h.from_tensor(responses[-1].output)
                            else:
                                streamed = np.concatenate(
                                    [h.from_tensor(r.output) for r in responses], axis=axis)
                            h.assert_close(streamed, h.from_tensor(reply.output),
                                           "stream vs Forward output")
                            h.assert_close(h.from_tensor(responses[-1].h_n),
                                           h.from_tensor(reply.h_n), "stream vs Forward h_n")
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)

    def test_state_import_with_h0_at_start(self):
        rng = np.random.default_rng(3)
        with self.server.stream() as stream:
            for name, rnn in sorted(self.rnns.items()):
                for batch, encoding, start_only in ((2, "raw", False), (None, "values", False),
                                                    (1, "values", True), (None, "raw", True)):
                    with self.subTest(model=name, batch=batch, encoding=encoding,
                                      start_only=start_only):
                        sizes = h.random_split(rng, 9, 3)
                        x = h.random_input(rng, rnn, 9, batch)
                        h0 = h.random_state(rng, rnn, batch)
                        self.stream_session(stream, name, x, sizes, encoding, h0=h0,
                                            start_only=start_only)
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)

    def test_omit_state(self):
        rng = np.random.default_rng(4)
        with self.server.stream() as stream:
            for name, rnn in sorted(self.rnns.items()):
                for encoding in ENCODINGS:
                    with self.subTest(model=name, encoding=encoding):
                        x = h.random_input(rng, rnn, 8, 2)
                        sizes = h.random_split(rng, 8, 3)
                        responses = self.stream_session(stream, name, x, sizes, encoding,
                                                        omit_state=True)
                        self.assertTrue(all(h.is_empty(r.h_n) for r in responses))

            # omit_state on one chunk only: the state still advances, and the next chunk
            # that asks for it gets torch's.
            rnn = self.rnns["uni_tanh"]
            x = h.random_input(rng, rnn, 6, 2)
            ref = h.ReferenceSession(rnn)
            a, b = x[:4], x[4:]
            out_a, _ = ref.feed(a)
            r = h.check_ok(stream.call(start=True, model="uni_tanh", input=a, omit_state=True))
            self.assertTrue(h.is_empty(r.h_n))
            h.assert_close(h.from_tensor(r.output), out_a, "omitted-state chunk output")
            out_b, h_b = ref.feed(b)
            r = h.check_ok(stream.call(session_id=r.session_id, input=b, end=True))
            h.check_chunk(self, r, out_b, h_b, "chunk after an omitted state")
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)

    def test_end_only_request(self):
        rng = np.random.default_rng(5)
        with self.server.stream() as stream:
            for name, rnn in sorted(self.rnns.items()):
                for encoding, batch in (("raw", 2), ("values", None)):
                    with self.subTest(model=name, encoding=encoding, batch=batch):
                        x = h.random_input(rng, rnn, 7, batch)
                        sizes = h.random_split(rng, 7, 2)
                        self.stream_session(stream, name, x, sizes, encoding, start_only=True,
                                            end_only=True)
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)


if __name__ == "__main__":
    unittest.main()
