"""Shared pieces of rnnserve's deployment tests (tests/deploy) and the image smoke test
(deploy/check-image.sh): real server processes on free loopback ports, health checks, the
gRPC stubs, streaming sessions, Prometheus text parsing, torch references, and the local
version of the Kubernetes router config (deploy/kubernetes/nginx.conf).

Runs with Debian's /usr/bin/python3 (torch, numpy, grpcio, protobuf, yaml).

    /usr/bin/python3 tests/deploy/deploy_harness.py --nginx-test deploy/kubernetes/nginx.conf
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
SERVICE = "rnnserve.v1.RnnService"
SESSION_HEADER = "x-session-id"


def find_binary(env, relpath):
    """$env, else the first of build/ and build-deploy/ that has the binary."""
    if os.environ.get(env):
        return os.environ[env]
    for build in ("build", "build-deploy"):
        path = os.path.join(ROOT, build, relpath)
        if os.access(path, os.X_OK):
            return path
    return None


SERVER_BIN = find_binary("RNNSERVE_BIN", "server/rnnserve")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns a true value (returned), or raises after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- gRPC --------------------------------------------------------------------------------

def client_module():
    """client/python/rnnserve_client (the project's Python client; it makes its stubs)."""
    sys.path.insert(0, os.path.join(ROOT, "client", "python"))
    import rnnserve_client
    return rnnserve_client


def stubs():
    """(rnn_service_pb2, rnn_service_pb2_grpc), the Python client's."""
    rc = client_module()
    return rc.pb2, rc.pb2_grpc


def health(channel, service="", timeout=2.0):
    """grpc.health.v1 Check, by hand (HealthCheckRequest{service=1}, response {status=1}):
    "SERVING", "NOT_SERVING", "UNKNOWN", or the gRPC status code name on failure."""
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    data = service.encode()
    request = (b"\x0a" + bytes([len(data)]) + data) if data else b""
    try:
        reply = check(request, timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name
    status = reply[1] if len(reply) >= 2 and reply[0] == 0x08 else 0
    return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, "?")


def wait_serving(target, timeout=30.0, service=SERVICE, alive=lambda: True):
    with grpc.insecure_channel(target) as channel:
        def ready():
            if not alive():
                raise RuntimeError(f"server for {target} exited while starting")
            return health(channel, service, timeout=1.0) == "SERVING"
        wait_until(ready, timeout, f"{target} health {service!r} SERVING", interval=0.1)


def open_stream(client, session_header=None):
    """client.open_stream() (an rnnserve_client.StreamChannel), sending the header
    x-session-id: SESSION_HEADER when given, as clients of the session router do."""
    if session_header is None:
        return client.open_stream()
    return client.open_stream(metadata=[(SESSION_HEADER, session_header)])


# ---- servers -----------------------------------------------------------------------------

class Server:
    """An rnnserve process on free loopback ports; its log goes to LOGDIR/NAME.log."""

    def __init__(self, logdir, name="rnnserve", model_repository=None, flags=(), binary=None):
        self.binary = binary or SERVER_BIN
        if not self.binary:
            raise FileNotFoundError("rnnserve binary not found: set RNNSERVE_BIN")
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.log_path = os.path.join(logdir, f"{name}.log")
        args = [self.binary, "--host=127.0.0.1", f"--port={self.port}",
                f"--metrics_port={self.metrics_port}", *flags]
        if model_repository:
            args.append(f"--model_repository={model_repository}")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout=30.0):
        wait_serving(self.target, timeout, alive=lambda: self.process.poll() is None)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signals the server and waits (bounded); returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def scrape(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> (samples [(name, {label: value}, float)], {family: type})."""
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(None, 3)
            types[family] = kind.strip()
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            if m:
                samples.append((m.group(1), dict(_LABEL.findall(m.group(3) or "")),
                                float(m.group(4))))
    return samples, types


def metric_value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(x) for k, x in labels.items()))


# ---- torch references ----------------------------------------------------------------------

def load_torch(model_dir):
    """The torch.nn.RNN of an rnnserve model folder (config.json + model.safetensors)."""
    import torch
    import export_pytorch
    with open(os.path.join(model_dir, export_pytorch.CONFIG_FILE)) as f:
        config = json.load(f)
    rnn = torch.nn.RNN(**export_pytorch.normalize_config(config))
    state = export_pytorch.read_safetensors(os.path.join(model_dir, export_pytorch.WEIGHTS_FILE))
    rnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return rnn.eval()


def write_model(out_dir, seed, **config):
    """Exports a freshly initialised torch.nn.RNN(**config) (torch.manual_seed(seed))."""
    import torch
    import export_pytorch
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(**config).eval()
    export_pytorch.export_module(rnn, out_dir)
    return rnn


def torch_forward(rnn, x, h0=None):
    import torch
    with torch.no_grad():
        out, hn = rnn(torch.from_numpy(x), None if h0 is None else torch.from_numpy(h0))
    return out.numpy(), hn.numpy()


# ---- nginx -------------------------------------------------------------------------------

def local_nginx_conf(k8s_conf, prefix, listen_port, backends):
    """deploy/kubernetes/nginx.conf made runnable on this machine with Debian's nginx 1.22: the
    routing (map, upstream hash, grpc_pass and its limits) is kept as written; the pod DNS name
    becomes the local backends, the listen becomes a loopback port (1.22 spells HTTP/2
    `listen ... http2`), and files go under PREFIX."""
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
    sub(r"^(\s*)listen 8080;\n\s*http2 on;$", rf"\1listen 127.0.0.1:{listen_port} http2;")
    sub(r"^(\s*)listen 8081;$", rf"\1listen 127.0.0.1:{free_port()};")
    sub(r"^pid \S+;$", f"pid {prefix}/nginx.pid;")
    sub(r"^error_log \S+", f"error_log {prefix}/error.log")
    sub(r"^(\s*)access_log /dev/stdout;$",
        rf"\1log_format routed '$remote_addr $http_x_session_id -> $upstream_addr $status';"
        rf"\n\1access_log {prefix}/access.log routed;")
    sub(r"_temp_path /tmp/", f"_temp_path {prefix}/", 5)
    return text


class Nginx:
    """Debian's nginx with local_nginx_conf(), in the foreground as a child process."""

    def __init__(self, k8s_conf, backends, prefix=None):
        self.prefix = prefix or tempfile.mkdtemp(prefix="rnnserve-nginx-")
        os.makedirs(self.prefix, exist_ok=True)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(local_nginx_conf(k8s_conf, self.prefix, self.port, backends))
        self.args = ["nginx", "-p", self.prefix, "-c", conf, "-g", "daemon off;"]
        self.process = None

    def test(self):
        return subprocess.run(self.args[:5] + ["-t"], capture_output=True, text=True)

    def start(self, timeout=10.0):
        self._stderr = open(os.path.join(self.prefix, "stderr.log"), "wb")
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._stderr)

        def listening():
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(listening, timeout, "nginx to listen")
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
        nginx = Nginx(args.nginx_test, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        try:
            result = nginx.test()
            sys.stdout.write(result.stderr)
            return result.returncode
        finally:
            shutil.rmtree(nginx.prefix, ignore_errors=True)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
