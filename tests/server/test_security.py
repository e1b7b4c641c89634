"""Security end to end, against real rnnserve processes: TLS (plaintext to a TLS port fails),
mutual TLS (no certificate or another CA's is refused; a certificate's subject is a
principal), bearer tokens (missing or wrong: UNAUTHENTICATED; revoked by a file change and
by SIGHUP), sessions owned by their principal through every RPC (another principal gets the
NOT_FOUND an unknown id gets, and the owner goes on exactly as torch says), per-principal
quotas, the plaintext health-only port, --log_level, start-up validation, and hygiene (a
hostile id keeps its true code, a bounded message and one bounded log line; no token in a
log or in /metrics).

Certificates come from tests/server/auth/make_test_certs.sh (openssl) in a temporary folder;
tokens files are written here. Each class starts the servers it needs.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

import grpc
import numpy as np

import harness as h

Code = grpc.StatusCode
MODELS = {"m": dict(input_size=3, hidden_size=4, num_layers=2)}
CALL = h.CALL_TIMEOUT
TOKENS = {"alice": "alice-secret-token-5f1c9a", "bob": "bob-secret-token-77e2d0"}
# The longest log line a hostile request may cause (ids are cut to 128 characters).
MAX_LOG_LINE = 2048
# The longest status message on the wire (server side cap 1 KiB plus the "...(+N bytes)").
MAX_WIRE_MESSAGE = 1100

_certs = None


def certs():
    """The folder of test certificates (made once per module)."""
    global _certs
    if _certs is None:
        _certs = tempfile.mkdtemp(prefix="rnnserve-test-certs-")
        script = os.path.join(h.ROOT, "tests", "server", "auth", "make_test_certs.sh")
        subprocess.run(["bash", script, _certs], check=True, capture_output=True, timeout=60)
    return _certs


def cert(name):
    return os.path.join(certs(), name)


def tearDownModule():
    if _certs is not None:
        shutil.rmtree(_certs, ignore_errors=True)


def write_tokens(path, principals):
    """Writes a tokens file for `principals` (names from TOKENS), renamed into place."""
    lines = [f"{p} {hashlib.sha256(TOKENS[p].encode()).hexdigest()}\n" for p in principals]
    with open(path + ".tmp", "w") as f:
        f.write("# test tokens\n" + "".join(lines))
    os.replace(path + ".tmp", path)


class SecurityCase(unittest.TestCase):
    """A model repository and torch models for the class; start() runs a server that the
    test's cleanup stops (and which must exit 0)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="rnnserve-test-security-")
        cls.repo = os.path.join(cls.dir, "models")
        os.mkdir(cls.repo)
        cls.rnns = {name: h.make_rnn(40 + i, **config)
                    for i, (name, config) in enumerate(sorted(MODELS.items()))}
        h.export_repository(cls.repo, cls.rnns)
        cls.tokens_file = os.path.join(cls.dir, "tokens")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self, flags=(), tls=False, metrics=False, **kwargs):
        flags = list(flags)
        if tls:
            flags += [f"--tls_cert_file={cert('server-a.crt')}",
                      f"--tls_key_file={cert('server-a.key')}"]
            kwargs.setdefault("tls_ca", cert("ca1.crt"))
        server = h.ServerProcess(model_repository=self.repo, flags=flags, metrics=metrics,
                                 **kwargs).start()

        def stop():
            rc = server.stop()
            self.assertEqual(rc, 0, f"rnnserve exited with {rc}:\n{server.stderr_tail()}")
        self.addCleanup(stop)
        return server

    def stub(self, server, **channel):
        return server.stub(server.channel(**channel))

    def list_models(self, server, **channel):
        return self.stub(server, **channel).ListModels(h.pb2().ListModelsRequest(),
                                                       timeout=CALL)

    def assert_code(self, code, fn, *args, **kwargs):
        """fn(...) fails with `code`; returns the grpc.RpcError."""
        kwargs.setdefault("timeout", CALL)
        with self.assertRaises(grpc.RpcError) as caught:
            fn(*args, **kwargs)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        return caught.exception

    def stream_refused(self, server, code, **channel):
        """A Stream call on a new channel ends with `code` before any response."""
        with h.Stream(self.stub(server, **channel), timeout=CALL) as stream:
            stream.send(session_id="", model="m", start=True)
            with self.assertRaises(grpc.RpcError) as caught:
                stream.recv()
            self.assertEqual(caught.exception.code(), code, caught.exception.details())

    def start_session(self, stream, session_id="", batch=1, seed=0):
        """Starts a session of model m with one chunk checked against torch; returns
        (server-side id, ReferenceSession)."""
        ref = h.ReferenceSession(self.rnns["m"], seed=seed, batch=batch)
        x = ref.random_chunk(3)
        out, h_n = ref.feed(x)
        r = stream.call(session_id=session_id, model="m", start=True, input=x)
        h.check_chunk(self, r, out, h_n, "first chunk")
        return r.session_id, ref

    def advance(self, stream, session_id, ref, what):
        x = ref.random_chunk()
        out, h_n = ref.feed(x)
        r = stream.call(session_id=session_id, input=x)
        h.check_chunk(self, r, out, h_n, what)
        self.assertEqual(r.steps_seen, ref.steps, what)


class TlsTest(SecurityCase):
    def test_tls_serves_and_plaintext_to_the_tls_port_fails(self):
        server = self.start(["--health_port=0"], tls=True, metrics=True)
        self.assertEqual([m.name for m in self.list_models(server).models], ["m"])
        with h.Stream(self.stub(server)) as stream:
            self.start_session(stream)
        self.assert_code(Code.UNAVAILABLE, self.stub(server, tls_ca=None).ListModels,
                         h.pb2().ListModelsRequest())
        # A client trusting another CA refuses the server's certificate.
        self.assert_code(Code.UNAVAILABLE, self.stub(server, tls_ca=cert("ca2.crt")).ListModels,
                         h.pb2().ListModelsRequest())

    def test_health_port_is_plaintext_and_health_only(self):
        server = self.start(["--health_port=0"], tls=True, metrics=True)
        self.assertIsNotNone(server.health_port, server.listening_line)
        plain = h.kit.make_channel(f"127.0.0.1:{server.health_port}")
        self.addCleanup(plain.close)
        for service in ("", h.SERVICE):
            self.assertEqual(h.kit.health_status(plain, service), "SERVING")
        # Only health: the rnnserve service is not on it.
        self.assert_code(Code.UNIMPLEMENTED, h.stubs()[1].RnnServiceStub(plain).ListModels,
                         h.pb2().ListModelsRequest())
        # The TLS port's health needs TLS.
        tls_port_plain = h.kit.make_channel(server.target)
        self.addCleanup(tls_port_plain.close)
        self.assertEqual(h.kit.health_status(tls_port_plain, "", timeout=5.0), "UNAVAILABLE")
        self.assertEqual(server.health(), "SERVING")
        # Draining turns the health port NOT_SERVING too. A client that does not read keeps
        # the server draining (its answers cannot all be written) until --drain_timeout and
        # --shutdown_grace have passed, or it goes away.
        x = np.zeros((100000, 1, 3), np.float32)  # 1.6 MB of output per chunk
        requests = [h.Stream.request("raw", model="m", session_id="held", start=True,
                                     input=x, request_id=1)]
        requests += [h.Stream.request("raw", session_id="held", input=x, request_id=i)
                     for i in range(2, 12)]
        call = self.stub(server).Stream(iter(requests), timeout=h.scaled(60))
        self.addCleanup(call.cancel)
        h.wait_until(lambda: h.metric(h.parse_metrics(server.scrape()),
                                      "rnnserve_stream_requests_read_total") == len(requests),
                     h.scaled(10), "every request read")
        server.terminate()
        h.wait_until(lambda: h.kit.health_status(plain, h.SERVICE) == "NOT_SERVING",
                     h.scaled(10), "health port NOT_SERVING while draining")
        call.cancel()


class MutualTlsTest(SecurityCase):
    def test_client_certificates(self):
        write_tokens(self.tokens_file, ["alice"])
        server = self.start([f"--tls_client_ca_file={cert('ca1.crt')}",
                             f"--auth_tokens_file={self.tokens_file}"], tls=True)
        client1 = dict(tls_cert=cert("client1.crt"), tls_key=cert("client1.key"))
        client2 = dict(tls_cert=cert("client2.crt"), tls_key=cert("client2.key"))
        # No certificate, or one from another CA: the handshake fails (token or not).
        self.assert_code(Code.UNAVAILABLE, self.stub(server, token=TOKENS["alice"]).ListModels,
                         h.pb2().ListModelsRequest())
        self.assert_code(Code.UNAVAILABLE, self.stub(server, **client2).ListModels,
                         h.pb2().ListModelsRequest())
        # The right certificate alone is a principal: its subject.
        self.assertEqual(len(self.list_models(server, **client1).models), 1)
        cert_stub = self.stub(server, **client1)
        with h.Stream(cert_stub) as stream:
            session_id, ref = self.start_session(stream)
            # The same certificate with alice's token is alice, not the subject: the
            # subject's session is not hers.
            alice = self.stub(server, token=TOKENS["alice"], **client1)
            self.assert_code(Code.NOT_FOUND, alice.GetSession,
                             h.pb2().GetSessionRequest(session_id=session_id))
            self.assertEqual(cert_stub.GetSession(h.pb2().GetSessionRequest(
                session_id=session_id), timeout=CALL).steps_seen, ref.steps)
            self.advance(stream, session_id, ref, "certificate principal's next chunk")
        # A wrong token is refused even with a good certificate.
        self.assert_code(Code.UNAUTHENTICATED,
                         self.stub(server, token="not-a-token", **client1).ListModels,
                         h.pb2().ListModelsRequest())


    def test_client_certificate_alone(self):
        server = self.start([f"--tls_client_ca_file={cert('ca1.crt')}"], tls=True)
        client1 = dict(tls_cert=cert("client1.crt"), tls_key=cert("client1.key"))
        self.assert_code(Code.UNAVAILABLE, self.stub(server).ListModels,
                         h.pb2().ListModelsRequest())
        with h.Stream(self.stub(server, **client1)) as stream:
            session_id, ref = self.start_session(stream)
            self.advance(stream, session_id, ref, "second chunk over mTLS")


class MetricsHostTest(SecurityCase):
    def test_metrics_bind_their_own_host(self):
        server = self.start(["--metrics_host=127.0.0.2"], metrics=True)
        self.assertIn(f"metrics on 127.0.0.2:{server.metrics_port}", server.listening_line)
        text = h.scrape(f"http://127.0.0.2:{server.metrics_port}/metrics")
        self.assertIn("rnnserve_", text)
        with self.assertRaises(OSError):
            h.scrape(server.metrics_url)  # 127.0.0.1: not bound


class TokensTest(SecurityCase):
    def check_refused_and_accepted(self, server):
        for token in (None, "wrong-token", TOKENS["alice"] + "x"):
            self.assert_code(Code.UNAUTHENTICATED, self.stub(server, token=token).ListModels,
                             h.pb2().ListModelsRequest())
            self.assert_code(Code.UNAUTHENTICATED, self.stub(server, token=token).GetSession,
                             h.pb2().GetSessionRequest(session_id="any"))
            self.stream_refused(server, Code.UNAUTHENTICATED, token=token)
        for principal in ("alice", "bob"):
            self.assertEqual(len(self.list_models(server, token=TOKENS[principal]).models), 1)

    def wait_revoked(self, server, principal, when):
        """Waits (bounded) until `principal`'s token is refused UNAUTHENTICATED."""
        stub = self.stub(server, token=TOKENS[principal])

        def refused():
            try:
                stub.ListModels(h.pb2().ListModelsRequest(), timeout=CALL)
                return False
            except grpc.RpcError as e:
                self.assertEqual(e.code(), Code.UNAUTHENTICATED, e.details())
                return True
        h.wait_until(refused, h.scaled(10), f"{principal} revoked {when}")

    def test_plaintext_tokens_and_revocation_on_change(self):
        write_tokens(self.tokens_file, ["alice", "bob"])
        server = self.start([f"--auth_tokens_file={self.tokens_file}",
                             "--auth_reload_interval=100ms"], metrics=True)
        self.check_refused_and_accepted(server)
        # Without TLS, health stays open.
        self.assertEqual(server.health(), "SERVING")
        with h.Stream(self.stub(server, token=TOKENS["bob"])) as stream:
            self.start_session(stream)
        write_tokens(self.tokens_file, ["alice"])
        self.wait_revoked(server, "bob", "after the file changed")
        self.assertEqual(len(self.list_models(server, token=TOKENS["alice"]).models), 1)
        self.assert_no_token_leaks(server, server.scrape())

    def test_tls_tokens_and_revocation_on_sighup(self):
        write_tokens(self.tokens_file, ["alice", "bob"])
        server = self.start([f"--auth_tokens_file={self.tokens_file}",
                             "--auth_reload_interval=1h"], tls=True, metrics=True)
        self.check_refused_and_accepted(server)
        # On the TLS port every method, health included, needs credentials.
        self.assertEqual(server.health(), "UNAUTHENTICATED")
        self.assertEqual(h.kit.health_status(server.channel(token=TOKENS["alice"]), ""),
                         "SERVING")
        write_tokens(self.tokens_file, ["alice"])
        # The hour-long poll will not notice; SIGHUP makes it re-read at once.
        self.assertEqual(len(self.list_models(server, token=TOKENS["bob"]).models), 1)
        server.process.send_signal(signal.SIGHUP)
        self.wait_revoked(server, "bob", "after SIGHUP")
        self.assertTrue(server.alive(), "SIGHUP must not stop the server")
        self.assertEqual(len(self.list_models(server, token=TOKENS["alice"]).models), 1)
        self.assert_no_token_leaks(server, server.scrape())

    def assert_no_token_leaks(self, server, metrics_text):
        logs = server.stderr_text()
        for token in TOKENS.values():
            self.assertNotIn(token, logs)
            self.assertNotIn(token, metrics_text)
            self.assertNotIn(hashlib.sha256(token.encode()).hexdigest(), logs)
        for principal in TOKENS:
            self.assertNotIn(principal, metrics_text)


class ModelControlTest(SecurityCase):
    def test_model_control_is_locked_to_its_principals(self):
        """With tokens on, LoadModel, UnloadModel and RepositoryIndex need a token (else
        UNAUTHENTICATED) of a principal that --model_control_principals lists (else
        PERMISSION_DENIED, and nothing is unloaded); hostile model names are NOT_FOUND."""
        write_tokens(self.tokens_file, ["alice", "bob"])
        server = self.start([f"--auth_tokens_file={self.tokens_file}",
                             "--allow_model_control", "--model_control_principals=alice"])
        pb = h.pb2()
        calls = (("RepositoryIndex", pb.RepositoryIndexRequest()),
                 ("UnloadModel", pb.UnloadModelRequest(model="m", model_version=1)),
                 ("LoadModel", pb.LoadModelRequest(model="m")))
        for token, code in ((None, Code.UNAUTHENTICATED), ("wrong-token", Code.UNAUTHENTICATED),
                            (TOKENS["bob"], Code.PERMISSION_DENIED)):
            stub = self.stub(server, token=token)
            for method, request in calls:
                error = self.assert_code(code, getattr(stub, method), request)
                if code == Code.PERMISSION_DENIED:
                    self.assertIn("--model_control_principals", error.details())
        alice = self.stub(server, token=TOKENS["alice"])
        self.assertEqual(len(alice.GetModel(pb.GetModelRequest(model="m"),
                                            timeout=CALL).loaded_versions), 1)  # bob unloaded nothing
        rows = alice.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=CALL).models
        self.assertEqual([(r.model, r.version, r.state) for r in rows], [("m", 1, "READY")])
        for name in ("../models", ".hidden", "lost+found", "m/1", "x" * 5000, ""):
            error = self.assert_code(Code.NOT_FOUND, alice.LoadModel, pb.LoadModelRequest(model=name))
            self.assertLess(len(error.details()), MAX_WIRE_MESSAGE)
        alice.UnloadModel(pb.UnloadModelRequest(model="m", model_version=1), timeout=CALL)
        self.assert_code(Code.FAILED_PRECONDITION, alice.GetModel, pb.GetModelRequest(model="m"))
        self.assertEqual(list(alice.LoadModel(pb.LoadModelRequest(model="m"),
                                              timeout=CALL).loaded_versions), [1])
        for token in TOKENS.values():
            self.assertNotIn(token, server.stderr_text())


class OwnershipTest(SecurityCase):
    def test_another_principal_cannot_see_advance_or_close(self):
        write_tokens(self.tokens_file, ["alice", "bob"])
        server = self.start([f"--auth_tokens_file={self.tokens_file}"], tls=True)
        alice = self.stub(server, token=TOKENS["alice"])
        bob = self.stub(server, token=TOKENS["bob"])
        unknown_id = "no-such-session-0123456789abcdef"
        with h.Stream(alice) as a_stream, h.Stream(bob) as b_stream:
            chosen_id, chosen_ref = self.start_session(a_stream, "alice-chosen-1", batch=2)
            assigned_id, assigned_ref = self.start_session(a_stream, "", seed=1)
            self.assertGreaterEqual(len(assigned_id), 22)  # >= 128 random bits, encoded
            for session_id, ref in ((chosen_id, chosen_ref), (assigned_id, assigned_ref)):
                # Bob's answers are exactly those for an unknown id, with the id swapped.
                x = ref.random_chunk()
                unknown = b_stream.call(session_id=unknown_id, input=x)
                r = b_stream.call(session_id=session_id, input=x)
                self.assertEqual(h.grpc_code_name(r.error_code), "NOT_FOUND", r.error_message)
                self.assertEqual(r.error_message.replace(session_id, "ID"),
                                 unknown.error_message.replace(unknown_id, "ID"))
                self.assertTrue(h.is_empty(r.output))
                r = b_stream.call(session_id=session_id, end=True)
                self.assertEqual(h.grpc_code_name(r.error_code), "NOT_FOUND", r.error_message)
                for rpc, request in ((bob.GetSession, h.pb2().GetSessionRequest),
                                     (bob.CloseSession, h.pb2().CloseSessionRequest)):
                    theirs = self.assert_code(Code.NOT_FOUND, rpc, request(session_id=session_id))
                    none = self.assert_code(Code.NOT_FOUND, rpc, request(session_id=unknown_id))
                    self.assertEqual(theirs.details().replace(session_id, "ID"),
                                     none.details().replace(unknown_id, "ID"))
                # Alice goes on exactly as torch says, as if bob had never tried.
                info = alice.GetSession(h.pb2().GetSessionRequest(session_id=session_id),
                                        timeout=CALL)
                self.assertEqual(info.steps_seen, ref.steps)
                h.assert_close(h.from_tensor(info.h_n), ref.h, "alice's h_n after bob tried")
                self.advance(a_stream, session_id, ref, "alice's next chunk")
                self.advance(a_stream, session_id, ref, "alice's chunk after that")
                closed = alice.CloseSession(h.pb2().CloseSessionRequest(session_id=session_id),
                                            timeout=CALL)
                self.assertEqual(closed.session.steps_seen, ref.steps)
                # Ended: bob still gets what an unknown id gets, not "closed".
                self.assert_code(Code.NOT_FOUND, bob.GetSession,
                                 h.pb2().GetSessionRequest(session_id=session_id))


class QuotaTest(SecurityCase):
    def test_sessions_per_principal(self):
        write_tokens(self.tokens_file, ["alice", "bob"])
        server = self.start([f"--auth_tokens_file={self.tokens_file}",
                             "--max_sessions_per_principal=2"])
        with h.Stream(self.stub(server, token=TOKENS["alice"])) as a, \
                h.Stream(self.stub(server, token=TOKENS["bob"])) as b:
            # Start-only sessions (no state yet) count.
            for i in range(2):
                r = a.call(session_id=f"a-{i}", model="m", start=True)
                self.assertEqual(r.error_code, 0, r.error_message)
            r = a.call(session_id="a-2", model="m", start=True)
            self.assertEqual(h.grpc_code_name(r.error_code), "RESOURCE_EXHAUSTED",
                             r.error_message)
            self.assertIn("max_sessions_per_principal", r.error_message)
            # Bob has his own quota.
            for i in range(2):
                self.start_session(b, f"b-{i}", seed=i)
            # Closing one of alice's frees a slot for her.
            self.stub(server, token=TOKENS["alice"]).CloseSession(
                h.pb2().CloseSessionRequest(session_id="a-0"), timeout=CALL)
            self.start_session(a, "a-3")

    def test_state_bytes_per_principal(self):
        write_tokens(self.tokens_file, ["alice", "bob"])
        # Model m's session holds two buffers of 2 x N x 4 floats: 64 bytes at N=1, 128 at
        # N=2, besides its id, principal and 512 bytes of overhead (524 for alice's "a-small",
        # 522 for "a-big", 520 for bob's "b-big"). Alice's two sessions (588 + 650) exceed
        # 1200, at a-big's state; bob's one (648) fits.
        server = self.start([f"--auth_tokens_file={self.tokens_file}",
                             "--max_state_bytes_per_principal=1200"])
        with h.Stream(self.stub(server, token=TOKENS["alice"])) as a, \
                h.Stream(self.stub(server, token=TOKENS["bob"])) as b:
            self.start_session(a, "a-small", batch=1)
            ref = h.ReferenceSession(self.rnns["m"], batch=2)
            r = a.call(session_id="a-big", model="m", start=True, input=ref.random_chunk(2))
            self.assertEqual(h.grpc_code_name(r.error_code), "RESOURCE_EXHAUSTED",
                             r.error_message)
            self.assertIn("max_state_bytes_per_principal", r.error_message)
            self.start_session(b, "b-big", batch=2)


class HygieneTest(SecurityCase):
    def test_hostile_ids_keep_their_code_and_stay_bounded(self):
        server = self.start(["--log_level=debug"])
        hostile = "x\n2026-01-01T00:00:00.000Z ERROR forged line\n" + "a" * (1 << 20)
        stub = self.stub(server)
        with h.Stream(stub) as stream:
            ref = h.ReferenceSession(self.rnns["m"])
            for fields in (dict(input=ref.random_chunk(2)), dict(end=True), {}):
                r = stream.call(session_id=hostile, **fields)
                self.assertIn(h.grpc_code_name(r.error_code), ("NOT_FOUND", "INVALID_ARGUMENT"),
                              r.error_message[:300])
                self.assertLessEqual(len(r.error_message), MAX_WIRE_MESSAGE)
                self.assertFalse(r.output_truncated)
                self.assertNotIn("\n", r.error_message)
            # Starting one with it is refused as invalid, saying why.
            r = stream.call(session_id=hostile, model="m", start=True)
            self.assertEqual(h.grpc_code_name(r.error_code), "INVALID_ARGUMENT",
                             r.error_message[:300])
            self.assertLessEqual(len(r.error_message), MAX_WIRE_MESSAGE)
            # The stream is unharmed.
            self.start_session(stream, "after-hostile")
        for rpc, request in ((stub.GetSession, h.pb2().GetSessionRequest),
                             (stub.CloseSession, h.pb2().CloseSessionRequest)):
            with self.assertRaises(grpc.RpcError) as caught:
                rpc(request(session_id=hostile), timeout=CALL)
            self.assertIn(caught.exception.code(), (Code.NOT_FOUND, Code.INVALID_ARGUMENT),
                          caught.exception.details()[:300])
            self.assertLessEqual(len(caught.exception.details()), MAX_WIRE_MESSAGE)
        # A huge unknown model name: NOT_FOUND, not a trailer-too-large RESOURCE_EXHAUSTED.
        self.assert_code(Code.NOT_FOUND, stub.GetModel, h.pb2().GetModelRequest(
            model="m\n" + "z" * (1 << 20)))
        logs = server.stderr_text()
        for line in logs.splitlines():
            self.assertLessEqual(len(line), MAX_LOG_LINE, line[:300])
            # The id's newline is escaped: its text stays inside the line that quotes it.
            self.assertFalse(line.startswith("2026-01-01"), line[:300])
            if "forged line" in line:
                self.assertIn("\\n2026-01-01T00:00:00.000Z ERROR forged line", line)


class LogLevelTest(SecurityCase):
    def session_lines(self, flags):
        server = self.start(flags)
        with h.Stream(self.stub(server)) as stream:
            self.start_session(stream, "log-level-session-7")
        self.stub(server).CloseSession(
            h.pb2().CloseSessionRequest(session_id="log-level-session-7"), timeout=CALL)
        server.stop()
        return [line for line in server.stderr_text().splitlines()
                if "log-level-session-7" in line]

    def test_debug_shows_session_lines_and_info_hides_them(self):
        self.assertEqual(self.session_lines([]), [])
        self.assertEqual(self.session_lines(["--log_level=info"]), [])
        lines = self.session_lines(["--log_level=debug"])
        self.assertTrue(lines, "no per-session line at --log_level=debug")
        for line in lines:
            self.assertIn(" DEBUG ", line)


class StartupValidationTest(unittest.TestCase):
    def refused(self, flags, *substrings):
        run = subprocess.run([h.server_binary(), "--host=127.0.0.1", "--metrics_port=-1",
                              *flags], capture_output=True, text=True, timeout=CALL)
        self.assertNotEqual(run.returncode, 0, run.stderr)
        self.assertNotIn("listening on", run.stdout)
        for s in substrings:
            self.assertIn(s, run.stderr)

    def test_bad_combinations_are_refused_at_start(self):
        self.refused(["--port=70000"], "--port=70000", "0..65535")
        self.refused(["--port=0", "--metrics_port=-2"], "--metrics_port")
        self.refused(["--port=0", "--health_port=0"], "--health_port", "TLS")
        self.refused(["--port=0", f"--tls_cert_file={cert('server-a.crt')}"],
                     "--tls_key_file")
        self.refused(["--port=0", f"--tls_client_ca_file={cert('ca1.crt')}"],
                     "--tls_client_ca_file")
        self.refused(["--port=0", "--log_level=loud"], "--log_level", "loud")
        self.refused(["--port=0", "--auth_tokens_file=/nonexistent/tokens"],
                     "/nonexistent/tokens")
        # A key that does not match the certificate, named.
        self.refused(["--port=0", f"--tls_cert_file={cert('server-a.crt')}",
                      f"--tls_key_file={cert('client1.key')}"], "client1.key")


if __name__ == "__main__":
    unittest.main()
