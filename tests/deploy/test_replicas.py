"""Several replicas for real: three rnnserve processes behind Debian's nginx running the
Kubernetes router config (deploy/kubernetes/nginx.conf: `hash $http_x_session_id consistent`,
grpc_pass), in its plaintext form: the replicas here run without TLS, so the harness drops the
config's TLS directives on both sides (deploy/check-manifests.sh runs `nginx -t` on the TLS
form). The replicas pick their own ports (port 0) and nginx listens on a unix socket in its own
folder, so nothing collides under ctest -j. Without nginx the test fails, naming it.

(a) Streams that send `x-session-id` reach the replica holding their session, across
    reconnects (a chunk without `start` would be NOT_FOUND anywhere else; GetSession straight
    at each backend finds the session on exactly one).
(b) The replica holding a session is killed: through nginx the client lands on another
    replica (NOT_FOUND), starts the session again with h_0 = its last h_n, and the outputs
    still match torch over the whole sequence within 1e-5. This is the raw protocol, done by
    hand on one-request streams; the client libraries doing it by themselves mid-stream (and
    scale-out, SIGTERM) are in test_replica_faults.py.

    (cd tests/deploy && /usr/bin/python3 ../pykit/run_tests.py test_replicas)
"""

import os
import shutil
import signal
import tempfile
import unittest

import grpc
import numpy as np

import deploy_harness as harness
from deploy_harness import kit

NGINX_CONF = os.path.join(harness.ROOT, "deploy", "kubernetes", "nginx.conf")
MODEL = "tiny"
TOLERANCE = 1e-5


class ReplicasTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        kit.require_tool("nginx", harness.NGINX_HINT)
        cls.rc = kit.client_module()
        cls.tmp = tempfile.mkdtemp(prefix="rnnserve-replicas-")
        repo = os.path.join(cls.tmp, "models")
        cls.rnn = kit.write_model(os.path.join(repo, MODEL), seed=3, input_size=6, hidden_size=12,
                                      num_layers=2)
        cls.servers, cls.nginx = [], None
        try:
            for i in range(3):
                cls.servers.append(kit.ServerProcess(
                    name=f"replica{i}", model_repository=repo, drain_timeout="2s",
                    flags=["--threads=1"], log_path=os.path.join(cls.tmp, f"replica{i}.log")))
                cls.servers[-1].start()
            for server in cls.servers:
                server.wait_serving()
            cls.nginx = harness.Nginx(NGINX_CONF, [s.target for s in cls.servers],
                                      prefix=os.path.join(cls.tmp, "nginx")).start()
            kit.wait_serving(cls.nginx.target, timeout=kit.scaled(10))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.nginx:
            cls.nginx.stop()
        for server in cls.servers:
            server.stop(timeout=kit.scaled(15))
        if os.environ.get("RNNSERVE_KEEP_TMP"):
            print(f"kept {cls.tmp}")
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.rng = np.random.default_rng(abs(hash(self.id())) % 2**32)

    def chunk(self, steps, batch=2):
        return self.rng.standard_normal((steps, batch, self.rnn.input_size), dtype=np.float32)

    def holders(self, session_id):
        """The replicas (indexes) whose GetSession knows the session, asked directly."""
        found = []
        for i, server in enumerate(self.servers):
            if server.process.poll() is not None:
                continue
            with self.rc.RnnServeClient(server.target, timeout=5) as client:
                try:
                    client.get_session(session_id, omit_state=True)
                    found.append(i)
                except self.rc.RnnServeError as e:
                    self.assertEqual(e.code, grpc.StatusCode.NOT_FOUND, e)
        return found

    def via_router(self, session_id, chunk, start=False, **kwargs):
        """One chunk on a fresh connection to nginx (a reconnect), with the session header."""
        with self.rc.RnnServeClient(self.nginx.target) as client, \
                harness.open_stream(client, session_header=session_id) as stream:
            if start:
                return stream.start(MODEL, session_id=session_id, chunk=chunk, **kwargs)
            return stream.send(chunk, session_id=session_id, **kwargs)

    def routed_upstreams(self, session_id):
        """The upstreams nginx tried for each request of the session, from its access log."""
        tried = []
        for line in self.nginx.access_log().splitlines():
            _, sid, _, upstreams = line.split(" ", 3)
            if sid == session_id:
                tried.append(upstreams.rsplit(" ", 1)[0])
        return tried

    def test_a_sessions_stick_to_one_replica_across_reconnects(self):
        sessions = {f"sticky-{i}": [self.chunk(3), self.chunk(2), self.chunk(4)] for i in range(12)}
        for sid, chunks in sessions.items():
            self.via_router(sid, chunks[0], start=True, chunk_index=0)
        homes = {}
        for sid, chunks in sessions.items():
            # Each chunk on a new connection, without `start`: only the holder knows the session.
            outputs = [self.via_router(sid, chunks[i], chunk_index=i).output for i in (1, 2)]
            want, _ = kit.torch_forward(self.rnn, np.concatenate(chunks))
            np.testing.assert_allclose(np.concatenate(outputs), want[3:], atol=TOLERANCE)
            holders = self.holders(sid)
            self.assertEqual(len(holders), 1, f"{sid} is on replicas {holders}")
            homes[sid] = holders[0]
            # nginx's own record: every request of the session went to that one replica.
            self.assertEqual(set(self.routed_upstreams(sid)), {self.servers[homes[sid]].target}, sid)
        # The hash spreads sessions: 12 sessions on one of three replicas would be a broken hash.
        self.assertGreater(len(set(homes.values())), 1, homes)

    def test_b_failover_resumes_from_the_last_state(self):
        sid = "failover-1"
        chunks = [self.chunk(4), self.chunk(3), self.chunk(5), self.chunk(2)]
        want_out, want_hn = kit.torch_forward(self.rnn, np.concatenate(chunks))
        outputs = [self.via_router(sid, chunks[0], start=True, chunk_index=0).output]
        reply = self.via_router(sid, chunks[1], chunk_index=1)
        outputs.append(reply.output)
        last_state = reply.h_n  # the client keeps the last h_n it was sent
        (victim,) = self.holders(sid)
        self.servers[victim].stop(sig=signal.SIGKILL)

        # The next chunk through the router lands on a survivor, which does not know the session.
        with self.assertRaises(self.rc.RnnServeError) as caught:
            self.via_router(sid, chunks[2], chunk_index=2)
        self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)
        # Resume: start the session again from the last h_n, and go on.
        outputs.append(self.via_router(sid, chunks[2], start=True, h0=last_state).output)
        reply = self.via_router(sid, chunks[3])
        outputs.append(reply.output)
        np.testing.assert_allclose(np.concatenate(outputs), want_out, atol=TOLERANCE)
        np.testing.assert_allclose(reply.h_n, want_hn, atol=TOLERANCE)
        (home,) = self.holders(sid)
        self.assertNotEqual(home, victim)
        # nginx tried the dead replica first, then moved on along the hash ring.
        self.assertIn(f"{self.servers[victim].target}, {self.servers[home].target}",
                      self.routed_upstreams(sid))
        self.assertTrue(all(s.process.poll() is None for i, s in enumerate(self.servers) if i != victim))


if __name__ == "__main__":
    unittest.main()
