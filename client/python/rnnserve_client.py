"""Python client for rnnserve (the rnnserve.v1.RnnService gRPC API), on numpy arrays.

Needs Debian's python3-grpcio, python3-protobuf and python3-numpy (run it with /usr/bin/python3),
plus protoc and /usr/bin/grpc_python_plugin: the stubs are generated on first import by
gen_stubs.sh into rnnserve_pb/<proto hash>/ next to this file (or ~/.cache/rnnserve/pb when
this folder is read-only), atomically, so concurrent processes do not race.

    from rnnserve_client import RnnServeClient, RnnServeError

    client = RnnServeClient("127.0.0.1:50051")
    # TLS (server verified against ca.crt), mutual TLS (client.crt/.key), a bearer token:
    client = RnnServeClient("rnn.example:50051", tls_ca="ca.crt", tls_cert="client.crt",
                            tls_key="client.key", token=open("token").readline().strip())
    info = client.get_model("demo")              # a ModelInfo message
    out, h_n = client.forward("demo", x)         # x: (T, N, C) float array

    with client.open_stream() as stream:
        first = stream.start("demo", chunk=x[:5])   # server assigns the session id
        nxt = stream.send(x[5:10])                  # same session (the last one started)
        print(nxt.output.shape, nxt.h_n.shape, nxt.steps_seen)
        state = client.get_session(first.session_id)["h_n"]
        stream.end()

Errors, from a unary call or returned in-stream, raise RnnServeError with .code (a
grpc.StatusCode) and .message; an in-stream error leaves the stream usable.

Thread-safety: RnnServeClient may be shared by threads; a StreamChannel may not.
"""

import hashlib
import os
import queue
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import grpc
import numpy as np

__all__ = ["RnnServeClient", "RnnServeError", "StreamChannel", "StreamResult", "make_channel",
           "read_token_file", "pb2", "pb2_grpc", "DEFAULT_MAX_MESSAGE_BYTES"]

# The server's --max_message_bytes default; grpcio's own receive limit (4 MiB) would refuse a
# large Forward output or state the server may send.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
_MAX_PEM_BYTES = 1 << 20

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO = os.path.join(_HERE, "..", "..", "proto", "rnnserve", "v1", "rnn_service.proto")


def _stub_dir():
    """The folder holding rnnserve/v1/*_pb2*.py, generating the stubs when missing."""
    override = os.environ.get("RNNSERVE_PB_DIR")
    if override:
        return override  # pre-generated stubs, e.g. where the proto is not around
    with open(_PROTO, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    base = os.path.join(_HERE, "rnnserve_pb")
    if not os.access(_HERE, os.W_OK) and not os.path.isdir(base):
        base = os.path.join(os.path.expanduser("~"), ".cache", "rnnserve", "pb")
    out = os.path.join(base, digest)
    if not os.path.isfile(os.path.join(out, "rnnserve", "v1", "rnn_service_pb2_grpc.py")):
        result = subprocess.run([os.path.join(_HERE, "gen_stubs.sh"), out],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ImportError("rnnserve_client: generating the gRPC stubs failed:\n"
                              + result.stderr)
    return out


def _import_stubs():
    path = _stub_dir()
    if path not in sys.path:
        sys.path.insert(0, path)
    from rnnserve.v1 import rnn_service_pb2, rnn_service_pb2_grpc  # noqa: E402
    return rnn_service_pb2, rnn_service_pb2_grpc


pb2, pb2_grpc = _import_stubs()

_CODES = {c.value[0]: c for c in grpc.StatusCode}


class RnnServeError(Exception):
    """A failed call or in-stream request: .code (grpc.StatusCode) and .message (str)."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, e):
        return cls(e.code(), e.details() or "")


def to_tensor(x, raw=True):
    """A pb2.Tensor from an array-like (as float32, C order)."""
    a = np.ascontiguousarray(x, dtype="<f4")
    t = pb2.Tensor(shape=a.shape)
    if raw:
        t.raw = a.tobytes()
    else:
        t.values.extend(a.ravel().tolist())
    return t


def from_tensor(t):
    """A float32 numpy array from a pb2.Tensor, or None for an absent (empty) tensor."""
    if not t.shape and not t.values and not t.raw:
        return None
    shape = tuple(t.shape)
    if t.raw:
        return np.frombuffer(t.raw, dtype="<f4").reshape(shape).astype(np.float32)
    return np.asarray(t.values, dtype=np.float32).reshape(shape)


def _message_dict(msg):
    """A message as a dict of Python values under proto field names; tensors become arrays
    (None when absent)."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.full_name == "rnnserve.v1.Tensor":
            out[f.name] = from_tensor(value)
        elif f.label == f.LABEL_REPEATED:
            out[f.name] = [_message_dict(v) if f.message_type else v for v in value]
        elif f.message_type is not None:
            out[f.name] = _message_dict(value)
        else:
            out[f.name] = value
    return out


@dataclass
class StreamResult:
    """One successful StreamResponse, decoded."""
    session_id: str
    # The chunk's output; None when the request had no input, for duplicates, and for
    # bidirectional models before `end`.
    output: Optional[np.ndarray]
    # The state after the chunk; None with omit_state.
    h_n: Optional[np.ndarray]
    steps_seen: int
    chunk_index: Optional[int]
    duplicate: bool
    ended: bool
    request_id: int

    @classmethod
    def from_response(cls, r):
        if r.error_code:
            raise RnnServeError(_CODES.get(r.error_code, grpc.StatusCode.UNKNOWN),
                                r.error_message)
        return cls(session_id=r.session_id, output=from_tensor(r.output), h_n=from_tensor(r.h_n),
                   steps_seen=r.steps_seen,
                   chunk_index=r.chunk_index if r.HasField("chunk_index") else None,
                   duplicate=r.duplicate, ended=r.ended, request_id=r.request_id)


_CLOSE = object()


class StreamChannel:
    """One open Stream call, used synchronously: each call sends one request and waits for its
    response. Several sessions may share it; `session_id` defaults to the last one started.
    Not thread-safe. Use as a context manager, or call close()."""

    def __init__(self, stub, raw=True, metadata=None):
        self._raw = raw
        self._requests = queue.Queue()
        self._responses = stub.Stream(iter(self._requests.get, _CLOSE), metadata=metadata)
        self._next_id = 1
        self._closed = False
        self.session_id = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, req):
        """Sends a pb2.StreamRequest (giving it a request_id when it has none) and returns the
        pb2.StreamResponse, whatever its error_code. RnnServeError when the stream is broken."""
        if self._closed:
            raise RnnServeError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")
        if not req.request_id:
            req.request_id = self._next_id
            self._next_id += 1
        self._requests.put(req)
        try:
            r = next(self._responses)
        except grpc.RpcError as e:
            raise RnnServeError.from_rpc_error(e) from None
        except StopIteration:
            raise RnnServeError(grpc.StatusCode.UNAVAILABLE,
                                "the server ended the stream") from None
        if r.request_id != req.request_id:
            raise RnnServeError(grpc.StatusCode.INTERNAL,
                                f"response answers request {r.request_id}, "
                                f"expected {req.request_id}")
        return r

    def _call(self, req):
        result = StreamResult.from_response(self.request(req))
        if req.start:
            self.session_id = result.session_id
        return result

    def _tensor(self, x):
        return to_tensor(x, self._raw)

    def start(self, model, session_id=None, h0=None, chunk=None, end=False, omit_state=False,
              chunk_index=None):
        """Creates a session of `model` (the server picks the id when session_id is None), with
        optional initial state h0 (L*D, N, H) and optional first chunk. Returns a StreamResult;
        the session becomes this stream's default."""
        req = pb2.StreamRequest(model=model, session_id=session_id or "", start=True, end=end,
                                omit_state=omit_state)
        if h0 is not None:
            req.h_0.CopyFrom(self._tensor(h0))
        if chunk is not None:
            req.input.CopyFrom(self._tensor(chunk))
        if chunk_index is not None:
            req.chunk_index = chunk_index
        return self._call(req)

    def send(self, chunk, session_id=None, end=False, omit_state=False, chunk_index=None):
        """Applies one chunk, (T, N, C) (or (N, T, C) for batch_first models, or (T, C)), to a
        session (default: the last one started here). `end` closes it afterwards."""
        req = pb2.StreamRequest(session_id=self._session(session_id), end=end,
                                omit_state=omit_state, input=self._tensor(chunk))
        if chunk_index is not None:
            req.chunk_index = chunk_index
        return self._call(req)

    def end(self, session_id=None):
        """Closes a session (default: the last one started here) without a chunk."""
        return self._call(pb2.StreamRequest(session_id=self._session(session_id), end=True))

    def _session(self, session_id):
        sid = session_id or self.session_id
        if not sid:
            raise ValueError("no session: call start() first or pass session_id")
        return sid

    def close(self):
        """Half-closes the stream and waits for the server to end it. Sessions stay alive on
        the server until ended or expired. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(_CLOSE)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise RnnServeError.from_rpc_error(e) from None


def _read_pem(path, what):
    """A PEM file's bytes (or `path` itself when it is bytes: PEM already in memory)."""
    if isinstance(path, bytes):
        return path
    try:
        with open(path, "rb") as f:
            pem = f.read(_MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r}: {e.strerror}") from None
    if len(pem) > _MAX_PEM_BYTES:
        raise ValueError(f"{what} {str(path)!r} is larger than {_MAX_PEM_BYTES} bytes")
    if b"-----BEGIN " not in pem:
        raise ValueError(f"{what} {str(path)!r} holds no PEM block (expected -----BEGIN ...-----)"
                         + ("; it is empty" if not pem else ""))
    return pem


def read_token_file(path):
    """The token in `path`: its first line without surrounding whitespace."""
    try:
        with open(path, "rb") as f:
            first = f.read(64 << 10).split(b"\n", 1)[0]
    except OSError as e:
        raise ValueError(f"token file {str(path)!r}: {e.strerror}") from None
    token = first.strip().decode("ascii", errors="replace")
    if not token:
        raise ValueError(f"token file {str(path)!r}: the first line is empty (expected the token)")
    return token


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds ("authorization", "Bearer TOKEN") to every call's metadata. An interceptor rather
    than call credentials, which grpc refuses on plaintext channels."""

    def __init__(self, token):
        self._pair = ("authorization", "Bearer " + token)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


@dataclass
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: Optional[float]
    metadata: list
    credentials: object
    wait_for_ready: Optional[bool]
    compression: object


def make_channel(target, tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, options=()):
    """A grpc channel to `target`: plaintext, or TLS when `tls_ca` (the PEM CA file the
    server's certificate must chain to) is given, mutual TLS with `tls_cert` and `tls_key`
    (PEM files; both or neither, and only with tls_ca), and `token` sent as
    "authorization: Bearer TOKEN" on every call. Files may be given as PEM bytes instead.
    `options` are extra gRPC channel arguments, e.g. (("grpc.enable_retries", 0),).
    ValueError naming the file when one is missing or not PEM."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert needs tls_key" if tls_key is None else "tls_key needs tls_cert")
    if tls_cert is not None and tls_ca is None:
        raise ValueError("tls_cert/tls_key (mutual TLS) need tls_ca, the CA of the server's "
                         "certificate")
    if token is not None and (not token or any(c <= " " or c > "~" for c in token)):
        raise ValueError("the token must be non-empty printable ASCII without spaces")
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)] + list(options)
    if tls_ca is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read_pem(tls_ca, "TLS CA file"),
            private_key=None if tls_key is None else _read_pem(tls_key, "TLS client key file"),
            certificate_chain=(None if tls_cert is None
                               else _read_pem(tls_cert, "TLS client certificate file")))
        channel = grpc.secure_channel(target, credentials, options=options)
    if token is not None:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


class RnnServeClient:
    """Blocking client for one rnnserve server. `raw` sends tensors as little-endian bytes (the
    fast path) rather than repeated floats; `timeout` (seconds, None for none) bounds each
    unary call. TLS, mutual TLS, the bearer token and the message limit: see make_channel
    (ignored when an existing `channel` is given)."""

    def __init__(self, target="127.0.0.1:50051", raw=True, timeout=30.0, channel=None,
                 tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
        self._channel = channel or make_channel(target, tls_ca=tls_ca, tls_cert=tls_cert,
                                                tls_key=tls_key, token=token,
                                                max_message_bytes=max_message_bytes)
        self._stub = pb2_grpc.RnnServiceStub(self._channel)
        self._raw = raw
        self._timeout = timeout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._channel.close()

    @property
    def stub(self):
        """The generated stub, for anything this class does not wrap."""
        return self._stub

    def _unary(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise RnnServeError.from_rpc_error(e) from None

    def list_models(self):
        """The served models, as pb2.ModelInfo messages."""
        return list(self._unary(self._stub.ListModels, pb2.ListModelsRequest()).models)

    def get_model(self, name):
        """A pb2.ModelInfo: config, parameters, input_shape (-1 for free dims), state_shape."""
        return self._unary(self._stub.GetModel, pb2.GetModelRequest(model=name))

    def forward(self, model, x, h0=None):
        """torch's rnn(x, h0): returns (output, h_n) as float32 arrays."""
        req = pb2.ForwardRequest(model=model, input=to_tensor(x, self._raw))
        if h0 is not None:
            req.h_0.CopyFrom(to_tensor(h0, self._raw))
        r = self._unary(self._stub.Forward, req)
        return from_tensor(r.output), from_tensor(r.h_n)

    def get_session(self, session_id, omit_state=False):
        """A session's metadata as a dict (SessionInfo's field names), with 'h_n' an array
        (None while the batch size is unknown, or with omit_state)."""
        r = self._unary(self._stub.GetSession,
                        pb2.GetSessionRequest(session_id=session_id, omit_state=omit_state,
                                              raw=self._raw))
        return _message_dict(r)

    def close_session(self, session_id):
        """Closes a session; returns it as get_session() would, with its final state."""
        r = self._unary(self._stub.CloseSession, pb2.CloseSessionRequest(session_id=session_id))
        return _message_dict(r.session)

    def open_stream(self, metadata=None):
        """Opens a bidirectional Stream call: a StreamChannel. `metadata` is sent with the
        call, e.g. [("x-session-id", sid)] so that a session-affinity router (deploy/) sends
        every stream of a session to the same replica."""
        return StreamChannel(self._stub, self._raw, metadata)
