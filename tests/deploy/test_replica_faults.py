"""Replica faults with the client libraries resuming by themselves: real rnnserve processes
behind Debian's nginx running the Kubernetes router config (deploy/kubernetes/nginx.conf,
consistent hash on x-session-id; harness in deploy_harness.py), sessions streamed by the
Python client (one stream each, sending the header) and by the C++ library (resume_driver):

(a) SIGKILL of one of three replicas mid-stream: its sessions land on survivors (NOT_FOUND)
    and are started again from their last h_n with their next chunk_index;
(b) growing the replica set from two to three mid-stream, as an HPA scale-out does: nginx's
    upstream is regenerated and reloaded, old workers close their connections, the consistent
    hash moves some sessions to the new replica, and they resume there;
(c) a rolling restart: SIGTERM of one replica while its sessions stream; they finish reading
    what the draining server answers, then resume elsewhere;
(d) a rolling restart onto a new model version (docs/deployment.md, "Rolling out a new model
    version"): a replica whose repository holds versions 1 and 2 replaces the two old ones,
    which only had version 1; every session resumes there on version 1, the version it was
    pinned to, and a session started afterwards gets version 2 (torch's outputs of each).

Every caller-visible output equals torch's over the whole sequence within 1e-5, and no session
sees a gap in steps_seen or chunk_index.

    RNNSERVE_BIN=build/server/rnnserve RNNSERVE_RESUME_DRIVER=build/tests/client/resume_driver \\
    /usr/bin/python3 tests/pykit/run_tests.py test_replica_faults   (from tests/deploy)
"""

import os
import shutil
import signal
import sys
import tempfile
import unittest

import numpy as np

import deploy_harness as harness
from deploy_harness import kit

sys.path.insert(0, os.path.join(harness.ROOT, "tests", "client"))
from resume_kit import CppSession  # noqa: E402

NGINX_CONF = os.path.join(harness.ROOT, "deploy", "kubernetes", "nginx.conf")
MODEL = "tiny"
TOLERANCE = 1e-5
CHUNK_STEPS = (3, 2, 4, 1, 3, 2)  # per session: phase 1 sends the first half, phase 2 the rest


class ReplicaFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        kit.require_tool("nginx", harness.NGINX_HINT)
        cls.rc = kit.client_module()
        cls.tmp = tempfile.mkdtemp(prefix="rnnserve-faults-")
        cls.repo = os.path.join(cls.tmp, "models")
        cls.rnn = kit.write_model(os.path.join(cls.repo, MODEL), seed=5, input_size=6,
                                  hidden_size=12, num_layers=2)

    @classmethod
    def tearDownClass(cls):
        if not os.environ.get("RNNSERVE_KEEP_TMP"):
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.rng = np.random.default_rng(abs(hash(self.id())) % 2**32)
        self.work = tempfile.mkdtemp(prefix=self._testMethodName[:20] + "-", dir=self.tmp)
        self.servers, self.nginx, self.streams, self.terminated = [], None, [], []
        self.addCleanup(self.stop_all)

    # ---- replicas and router -----------------------------------------------------------------

    def add_server(self, repo=None):
        i = len(self.servers)
        server = kit.ServerProcess(name=f"replica{i}", model_repository=repo or self.repo,
                                   drain_timeout="5s", flags=["--threads=1"],
                                   log_path=os.path.join(self.work, f"replica{i}.log"))
        self.servers.append(server.start())
        server.wait_serving()
        return server

    def start_router(self, replicas):
        for _ in range(replicas):
            self.add_server()
        self.nginx = harness.Nginx(NGINX_CONF, [s.target for s in self.servers],
                                   prefix=os.path.join(self.work, "nginx"))
        self.write_router_conf()
        self.nginx.start()
        kit.wait_serving(self.nginx.target, timeout=kit.scaled(10))
        self.client = self.rc.RnnServeClient(self.nginx.target, timeout=30)

    def write_router_conf(self, servers=None):
        """The router config for `servers` (default: those now up), with one worker whose
        graceful shutdown (after a reload) closes its connections after 1 s, as the old config
        says."""
        servers = servers or [s for s in self.servers if s.alive()]
        conf = harness.local_nginx_conf(NGINX_CONF, self.nginx.prefix,
                                        [s.target for s in servers])
        conf = conf.replace("worker_processes auto;",
                            "worker_processes 1;\nworker_shutdown_timeout 1s;")
        with open(os.path.join(self.nginx.prefix, "nginx.conf"), "w") as f:
            f.write(conf)

    def reload_router(self, servers=None):
        """nginx's upstream regenerated for `servers` (default: those now up), reloaded
        (SIGHUP); old workers get 1 s to finish, then close their connections, so streams
        reconnect through the new configuration (bounded wait until they are gone)."""
        self.write_router_conf(servers)
        old = self.workers()
        self.nginx.process.send_signal(signal.SIGHUP)
        kit.wait_until(lambda: self.workers() and not (self.workers() & old),
                       kit.scaled(15), "nginx's old workers to exit after the reload")

    def workers(self):
        """The pids of nginx's worker processes."""
        pids = set()
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.nginx.process.pid:
                        pids.add(int(pid))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def holders(self, session_id):
        found = []
        for i, server in enumerate(self.servers):
            if not server.alive():
                continue
            with self.rc.RnnServeClient(server.target, timeout=5, resume=False) as client:
                try:
                    client.get_session(session_id, omit_state=True)
                    found.append(i)
                except self.rc.RnnServeError:
                    pass
        return found

    def stop_all(self):
        for stream in self.streams:
            try:
                stream.close()
            except self.rc.RnnServeError:
                pass
        if self.nginx:
            self.client.close()
            self.nginx.stop()
        for server in self.servers:
            server.stop(timeout=kit.scaled(15))

    # ---- sessions ------------------------------------------------------------------------------

    def python_sessions(self, count):
        sessions = {}
        for i in range(count):
            sid = f"{self._testMethodName[5:12]}-py-{i}"
            stream = self.client.open_stream(metadata=[(harness.SESSION_HEADER, sid)])
            self.streams.append(stream)
            chunks = [self.chunk(t) for t in CHUNK_STEPS]
            sessions[sid] = dict(stream=stream, chunks=chunks, outputs=[], sent=0, steps=0)
        return sessions

    def chunk(self, steps):
        return self.rng.standard_normal((steps, 2, self.rnn.input_size), dtype=np.float32)

    def cpp_session(self, name):
        sid = f"{self._testMethodName[5:12]}-cpp-{name}"
        chunks = [self.chunk(t) for t in CHUNK_STEPS]
        return sid, CppSession(self.nginx.target, MODEL, sid, os.path.join(self.work, sid),
                               chunks, flags=["--header"]), chunks

    def advance(self, sessions, count):
        """Sends each Python session's next `count` chunks, checking steps and numbering."""
        for sid, s in sessions.items():
            for _ in range(count):
                i = s["sent"]
                chunk = s["chunks"][i]
                r = (s["stream"].start(MODEL, session_id=sid, chunk=chunk) if i == 0
                     else s["stream"].send(chunk))
                s["steps"] += len(chunk)
                self.assertEqual((r.session_id, r.chunk_index, r.steps_seen),
                                 (sid, i, s["steps"]), sid)
                s["outputs"].append(r.output)
                s["h_n"] = r.h_n
                s["sent"] += 1

    def assert_torch(self, sid, chunks, outputs, h_n):
        want_out, want_h = kit.torch_forward(self.rnn, np.concatenate(chunks))
        np.testing.assert_allclose(np.concatenate(outputs), want_out, atol=TOLERANCE,
                                   err_msg=sid)
        np.testing.assert_allclose(h_n, want_h, atol=TOLERANCE, err_msg=sid)

    def finish(self, sessions, cpp):
        for sid, s in sessions.items():
            self.assert_torch(sid, s["chunks"], s["outputs"], s["h_n"])
        for sid, session, chunks in cpp:
            self.assertIn("OK", session.finish())
            self.assert_torch(sid, chunks, session.outputs(len(chunks)), session.h_n())

    def run_fault(self, replicas, python_count, fault):
        """Streams half of every session, calls fault(sessions, cpp) (it returns the session
        ids that must have moved), streams the rest; returns those ids."""
        self.start_router(replicas)
        sessions = self.python_sessions(python_count)
        cpp = [self.cpp_session(n) for n in ("a", "b")]
        half = len(CHUNK_STEPS) // 2
        self.advance(sessions, half)
        for sid, session, chunks in cpp:
            self.assertEqual(session.command(f"send {half}")[:2],
                             (half, sum(CHUNK_STEPS[:half])))
        homes = {sid: self.holders(sid) for sid in list(sessions) + [c[0] for c in cpp]}
        for sid, where in homes.items():
            self.assertEqual(len(where), 1, f"{sid} is on {where}")
        moved = fault(homes, cpp)
        # One chunk each right after the fault (a draining server may still answer it), then,
        # once every terminated server has exited, the rest.
        self.advance(sessions, 1)
        for sid, session, chunks in cpp:
            self.assertEqual(session.command("send 1")[:2],
                             (half + 1, sum(CHUNK_STEPS[:half + 1])))
        for server in self.terminated:
            self.assertEqual(server.wait(kit.scaled(30)), 0, "a draining replica's exit status")
        self.advance(sessions, len(CHUNK_STEPS) - half - 1)
        for sid, session, chunks in cpp:
            self.assertEqual(session.command(f"send {len(CHUNK_STEPS) - half - 1}")[:2],
                             (len(CHUNK_STEPS), sum(CHUNK_STEPS)))
        self.finish(sessions, cpp)
        for sid in moved:
            (now,) = self.holders(sid)
            self.assertNotEqual(now, homes[sid][0], f"{sid} did not move")
        return sessions, cpp, homes

    # ---- the faults ----------------------------------------------------------------------------

    def test_a_sigkill_of_one_of_three_replicas(self):
        def kill(homes, cpp):
            victim = homes[cpp[0][0]][0]  # where the first C++ session lives
            self.servers[victim].stop(sig=signal.SIGKILL)
            return [sid for sid, where in homes.items() if where == [victim]]
        sessions, cpp, homes = self.run_fault(3, 8, kill)
        self.assertGreater(sum(s["stream"].resumes for s in sessions.values()), 0)

    def test_b_scale_out_from_two_to_three_replicas(self):
        def scale_out(homes, cpp):
            self.add_server()
            self.reload_router()
            return []
        sessions, cpp, homes = self.run_fault(2, 24, scale_out)
        # The consistent hash moved some sessions to the new replica (24 sessions: all staying
        # put has probability (2/3)^26); each resumed there from its last state.
        # (The old replica keeps a stale copy of a moved session until it expires.)
        moved = [sid for sid in homes if 2 in self.holders(sid)]
        self.assertTrue(moved, "no session moved to the new replica")
        for sid in moved:
            if sid in sessions:
                self.assertGreater(sessions[sid]["stream"].resumes, 0, sid)

    def test_c_rolling_restart_sigterm_one_replica(self):
        def terminate(homes, cpp):
            victim = homes[cpp[0][0]][0]
            self.servers[victim].terminate()
            self.terminated.append(self.servers[victim])
            return [sid for sid, where in homes.items() if where == [victim]]
        self.run_fault(3, 8, terminate)

    def test_d_rolling_restart_onto_a_new_model_version(self):
        new_repo = os.path.join(self.work, "models")
        shutil.copytree(os.path.join(self.repo, MODEL), os.path.join(new_repo, MODEL, "1"))
        v2 = kit.write_model(os.path.join(new_repo, MODEL, "2"), seed=6, input_size=6,
                             hidden_size=12, num_layers=2)
        with open(os.path.join(new_repo, MODEL, "serving.json"), "w") as f:
            f.write('{"version_policy": {"latest": 2}}')

        def roll(homes, cpp):
            old = list(self.servers)
            new = self.add_server(new_repo)
            # As Kubernetes does: terminating pods leave the Service's endpoints at once.
            self.reload_router([new])
            for server in old:
                server.terminate()
                self.terminated.append(server)
            return list(homes)
        sessions, cpp, homes = self.run_fault(2, 6, roll)
        self.assertGreater(sum(s["stream"].resumes for s in sessions.values()), 0)
        for sid in homes:
            self.assertEqual(self.client.get_session(sid, omit_state=True)["model_version"], 1,
                             sid)
        x = self.chunk(5)
        with self.client.open_stream() as stream:
            r = stream.start(MODEL, chunk=x)
            self.assertEqual(r.model_version, 2)
            np.testing.assert_allclose(r.output, kit.torch_forward(v2, x)[0], atol=TOLERANCE)


if __name__ == "__main__":
    unittest.main()
