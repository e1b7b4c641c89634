"""The deployment tests' own pieces (tests/deploy): the local version of the Kubernetes router
config (deploy/kubernetes/nginx.conf) and Debian's nginx running it. Servers, stubs, health,
metrics and torch references come from the shared test kit (tests/pykit/rnnserve_testkit).

nginx listens on unix sockets in its own folder, and its upstreams are servers that picked
their ports themselves (port 0), so nothing here can collide with another test under ctest -j.

    /usr/bin/python3 tests/deploy/deploy_harness.py --nginx-test deploy/kubernetes/nginx.conf
        # nginx -t on both forms: TLS (test certificates made now) and plaintext
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pykit"))
import rnnserve_testkit as kit  # noqa: E402

ROOT = kit.ROOT
SESSION_HEADER = "x-session-id"
NGINX_HINT = "apt-get install nginx-core"


def open_stream(client, session_header=None):
    """client.open_stream() (an rnnserve_client.StreamChannel), sending the header
    x-session-id: SESSION_HEADER when given, as clients of the session router do."""
    if session_header is None:
        return client.open_stream()
    return client.open_stream(metadata=[(SESSION_HEADER, session_header)])


# ---- nginx -------------------------------------------------------------------------------

def local_nginx_conf(k8s_conf, prefix, backends, certs=None):
    """deploy/kubernetes/nginx.conf made runnable on this machine with Debian's nginx 1.22: the
    routing (map, upstream hash, grpc_pass and its limits) is kept as written; the pod DNS name
    becomes the local backends, the listens become unix sockets PREFIX/grpc.sock and
    PREFIX/probe.sock (1.22 spells HTTP/2 `listen ... http2`), and files go under PREFIX.

    TLS: with `certs` (a folder made by tests/server/auth/make_test_certs.sh) the router keeps
    TLS on both sides, with server-a as its own certificate and ca1 as the pods' CA; without,
    both sides become plaintext (for backends started without TLS)."""
    with open(k8s_conf) as f:
        text = f.read()

    def sub(pattern, replacement, count_expected=1):
        nonlocal text
        text, n = re.subn(pattern, replacement, text, flags=re.M)
        if n != count_expected:
            raise ValueError(f"{k8s_conf}: expected {count_expected} match(es) of {pattern!r}, got {n}")

    sub(r"^(\s*)server \S+ resolve( .*);$",
        lambda m: "\n".join(f"{m.group(1)}server {b}{m.group(2)};" for b in backends))
    sub(r"^\s*resolver .*;\n", "")
    sub(r"^\s*zone \S+ \S+;\n", "")
    if certs:
        sub(r"^(\s*)listen 8443 ssl;\n\s*http2 on;$", rf"\1listen unix:{prefix}/grpc.sock ssl http2;")
        sub(r" /etc/nginx/tls/tls\.crt;$", f" {certs}/server-a.crt;")
        sub(r" /etc/nginx/tls/tls\.key;$", f" {certs}/server-a.key;")
        sub(r" /etc/nginx/upstream-ca/ca\.crt;$", f" {certs}/ca1.crt;")
        # The test certificates name 127.0.0.1 and localhost.
        sub(r"^(\s*)grpc_ssl_name \S+;$", r"\1grpc_ssl_name localhost;")
        sub(r"^\s*ssl_session_cache .*;\n", "")
    else:
        sub(r"^(\s*)listen 8443 ssl;\n\s*http2 on;$", rf"\1listen unix:{prefix}/grpc.sock http2;")
        sub(r"^\s*ssl_\w+ .*;\n", "", 4)
        sub(r"^\s*grpc_ssl_\w+ .*;\n", "", 7)
        sub(r"grpc_pass grpcs://", "grpc_pass grpc://")
    sub(r"^(\s*)listen 8081;$", rf"\1listen unix:{prefix}/probe.sock;")
    sub(r"^pid \S+;$", f"pid {prefix}/nginx.pid;")
    sub(r"^error_log \S+", f"error_log {prefix}/error.log")
    sub(r"^(\s*)access_log /dev/stdout;$",
        rf"\1log_format routed '$remote_addr $http_x_session_id -> $upstream_addr $status';"
        rf"\n\1access_log {prefix}/access.log routed;")
    sub(r"_temp_path /tmp/", f"_temp_path {prefix}/", 5)
    return text


def make_test_certs(folder):
    """tests/server/auth/make_test_certs.sh into `folder` (CAs ca1, ca2; server-a and server-b
    for 127.0.0.1 and localhost; client1, client2); returns the folder."""
    kit.require_tool("openssl", "apt-get install openssl")
    subprocess.run(["bash", os.path.join(ROOT, "tests", "server", "auth", "make_test_certs.sh"),
                    folder], check=True, capture_output=True, timeout=60)
    return folder


class Nginx:
    """Debian's nginx with local_nginx_conf(), in the foreground as a child process; gRPC
    clients reach it at `target` (unix:PREFIX/grpc.sock). AssertionError when nginx is not
    installed: a test that needs it fails rather than skipping."""

    def __init__(self, k8s_conf, backends, prefix=None, certs=None):
        nginx = kit.require_tool("nginx", NGINX_HINT)
        self.prefix = os.path.abspath(prefix or tempfile.mkdtemp(prefix="rnnserve-nginx-"))
        os.makedirs(self.prefix, exist_ok=True)
        self.socket_path = os.path.join(self.prefix, "grpc.sock")
        self.target = f"unix:{self.socket_path}"
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(local_nginx_conf(k8s_conf, self.prefix, backends, certs))
        self.args = [nginx, "-p", self.prefix, "-c", conf, "-g", "daemon off;"]
        self.process = None

    def test(self):
        return subprocess.run(self.args[:5] + ["-t"], capture_output=True, text=True)

    def start(self, timeout=10.0):
        self._stderr = open(os.path.join(self.prefix, "stderr.log"), "wb")
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._stderr)

        def listening():
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}: "
                                     f"{self.error_log()}{self._read('stderr.log')}")
            with socket.socket(socket.AF_UNIX) as s:
                return s.connect_ex(self.socket_path) == 0
        kit.wait_until(listening, kit.scaled(timeout), "nginx to listen")
        return self

    def _read(self, name):
        path = os.path.join(self.prefix, name)
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    def error_log(self):
        return self._read("error.log")

    def access_log(self):
        """Lines `CLIENT SESSION_HEADER -> UPSTREAM[, UPSTREAM...] STATUS` (tried upstreams)."""
        return self._read("access.log")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process:
            self._stderr.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nginx-test", metavar="NGINX_CONF",
                        help="nginx -t on the local version of this router config")
    args = parser.parse_args()
    if args.nginx_test:
        # Both versions: TLS on both sides (certificates made now) and the plaintext one
        # test_replicas runs.
        certs = make_test_certs(tempfile.mkdtemp(prefix="rnnserve-nginx-certs-"))
        try:
            for tls in (certs, None):
                try:
                    nginx = Nginx(args.nginx_test, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                                  certs=tls)
                except AssertionError as e:
                    print(f"deploy_harness: {e}", file=sys.stderr)
                    return 1
                try:
                    result = nginx.test()
                    print(f"deploy_harness: nginx -t, {'TLS' if tls else 'plaintext'} version:")
                    sys.stdout.write(result.stderr)
                    if result.returncode != 0:
                        return result.returncode
                finally:
                    shutil.rmtree(nginx.prefix, ignore_errors=True)
            return 0
        finally:
            shutil.rmtree(certs, ignore_errors=True)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
