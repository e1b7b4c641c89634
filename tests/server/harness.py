"""The server integration tests' own helpers (tests/server/test_*.py), on top of the shared
test kit (tests/pykit/rnnserve_testkit: stubs, server processes, health, metrics, waits,
models), whose names it re-exports so the tests read h.ServerProcess, h.metric, ...

- Tensors: rnnserve.v1.Tensor <-> numpy, in `values` or `raw` encoding.
- Stream: one bidirectional Stream call with a reader thread, so every receive is bounded.
- ReferenceSession: a streamed session mirrored in torch (the oracle).
- ServerTestCase: a class with its own model repository and server, which must exit 0.

Every wait here is a poll with a deadline; nothing sleeps in place of synchronisation. Run a
module as ctest does (the server binary is found in build/ when RNNSERVE_BIN is unset):

    (cd tests/server && /usr/bin/python3 ../pykit/run_tests.py test_streaming)
"""

import itertools
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pykit"))
import rnnserve_testkit as kit  # noqa: E402
# Re-exported for the tests (h.ROOT, h.metric, ...).
from rnnserve_testkit import (ROOT, SERVICE, server_binary, wait_until, stubs,  # noqa: E402,F401
                              pb2, scrape, parse_metrics, metric, make_rnn, export_repository,
                              torch_forward, scaled)

# Numbers from the server must match torch's within this (absolute) tolerance.
ATOL = 1e-5
# Bounds on every wait, in seconds.
START_TIMEOUT = kit.START_TIMEOUT
STOP_TIMEOUT = kit.STOP_TIMEOUT
RESPONSE_TIMEOUT = scaled(30.0)
CALL_TIMEOUT = scaled(30.0)

torch.set_num_threads(1)  # the CPUs are shared with the server under test


class ServerProcess(kit.ServerProcess):
    """The kit's rnnserve process, plus stream(): a Stream call on a new channel."""

    def stream(self, channel=None, timeout=120.0):
        return Stream(self.stub(channel), timeout=scaled(timeout))


def rss_bytes(pid):
    """The process's resident set size, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def health_status(server, service="", timeout=5.0):
    """'SERVING', 'NOT_SERVING', ... for `service`, or the gRPC code name if Check failed."""
    return server.health(service, timeout)


# ---- tensors -----------------------------------------------------------------------------

def to_tensor(array, encoding="values"):
    """A numpy array as an rnnserve.v1.Tensor, `values` or `raw` encoded, or as token `ids`
    (int64; the array must hold integers)."""
    if encoding == "ids":
        ids = np.asarray(array)
        if ids.size and not np.array_equal(ids, np.round(ids)):
            raise ValueError("token ids must be integers")
        return pb2().Tensor(shape=list(ids.shape), ids=ids.astype(np.int64).ravel().tolist())
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
    """'raw', 'values', 'ids', or 'empty' (no data) for an rnnserve.v1.Tensor."""
    if tensor.raw:
        return "raw"
    if len(tensor.ids):
        return "ids"
    return "values" if len(tensor.values) else "empty"


def is_empty(tensor):
    return (len(tensor.shape) == 0 and not tensor.raw and len(tensor.values) == 0
            and len(tensor.ids) == 0)


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


# ---- random inputs and the torch reference ---------------------------------------------

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
    """A random h_0: (L*D, N, H_out), or (L*D, H_out) with batch=None."""
    shape, _ = kit.state_shapes(rnn, batch)
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


def random_cell_state(rng, rnn, batch=None):
    """A random c_0 for an LSTM: (L*D, N, H), or (L*D, H) with batch=None."""
    _, shape = kit.state_shapes(rnn, batch)
    return (0.5 * rng.standard_normal(shape)).astype(np.float32)


def random_split(rng, total, parts):
    """`parts` positive sizes summing to `total` (parts <= total), in random places."""
    cuts = sorted(rng.choice(np.arange(1, total), size=parts - 1, replace=False).tolist())
    bounds = [0] + cuts + [total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def split_time(x, sizes, axis):
    """Splits x along `axis` into consecutive pieces of the given sizes."""
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


# ---- Stream ------------------------------------------------------------------------------

class StreamEnded(Exception):
    """The server finished the Stream call (OK) with no response left to read."""


class Stream:
    """One Stream call. send() queues a request; recv() waits (bounded) for the next
    response in arrival order; call() does both for a single outstanding request.

    Tensor fields (input, h_0, c_0) may be numpy arrays, encoded with `encoding`, or
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
        """`encoding` "ids" sends the input as token ids and the states as values."""
        for key in ("input", "h_0", "c_0"):
            value = fields.get(key)
            if value is not None and not isinstance(value, pb2().Tensor):
                fields[key] = to_tensor(value, "values" if encoding == "ids" and key != "input"
                                        else encoding)
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
