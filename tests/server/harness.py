"""Shared helpers of rnnserve's server integration tests (tests/server/test_*.py).

Runs with Debian's /usr/bin/python3 (torch, numpy, grpcio, protobuf). The server binary is
$RNNSERVE_BIN (ctest sets it); tools/ must be on PYTHONPATH for export_pytorch.

- stubs(): the rnnserve.v1 and grpc.health.v1 Python stubs, generated with protoc once per
  proto version into a cached folder under the temp dir (atomic rename, so parallel test
  processes never see half a folder).
- ServerProcess: one rnnserve on free loopback ports (port 0, parsed from its first line),
  stderr in a file, stopped with SIGTERM and then killed after a bound.
- Stream: one bidirectional Stream call with a reader thread, so every receive is bounded.
- Models: fresh seeded torch.nn.RNNs exported into a model repository; torch is the oracle.
- Metrics: Prometheus text scraped with urllib and parsed into samples.

Every wait here is a poll with a deadline; nothing sleeps in place of synchronisation.
"""

import hashlib
import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import grpc
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RNN_PROTO = os.path.join(ROOT, "proto", "rnnserve", "v1", "rnn_service.proto")
# grpc.health.v1 (Debian ships no grpc_health for Python); compiled from its own folder, so
# the module is a top-level health_pb2 rather than a grpc.health package under grpcio's.
HEALTH_PROTO = os.path.join(ROOT, "proto", "grpc", "health", "v1", "health.proto")
SERVICE = "rnnserve.v1.RnnService"

# Numbers from the server must match torch's within this (absolute) tolerance.
ATOL = 1e-5
# Bounds on every wait, in seconds.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
RESPONSE_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0

LISTENING_RE = re.compile(
    rb"rnnserve listening on (\S+):(\d+) \(gRPC\), metrics on (\S+):(-?\d+)")

torch.set_num_threads(1)  # the CPUs are shared with the server under test


def server_binary():
    path = os.environ.get("RNNSERVE_BIN")
    if not path:
        for build in ("build-it", "build"):
            candidate = os.path.join(ROOT, build, "server", "rnnserve")
            if os.access(candidate, os.X_OK):
                return candidate
        raise RuntimeError("set RNNSERVE_BIN to the rnnserve binary (ctest does)")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"RNNSERVE_BIN={path} is not an executable")
    return path


def wait_until(predicate, timeout, what, interval=0.02):
    """Polls predicate() until it returns a true value (returned); AssertionError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- stubs -------------------------------------------------------------------------------

def _generate_stubs():
    """Returns the folder holding rnnserve/v1/rnn_service_pb2{,_grpc}.py and
    health_pb2{,_grpc}.py, generating it if no process has yet."""
    digest = hashlib.sha256()
    for path in (RNN_PROTO, HEALTH_PROTO, "/usr/bin/protoc", "/usr/bin/grpc_python_plugin"):
        with open(path, "rb") as f:
            digest.update(f.read())
    final = os.path.join(tempfile.gettempdir(),
                         f"rnnserve-test-stubs-{os.getuid()}-{digest.hexdigest()[:16]}")
    marker = os.path.join(final, "COMPLETE")
    if os.path.exists(marker):
        return final
    staging = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-",
                               dir=os.path.dirname(final))
    try:
        for include, proto in ((os.path.join(ROOT, "proto"), RNN_PROTO),
                               (os.path.dirname(HEALTH_PROTO), HEALTH_PROTO)):
            subprocess.run(
                ["/usr/bin/protoc", f"--python_out={staging}", f"--grpc_out={staging}",
                 "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "-I", include, proto],
                check=True, timeout=60)
        with open(os.path.join(staging, "COMPLETE"), "w") as f:
            f.write("ok\n")
        try:
            os.rename(staging, final)  # atomic; fails if another process got there first
        except OSError:
            if not os.path.exists(marker):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


_stub_lock = threading.Lock()
_stub_modules = None


def stubs():
    """(rnn_service_pb2, rnn_service_pb2_grpc, health_pb2, health_pb2_grpc)."""
    global _stub_modules
    with _stub_lock:
        if _stub_modules is None:
            folder = _generate_stubs()
            if folder not in sys.path:
                sys.path.insert(0, folder)
            from rnnserve.v1 import rnn_service_pb2, rnn_service_pb2_grpc
            import health_pb2
            import health_pb2_grpc
            _stub_modules = (rnn_service_pb2, rnn_service_pb2_grpc, health_pb2, health_pb2_grpc)
        return _stub_modules


def pb2():
    return stubs()[0]


# ---- tensors -----------------------------------------------------------------------------

def to_tensor(array, encoding="values"):
    """A numpy array as an rnnserve.v1.Tensor, `values` or `raw` encoded."""
    array = np.ascontiguousarray(array, dtype="<f4")
    tensor = pb2().Tensor(shape=list(array.shape))
    if encoding == "raw":
        tensor.raw = array.tobytes()
    elif encoding == "values":
        tensor.values.extend(array.ravel().tolist())
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return tensor


def encoding_of(tensor):
    """'raw', 'values', or 'empty' (no data) for an rnnserve.v1.Tensor."""
    if tensor.raw:
        return "raw"
    return "values" if len(tensor.values) else "empty"


def is_empty(tensor):
    return len(tensor.shape) == 0 and not tensor.raw and len(tensor.values) == 0


def from_tensor(tensor):
    """An rnnserve.v1.Tensor as a float32 numpy array of its shape."""
    shape = tuple(tensor.shape)
    if tensor.raw:
        values = np.frombuffer(tensor.raw, dtype="<f4").astype(np.float32)
    else:
        values = np.asarray(tensor.values, dtype=np.float32)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise AssertionError(f"tensor of shape {shape} carries {values.size} values")
    return values.reshape(shape)


def assert_close(actual, expected, what=""):
    """Same shape, and every element within ATOL (NaN matches NaN)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL, equal_nan=True,
                               err_msg=what)


# ---- models and the torch reference ------------------------------------------------------

def make_rnn(seed, **config):
    """A freshly initialised torch.nn.RNN(**config) from torch.manual_seed(seed), in eval()."""
    torch.manual_seed(seed)
    return torch.nn.RNN(**config).eval()


def export_repository(folder, models):
    """Writes {name: torch.nn.RNN} as a model repository (one subfolder per model)."""
    import export_pytorch  # tools/, on PYTHONPATH
    for name, rnn in models.items():
        export_pytorch.export_module(rnn, os.path.join(folder, name))
    return folder


def torch_forward(rnn, x, h0=None):
    """torch's (output, h_n) of rnn(x, h0) as float32 numpy arrays."""
    with torch.no_grad():
        out, h_n = rnn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                       None if h0 is None else
                       torch.from_numpy(np.ascontiguousarray(h0, dtype=np.float32)))
    return out.numpy().copy(), h_n.numpy().copy()


def time_axis(rnn, batched=True):
    """The axis of the input and output that is time, for this model and rank."""
    return 1 if batched and rnn.batch_first else 0


def random_input(rng, rnn, steps, batch=None):
    """Random input of `steps` timesteps in the model's layout; batch=None: unbatched (T, C)."""
    if batch is None:
        shape = (steps, rnn.input_size)
    elif rnn.batch_first:
        shape = (batch, steps, rnn.input_size)
    else:
        shape = (steps, batch, rnn.input_size)
    return rng.standard_normal(shape).astype(np.float32)


def random_state(rng, rnn, batch=None):
    """A random h_0: (L*D, N, H), or (L*D, H) with batch=None."""
    rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
    shape = (rows, rnn.hidden_size) if batch is None else (rows, batch, rnn.hidden_size)
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


def random_split(rng, total, parts):
    """`parts` positive sizes summing to `total` (parts <= total), in random places."""
    cuts = sorted(rng.choice(np.arange(1, total), size=parts - 1, replace=False).tolist())
    bounds = [0] + cuts + [total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def split_time(x, sizes, axis):
    """Splits x along `axis` into consecutive pieces of the given sizes."""
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


# ---- the server process ------------------------------------------------------------------

class ServerProcess:
    """One rnnserve process on 127.0.0.1 with ports picked by the server (port 0).

        with ServerProcess(model_repository=repo, flags=["--max_sessions=3"]) as server:
            stub = server.stub()

    stdout's listening line gives the ports; stderr goes to a file (stderr_text()). stop()
    sends SIGTERM and kills the process if it has not exited after a bound.
    """

    def __init__(self, model_repository=None, flags=(), name="rnnserve",
                 drain_timeout="5s", metrics=True, start_timeout=START_TIMEOUT):
        self.model_repository = model_repository
        self.metrics = metrics  # False: --metrics_port=-1 (exits 1.5 s faster)
        self.flags = list(flags)
        self.name = name
        self.drain_timeout = drain_timeout
        self.start_timeout = start_timeout
        self.process = None
        self.port = None
        self.metrics_port = None
        self._channels = []
        self._logdir = None

    # -- lifecycle

    def start(self):
        self._logdir = tempfile.mkdtemp(prefix=f"rnnserve-test-{self.name}-")
        self.stderr_path = os.path.join(self._logdir, "stderr.log")
        args = [server_binary(), "--host=127.0.0.1", "--port=0",
                f"--metrics_port={0 if self.metrics else -1}"]
        if self.model_repository:
            args.append(f"--model_repository={self.model_repository}")
        if self.drain_timeout and not any(f.startswith("--drain_timeout") for f in self.flags):
            args.append(f"--drain_timeout={self.drain_timeout}")
        args += self.flags
        self.args = args
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._stderr,
                                        stdin=subprocess.DEVNULL)
        lines = queue.Queue()

        def read_stdout():
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read_stdout, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"{self.name}: no listening line within "
                                   f"{self.start_timeout}s; stderr:\n{self.stderr_text()}")
            if line is None:
                rc = self.process.wait(STOP_TIMEOUT)
                raise RuntimeError(f"{self.name}: exited with {rc} before listening "
                                   f"({' '.join(args)}); stderr:\n{self.stderr_text()}")
            match = LISTENING_RE.search(line)
            if match:
                self.port = int(match.group(2))
                self.metrics_port = int(match.group(4))
                self.target = f"127.0.0.1:{self.port}"
                self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
                return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

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

    def close_channels(self):
        """Closes every channel from channel(). (The server's shutdown waits out
        --shutdown_grace while a connection that made calls stays open.)"""
        for channel in self._channels:
            channel.close()
        self._channels = []

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        self.close_channels()
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._stderr.close()
        if self.process.stdout:
            self.process.stdout.close()
        if self._logdir and not os.environ.get("RNNSERVE_TEST_KEEP_LOGS"):
            self._saved_stderr = self.stderr_text()
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None
        return self.process.returncode

    def stderr_text(self):
        if self._logdir is None:
            return getattr(self, "_saved_stderr", "")
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr_tail(self, lines=40):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    # -- clients

    def channel(self, **options):
        """A new channel to the server, closed by stop()."""
        channel = grpc.insecure_channel(self.target, options=list(options.items()))
        self._channels.append(channel)
        return channel

    def stub(self, channel=None):
        return stubs()[1].RnnServiceStub(channel or self.channel())

    def health_stub(self, channel=None):
        """A Health stub; without `channel`, one shared stub (cheap to poll with)."""
        if channel is not None:
            return stubs()[3].HealthStub(channel)
        if getattr(self, "_health", None) is None or self._health[0] not in self._channels:
            shared = self.channel()
            self._health = (shared, stubs()[3].HealthStub(shared))
        return self._health[1]

    def stream(self, channel=None, timeout=120.0):
        return Stream(self.stub(channel), timeout=timeout)

    def scrape(self):
        return scrape(self.metrics_url)


# ---- Stream ------------------------------------------------------------------------------

class StreamEnded(Exception):
    """The server finished the Stream call (OK) with no response left to read."""


class Stream:
    """One Stream call. send() queues a request; recv() waits (bounded) for the next
    response in arrival order; call() does both for a single outstanding request.

    Tensor fields (input, h_0) may be numpy arrays, encoded with `encoding`, or
    rnnserve.v1.Tensor messages sent as they are. request_id is assigned when not given.
    """

    def __init__(self, stub, timeout=120.0):
        self._requests = queue.Queue()
        self._responses = queue.Queue()
        self._ids = itertools.count(1)
        self._call = stub.Stream(self._request_iterator(), timeout=timeout)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.status = None  # the call's final grpc.StatusCode once known
        self.last_session_id = ""  # of the last response that named one

    def _request_iterator(self):
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _read(self):
        try:
            for response in self._call:
                self._responses.put(response)
            self.status = grpc.StatusCode.OK
            self._responses.put(StreamEnded())
        except grpc.RpcError as e:
            self.status = e.code()
            self._responses.put(e)

    @staticmethod
    def request(encoding="values", **fields):
        for key in ("input", "h_0"):
            value = fields.get(key)
            if value is not None and not isinstance(value, pb2().Tensor):
                fields[key] = to_tensor(value, encoding)
            elif value is None:
                fields.pop(key, None)
        return pb2().StreamRequest(**fields)

    def send(self, encoding="values", **fields):
        """Queues one request; returns its request_id."""
        if "request_id" not in fields:
            fields["request_id"] = next(self._ids)
        self._requests.put(self.request(encoding, **fields))
        return fields["request_id"]

    def recv(self, timeout=RESPONSE_TIMEOUT):
        """The next response; raises the call's grpc.RpcError if it failed, StreamEnded if
        it finished, AssertionError if nothing came within `timeout` seconds."""
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no Stream response within {timeout}s") from None
        if isinstance(item, Exception):
            self._responses.put(item)  # later recv() calls see it too
            raise item
        if item.session_id:
            self.last_session_id = item.session_id
        return item

    def recv_many(self, count, timeout=RESPONSE_TIMEOUT):
        """`count` responses, by request_id; the whole wait is bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        responses = {}
        order = []
        for _ in range(count):
            response = self.recv(timeout=max(0.0, deadline - time.monotonic()))
            if response.request_id in responses:
                raise AssertionError(f"two responses for request_id {response.request_id}")
            responses[response.request_id] = response
            order.append(response.request_id)
        return responses, order

    def call(self, encoding="values", timeout=RESPONSE_TIMEOUT, **fields):
        request_id = self.send(encoding, **fields)
        response = self.recv(timeout)
        if response.request_id != request_id:
            raise AssertionError(f"response for request_id {response.request_id}, expected "
                                 f"{request_id}")
        return response

    def close(self, timeout=RESPONSE_TIMEOUT):
        """Half-closes the stream and waits (bounded) for the server to finish it; returns
        the final status code."""
        self._requests.put(None)
        self._reader.join(timeout)
        if self._reader.is_alive():
            self._call.cancel()
            raise AssertionError(f"Stream not finished {timeout}s after the client closed it")
        return self.status

    def cancel(self):
        self._call.cancel()
        self._requests.put(None)
        self._reader.join(RESPONSE_TIMEOUT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._reader.is_alive():
            self._requests.put(None)
            self._reader.join(RESPONSE_TIMEOUT)
            if self._reader.is_alive():
                self._call.cancel()


def check_ok(response):
    """The response, or AssertionError carrying its error."""
    if response.error_code:
        raise AssertionError(f"request {response.request_id} failed with "
                             f"{grpc_code_name(response.error_code)}: {response.error_message}")
    return response


def grpc_code_name(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.name
    return str(number)


def code_number(code):
    """grpc.StatusCode -> its integer, as in StreamResponse.error_code."""
    return code.value[0]


# ---- streamed sessions checked against torch ---------------------------------------------

class ReferenceSession:
    """A streamed session of a unidirectional model, mirrored in torch: feed() returns the
    chunk's expected (output, h_n) and advances the reference state. random_chunk() makes
    inputs of the session's batch size (None: unbatched) from its own generator."""

    def __init__(self, rnn, h0=None, seed=0, batch=None):
        self.rnn = rnn
        self.h = h0
        self.steps = 0
        self.rng = np.random.default_rng(seed)
        self.batch = batch

    def random_chunk(self, steps=None):
        if steps is None:
            steps = int(self.rng.integers(1, 4))
        return random_input(self.rng, self.rnn, steps, self.batch)

    def feed(self, x):
        out, h_n = torch_forward(self.rnn, x, self.h)
        self.h = h_n
        batched = x.ndim == 3
        self.steps += x.shape[time_axis(self.rnn, batched)]
        return out, h_n


def check_chunk(testcase, response, expected_out, expected_h, what):
    """A successful chunk response whose output and h_n match the reference."""
    testcase.assertEqual(response.error_code, 0, f"{what}: {response.error_message}")
    assert_close(from_tensor(response.output), expected_out, f"{what}: output")
    if expected_h is not None:
        assert_close(from_tensor(response.h_n), expected_h, f"{what}: h_n")


# ---- health and metrics ------------------------------------------------------------------

def health_status(server, service="", timeout=5.0):
    """'SERVING', 'NOT_SERVING', ... for `service`, or the gRPC code name if Check failed."""
    health_pb2 = stubs()[2]
    stub = server.health_stub()
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def scrape(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): float}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match:
            raise AssertionError(f"unparsable metrics line: {line!r}")
        name, labels, value = match.groups()
        label_map = dict(_LABEL_RE.findall(labels or ""))
        samples[(name, frozenset(label_map.items()))] = float(value)
    return samples


def metric(samples, name, **labels):
    """The value of the sample with exactly these labels; AssertionError if absent."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        similar = sorted(str(dict(k[1])) for k in samples if k[0] == name)
        raise AssertionError(f"no sample {name}{labels}; samples of {name}: {similar}")
    return samples[key]


# ---- test classes ------------------------------------------------------------------------

class ServerTestCase(unittest.TestCase):
    """A test class with its own model repository and, unless START_SERVER is False, one
    server for all its tests, which must exit with status 0 at the end.

    MODELS: {name: torch.nn.RNN keyword arguments}; the models are seeded SEED, SEED + 1, ...
    in name order and are in cls.rnns (the torch oracle) and cls.repo (what the server loads).
    """

    MODELS = {}
    SEED = 0
    SERVER_NAME = "rnnserve"
    SERVER_FLAGS = ()
    METRICS = False
    START_SERVER = True

    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix=f"rnnserve-test-{cls.SERVER_NAME}-models-")
        cls.server = None
        try:
            cls.rnns = {name: make_rnn(cls.SEED + i, **config)
                        for i, (name, config) in enumerate(sorted(cls.MODELS.items()))}
            export_repository(cls.repo, cls.rnns)
            if cls.START_SERVER:
                cls.server = ServerProcess(model_repository=cls.repo, name=cls.SERVER_NAME,
                                           flags=cls.SERVER_FLAGS, metrics=cls.METRICS).start()
                cls.stub = cls.server.stub()
        except BaseException:
            shutil.rmtree(cls.repo, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop() if cls.server is not None else 0
        shutil.rmtree(cls.repo, ignore_errors=True)
        if rc != 0:
            raise AssertionError(f"{cls.SERVER_NAME} exited with {rc}:\n"
                                 f"{cls.server.stderr_tail()}")

    def get_session(self, stub, session_id, timeout=CALL_TIMEOUT, **fields):
        return stub.GetSession(pb2().GetSessionRequest(session_id=session_id, **fields),
                               timeout=timeout)

    def assert_rpc_error(self, code, substrings, fn, *args, **kwargs):
        """fn(*args, **kwargs) (a unary call) fails with `code` and a message containing
        every substring; returns the grpc.RpcError."""
        kwargs.setdefault("timeout", CALL_TIMEOUT)
        with self.assertRaises(grpc.RpcError) as caught:
            fn(*args, **kwargs)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        for s in substrings:
            self.assertIn(s, caught.exception.details())
        return caught.exception
