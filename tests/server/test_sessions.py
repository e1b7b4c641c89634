"""Session lifecycle against live torch: many sessions interleaved on one stream and over
concurrent streams, reconnecting by id, chunk_index retries and gaps, state export/import
across server processes, idle expiry, CloseSession, and a client cancelling mid-stream."""

import threading
import unittest

import numpy as np

import harness as h

MODELS = {
    "m": dict(input_size=3, hidden_size=4, num_layers=2),
    "bf": dict(input_size=2, hidden_size=3, nonlinearity="relu", batch_first=True),
}
NOT_FOUND = h.code_number(h.grpc.StatusCode.NOT_FOUND)


def plan_sessions(rng, rnns, count, chunks, prefix):
    """`count` sessions of random models, batch sizes and chunk lengths, with torch's
    expected (output, h_n) for every chunk: [(id, name, [(x, out, h_n)])]."""
    names = sorted(rnns)
    plans = []
    for i in range(count):
        name = names[i % len(names)]
        rnn = rnns[name]
        batch = int(rng.integers(1, 3))
        ref = h.ReferenceSession(rnn)
        steps = []
        for _ in range(chunks):
            x = h.random_input(rng, rnn, int(rng.integers(1, 5)), batch)
            out, h_n = ref.feed(x)
            steps.append((x, out, h_n))
        plans.append((f"{prefix}-{i}", name, steps))
    return plans


def run_interleaved(stream, rng, plans, check_order=True):
    """Sends every chunk of every planned session on one stream without waiting, the
    sessions shuffled within each round, then checks all responses: each matches torch, and
    (with check_order) each session's responses come in its request order. Returns a list
    of problems."""
    requests = {}  # request_id -> (session index, chunk index)
    chunks = len(plans[0][2])
    for k in range(chunks):
        for i in rng.permutation(len(plans)).tolist():
            session_id, name, steps = plans[i]
            fields = dict(session_id=session_id, input=steps[k][0], end=k == chunks - 1)
            if k == 0:
                fields.update(start=True, model=name)
            requests[stream.send("raw", **fields)] = (i, k)
    responses, order = stream.recv_many(len(requests), timeout=60)
    problems = []
    seen = [[] for _ in plans]
    for request_id in order:
        i, k = requests[request_id]
        seen[i].append(k)
    for i, (session_id, name, steps) in enumerate(plans):
        if check_order and seen[i] != list(range(chunks)):
            problems.append(f"{session_id}: responses in chunk order {seen[i]}")
    for request_id, (i, k) in requests.items():
        session_id, name, steps = plans[i]
        r = responses[request_id]
        what = f"{session_id} ({name}) chunk {k}"
        try:
            if r.error_code:
                raise AssertionError(f"error {r.error_code}: {r.error_message}")
            if r.session_id != session_id:
                raise AssertionError(f"answered for session {r.session_id!r}")
            h.assert_close(h.from_tensor(r.output), steps[k][1], f"{what}: output")
            h.assert_close(h.from_tensor(r.h_n), steps[k][2], f"{what}: h_n")
            if r.ended != (k == chunks - 1):
                raise AssertionError(f"ended={r.ended}")
        except AssertionError as e:
            problems.append(f"{what}: {e}")
    return problems


class SessionsTest(h.ServerTestCase):
    MODELS = MODELS
    SEED = 10
    SERVER_NAME = "sessions"

    # -- many sessions

    def test_100_sessions_interleaved_on_one_stream(self):
        rng = np.random.default_rng(100)
        plans = plan_sessions(rng, self.rnns, 100, 3, "interleaved")
        with self.server.stream() as stream:
            # Response order: test_a_sessions_responses_come_in_request_order.
            problems = run_interleaved(stream, rng, plans)
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)
        self.assertEqual(problems, [])

    def test_100_sessions_over_10_concurrent_streams(self):
        rng = np.random.default_rng(101)
        groups = [plan_sessions(rng, self.rnns, 10, 4, f"concurrent{g}") for g in range(10)]
        problems = []
        lock = threading.Lock()

        def worker(g):
            try:
                worker_rng = np.random.default_rng(200 + g)
                with self.server.stream(self.server.channel()) as stream:
                    found = run_interleaved(stream, worker_rng, groups[g])
                    if stream.close() != h.grpc.StatusCode.OK:
                        found.append(f"stream {g} ended with {stream.status}")
            except Exception as e:  # reported below, with the thread's group
                found = [f"stream {g}: {type(e).__name__}: {e}"]
            with lock:
                problems.extend(found)

        threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        self.assertFalse(any(t.is_alive() for t in threads), "a stream thread is stuck")
        self.assertEqual(problems, [])

    def test_a_sessions_responses_come_in_request_order(self):
        # "A session's chunks are applied, and answered, in request order" (serving_core.h).
        # Pipelined chunks alternate long and one-step, so a worker still answering a long
        # chunk could be overtaken by another answering the next, short one. Bounded: up to
        # 10 rounds of 20 sessions x 10 chunks; the first disorder fails the test.
        with h.ServerProcess(model_repository=self.repo, name="sessions-order",
                             flags=["--threads=4"], metrics=False) as server:
            long_chunk = np.ones((2000, 1, 3), np.float32)
            short_chunk = np.ones((1, 1, 3), np.float32)
            with server.stream() as stream:
                for round_ in range(10):
                    requests = {}
                    for i in range(20):
                        for k in range(10):
                            fields = dict(start=True, model="m") if k == 0 else {}
                            request_id = stream.send(
                                session_id=f"order{round_}-{i}", end=k == 9,
                                input=long_chunk if k % 2 == 0 else short_chunk, **fields)
                            requests[request_id] = (i, k)
                    responses, order = stream.recv_many(len(requests), timeout=60)
                    seen = [[] for _ in range(20)]
                    for request_id in order:
                        h.check_ok(responses[request_id])
                        i, k = requests[request_id]
                        seen[i].append(k)
                    self.assertEqual([f"order{round_}-{i}: {s}" for i, s in enumerate(seen)
                                      if s != sorted(s)], [], "sessions answered out of order")
                self.assertEqual(stream.close(), h.grpc.StatusCode.OK)
            self.assertEqual(server.stop(), 0, server.stderr_tail())

    # -- reconnecting and retrying

    def test_reconnect_and_continue_by_id_on_a_new_stream(self):
        rng = np.random.default_rng(102)
        rnn = self.rnns["m"]
        ref = h.ReferenceSession(rnn)
        with self.server.stream() as first:
            x = h.random_input(rng, rnn, 3, 2)
            out, h_n = ref.feed(x)
            r = first.call(session_id="reconnect", model="m", start=True, input=x)
            h.check_chunk(self, r, out, h_n, "chunk 0")
            self.assertEqual(first.close(), h.grpc.StatusCode.OK)
        # The session outlives its stream: go on by id on new ones.
        for k in (1, 2):
            with self.server.stream(self.server.channel()) as again:
                x = h.random_input(rng, rnn, 2, 2)
                out, h_n = ref.feed(x)
                r = again.call(session_id="reconnect", input=x, encoding="raw")
                h.check_chunk(self, r, out, h_n, f"chunk {k} on a new stream")
                self.assertEqual(r.steps_seen, ref.steps)
                self.assertEqual(again.close(), h.grpc.StatusCode.OK)
        info = self.get_session(self.stub, "reconnect")
        self.assertEqual(info.steps_seen, 7)
        h.assert_close(h.from_tensor(info.h_n), ref.h, "GetSession h_n")
        self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id="reconnect"),
                               timeout=h.CALL_TIMEOUT)

    def test_chunk_index_duplicate_and_gap(self):
        rng = np.random.default_rng(103)
        rnn = self.rnns["bf"]
        ref = h.ReferenceSession(rnn)
        xs = [h.random_input(rng, rnn, int(rng.integers(1, 4)), 2) for _ in range(5)]
        with self.server.stream() as stream:
            answers = []
            for k in range(3):
                out, h_n = ref.feed(xs[k])
                fields = dict(start=True, model="bf") if k == 0 else {}
                r = stream.call(session_id="indexed", input=xs[k], chunk_index=k, **fields)
                h.check_chunk(self, r, out, h_n, f"chunk {k}")
                self.assertTrue(r.HasField("chunk_index"))
                self.assertEqual(r.chunk_index, k)
                self.assertFalse(r.duplicate)
                answers.append(r)
            steps = ref.steps

            # The last chunk again: acknowledged, its output replayed, not applied twice.
            r = h.check_ok(stream.call(session_id="indexed", input=xs[2], chunk_index=2))
            self.assertTrue(r.duplicate)
            self.assertEqual(r.chunk_index, 2)
            self.assertEqual(r.steps_seen, steps)
            h.assert_close(h.from_tensor(r.output), h.from_tensor(answers[2].output),
                           "replayed output")
            h.assert_close(h.from_tensor(r.h_n), ref.h, "h_n after the duplicate")
            # An older chunk again: acknowledged with no output, the current state.
            r = h.check_ok(stream.call(session_id="indexed", input=xs[0], chunk_index=0))
            self.assertTrue(r.duplicate)
            self.assertTrue(h.is_empty(r.output))
            self.assertEqual(r.steps_seen, steps)
            h.assert_close(h.from_tensor(r.h_n), ref.h, "h_n after the old duplicate")

            # The next chunk still matches torch: nothing was applied twice.
            out, h_n = ref.feed(xs[3])
            r = stream.call(session_id="indexed", input=xs[3], chunk_index=3)
            h.check_chunk(self, r, out, h_n, "chunk 3 after duplicates")
            self.assertFalse(r.duplicate)

            # A gap is refused, names both indices, and changes nothing.
            r = stream.call(session_id="indexed", input=xs[4], chunk_index=7)
            self.assertEqual(r.error_code, h.code_number(h.grpc.StatusCode.FAILED_PRECONDITION),
                             r.error_message)
            self.assertIn("7", r.error_message)
            self.assertIn("expects chunk_index 4", r.error_message)
            self.assertEqual(r.chunk_index, 7)
            out, h_n = ref.feed(xs[4])
            r = stream.call(session_id="indexed", input=xs[4], chunk_index=4, end=True)
            h.check_chunk(self, r, out, h_n, "chunk 4 after the gap")
            self.assertEqual(r.steps_seen, ref.steps)
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)

    def test_retry_of_last_chunk_after_reconnect_is_a_duplicate(self):
        rng = np.random.default_rng(104)
        rnn = self.rnns["m"]
        ref = h.ReferenceSession(rnn)
        x0, x1, x2 = (h.random_input(rng, rnn, 2, None) for _ in range(3))
        with self.server.stream() as first:
            h.check_ok(first.call(session_id="retry", model="m", start=True, input=x0,
                                  chunk_index=0))
            ref.feed(x0)
            out1, h1 = ref.feed(x1)
            r1 = first.call(session_id="retry", input=x1, chunk_index=1)
            h.check_chunk(self, r1, out1, h1, "chunk 1")
            first.cancel()  # as if the connection dropped before the client saw the answer
        with self.server.stream(self.server.channel()) as second:
            r = h.check_ok(second.call(session_id="retry", input=x1, chunk_index=1))
            self.assertTrue(r.duplicate)
            h.assert_close(h.from_tensor(r.output), out1, "replayed output of chunk 1")
            out2, h2 = ref.feed(x2)
            r = second.call(session_id="retry", input=x2, chunk_index=2, end=True)
            h.check_chunk(self, r, out2, h2, "chunk 2 after the retry")
            self.assertEqual(second.close(), h.grpc.StatusCode.OK)

    # -- state export / import

    def test_export_state_and_continue_on_a_second_server(self):
        rng = np.random.default_rng(105)
        with h.ServerProcess(model_repository=self.repo, name="sessions-second",
                             metrics=False) as second:
            second_stub = second.stub()
            for name, batch, encoding in (("m", 2, "raw"), ("bf", 3, "values"),
                                          ("m", None, "values")):
                with self.subTest(model=name, batch=batch, encoding=encoding):
                    rnn = self.rnns[name]
                    sizes = h.random_split(rng, 12, 4)
                    x = h.random_input(rng, rnn, 12, batch)
                    axis = h.time_axis(rnn, batch is not None)
                    full_out, full_h = h.torch_forward(rnn, x, None)
                    chunks = h.split_time(x, sizes, axis)
                    outs = h.split_time(full_out, sizes, axis)
                    session_id = f"export-{name}-{batch}"
                    with self.server.stream() as stream:
                        for k in range(2):
                            fields = dict(start=True, model=name) if k == 0 else {}
                            r = stream.call(encoding, session_id=session_id, input=chunks[k],
                                            **fields)
                            h.check_chunk(self, r, outs[k], None, f"server 1 chunk {k}")
                        self.assertEqual(stream.close(), h.grpc.StatusCode.OK)
                    exported = self.get_session(self.stub, session_id,
                                                raw=encoding == "raw")
                    self.assertEqual(h.encoding_of(exported.h_n), encoding)
                    self.assertEqual(exported.steps_seen, sizes[0] + sizes[1])
                    self.assertEqual(exported.batch_size, batch or 1)
                    self.assertEqual(exported.unbatched, batch is None)
                    prefix = np.concatenate(chunks[:2], axis=axis)
                    h.assert_close(h.from_tensor(exported.h_n),
                                   h.torch_forward(rnn, prefix)[1], "exported h_n")
                    with second.stream() as stream:
                        for k in range(2, 4):
                            fields = dict(start=True, model=name,
                                          h_0=exported.h_n) if k == 2 else {}
                            r = stream.call(encoding, session_id=session_id, input=chunks[k],
                                            end=k == 3, **fields)
                            h.check_chunk(self, r, outs[k], None, f"server 2 chunk {k}")
                        h.assert_close(h.from_tensor(r.h_n), full_h, "final h_n on server 2")
                        self.assertEqual(stream.close(), h.grpc.StatusCode.OK)
                    self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id=session_id),
                                           timeout=h.CALL_TIMEOUT)
            self.assertIsNotNone(second_stub)
            self.assertEqual(second.stop(), 0, second.stderr_tail())

    # -- ending sessions

    def test_idle_session_expires(self):
        rng = np.random.default_rng(106)
        rnn = self.rnns["m"]
        with h.ServerProcess(model_repository=self.repo, name="sessions-idle",
                             flags=["--session_idle_timeout=1s"], metrics=False) as server:
            stub = server.stub()
            with server.stream() as stream:
                x = h.random_input(rng, rnn, 3, 1)
                h.check_ok(stream.call(session_id="idle", model="m", start=True, input=x))
                try:
                    info = self.get_session(stub, "idle", omit_state=True)
                    self.assertLessEqual(info.expires_in_ms, 1000)
                except h.grpc.RpcError:
                    pass  # a stalled machine may let it expire first: checked below

                def gone():
                    try:
                        self.get_session(stub, "idle", omit_state=True)
                        return None
                    except h.grpc.RpcError as e:
                        return e

                error = h.wait_until(gone, 15, "the idle session to expire")
                self.assertEqual(error.code(), h.grpc.StatusCode.NOT_FOUND, error.details())
                self.assertIn("expired", error.details())
                self.assertIn("idle", error.details())
                # A chunk for it is refused the same way, and the stream goes on.
                r = stream.call(session_id="idle", input=x)
                self.assertEqual(r.error_code, NOT_FOUND, r.error_message)
                self.assertIn("expired", r.error_message)
                # The id can be used again for a new session, which starts from zeros.
                out, h_n = h.torch_forward(rnn, x)
                r = stream.call(session_id="idle", model="m", start=True, input=x, end=True)
                h.check_chunk(self, r, out, h_n, "new session with the expired id")
                self.assertEqual(stream.close(), h.grpc.StatusCode.OK)
            self.assertEqual(server.stop(), 0, server.stderr_tail())

    def test_close_session(self):
        rng = np.random.default_rng(107)
        rnn = self.rnns["bf"]
        ref = h.ReferenceSession(rnn)
        with self.server.stream() as stream:
            x = h.random_input(rng, rnn, 4, 2)
            ref.feed(x)
            h.check_ok(stream.call(session_id="to-close", model="bf", start=True, input=x))
            closed = self.stub.CloseSession(
                h.pb2().CloseSessionRequest(session_id="to-close"), timeout=h.CALL_TIMEOUT)
            self.assertEqual(closed.session.session_id, "to-close")
            self.assertEqual(closed.session.model, "bf")
            self.assertEqual(closed.session.steps_seen, 4)
            h.assert_close(h.from_tensor(closed.session.h_n), ref.h, "final state")
            error = self.assert_rpc_error(h.grpc.StatusCode.NOT_FOUND, ["to-close", "closed"],
                                          self.get_session, self.stub, "to-close")
            self.assertNotIn("expired", error.details())
            r = stream.call(session_id="to-close", input=x)
            self.assertEqual(r.error_code, NOT_FOUND, r.error_message)
            self.assertIn("closed", r.error_message)
            self.assert_rpc_error(h.grpc.StatusCode.NOT_FOUND, ["closed"],
                                  self.stub.CloseSession,
                                  h.pb2().CloseSessionRequest(session_id="to-close"))
            self.assertEqual(stream.close(), h.grpc.StatusCode.OK)

    def test_client_cancelling_mid_stream_leaves_others_intact(self):
        rng = np.random.default_rng(108)
        rnn = self.rnns["m"]
        bystander = h.ReferenceSession(rnn)
        with self.server.stream(self.server.channel()) as other:
            x = h.random_input(rng, rnn, 3, 2)
            out, h_n = bystander.feed(x)
            h.check_chunk(self, other.call(session_id="bystander-c", model="m", start=True,
                                           input=x), out, h_n, "bystander chunk 0")

            # Many chunks in flight, then the client goes away without waiting.
            xs = [h.random_input(rng, rnn, int(rng.integers(1, 4)), 2) for _ in range(40)]
            doomed = self.server.stream(self.server.channel())
            doomed.send(session_id="cancelled", model="m", start=True, input=xs[0],
                        chunk_index=0)
            doomed.recv()  # the session exists before the cancel
            for k in range(1, len(xs)):
                doomed.send(session_id="cancelled", input=xs[k], chunk_index=k)
            doomed.cancel()

            self.assertEqual(h.health_status(self.server, h.SERVICE), "SERVING")
            # The other stream's session goes on.
            for k in (1, 2):
                x = h.random_input(rng, rnn, 2, 2)
                out, h_n = bystander.feed(x)
                h.check_chunk(self, other.call(session_id="bystander-c", input=x), out, h_n,
                              f"bystander chunk {k} after the cancel")

            # The cancelled stream's session survives with whole chunks applied in order:
            # any snapshot shows the state after its first next_chunk_index chunks (chunks
            # that were read before the cancel may still be running; the snapshot is atomic).
            for _ in range(2):
                info = self.get_session(self.stub, "cancelled")
                applied = info.next_chunk_index
                self.assertGreaterEqual(applied, 1)
                self.assertLessEqual(applied, len(xs))
                self.assertEqual(info.steps_seen, sum(x.shape[0] for x in xs[:applied]))
                ref = h.ReferenceSession(rnn)
                for x in xs[:applied]:
                    ref.feed(x)
                h.assert_close(h.from_tensor(info.h_n), ref.h, f"state after {applied} chunks")
            self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id="cancelled"),
                                   timeout=h.CALL_TIMEOUT)
            # New sessions still work, and so does the other stream.
            x = h.random_input(rng, rnn, 2, 2)
            out, h_n = h.torch_forward(rnn, x)
            h.check_chunk(self, other.call(model="m", start=True, input=x, end=True), out, h_n,
                          "a new session after the cancel")
            x = h.random_input(rng, rnn, 2, 2)
            out, h_n = bystander.feed(x)
            h.check_chunk(self, other.call(session_id="bystander-c", input=x, end=True), out,
                          h_n, "bystander's last chunk")
            self.assertEqual(other.close(), h.grpc.StatusCode.OK)


if __name__ == "__main__":
    unittest.main()
