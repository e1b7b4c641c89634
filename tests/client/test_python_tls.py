"""The Python client (client/python, package rnnserve_client), example_stream.py and the
rnnserve-client binary over TLS, mutual TLS and bearer tokens, against real rnnserve processes
started with --tls_cert_file/--tls_key_file[/--tls_client_ca_file] and --auth_tokens_file.

Certificates come from tests/server/auth/make_test_certs.sh (openssl, at run time); the tokens
file holds `PRINCIPAL SHA256HEX` lines. A seeded torch.nn.RNN is served, and torch checks the
numbers. The rnnserve binary must support --tls_cert_file: without it the test fails (it never
skips), saying so.

    RNNSERVE_BIN=build/server/rnnserve RNNSERVE_CLIENT_BIN=build/client/rnnserve-client \\
    /usr/bin/python3 tests/pykit/run_tests.py test_python_tls   (from tests/client)
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import grpc
import numpy as np

import rnnserve_testkit as testkit

rnnserve_client = testkit.client_module()
RnnServeClient = rnnserve_client.RnnServeClient
RnnServeError = rnnserve_client.RnnServeError

TOKEN = "alice-token-0123456789"
ATOL = 1e-5
TIMEOUT = 60.0
CERTS_SCRIPT = os.path.join(testkit.ROOT, "tests", "server", "auth", "make_test_certs.sh")
EXAMPLE = os.path.join(testkit.ROOT, "client", "python", "example_stream.py")
# Output (T, 1, H) of 4500 * 256 floats: 4.6 MB, over grpcio's default 4 MiB receive limit.
BIG = dict(input_size=1, hidden_size=256)
SMALL = dict(input_size=3, hidden_size=5, num_layers=2)


def client_binary():
    path = os.environ.get("RNNSERVE_CLIENT_BIN", "")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"$RNNSERVE_CLIENT_BIN={path!r} is not an executable (ctest sets it)")
    return path


class PythonTlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        binary = testkit.server_binary()
        help_text = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                   timeout=TIMEOUT)
        if "--tls_cert_file" not in help_text.stdout + help_text.stderr:
            raise AssertionError(f"{binary} has no --tls_cert_file flag: this test needs the "
                                 "server's TLS support (issue 10, sec-server)")
        testkit.require_tool("openssl", "apt-get install openssl")
        cls.work = tempfile.mkdtemp(prefix="rnnserve-python-tls-")
        cls.certs = os.path.join(cls.work, "certs")
        os.makedirs(cls.certs)
        subprocess.run(["bash", CERTS_SCRIPT, cls.certs], check=True, capture_output=True,
                       timeout=TIMEOUT)
        tokens = os.path.join(cls.work, "tokens")
        with open(tokens, "w") as f:
            f.write(f"alice {hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
        cls.token_file = os.path.join(cls.work, "token")
        with open(cls.token_file, "w") as f:
            f.write(f"  {TOKEN}  \nnot the token\n")
        cls.modules = {"small": testkit.make_rnn(7, **SMALL), "big": testkit.make_rnn(8, **BIG)}
        repository = testkit.export_repository(os.path.join(cls.work, "models"), cls.modules)
        tls = [f"--tls_cert_file={cls.cert('server-a')}",
               f"--tls_key_file={cls.key('server-a')}", f"--auth_tokens_file={tokens}"]
        cls.servers = []
        cls.tls = cls._start(repository, tls, "rnnserve-tls")
        cls.mtls = cls._start(repository, tls + [f"--tls_client_ca_file={cls.cert('ca1')}"],
                              "rnnserve-mtls")

    @classmethod
    def _start(cls, repository, flags, name):
        server = testkit.ServerProcess(model_repository=repository, flags=flags, name=name,
                                       metrics=False).start()
        cls.servers.append(server)
        return server

    @classmethod
    def tearDownClass(cls):
        for server in getattr(cls, "servers", []):
            server.stop()
            # No token in the server's log, whatever it was sent.
            assert TOKEN not in server.stderr_text(), f"{server.name} logged the token"
        shutil.rmtree(getattr(cls, "work", ""), ignore_errors=True)

    @classmethod
    def cert(cls, name):
        return os.path.join(cls.certs, f"{name}.crt")

    @classmethod
    def key(cls, name):
        return os.path.join(cls.certs, f"{name}.key")

    def client(self, server, **options):
        options.setdefault("tls_ca", self.cert("ca1"))
        options.setdefault("token", TOKEN)
        client = RnnServeClient(server.target, timeout=TIMEOUT, **options)
        self.addCleanup(client.close)
        return client

    def expect_everything_works(self, client):
        self.assertEqual(sorted(m.name for m in client.list_models()), ["big", "small"])
        rnn = self.modules["small"]
        x = np.random.default_rng(1).standard_normal((8, 2, 3)).astype(np.float32)
        out, h_n = client.forward("small", x)
        want_out, want_h_n = testkit.torch_forward(rnn, x)
        np.testing.assert_allclose(out, want_out, atol=ATOL)
        np.testing.assert_allclose(h_n, want_h_n, atol=ATOL)
        with client.open_stream() as stream:
            first = stream.start("small", chunk=x[:5])
            last = stream.send(x[5:])
            np.testing.assert_allclose(np.concatenate([first.output, last.output]), want_out,
                                       atol=ATOL)
            state = client.get_session(first.session_id)
            self.assertEqual(state["steps_seen"], 8)
            np.testing.assert_allclose(state["h_n"], want_h_n, atol=ATOL)
            closed = client.close_session(first.session_id)
            np.testing.assert_allclose(closed["h_n"], want_h_n, atol=ATOL)

    def test_tls_with_token(self):
        self.expect_everything_works(self.client(self.tls))

    def test_mutual_tls_with_token(self):
        self.expect_everything_works(
            self.client(self.mtls, tls_cert=self.cert("client1"), tls_key=self.key("client1")))

    def test_pem_bytes_work_as_well_as_paths(self):
        with open(self.cert("ca1"), "rb") as f:
            client = self.client(self.tls, tls_ca=f.read())
        self.assertEqual(len(client.list_models()), 2)

    def test_missing_or_wrong_token_is_unauthenticated_on_every_call(self):
        for token in (None, "wrong-token"):
            client = self.client(self.tls, token=token)
            with self.assertRaises(RnnServeError) as e:
                client.list_models()
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED, token)
            with self.assertRaises(RnnServeError) as e:
                with client.open_stream() as stream:
                    stream.start("small", chunk=np.zeros((1, 1, 3), np.float32))
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED, token)
            self.assertNotIn("wrong-token", str(e.exception))

    def test_server_certificate_from_another_ca_is_refused(self):
        with self.assertRaises(RnnServeError) as e:
            self.client(self.tls, tls_ca=self.cert("ca2")).list_models()
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_mutual_tls_refuses_no_certificate_and_another_cas(self):
        for options in ({}, dict(tls_cert=self.cert("client2"), tls_key=self.key("client2"))):
            with self.assertRaises(RnnServeError) as e:
                self.client(self.mtls, **options).list_models()
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE, options)

    def test_responses_larger_than_grpc_default_limit(self):
        # 4.6 MB of output: refused by grpcio's default 4 MiB receive limit, accepted with
        # the client's default (the server's 64 MiB).
        x = np.random.default_rng(2).standard_normal((4500, 1, 1)).astype(np.float32)
        out, h_n = self.client(self.tls).forward("big", x)
        want_out, want_h_n = testkit.torch_forward(self.modules["big"], x)
        np.testing.assert_allclose(out, want_out, atol=ATOL)
        np.testing.assert_allclose(h_n, want_h_n, atol=ATOL)
        small = self.client(self.tls, max_message_bytes=4 << 20)
        with self.assertRaises(RnnServeError) as e:
            small.forward("big", x)
        self.assertEqual(e.exception.code, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def test_option_errors_name_the_problem(self):
        make = rnnserve_client.make_channel
        with self.assertRaisesRegex(ValueError, "tls_cert needs tls_key"):
            make(self.tls.target, tls_ca=self.cert("ca1"), tls_cert=self.cert("client1"))
        with self.assertRaisesRegex(ValueError, "need tls_ca"):
            make(self.tls.target, tls_cert=self.cert("client1"), tls_key=self.key("client1"))
        missing = os.path.join(self.work, "missing.crt")
        with self.assertRaisesRegex(ValueError, "TLS CA file '" + missing):
            make(self.tls.target, tls_ca=missing)
        with self.assertRaisesRegex(ValueError, "holds no PEM block"):
            make(self.tls.target, tls_ca=self.token_file)
        with self.assertRaisesRegex(ValueError, "printable ASCII") as e:
            make(self.tls.target, token="two words")
        self.assertNotIn("words", str(e.exception))
        self.assertEqual(rnnserve_client.read_token_file(self.token_file), TOKEN)

    def run_tool(self, args):
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)
        self.assertNotIn(TOKEN, done.stdout + done.stderr)
        return done

    def test_example_stream_with_tls_flags(self):
        done = self.run_tool([sys.executable, EXAMPLE, "--server", self.mtls.target,
                              "--model", "small", "--steps", "9", "--chunk-steps", "4",
                              "--tls-ca", self.cert("ca1"), "--tls-cert", self.cert("client1"),
                              "--tls-key", self.key("client1"), "--token-file", self.token_file])
        self.assertEqual(done.returncode, 0, done.stderr)
        done = self.run_tool([sys.executable, EXAMPLE, "--server", self.tls.target,
                              "--model", "small", "--tls-ca", self.cert("ca1")])
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn("UNAUTHENTICATED", done.stderr)

    def test_cli_binary_flags(self):
        cli = client_binary()
        tls = ["--tls_ca", self.cert("ca1"), "--token_file", self.token_file]
        done = self.run_tool([cli, "--server", self.tls.target, *tls, "--json", "models"])
        self.assertEqual(done.returncode, 0, done.stderr)
        done = self.run_tool([cli, "--server", self.mtls.target, *tls, "--tls_cert",
                              self.cert("client1"), "--tls_key", self.key("client1"), "--json",
                              "stream", "small", "--steps", "6", "--chunk_steps", "3", "--end"])
        self.assertEqual(done.returncode, 0, done.stderr)
        done = self.run_tool([cli, "--server", self.tls.target, *tls, "bench", "small",
                              "--sessions", "2", "--duration", "0.3", "--json"])
        self.assertEqual(done.returncode, 0, done.stderr)
        done = self.run_tool([cli, "--server", self.tls.target, "--tls_ca", self.cert("ca1"),
                              "--token", "wrong-token", "models"])
        self.assertEqual(done.returncode, 1)
        self.assertTrue(done.stderr.startswith("rnnserve-client: UNAUTHENTICATED: "), done.stderr)
        self.assertNotIn("wrong-token", done.stderr)
        done = self.run_tool([cli, "--server", self.mtls.target, *tls, "models"])
        self.assertEqual(done.returncode, 1)
        self.assertIn("--tls_cert/--tls_key from a CA it trusts", done.stderr)


if __name__ == "__main__":
    unittest.main()
