"""Sizes before work (issue 11) against the real binary: a Forward whose output could not be
sent is refused before it is computed (the server's memory stays bounded), and flags that
would break every stream are refused at start, naming the flag and the value."""
import subprocess
import unittest

import numpy as np
from grpc import StatusCode as Code

import harness as h

STARTUP_TIMEOUT = 60
MESSAGE_LIMIT = 1 << 20


class OutsizedForwardTest(h.ServerTestCase):
    # The shape: one input feature, a wide hidden state (256 floats out per step).
    MODELS = {"wide": dict(input_size=1, hidden_size=256)}
    SERVER_NAME = "rnnserve-sizes"
    SERVER_FLAGS = (f"--max_message_bytes={MESSAGE_LIMIT}",)

    def test_forward_over_the_limit_is_refused_before_compute(self):
        # 200k steps fit a 1 MiB request (800 KB raw) but the output would be 205 MB.
        x = np.zeros((200_000, 1, 1), np.float32)
        request = h.pb2().ForwardRequest(model="wide", input=h.to_tensor(x, encoding="raw"))
        before = h.rss_bytes(self.server.pid)
        for _ in range(3):
            self.assert_rpc_error(Code.RESOURCE_EXHAUSTED,
                                  ["over the message limit", str(MESSAGE_LIMIT),
                                   "shorter sequence"],
                                  self.stub.Forward, request)
        growth = h.rss_bytes(self.server.pid) - before
        # Computing it would have taken hundreds of MB; refusing takes the request's copies.
        self.assertLess(growth, 48 << 20, f"RSS grew by {growth} bytes")
        # A request whose response fits is still answered.
        small = np.zeros((100, 1, 1), np.float32)
        reply = self.stub.Forward(h.pb2().ForwardRequest(model="wide", input=h.to_tensor(small)),
                                  timeout=h.CALL_TIMEOUT)
        self.assertEqual(list(reply.output.shape), [100, 1, 256])

    def test_session_too_wide_to_return_its_state_is_refused_at_start(self):
        # h_n holds 256 floats per sequence: (1 MiB - 1 KiB) / 5 / 256 = 818 sequences fit.
        with self.server.stream() as stream:
            wide = stream.call("raw", session_id="wide-session", model="wide", start=True,
                               input=np.zeros((1, 819, 1), np.float32))
            self.assertEqual(wide.error_code, Code.RESOURCE_EXHAUSTED.value[0],
                             wide.error_message)
            self.assertIn("the largest N that fits is 818", wide.error_message)
            self.assert_rpc_error(Code.NOT_FOUND, [], self.get_session, self.stub,
                                  "wide-session")  # a failed start leaves no session
            # One step's output (818 * 256 floats) fits, but not with h_n beside it.
            both = stream.call("raw", session_id="fits", model="wide", start=True,
                               input=np.zeros((1, 818, 1), np.float32))
            self.assertEqual(both.error_code, Code.RESOURCE_EXHAUSTED.value[0])
            self.assertIn("omit_state", both.error_message)
            fits = stream.call("raw", session_id="fits", model="wide", start=True,
                               omit_state=True, input=np.zeros((1, 818, 1), np.float32))
            self.assertEqual(fits.error_code, 0, fits.error_message)
            state = self.get_session(self.stub, "fits")
            self.assertEqual(list(state.h_n.shape), [1, 818, 256])
            closed = self.stub.CloseSession(h.pb2().CloseSessionRequest(session_id="fits"),
                                            timeout=h.CALL_TIMEOUT)
            self.assertEqual(list(closed.session.h_n.shape), [1, 818, 256])
            self.assertEqual(stream.close(), Code.OK)


class FlagValidationTest(unittest.TestCase):
    def refused(self, flag):
        proc = subprocess.run(
            [h.server_binary(), "--host=127.0.0.1", "--port=0", "--metrics_port=-1", flag],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=h.scaled(STARTUP_TIMEOUT))
        stderr = proc.stderr.decode(errors="replace")
        self.assertNotEqual(proc.returncode, 0, f"{flag} was accepted")
        self.assertIn(flag, stderr)

    def test_each_bad_flag_is_refused_naming_it(self):
        for flag in ["--max_in_flight_per_stream=0", "--max_message_bytes=0",
                     "--max_message_bytes=-1", "--max_message_bytes=1000", "--max_batch=0",
                     "--threads=-1", "--max_sessions=0", "--max_state_bytes=0",
                     "--session_idle_timeout=0", "--evict_idle_after=-1s",
                     "--drain_timeout=-1s", "--shutdown_grace=-1s", "--max_queue_delay=-1s",
                     "--port=70000", "--port=-1", "--max_stream_buffered_bytes=1048576",
                     "--max_stream_buffered_bytes=-1", "--stream_idle_timeout=-1s",
                     "--max_concurrent_streams_per_connection=0", "--keepalive_time=0",
                     "--keepalive_timeout=-1s", "--keepalive_min_client_ping_interval=0",
                     "--keepalive_time=1000h"]:
            with self.subTest(flag=flag):
                self.refused(flag)


if __name__ == "__main__":
    unittest.main()
