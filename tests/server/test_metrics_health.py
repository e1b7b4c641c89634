"""grpc.health.v1 and Prometheus /metrics: exact values after a known workload, no session
ids in the metrics, and health on SIGTERM (not SERVING: NOT_SERVING, or UNAVAILABLE once the
GOAWAY closed the port; the open stream ends UNAVAILABLE; exit 0). The drain itself is in
test_drain."""

import time
import unittest

import grpc
import numpy as np

import harness as h

MODEL = "m"
CONFIG = dict(input_size=3, hidden_size=4, num_layers=2)
SESSIONS, CHUNKS, STEPS, BATCH = 3, 4, 5, 2
# Per session: two state buffers of (L=2, N, H=4) floats.
STATE_BYTES = 2 * (2 * BATCH * 4) * 4


class MetricsHealthTest(h.ServerTestCase):
    """A server per test: the metrics must start from zero."""

    MODELS = {MODEL: CONFIG}
    SEED = 30
    SERVER_NAME = "metrics"
    START_SERVER = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rnn = cls.rnns[MODEL]

    def serve(self, name, **kwargs):
        server = h.ServerProcess(model_repository=self.repo, name=name, **kwargs).start()
        self.addCleanup(server.stop)
        return server

    def samples(self, server):
        return h.parse_metrics(server.scrape())

    def test_health_serving(self):
        server = self.serve("health", metrics=False)
        self.assertEqual(h.health_status(server, ""), "SERVING")
        self.assertEqual(h.health_status(server, h.SERVICE), "SERVING")
        self.assertEqual(h.health_status(server, "no.such.Service"), "NOT_FOUND")
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_metrics_after_a_known_workload(self):
        server = self.serve("metrics")
        m = self.samples(server)
        # Before any work: the model's series exist at zero; build info is 1.
        self.assertEqual(h.metric(m, "rnnserve_timesteps_total", model=MODEL), 0)
        self.assertEqual(h.metric(m, "rnnserve_sessions_active", model=MODEL), 0)
        self.assertEqual(h.metric(m, "rnnserve_sessions_started_total"), 0)
        self.assertEqual(h.metric(m, "rnnserve_sessions_ended_total", reason="closed"), 0)
        self.assertEqual(h.metric(m, "rnnserve_session_state_bytes"), 0)
        for histogram in ("rnnserve_chunk_duration_seconds", "rnnserve_queue_duration_seconds",
                          "rnnserve_batch_size"):
            self.assertEqual(h.metric(m, histogram + "_count", model=MODEL), 0)
        # The standard process metrics: this server started within the test's time bounds.
        now = time.time()
        start = h.metric(m, "process_start_time_seconds")
        self.assertLessEqual(start, now + 1)
        self.assertGreater(start, now - h.scaled(300))
        self.assertGreater(h.metric(m, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreaterEqual(h.metric(m, "process_virtual_memory_bytes"),
                                h.metric(m, "process_resident_memory_bytes"))
        self.assertGreater(h.metric(m, "process_open_fds"), 0)
        self.assertGreaterEqual(h.metric(m, "process_max_fds"), h.metric(m, "process_open_fds"))
        self.assertGreaterEqual(h.metric(m, "process_cpu_seconds_total"), 0)
        build = [(labels, v) for (name, labels), v in m.items()
                 if name == "rnnserve_build_info"]
        self.assertEqual(len(build), 1, build)
        labels, value = build[0]
        self.assertEqual(value, 1)
        self.assertEqual({k for k, _ in labels}, {"version", "compiler"})
        self.assertTrue(all(v for _, v in labels), labels)

        rng = np.random.default_rng(31)
        refs = [h.ReferenceSession(self.rnn) for _ in range(SESSIONS)]
        ids = ["metrics-session-alpha", "metrics-session-beta", ""]  # "": server-assigned
        with server.stream() as stream:
            for k in range(CHUNKS):
                if k == CHUNKS - 1:
                    # Mid-workload: 3 live sessions holding state, 9 chunks done.
                    m = self.samples(server)
                    self.assertEqual(h.metric(m, "rnnserve_sessions_active", model=MODEL),
                                     SESSIONS)
                    self.assertEqual(h.metric(m, "rnnserve_session_state_bytes"),
                                     SESSIONS * STATE_BYTES)
                    self.assertEqual(h.metric(m, "rnnserve_timesteps_total", model=MODEL),
                                     SESSIONS * k * STEPS * BATCH)
                    # One refused chunk (wrong input_size) on a live session.
                    r = stream.call(session_id=ids[0],
                                    input=np.zeros((STEPS, BATCH, 5), np.float32))
                    self.assertEqual(h.grpc_code_name(r.error_code), "INVALID_ARGUMENT",
                                     r.error_message)
                for i in range(SESSIONS):
                    x = h.random_input(rng, self.rnn, STEPS, BATCH)
                    out, h_n = refs[i].feed(x)
                    fields = dict(start=True, model=MODEL) if k == 0 else {}
                    r = stream.call(session_id=ids[i], input=x, end=k == CHUNKS - 1, **fields)
                    h.check_chunk(self, r, out, h_n, f"session {i} chunk {k}")
                    ids[i] = r.session_id
            self.assertEqual(stream.close(), grpc.StatusCode.OK)

        text = server.scrape()
        m = h.parse_metrics(text)
        chunks = SESSIONS * CHUNKS
        self.assertEqual(h.metric(m, "rnnserve_requests_total", rpc="Stream", model=MODEL,
                                  code="OK"), chunks)
        self.assertEqual(h.metric(m, "rnnserve_requests_total", rpc="Stream", model=MODEL,
                                  code="INVALID_ARGUMENT"), 1)
        self.assertEqual(h.metric(m, "rnnserve_timesteps_total", model=MODEL),
                         chunks * STEPS * BATCH)
        self.assertEqual(h.metric(m, "rnnserve_sessions_started_total"), SESSIONS)
        self.assertEqual(h.metric(m, "rnnserve_sessions_ended_total", reason="closed"),
                         SESSIONS)
        for reason in ("idle_timeout", "evicted", "shutdown"):
            self.assertEqual(h.metric(m, "rnnserve_sessions_ended_total", reason=reason), 0)
        self.assertEqual(h.metric(m, "rnnserve_sessions_active", model=MODEL), 0)
        self.assertEqual(h.metric(m, "rnnserve_session_state_bytes"), 0)
        # The histograms carry the model label (the model's name, from the repository).
        self.assertEqual(h.metric(m, "rnnserve_chunk_duration_seconds_count", model=MODEL), chunks)
        self.assertEqual(h.metric(m, "rnnserve_chunk_duration_seconds_bucket", model=MODEL,
                                  le="+Inf"), chunks)
        self.assertGreater(h.metric(m, "rnnserve_chunk_duration_seconds_sum", model=MODEL), 0)
        self.assertEqual(h.metric(m, "rnnserve_queue_duration_seconds_count", model=MODEL), chunks)
        # Every chunk was advanced by exactly one engine call.
        batches = h.metric(m, "rnnserve_batch_size_count", model=MODEL)
        self.assertGreater(batches, 0)
        self.assertLessEqual(batches, chunks)
        self.assertEqual(h.metric(m, "rnnserve_batch_size_sum", model=MODEL), chunks)
        # Session ids are unbounded label values: none may appear.
        for session_id in ids:
            self.assertTrue(session_id)
            self.assertNotIn(session_id, text)
        self.assertNotIn("session_id", text)
        self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_unknown_model_names_stay_out_of_metrics(self):
        # Label values must be bounded: a client naming models that do not exist must not
        # create one series per name (nor smuggle arbitrary text, e.g. a session id, in).
        server = self.serve("metrics-labels")
        marker = "not-a-model-7f3a9c"
        with server.stream() as stream:
            r = stream.call(model=marker + "-stream", start=True)
            self.assertEqual(h.grpc_code_name(r.error_code), "NOT_FOUND", r.error_message)
            self.assertEqual(stream.close(), grpc.StatusCode.OK)
        stub = server.stub()
        for rpc, request in (
                (stub.Forward, h.pb2().ForwardRequest(
                    model=marker + "-forward",
                    input=h.to_tensor(np.zeros((1, 1, 3), np.float32)))),
                (stub.GetModel, h.pb2().GetModelRequest(model=marker + "-getmodel"))):
            with self.assertRaises(grpc.RpcError) as caught:
                rpc(request, timeout=h.CALL_TIMEOUT)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        text = server.scrape()
        self.assertEqual([line for line in text.splitlines() if marker in line], [])

    def test_sigterm_health_goes_and_the_open_stream_ends(self):
        server = self.serve("drain", drain_timeout="60s")
        rng = np.random.default_rng(32)
        ref = h.ReferenceSession(self.rnn)
        stream = server.stream(server.channel())
        x = h.random_input(rng, self.rnn, STEPS, BATCH)
        out, h_n = ref.feed(x)
        h.check_chunk(self, stream.call(session_id="draining-open", model=MODEL, start=True,
                                        input=x), out, h_n, "chunk before SIGTERM")
        m = self.samples(server)
        self.assertEqual(h.metric(m, "rnnserve_streams_open"), 1)
        self.assertEqual(h.metric(m, "rnnserve_stream_requests_read_total"), 1)
        h.wait_until(lambda: h.metric(self.samples(server), "rnnserve_stream_buffered_bytes")
                     == 0, 10, "the written response to leave the buffered bytes")

        server.terminate()
        # Nothing in flight: the stream ends at once, telling the client to resume elsewhere.
        with self.assertRaises(grpc.RpcError) as caught:
            stream.recv(timeout=h.scaled(15))
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("resume elsewhere", caught.exception.details())
        for service in ("", h.SERVICE):
            h.wait_until(lambda: h.health_status(server, service) != "SERVING", 15,
                         f"health {service!r} not SERVING after SIGTERM")
        self.assertEqual(server.wait(20), 0, server.stderr_tail())

if __name__ == "__main__":
    unittest.main()
