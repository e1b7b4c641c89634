"""One memory budget and idempotent session operations (issue 11) against the real binary:
duplicates replay one shared copy (a client that sends many duplicates and never reads does
not grow the server), bidirectional buffering over its cap is refused with nothing applied,
retried starts are acknowledged (by id or idempotency_key), `start` may set the chunk_index,
a duplicate carrying other data is refused, and the memory metrics' parts add up to the
sessions' and go back to 0. Outputs are checked against torch."""
import queue
import threading

import numpy as np
from grpc import StatusCode as Code

import harness as h

BIG_RECEIVE = {"grpc.max_receive_message_length": 128 << 20}
# What keeping an output for replays costs besides its bytes (core/serving/session.h).
REPLAY_OVERHEAD_MAX = 512


def memory_parts(server):
    m = h.parse_metrics(server.scrape())
    return {part: h.metric(m, "rnnserve_session_memory_bytes", part=part)
            for part in ("state", "buffered_input", "replay", "ids")}, m


class SlowReaderDuplicatesTest(h.ServerTestCase):
    # The shape: one input feature, 256 floats of output per step.
    MODELS = {"wide": dict(input_size=1, hidden_size=256)}
    SERVER_NAME = "rnnserve-memory-replay"
    SERVER_FLAGS = ("--max_in_flight_per_stream=4",)
    METRICS = True
    STEPS = 8000  # an 8 MB output
    DUPLICATES = 64  # 512 MB if every duplicate queued its own copy

    def test_duplicates_share_one_replay_copy_and_rss_stays_bounded(self):
        stub = self.server.stub(self.server.channel(**BIG_RECEIVE))
        x = np.random.default_rng(1).standard_normal((self.STEPS, 1, 1)).astype(np.float32)
        expected, _ = h.torch_forward(self.rnns["wide"], x, None)
        with h.Stream(stub) as stream:
            applied = stream.call("raw", session_id="replayed", model="wide", start=True,
                                  chunk_index=0, input=x, omit_state=True)
            h.assert_close(h.from_tensor(h.check_ok(applied).output), expected, "applied")
            # A duplicate read normally carries the same output.
            dup = h.check_ok(stream.call("raw", session_id="replayed", chunk_index=0, input=x))
            self.assertTrue(dup.duplicate)
            h.assert_close(h.from_tensor(dup.output), expected, "replayed")
            self.assertEqual(stream.close(), Code.OK)
        output_bytes = self.STEPS * 256 * 4
        parts, _ = memory_parts(self.server)
        self.assertGreaterEqual(parts["replay"], output_bytes)
        self.assertLess(parts["replay"], output_bytes + REPLAY_OVERHEAD_MAX)

        # A client that sends many duplicates and never reads its responses.
        before = h.rss_bytes(self.server.pid)
        request = h.Stream.request("raw", session_id="replayed", chunk_index=0, input=x)
        requests = queue.Queue()
        for i in range(self.DUPLICATES):
            r = h.pb2().StreamRequest()
            r.CopyFrom(request)
            r.request_id = i + 1
            requests.put(r)
        done = threading.Event()

        def iterate():
            while not done.is_set():
                try:
                    yield requests.get(timeout=0.1)
                except queue.Empty:
                    continue

        slow = self.server.stub(self.server.channel(**BIG_RECEIVE)).Stream(iterate())
        try:
            h.wait_until(lambda: h.metric(h.parse_metrics(self.server.scrape()),
                                          "rnnserve_streams_read_paused") >= 1,
                         h.scaled(30), "the server to stop reading the slow stream")
            growth = h.rss_bytes(self.server.pid) - before
            # Still one copy kept, however many duplicates wait to be written.
            parts, _ = memory_parts(self.server)
            self.assertLess(parts["replay"], output_bytes + REPLAY_OVERHEAD_MAX)
            # Copied per duplicate the queue would take DUPLICATES * 8 MB; bounded, a few
            # responses in flight (each encoded once at the RPC layer).
            self.assertLess(growth, 200 << 20, f"RSS grew by {growth} bytes")
        finally:
            done.set()
            slow.cancel()
        # The session is untouched and still serves.
        info = self.get_session(self.stub, "replayed")
        self.assertEqual(info.steps_seen, self.STEPS)
        self.assertEqual(info.next_chunk_index, 1)
        self.assertGreaterEqual(info.replay_bytes, output_bytes)
        self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id="replayed"),
                               timeout=h.CALL_TIMEOUT)
        h.wait_until(lambda: sum(memory_parts(self.server)[0].values()) == 0, h.scaled(10),
                     "session memory to go back to 0")


class BufferedInputCapTest(h.ServerTestCase):
    MODELS = {"bi": dict(input_size=3, hidden_size=4, bidirectional=True)}
    SERVER_NAME = "rnnserve-memory-buffered"
    SERVER_FLAGS = ("--max_buffered_steps=50",)
    METRICS = True

    def test_buffering_over_the_cap_is_refused_and_nothing_applied(self):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((50, 2, 3)).astype(np.float32)
        with self.server.stream() as stream:
            h.check_ok(stream.call(session_id="buf", model="bi", start=True, input=x[:30],
                                   chunk_index=0))
            parts, _ = memory_parts(self.server)
            self.assertEqual(parts["buffered_input"], 30 * 2 * 3 * 4)
            over = stream.call(session_id="buf", input=x[:21], chunk_index=1)
            self.assertEqual(over.error_code, h.code_number(Code.RESOURCE_EXHAUSTED),
                             over.error_message)
            for text in ("30 timesteps buffered", "T=21", "cap of 50", "--max_buffered_steps",
                         "end the sequence sooner"):
                self.assertIn(text, over.error_message)
            info = self.get_session(self.stub, "buf")
            self.assertEqual((info.buffered_steps, info.next_chunk_index), (30, 1))
            self.assertEqual(info.buffered_input_bytes, 30 * 2 * 3 * 4)
            # Still usable: the rest of the sequence, and the output is torch's.
            end = stream.call(session_id="buf", input=x[30:], chunk_index=1, end=True)
            expected, h_n = h.torch_forward(self.rnns["bi"], x, None)
            h.check_chunk(self, end, expected, h_n, "whole sequence at end")
            self.assertEqual(stream.close(), Code.OK)
        h.wait_until(lambda: sum(memory_parts(self.server)[0].values()) == 0, h.scaled(10),
                     "session memory to go back to 0")


class IdempotentStartTest(h.ServerTestCase):
    MODELS = {"m": dict(input_size=3, hidden_size=4, num_layers=2)}
    SERVER_NAME = "rnnserve-memory-idempotent"

    def test_retried_start_with_an_id_is_acknowledged(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((5, 2, 3)).astype(np.float32)
        out, h_n = h.torch_forward(self.rnns["m"], x[:2], None)
        with self.server.stream() as stream:
            first = stream.call(session_id="retry", model="m", start=True, input=x[:2],
                                chunk_index=0)
            h.check_chunk(self, first, out, h_n, "first start")
            again = stream.call(session_id="retry", model="m", start=True, input=x[:2],
                                chunk_index=0)
            h.check_chunk(self, again, out, h_n, "retried start")
            self.assertTrue(again.duplicate)
            self.assertEqual(again.steps_seen, 2)
            other = stream.call(session_id="retry", model="m", start=True, input=x[:1],
                                chunk_index=0)
            self.assertEqual(other.error_code, h.code_number(Code.ALREADY_EXISTS))
            self.assertIn("different content", other.error_message)
            # The session goes on as if started once.
            whole, whole_h = h.torch_forward(self.rnns["m"], x, None)
            rest = stream.call(session_id="retry", input=x[2:], chunk_index=1)
            h.check_chunk(self, rest, whole[2:], whole_h, "after the retried start")
            self.assertEqual(rest.steps_seen, 5)
            self.assertEqual(stream.close(), Code.OK)

    def test_retried_start_with_an_idempotency_key_is_acknowledged(self):
        x = np.random.default_rng(4).standard_normal((3, 1, 3)).astype(np.float32)
        with self.server.stream() as stream:
            first = h.check_ok(stream.call(model="m", start=True, input=x,
                                           idempotency_key="token 42"))
            again = h.check_ok(stream.call(model="m", start=True, input=x,
                                           idempotency_key="token 42"))
            self.assertTrue(again.duplicate)
            self.assertEqual(again.session_id, first.session_id)
            info = self.get_session(self.stub, first.session_id)
            self.assertEqual(info.steps_seen, 3)
            for bad in ("k" * 129, "tab\there"):
                r = stream.call(model="m", start=True, idempotency_key=bad)
                self.assertEqual(r.error_code, h.code_number(Code.INVALID_ARGUMENT), bad)
                self.assertIn("idempotency_key must be 1 to 128", r.error_message)
            self.assertEqual(stream.close(), Code.OK)

    def test_start_with_chunk_index_keeps_the_sequence(self):
        rng = np.random.default_rng(5)
        x = rng.standard_normal((6, 1, 3)).astype(np.float32)
        _, h_mid = h.torch_forward(self.rnns["m"], x[:4], None)
        whole, whole_h = h.torch_forward(self.rnns["m"], x, None)
        with self.server.stream() as stream:
            # A session resumed elsewhere: its state as h_0 and the next index.
            h.check_ok(stream.call(session_id="resumed", model="m", start=True,
                                   h_0=h_mid.astype(np.float32), chunk_index=7))
            self.assertEqual(self.get_session(self.stub, "resumed").next_chunk_index, 7)
            r = stream.call(session_id="resumed", input=x[4:], chunk_index=7)
            h.check_chunk(self, r, whole[4:], whole_h, "resumed at chunk 7")
            self.assertEqual(self.get_session(self.stub, "resumed").next_chunk_index, 8)
            # A duplicate of 7 with other data is refused; with the same data, acknowledged.
            changed = stream.call(session_id="resumed", input=x[:2], chunk_index=7)
            self.assertEqual(changed.error_code, h.code_number(Code.FAILED_PRECONDITION))
            self.assertIn("already applied with different input", changed.error_message)
            same = h.check_ok(stream.call(session_id="resumed", input=x[4:], chunk_index=7))
            self.assertTrue(same.duplicate)
            h.assert_close(h.from_tensor(same.output), whole[4:], "replayed chunk 7")
            self.assertEqual(stream.close(), Code.OK)


class MemoryMetricsTest(h.ServerTestCase):
    MODELS = {"m": dict(input_size=3, hidden_size=4), "bi": dict(input_size=3, hidden_size=4,
                                                                bidirectional=True)}
    SERVER_NAME = "rnnserve-memory-metrics"
    METRICS = True

    def test_parts_add_up_and_return_to_zero(self):
        rng = np.random.default_rng(6)
        ids = []
        with self.server.stream() as stream:
            for i in range(3):
                sid = f"uni-{i}"
                h.check_ok(stream.call(session_id=sid, model="m", start=True, chunk_index=0,
                                       input=rng.standard_normal((4, 2, 3)).astype(np.float32)))
                ids.append(sid)
            h.check_ok(stream.call(session_id="bi-0", model="bi", start=True,
                                   input=rng.standard_normal((6, 1, 3)).astype(np.float32)))
            ids.append("bi-0")
            h.check_ok(stream.call(model="m", start=True, idempotency_key="key-of-a-start"))
            ids.append(stream.last_session_id)
            infos = [self.get_session(self.stub, sid) for sid in ids]
            parts, m = memory_parts(self.server)
            for info in infos:
                self.assertEqual(info.memory_bytes, info.state_bytes + info.buffered_input_bytes
                                 + info.replay_bytes + info.id_bytes)
            self.assertEqual(parts["state"], sum(i.state_bytes for i in infos))
            self.assertEqual(parts["buffered_input"], sum(i.buffered_input_bytes for i in infos))
            self.assertEqual(parts["replay"], sum(i.replay_bytes for i in infos))
            self.assertEqual(parts["ids"], sum(i.id_bytes for i in infos))
            self.assertEqual(h.metric(m, "rnnserve_session_state_bytes"), parts["state"])
            self.assertGreater(parts["buffered_input"], 0)
            self.assertGreater(parts["replay"], 0)
            for sid in ids:
                self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id=sid),
                                       timeout=h.CALL_TIMEOUT)
            self.assertEqual(stream.close(), Code.OK)
        parts, m = memory_parts(self.server)
        self.assertEqual(parts, {"state": 0, "buffered_input": 0, "replay": 0, "ids": 0})
        self.assertEqual(h.metric(m, "rnnserve_session_state_bytes"), 0)
        self.assertEqual(h.metric(m, "rnnserve_session_tombstones"), len(ids))
        self.assertGreater(h.metric(m, "rnnserve_session_tombstone_bytes"), 0)


class StateAtTheMessageEdgeTest(h.ServerTestCase):
    """GetSession and CloseSession never fail for size: a session's h_n fits a message by the
    check when its N is fixed, so at the largest N allowed, with the longest id and every
    SessionInfo field set, both answer in full."""
    MODELS = {"wide": dict(input_size=1, hidden_size=256)}
    SERVER_NAME = "rnnserve-memory-edge"
    SERVER_FLAGS = (f"--max_message_bytes={1 << 20}",)
    LARGEST_N = 818  # (1 MiB - 1 KiB) / 5 bytes / 256 floats

    def test_largest_batch_state_is_returned_by_get_and_close(self):
        rng = np.random.default_rng(7)
        h0 = rng.standard_normal((1, self.LARGEST_N, 256)).astype(np.float32)
        sid = "e" * 128
        with self.server.stream() as stream:
            over = stream.call("raw", session_id="over", model="wide", start=True,
                               h_0=np.zeros((1, self.LARGEST_N + 1, 256), np.float32))
            self.assertEqual(over.error_code, h.code_number(Code.RESOURCE_EXHAUSTED))
            self.assertIn(f"the largest N that fits is {self.LARGEST_N}", over.error_message)
            h.check_ok(stream.call("raw", session_id=sid, model="wide", start=True, h_0=h0,
                                   chunk_index=2 ** 63, omit_state=True))
            x = rng.standard_normal((1, self.LARGEST_N, 1)).astype(np.float32)
            _, h_n = h.torch_forward(self.rnns["wide"], x, h0)
            h.check_ok(stream.call("raw", session_id=sid, input=x, chunk_index=2 ** 63,
                                   omit_state=True))
            self.assertEqual(stream.close(), Code.OK)
        for raw in (False, True):
            info = self.get_session(self.stub, sid, raw=raw)
            h.assert_close(h.from_tensor(info.h_n), h_n, f"GetSession (raw={raw})")
            self.assertGreater(info.memory_bytes, info.state_bytes)
        closed = self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id=sid),
                                        timeout=h.CALL_TIMEOUT)
        h.assert_close(h.from_tensor(closed.session.h_n), h_n, "CloseSession")
        self.assertEqual(closed.session.next_chunk_index, 2 ** 63 + 1)
