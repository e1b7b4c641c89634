"""Server processes on ports they pick themselves (port 0): the ports come from the first
line the server prints, so no test ever reserves a port and releases it for someone else to
take under ctest -j. Every process is stopped (SIGTERM, then SIGKILL after a bound) and its
log kept readable after it exits."""

import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import grpc

from .env import scaled, server_binary
from .health import health_status, wait_serving
from .metrics import scrape
from .stubs import SERVICE, stubs

# Bounds, in seconds (scaled by $RNNSERVE_TEST_TIMEOUT_SCALE).
START_TIMEOUT = scaled(30.0)
STOP_TIMEOUT = scaled(20.0)

LISTENING_RE = re.compile(
    rb"listening on (\S+):(\d+) \(gRPC\), metrics on (\S+):(-?\d+)")
# What ASan, LSan and UBSan print when they find something (the sanitizer stage of
# scripts/test.sh runs these tests against a sanitized rnnserve).
SANITIZER_RE = re.compile(r"ERROR: (?:Address|Leak|Thread|UndefinedBehavior)Sanitizer|"
                          r"^\S+:\d+:\d+: runtime error: ", re.M)


def sanitizer_report(text):
    """The sanitizer report in a process's stderr from its first line, or None."""
    match = SANITIZER_RE.search(text)
    if match is None:
        return None
    return text[text.rfind("\n", 0, match.start()) + 1:]


class ListeningProcess:
    """A server command that prints "NAME listening on HOST:PORT (gRPC), metrics on HOST:PORT"
    (rnnserve, bench/reference_server.py) once it is serving. stop() fails (AssertionError)
    when the process's stderr holds a sanitizer report, whatever its exit status:

        with ListeningProcess([binary, "--port=0", ...], name="rnnserve") as server:
            ...server.target, server.metrics_port...

    stderr goes to `log_path` (kept), or to a file in a temporary folder removed by stop()
    unless $RNNSERVE_TEST_KEEP_LOGS is set; stderr_text() reads it either way.
    """

    def __init__(self, args, name="server", start_timeout=START_TIMEOUT, log_path=None,
                 cwd=None, env=None):
        self.args = list(args)
        self.name = name
        self.start_timeout = start_timeout
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.process = None
        self.port = None
        self.metrics_port = None
        self.target = None
        self.metrics_url = None
        self._logdir = None
        self._stderr = None
        self._saved_stderr = ""
        self._sanitizer_reported = False
        self.listening_line = ""

    def start(self):
        if self.log_path is None:
            self._logdir = tempfile.mkdtemp(prefix=f"rnnserve-test-{self.name}-")
            self.stderr_path = os.path.join(self._logdir, "stderr.log")
        else:
            self.stderr_path = self.log_path
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._stderr,
                                        stdin=subprocess.DEVNULL, cwd=self.cwd, env=self.env)
        lines = queue.Queue()

        def read_stdout():  # drains stdout for the process's whole life
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError(f"{self.name}: no listening line within "
                                     f"{self.start_timeout}s; stderr:\n{self.stderr_tail()}")
            if line is None:
                rc = self.process.wait(STOP_TIMEOUT)
                text = self.stderr_tail()
                self.stop()
                raise AssertionError(f"{self.name}: exited with {rc} before listening "
                                     f"({' '.join(self.args)}); stderr:\n{text}")
            match = LISTENING_RE.search(line)
            if match:
                self.listening_line = line.decode(errors="replace")
                self.port = int(match.group(2))
                self.metrics_port = int(match.group(4))
                self.target = f"127.0.0.1:{self.port}"
                self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
                return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return self.target

    @property
    def pid(self):
        return self.process.pid

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def terminate(self):
        """Sends SIGTERM (starts draining) without waiting."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout):
        """The exit status; AssertionError if still running after `timeout` seconds."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running {timeout}s later; stderr:\n"
                                 f"{self.stderr_tail()}") from None

    def kill(self):
        if self.alive():
            self.process.kill()
        if self.process is not None:
            self.process.wait(STOP_TIMEOUT)

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        """Sends `sig`, then SIGKILL after `timeout` seconds; returns the exit status.
        Idempotent."""
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.process.stdout:
            self.process.stdout.close()
        if self._logdir and not os.environ.get("RNNSERVE_TEST_KEEP_LOGS"):
            self._saved_stderr = self.stderr_text()
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None
        report = sanitizer_report(self.stderr_text())
        if report is not None and not self._sanitizer_reported:
            self._sanitizer_reported = True  # once, though stop() may be called again
            raise AssertionError(f"{self.name}: the sanitizers reported (exit status "
                                 f"{self.process.returncode}):\n{report[:20000]}")
        return self.process.returncode

    def stderr_text(self):
        if self.log_path is None and self._logdir is None:
            return self._saved_stderr
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr_tail(self, lines=40):
        return "\n".join(self.stderr_text().splitlines()[-lines:])


def make_channel(target, tls_ca=None, tls_cert=None, tls_key=None, token=None, options=()):
    """A channel to `target` made by the project's Python client (client/python), so the tests
    exercise the one implementation of TLS, mutual TLS and bearer tokens that users get:
    TLS trusting the PEM file `tls_ca` when set (with a client certificate when tls_cert and
    tls_key are set too), plaintext otherwise; with `token`, every call carries it. `options`
    are extra gRPC channel arguments."""
    from .stubs import client_module
    return client_module().make_channel(target, tls_ca=tls_ca, tls_cert=tls_cert,
                                        tls_key=tls_key, token=token, options=options)


class ServerProcess(ListeningProcess):
    """One rnnserve on 127.0.0.1 with ports it picks (--port=0, --metrics_port=0):

        with ServerProcess(model_repository=repo, flags=["--max_sessions=3"]) as server:
            stub = server.stub()

    metrics=False passes --metrics_port=-1 (no metrics endpoint; exits faster). Channels from
    channel() are closed by stop() (the server's shutdown waits out --shutdown_grace while a
    connection that made calls stays open).
    """

    def __init__(self, model_repository=None, flags=(), name="rnnserve", drain_timeout="5s",
                 metrics=True, start_timeout=START_TIMEOUT, binary=None, log_path=None,
                 tls_ca=None, token=None):
        # Defaults for channel(): a server started with --tls_cert_file needs tls_ca.
        self.tls_ca = tls_ca
        self.token = token
        self.health_port = None
        self.model_repository = model_repository
        self.metrics = metrics
        self.flags = list(flags)
        self.drain_timeout = drain_timeout
        args = [binary or server_binary(), "--host=127.0.0.1", "--port=0",
                f"--metrics_port={0 if metrics else -1}"]
        if model_repository:
            args.append(f"--model_repository={model_repository}")
        if drain_timeout and not any(f.startswith("--drain_timeout") for f in self.flags):
            args.append(f"--drain_timeout={drain_timeout}")
        super().__init__(args + self.flags, name=name, start_timeout=start_timeout,
                         log_path=log_path)
        self._channels = []
        self._health = None

    def wait_serving(self, timeout=START_TIMEOUT, service=SERVICE):
        """Waits (bounded) until health reports `service` SERVING; returns self."""
        wait_serving(self.target, timeout, service, alive=self.alive)
        return self

    def close_channels(self):
        """Closes every channel from channel()."""
        for channel in self._channels:
            channel.close()
        self._channels = []

    def stop(self, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
        self.close_channels()
        return super().stop(timeout, sig)

    def start(self):
        super().start()
        match = re.search(r"health on \S+:(\d+)", self.listening_line)
        self.health_port = int(match.group(1)) if match else None
        return self

    def channel(self, tls_ca=..., tls_cert=None, tls_key=None, token=..., **options):
        """A new channel to the server, closed by stop(); TLS and token default to the
        constructor's (pass None to go without)."""
        channel = make_channel(self.target, self.tls_ca if tls_ca is ... else tls_ca,
                               tls_cert, tls_key, self.token if token is ... else token,
                               options.items())
        self._channels.append(channel)
        return channel

    def stub(self, channel=None):
        return stubs()[1].RnnServiceStub(channel or self.channel())

    def health_stub(self, channel=None):
        """A Health stub; without `channel`, one shared stub (cheap to poll with)."""
        if channel is not None:
            return stubs()[3].HealthStub(channel)
        if self._health is None or self._health[0] not in self._channels:
            shared = self.channel()
            self._health = (shared, stubs()[3].HealthStub(shared))
        return self._health[1]

    def health(self, service="", timeout=5.0):
        """health_status() of `service` on a shared channel."""
        self.health_stub()
        return health_status(self._health[0], service, timeout)

    def scrape(self):
        return scrape(self.metrics_url)
