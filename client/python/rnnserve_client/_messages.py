"""Errors, tensor conversion and decoded stream results, shared by the blocking and the asyncio
clients."""

from dataclasses import dataclass
from typing import Optional

import grpc
import numpy as np

from ._stubs import import_stubs

pb2, pb2_grpc = import_stubs()

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def status_code(number):
    """The grpc.StatusCode of a numeric code (UNKNOWN for an unknown number)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


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


def message_dict(msg):
    """A message as a dict of Python values under proto field names; tensors become arrays
    (None when absent)."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.full_name == "rnnserve.v1.Tensor":
            out[f.name] = from_tensor(value)
        elif f.label == f.LABEL_REPEATED:
            out[f.name] = [message_dict(v) if f.message_type else v for v in value]
        elif f.message_type is not None:
            out[f.name] = message_dict(value)
        else:
            out[f.name] = value
    return out


@dataclass
class StreamResult:
    """One successful StreamResponse, decoded."""
    session_id: str
    # The chunk's output; None when the request had no input, for duplicates of an older
    # chunk, and for bidirectional models before `end`.
    output: Optional[np.ndarray]
    # The state after the chunk; None with omit_state.
    h_n: Optional[np.ndarray]
    steps_seen: int
    chunk_index: Optional[int]
    duplicate: bool
    ended: bool
    request_id: int
    # The chunk was applied but its output and h_n did not fit in a message (read the state
    # with get_session; send shorter chunks).
    output_truncated: bool = False
    # LSTM only: the cell state after the chunk, present exactly when h_n is (None for RNN
    # and GRU models, and with omit_state).
    c_n: Optional[np.ndarray] = None

    @classmethod
    def from_response(cls, r):
        if r.error_code:
            raise RnnServeError(status_code(r.error_code), r.error_message)
        return cls(session_id=r.session_id, output=from_tensor(r.output), h_n=from_tensor(r.h_n),
                   steps_seen=r.steps_seen,
                   chunk_index=r.chunk_index if r.HasField("chunk_index") else None,
                   duplicate=r.duplicate, ended=r.ended, request_id=r.request_id,
                   output_truncated=r.output_truncated, c_n=from_tensor(r.c_n))


def forward_request(model, x, h0, c0, raw):
    """The ForwardRequest of forward(): c0 for LSTM models only."""
    req = pb2.ForwardRequest(model=model, input=to_tensor(x, raw))
    if h0 is not None:
        req.h_0.CopyFrom(to_tensor(h0, raw))
    if c0 is not None:
        req.c_0.CopyFrom(to_tensor(c0, raw))
    return req


def forward_result(r):
    """A ForwardResponse as torch returns it: (output, h_n), or (output, (h_n, c_n)) for an
    LSTM."""
    output, h_n = from_tensor(r.output), from_tensor(r.h_n)
    if r.HasField("c_n"):
        return output, (h_n, from_tensor(r.c_n))
    return output, h_n


def start_request(model, session_id, h0, chunk, end, omit_state, chunk_index, raw, c0=None):
    """The StreamRequest of a stream's start()."""
    req = pb2.StreamRequest(model=model, session_id=session_id or "", start=True, end=end,
                            omit_state=omit_state)
    if h0 is not None:
        req.h_0.CopyFrom(to_tensor(h0, raw))
    if c0 is not None:
        req.c_0.CopyFrom(to_tensor(c0, raw))
    if chunk is not None:
        req.input.CopyFrom(to_tensor(chunk, raw))
    if chunk_index is not None:
        req.chunk_index = chunk_index
    return req


def chunk_request(session_id, chunk, end, omit_state, chunk_index, raw):
    """The StreamRequest of a stream's send()."""
    req = pb2.StreamRequest(session_id=session_id, end=end, omit_state=omit_state,
                            input=to_tensor(chunk, raw))
    if chunk_index is not None:
        req.chunk_index = chunk_index
    return req
