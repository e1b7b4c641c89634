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


def to_tensor(x, raw=True, ids=None):
    """A pb2.Tensor from an array-like. An integer numpy array becomes token ids (Tensor.ids,
    the input of a model whose ModelInfo.input_kind is "ids"); anything else float32, C order,
    as `raw` bytes or repeated `values`. ids=True forces ids, ids=False floats."""
    if ids is None:
        ids = isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in "iu"
    if ids:
        return ids_tensor(x)
    a = np.ascontiguousarray(x, dtype="<f4")
    t = pb2.Tensor(shape=a.shape)
    if raw:
        t.raw = a.tobytes()
    else:
        t.values.extend(a.ravel().tolist())
    return t


def ids_tensor(ids):
    """A pb2.Tensor of token ids (Tensor.ids) from an integer array-like: (T, N), (N, T) for
    batch_first models, or (T,) unbatched."""
    a = np.asarray(ids)
    if a.size == 0:
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got an array of {a.dtype}")
    t = pb2.Tensor(shape=a.shape)
    # uint64 beyond int64 wraps negative: refused by the server like any id out of range.
    t.ids.extend(a.astype(np.int64).ravel().tolist())
    return t


def from_tensor(t):
    """A numpy array from a pb2.Tensor (float32; int64 for token ids), or None for an absent
    (empty) tensor."""
    if not t.shape and not t.values and not t.raw and not t.ids:
        return None
    shape = tuple(t.shape)
    if t.ids:
        return np.asarray(t.ids, dtype=np.int64).reshape(shape)
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
    # The model version the session is pinned to (0 from a server without versions).
    model_version: int = 0

    @classmethod
    def from_response(cls, r):
        if r.error_code:
            raise RnnServeError(status_code(r.error_code), r.error_message)
        return cls(session_id=r.session_id, output=from_tensor(r.output), h_n=from_tensor(r.h_n),
                   steps_seen=r.steps_seen,
                   chunk_index=r.chunk_index if r.HasField("chunk_index") else None,
                   duplicate=r.duplicate, ended=r.ended, request_id=r.request_id,
                   output_truncated=r.output_truncated, c_n=from_tensor(r.c_n),
                   model_version=r.model_version)


def _input(x, ids, raw):
    """The input tensor of a request: `ids` (token ids) or `x` (floats, or ids when an integer
    numpy array), not both."""
    if ids is not None:
        if x is not None:
            raise ValueError("pass the input as x (features) or ids (token ids), not both")
        return ids_tensor(ids)
    if x is None:
        raise ValueError("no input: pass x (features) or ids (token ids)")
    return to_tensor(x, raw)


def forward_request(model, x, h0, c0, raw, ids=None, model_version=0):
    """The ForwardRequest of forward(): c0 for LSTM models only; model_version 0: the latest."""
    req = pb2.ForwardRequest(model=model, input=_input(x, ids, raw), model_version=model_version)
    if h0 is not None:
        req.h_0.CopyFrom(to_tensor(h0, raw, ids=False))
    if c0 is not None:
        req.c_0.CopyFrom(to_tensor(c0, raw, ids=False))
    return req


def forward_result(r):
    """A ForwardResponse as torch returns it: (output, h_n), or (output, (h_n, c_n)) for an
    LSTM."""
    output, h_n = from_tensor(r.output), from_tensor(r.h_n)
    if r.HasField("c_n"):
        return output, (h_n, from_tensor(r.c_n))
    return output, h_n


def start_request(model, session_id, h0, chunk, end, omit_state, chunk_index, raw, c0=None,
                  ids=None, model_version=0):
    """The StreamRequest of a stream's start(); model_version 0: the latest READY version."""
    req = pb2.StreamRequest(model=model, session_id=session_id or "", start=True, end=end,
                            omit_state=omit_state, model_version=model_version)
    if h0 is not None:
        req.h_0.CopyFrom(to_tensor(h0, raw, ids=False))
    if c0 is not None:
        req.c_0.CopyFrom(to_tensor(c0, raw, ids=False))
    if chunk is not None or ids is not None:
        req.input.CopyFrom(_input(chunk, ids, raw))
    if chunk_index is not None:
        req.chunk_index = chunk_index
    return req


def chunk_request(session_id, chunk, end, omit_state, chunk_index, raw, ids=None):
    """The StreamRequest of a stream's send()."""
    req = pb2.StreamRequest(session_id=session_id, end=end, omit_state=omit_state,
                            input=_input(chunk, ids, raw))
    if chunk_index is not None:
        req.chunk_index = chunk_index
    return req


def describe_model(info):
    """A ModelInfo in a few lines: the pipeline as torch prints it, what the input is (features
    or token ids) and the shapes in and out."""
    layout = info.input_layout or "(T, N, C)"
    lines = [f"{info.name}: {info.pipeline or info.module}",
             f"  input: {info.input_kind or 'features'} {layout}, shape "
             f"{list(info.input_shape)}",
             f"  output shape: {list(info.output_shape)}, state shape: {list(info.state_shape)}"]
    for layer in info.layers:
        lines.append(f"  [{layer.stage}] {layer.path or '(module)'}: {layer.repr} "
                     f"({layer.in_features} -> {layer.out_features} features)")
    return "\n".join(lines)
