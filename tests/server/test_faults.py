"""Hostile and careless clients against the real binary: nothing they do breaks the server,
grows its memory past the per-stream bound, or leaks.

- Malformed messages: bytes that are not a StreamRequest end the stream with INVALID_ARGUMENT
  (the requests before it answered, none after it read or applied); every unary method answers
  bytes that do not parse with INVALID_ARGUMENT naming the message type.
- A slow reader replaying a large output with duplicate chunk_index requests (of its own
  session, or of one another stream started after a small first answer): the server stops
  reading the stream at --max_stream_buffered_bytes, so its RSS stays bounded; every replay is
  then delivered, equal to torch's output.
- A client that cancels mid-stream and a stream whose deadline expires with chunks in flight:
  the server stays healthy, the session stays readable, and the stream gauges return to 0.
"""

import unittest

import grpc
import numpy as np

import harness as h

Code = grpc.StatusCode
MODEL = "m"
WIDE = "wide"
# A wide hidden state on a one-feature input: a small request makes a large output.
WIDE_CONFIG = dict(input_size=1, hidden_size=256)
# As wide, and eight layers deep: a chunk of it keeps a worker busy for a while.
DEEP = "deep"
DEEP_CONFIG = dict(input_size=1, hidden_size=256, num_layers=8)
MESSAGE_LIMIT = 8 << 20
BUFFER_LIMIT = 2 * MESSAGE_LIMIT
REPLAY_STEPS = 6000  # 6000 x 256 floats: a 6 MB output
REPLAYS = 100  # 600 MB if the server queued every replay

# Bytes that are no protobuf message: field 1 (length-delimited) says 5 bytes and has 2.
GARBAGE = b"\x0a\x05ab"


def raw_stream(channel):
    """Stream taking request bytes as they are (so a test can send garbage)."""
    return channel.stream_stream(f"/{h.SERVICE}/Stream", request_serializer=None,
                                 response_deserializer=h.pb2().StreamResponse.FromString)


class FaultsTest(h.ServerTestCase):
    MODELS = {MODEL: dict(input_size=3, hidden_size=4), WIDE: WIDE_CONFIG, DEEP: DEEP_CONFIG}
    SEED = 21
    SERVER_NAME = "faults"
    SERVER_FLAGS = (f"--max_message_bytes={MESSAGE_LIMIT}",)
    METRICS = True

    def samples(self):
        return h.parse_metrics(self.server.scrape())

    def wait_streams_closed(self):
        """Every stream over: no stream open, paused or holding response bytes."""
        def closed():
            m = self.samples()
            return (h.metric(m, "rnnserve_streams_open") == 0
                    and h.metric(m, "rnnserve_streams_read_paused") == 0
                    and h.metric(m, "rnnserve_stream_buffered_bytes") == 0)
        h.wait_until(closed, h.scaled(20), "stream gauges back to 0")

    def test_malformed_stream_request_ends_the_stream_invalid_argument(self):
        rnn = self.rnns[MODEL]
        ref = h.ReferenceSession(rnn, seed=1, batch=1)
        x1, x2, x3 = ref.random_chunk(2), ref.random_chunk(3), ref.random_chunk(2)
        out1, h1 = ref.feed(x1)
        out2, h2 = ref.feed(x2)
        requests = [
            h.Stream.request(session_id="mal", model=MODEL, start=True, input=x1,
                             request_id=1).SerializeToString(),
            h.Stream.request(session_id="mal", input=x2, request_id=2).SerializeToString(),
            GARBAGE,
            # Never read: neither applied nor answered.
            h.Stream.request(session_id="mal", input=x3, end=True,
                             request_id=4).SerializeToString(),
        ]
        call = raw_stream(self.server.channel())(iter(requests), timeout=h.CALL_TIMEOUT)
        responses = []
        with self.assertRaises(grpc.RpcError) as caught:
            for r in call:
                responses.append(r)
        self.assertEqual(caught.exception.code(), Code.INVALID_ARGUMENT)
        details = caught.exception.details()
        for part in ("request 3 on this stream", "rnnserve.v1.StreamRequest", "4 bytes",
                     "requests before it were answered"):
            self.assertIn(part, details)
        self.assertEqual([r.request_id for r in responses], [1, 2])
        h.check_chunk(self, responses[0], out1, h1, "before the garbage")
        h.check_chunk(self, responses[1], out2, h2, "before the garbage")
        # The request after the garbage (end) was not applied: the session lives on at h2.
        info = self.get_session(self.stub, "mal")
        h.assert_close(h.from_tensor(info.h_n), h2, "state after the malformed request")
        self.assertEqual(info.steps_seen, 5)
        self.wait_streams_closed()

    def test_malformed_first_request_and_invalid_utf8_id(self):
        # Field 1 (session_id) holding bytes that are not UTF-8: proto3 refuses to parse it.
        for payload in (GARBAGE, b"\x0a\x02\xff\xfe"):
            with self.subTest(payload=payload):
                call = raw_stream(self.server.channel())(iter([payload]),
                                                         timeout=h.CALL_TIMEOUT)
                with self.assertRaises(grpc.RpcError) as caught:
                    list(call)
                self.assertEqual(caught.exception.code(), Code.INVALID_ARGUMENT)
                self.assertIn("request 1 on this stream", caught.exception.details())

    def test_malformed_unary_requests_are_invalid_argument(self):
        channel = self.server.channel()
        for method, message in (("Forward", "ForwardRequest"),
                                ("ListModels", "ListModelsRequest"),
                                ("GetModel", "GetModelRequest"),
                                ("GetSession", "GetSessionRequest"),
                                ("CloseSession", "CloseSessionRequest")):
            with self.subTest(method=method):
                call = channel.unary_unary(f"/{h.SERVICE}/{method}", request_serializer=None,
                                           response_deserializer=None)
                with self.assertRaises(grpc.RpcError) as caught:
                    call(GARBAGE, timeout=h.CALL_TIMEOUT)
                self.assertEqual(caught.exception.code(), Code.INVALID_ARGUMENT)
                self.assertIn(f"rnnserve.v1.{message}", caught.exception.details())
                self.assertIn("4 bytes", caught.exception.details())
        # The server is fine afterwards.
        self.assertEqual(len(self.stub.ListModels(h.pb2().ListModelsRequest(),
                                                  timeout=h.CALL_TIMEOUT).models), 3)

    def test_slow_reader_replaying_large_outputs_stays_bounded(self):
        rnn = self.rnns[WIDE]
        rng = np.random.default_rng(5)
        x = h.random_input(rng, rnn, REPLAY_STEPS, batch=1)
        out, _ = h.torch_forward(rnn, x)
        # A client that does not read: responses are consumed only when the test iterates.
        requests = [h.Stream.request("raw", session_id="replay", model=WIDE, start=True,
                                     chunk_index=0, input=x, request_id=1)]
        requests += [h.Stream.request("raw", session_id="replay", chunk_index=0, input=x,
                                      request_id=2 + i) for i in range(REPLAYS)]
        self.assert_slow_reader_bounded(requests, out, checked=(0, REPLAYS))

    def test_slow_reader_replaying_behind_a_running_chunk_stays_bounded(self):
        """The stream's first answer is small; then it sends a long chunk of a session another
        stream started, and replays of that chunk, which wait behind it unanswered. Each
        request is reserved at what its answer may take (here: the replay), not at the small
        answers seen so far, so reading stops at the limit before the replays are computed."""
        rnn = self.rnns[DEEP]
        rng = np.random.default_rng(6)
        x0 = h.random_input(rng, rnn, 10, batch=1)
        x1 = h.random_input(rng, rnn, REPLAY_STEPS, batch=1)
        whole, _ = h.torch_forward(rnn, np.concatenate([x0, x1]))
        out = whole[len(x0):]
        with h.Stream(self.stub) as owner:
            h.check_ok(owner.call(session_id="shared", model=DEEP, start=True, chunk_index=0,
                                  input=x0, encoding="raw"))
        requests = [h.Stream.request("raw", session_id="small", model=MODEL, start=True,
                                     request_id=1)]
        requests += [h.Stream.request("raw", session_id="shared", chunk_index=1, input=x1,
                                      request_id=2 + i) for i in range(REPLAYS + 1)]
        self.assert_slow_reader_bounded(requests, out, checked=(1, REPLAYS + 1))

    def assert_slow_reader_bounded(self, requests, out, checked):
        """Sends `requests` without reading: the server stops reading the stream with its
        queued bytes near the limit and RSS bounded; then every answer arrives in order, those
        at the `checked` positions equal to `out`."""
        before = h.rss_bytes(self.server.pid)
        call = self.stub.Stream(iter(requests), timeout=h.scaled(120))

        def paused():
            m = self.samples()
            return (h.metric(m, "rnnserve_streams_read_paused") == 1
                    and h.metric(m, "rnnserve_stream_buffered_bytes") > 0)

        h.wait_until(paused, h.scaled(30), "the server to stop reading the slow reader")
        m = self.samples()
        # Queued: under the limit plus one response (the one that crossed it).
        response_bytes = out.nbytes
        self.assertLessEqual(h.metric(m, "rnnserve_stream_buffered_bytes"),
                             BUFFER_LIMIT + 2 * response_bytes)
        read = h.metric(m, "rnnserve_stream_requests_read_total")
        grown = h.rss_bytes(self.server.pid) - before
        # 600 MB if every replay were queued; the bound allows the queue, the transport's
        # buffers and the session's own copies.
        self.assertLess(grown, 200 << 20, f"RSS grew by {grown >> 20} MiB")
        # Then the client reads: every answer arrives, the replays equal the original output.
        count = 0
        for r in call:
            h.check_ok(r)
            self.assertEqual(r.request_id, count + 1)
            if count in checked:
                h.assert_close(h.from_tensor(r.output).reshape(out.shape), out,
                               f"response {count + 1}")
            count += 1
        self.assertEqual(count, len(requests))
        self.assertGreater(h.metric(self.samples(), "rnnserve_stream_requests_read_total"),
                           read, "reading resumed after the client read")
        self.assertLess(h.rss_bytes(self.server.pid) - before, 200 << 20)
        self.wait_streams_closed()

    def test_cancel_mid_stream_leaks_nothing(self):
        x = np.ones((2000, 1, 1), np.float32)
        stream = self.server.stream(self.server.channel())
        h.check_ok(stream.call(session_id="cancelled", model=WIDE, start=True, input=x,
                               encoding="raw"))
        for _ in range(20):
            stream.send(session_id="cancelled", input=x, encoding="raw")
        stream.cancel()
        self.wait_streams_closed()
        # The session stays readable; chunks the server read before the cancel were applied
        # whole, the others not at all.
        info = self.get_session(self.stub, "cancelled", omit_state=True)
        self.assertEqual(info.steps_seen % 2000, 0)
        self.assertGreaterEqual(info.steps_seen, 2000)
        self.healthy()

    def test_deadline_expiring_with_chunks_in_flight_leaks_nothing(self):
        x = np.ones((3000, 1, 1), np.float32)
        stream = h.Stream(self.server.stub(self.server.channel()), timeout=h.scaled(1.0))
        h.check_ok(stream.call(session_id="expired", model=WIDE, start=True, input=x,
                               encoding="raw"))
        for _ in range(200):
            stream.send(session_id="expired", input=x, encoding="raw")
        with self.assertRaises(grpc.RpcError) as caught:
            while True:
                stream.recv(timeout=h.scaled(30))
        self.assertEqual(caught.exception.code(), Code.DEADLINE_EXCEEDED)
        self.wait_streams_closed()
        info = self.get_session(self.stub, "expired", omit_state=True)
        self.assertEqual(info.steps_seen % 3000, 0)
        self.healthy()

    def healthy(self):
        self.assertEqual(h.health_status(self.server), "SERVING")
        with self.server.stream() as stream:
            h.check_ok(stream.call(model=MODEL, start=True, end=True,
                                   input=np.zeros((1, 1, 3), np.float32)))
            self.assertEqual(stream.close(), Code.OK)


if __name__ == "__main__":
    unittest.main()
