"""Drain on SIGTERM, stream idle timeout and streams per connection, against the real binary.

- SIGTERM with 100 streaming sessions on 10 streams, each with chunks in flight: every request
  sent is answered (and every output equals torch's) before its stream ends with UNAVAILABLE,
  responses from the drain on say `draining` (once one does, all later ones on that stream do),
  and the process exits 0 well within --drain_timeout.
- An idle stream ends at once with UNAVAILABLE; an idle connected client (a channel that made a
  call and stays open) does not hold up the exit by --shutdown_grace.
- A client that keeps pipelining past --drain_timeout: the server stops reading, answers every
  request it read (a contiguous prefix of those sent), ends the stream, and exits.
- New calls during the drain are refused with UNAVAILABLE.
- --stream_idle_timeout ends a quiet stream with UNAVAILABLE; its session stays and continues on
  a new stream.
- --max_concurrent_streams_per_connection: a third stream on one connection waits until one of
  the two open ones ends.
"""

import threading
import time
import unittest

import grpc
import numpy as np

import harness as h

Code = grpc.StatusCode
MODEL = "m"
# Heavy enough that 300 chunks keep the server busy for a while after SIGTERM.
CONFIG = dict(input_size=16, hidden_size=128, num_layers=3)
SESSIONS, STREAMS, CHUNKS, STEPS = 100, 10, 3, 200


class DrainTest(h.ServerTestCase):
    MODELS = {MODEL: CONFIG}
    SEED = 11
    SERVER_NAME = "drain"
    START_SERVER = False

    def serve(self, name, *flags, drain_timeout="30s", metrics=False):
        server = h.ServerProcess(model_repository=self.repo, name=name, flags=list(flags),
                                 drain_timeout=drain_timeout, metrics=metrics)
        self.addCleanup(server.stop)
        return server.start()

    def test_sigterm_with_100_sessions_in_flight_answers_every_request(self):
        rnn = self.rnns[MODEL]
        # One worker, small batches: the chunks in flight take a while to compute.
        server = self.serve("drain-100", "--shutdown_grace=30s", "--threads=1", "--max_batch=1",
                            metrics=True)
        streams = [server.stream(server.channel()) for _ in range(STREAMS)]
        refs = {}
        expected = {}  # (stream index, request_id) -> (session, expected output, h_n)
        # Every session started (and answered) first, so that SIGTERM finds live sessions.
        for i in range(SESSIONS):
            stream = streams[i % STREAMS]
            sid = f"s{i}"
            refs[sid] = h.ReferenceSession(rnn, seed=i, batch=1)
            x = refs[sid].random_chunk(STEPS)
            out, h_n = refs[sid].feed(x)
            rid = stream.send(session_id=sid, model=MODEL, start=True, chunk_index=0, input=x,
                              encoding="raw")
            expected[(i % STREAMS, rid)] = (sid, out, h_n)
        for k, stream in enumerate(streams):
            responses, _ = stream.recv_many(SESSIONS // STREAMS)
            for rid, r in responses.items():
                sid, out, h_n = expected.pop((k, rid))
                h.check_chunk(self, r, out, h_n, f"{sid} start")
                self.assertFalse(r.draining, "draining before SIGTERM")
        # Then CHUNKS more per session, pipelined, and SIGTERM while they are in flight (the
        # torch references are computed first, so the sends go out back to back).
        chunks = []
        for c in range(1, CHUNKS + 1):
            for i in range(SESSIONS):
                sid = f"s{i}"
                x = refs[sid].random_chunk(STEPS)
                out, h_n = refs[sid].feed(x)
                chunks.append((i, sid, c, x, out, h_n))
        for i, sid, c, x, out, h_n in chunks:
            rid = streams[i % STREAMS].send(session_id=sid, chunk_index=c, input=x,
                                            encoding="raw")
            expected[(i % STREAMS, rid)] = (sid, out, h_n)
        # Sent is not read: wait until the server has read them all (a request the server
        # never read is not answered; the client replays it elsewhere).
        h.wait_until(lambda: h.metric(h.parse_metrics(server.scrape()),
                                      "rnnserve_stream_requests_read_total")
                     >= SESSIONS * (CHUNKS + 1), h.scaled(30), "every request read")
        started = time.monotonic()
        server.terminate()

        for k, stream in enumerate(streams):
            seen_draining = False
            count = 0
            while True:
                try:
                    r = stream.recv()
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), Code.UNAVAILABLE, e.details())
                    self.assertIn("shutting down", e.details())
                    break
                count += 1
                key = (k, r.request_id)
                self.assertIn(key, expected, f"stream {k}: unexpected response {r}")
                sid, out, h_n = expected.pop(key)
                # Chunks of existing sessions are still applied while draining.
                h.check_chunk(self, r, out, h_n, f"{sid} on stream {k}")
                if seen_draining:
                    self.assertTrue(r.draining, f"stream {k}: a response after a draining one "
                                                "does not say draining")
                seen_draining = seen_draining or r.draining
            self.assertTrue(seen_draining, f"stream {k}: no response said draining "
                                           f"({count} answered after SIGTERM)")
        self.assertEqual(expected, {}, "requests left unanswered when their stream ended")
        self.assertEqual(server.wait(h.scaled(25)), 0, server.stderr_tail())
        self.assertLess(time.monotonic() - started, h.scaled(25),
                        "exit took longer than --drain_timeout")

    def test_idle_stream_and_idle_connection_do_not_hold_up_the_exit(self):
        server = self.serve("drain-idle", "--shutdown_grace=60s", drain_timeout="60s")
        # A connection that made a call and stays open, and an open stream with a live session
        # and nothing in flight.
        idle_channel = server.channel()
        h.stubs()[1].RnnServiceStub(idle_channel).ListModels(h.pb2().ListModelsRequest(),
                                                              timeout=h.CALL_TIMEOUT)
        stream = server.stream(server.channel())
        h.check_ok(stream.call(session_id="idle", model=MODEL, start=True,
                               input=np.zeros((2, 1, 16), np.float32)))
        started = time.monotonic()
        server.terminate()
        with self.assertRaises(grpc.RpcError) as caught:
            stream.recv(timeout=h.scaled(10))
        self.assertEqual(caught.exception.code(), Code.UNAVAILABLE, caught.exception.details())
        self.assertIn("resume elsewhere", caught.exception.details())
        # Neither the idle connection nor the stream waits out 60 s of drain or grace.
        self.assertEqual(server.wait(h.scaled(15)), 0, server.stderr_tail())
        self.assertLess(time.monotonic() - started, h.scaled(15))

    def test_new_calls_and_sessions_while_draining_are_refused_unavailable(self):
        server = self.serve("drain-refuse", "--threads=1", drain_timeout="60s", metrics=True)
        stream = server.stream(server.channel())
        # A backlog of slow chunks keeps the stream (and so the server) busy while we call.
        x = np.zeros((2000, 1, 16), np.float32)
        h.check_ok(stream.call(session_id="busy", model=MODEL, start=True, input=x,
                               encoding="raw"))
        for _ in range(40):
            stream.send(session_id="busy", input=x, encoding="raw")
        h.wait_until(lambda: h.metric(h.parse_metrics(server.scrape()),
                                      "rnnserve_stream_requests_read_total") >= 41,
                     h.scaled(30), "the backlog read")
        server.terminate()
        stub = server.stub()

        def refused():
            try:
                stub.Forward(h.pb2().ForwardRequest(model=MODEL, input=h.to_tensor(x[:1])),
                             timeout=h.CALL_TIMEOUT)
            except grpc.RpcError as e:
                # A call that reaches the server as its GOAWAY goes out is cancelled by gRPC
                # (never run); the next one is refused.
                if e.code() == Code.CANCELLED:
                    return None
                return e
            return None

        e = h.wait_until(refused, h.scaled(15), "a Forward refused after SIGTERM")
        self.assertEqual(e.code(), Code.UNAVAILABLE, e.details())
        # On the open stream, once its answers say draining, a new session is refused with an
        # explicit UNAVAILABLE answer (unless the stream ended first, before reading it).
        h.wait_until(lambda: stream.recv().draining, h.scaled(15), "a draining answer")
        rid = stream.send(session_id="late", model=MODEL, start=True, input=x[:1])
        try:
            while True:
                r = stream.recv()
                if r.request_id == rid:
                    self.assertEqual(h.grpc_code_name(r.error_code), "UNAVAILABLE",
                                     r.error_message)
                    self.assertIn("draining", r.error_message)
                    self.assertIn("another replica", r.error_message)
                    break
                h.check_ok(r)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), Code.UNAVAILABLE, e.details())
        self.assertEqual(server.wait(h.scaled(30)), 0, server.stderr_tail())

    def test_pipelining_past_the_drain_timeout_answers_what_was_read(self):
        rnn = self.rnns[MODEL]
        server = self.serve("drain-busy", "--shutdown_grace=10s", drain_timeout="1s")
        stream = server.stream(server.channel())
        ref = h.ReferenceSession(rnn, seed=3, batch=1)
        x = ref.random_chunk(20)
        out, h_n = ref.feed(x)
        h.check_chunk(self, stream.call(session_id="p", model=MODEL, start=True, input=x,
                                        encoding="raw"), out, h_n, "start")
        stop = threading.Event()
        sent = []  # (request_id, expected output)

        def pipeline():
            while not stop.is_set() and len(sent) < 200000:
                x = ref.random_chunk(20)
                out, _ = ref.feed(x)
                sent.append((stream.send(session_id="p", input=x, encoding="raw"), out))

        sender = threading.Thread(target=pipeline, daemon=True)
        sender.start()
        self.addCleanup(stop.set)
        h.wait_until(lambda: len(sent) >= 50, h.scaled(30), "50 chunks sent")
        started = time.monotonic()
        server.terminate()
        answered = []
        while True:
            try:
                answered.append(stream.recv())
            except grpc.RpcError as e:
                self.assertEqual(e.code(), Code.UNAVAILABLE, e.details())
                break
        stop.set()
        sender.join(h.scaled(10))
        self.assertEqual(server.wait(h.scaled(20)), 0, server.stderr_tail())
        self.assertLess(time.monotonic() - started, h.scaled(20))
        # One session answers in order: what was read is a prefix of what was sent, and each
        # answer equals torch's for its chunk.
        expected = dict(sent)
        first_id = sent[0][0]
        self.assertEqual([r.request_id for r in answered],
                         list(range(first_id, first_id + len(answered))))
        for r in answered:
            h.check_chunk(self, r, expected[r.request_id], None, f"request {r.request_id}")


class StreamIdleTimeoutTest(h.ServerTestCase):
    MODELS = {MODEL: dict(input_size=3, hidden_size=4)}
    SEED = 12
    SERVER_NAME = "stream-idle"
    SERVER_FLAGS = ("--stream_idle_timeout=1s",)

    def test_idle_stream_ends_unavailable_and_its_session_stays(self):
        rnn = self.rnns[MODEL]
        ref = h.ReferenceSession(rnn, seed=1, batch=1)
        stream = self.server.stream(self.server.channel())
        x = ref.random_chunk(3)
        out, h_n = ref.feed(x)
        h.check_chunk(self, stream.call(session_id="quiet", model=MODEL, start=True, input=x),
                      out, h_n, "start")
        started = time.monotonic()
        with self.assertRaises(grpc.RpcError) as caught:
            stream.recv(timeout=h.scaled(15))
        elapsed = time.monotonic() - started
        self.assertEqual(caught.exception.code(), Code.UNAVAILABLE, caught.exception.details())
        self.assertIn("--stream_idle_timeout", caught.exception.details())
        self.assertGreater(elapsed, 0.8, "ended before the idle timeout")
        # The session outlives the stream and continues on a new one.
        with self.server.stream(self.server.channel()) as again:
            x = ref.random_chunk(2)
            out, h_n = ref.feed(x)
            h.check_chunk(self, again.call(session_id="quiet", input=x, end=True), out, h_n,
                          "after the idle timeout")
            self.assertEqual(again.close(), Code.OK)


class StreamsPerConnectionTest(h.ServerTestCase):
    MODELS = {MODEL: dict(input_size=3, hidden_size=4)}
    SEED = 13
    SERVER_NAME = "streams-per-connection"
    SERVER_FLAGS = ("--max_concurrent_streams_per_connection=2",)
    METRICS = True

    def test_a_stream_beyond_the_per_connection_limit_waits(self):
        channel = self.server.channel()
        first, second = self.server.stream(channel), self.server.stream(channel)
        for i, stream in enumerate((first, second)):
            h.check_ok(stream.call(model=MODEL, session_id=f"c{i}", start=True))
        third = self.server.stream(channel)
        rid = third.send(model=MODEL, session_id="c2", start=True)
        # Bounded check that nothing comes while two streams hold the connection.
        with self.assertRaises(AssertionError):
            third.recv(timeout=0.5)
        self.assertEqual(first.close(), Code.OK)
        r = third.recv(timeout=h.scaled(10))
        self.assertEqual(r.request_id, rid)
        h.check_ok(r)
        for stream in (second, third):
            self.assertEqual(stream.close(), Code.OK)
        h.wait_until(lambda: h.metric(h.parse_metrics(self.server.scrape()),
                                      "rnnserve_streams_open") == 0,
                     h.scaled(10), "rnnserve_streams_open back to 0")


if __name__ == "__main__":
    unittest.main()
