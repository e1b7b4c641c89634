"""RnnServeClient: the blocking client (unary calls, and streams that resume by themselves)."""

import grpc

from ._channel import DEFAULT_MAX_MESSAGE_BYTES, make_channel
from ._messages import (RnnServeError, forward_request, forward_result, message_dict, pb2,
                        pb2_grpc)
from .resume import RetryPolicy
from .stream import StreamChannel


class RnnServeClient:
    """Blocking client for one rnnserve server. `raw` sends tensors as little-endian bytes (the
    fast path) rather than repeated floats; `timeout` (seconds, None for none) bounds each
    unary call. TLS, mutual TLS, the bearer token and the message limit: see make_channel
    (ignored when an existing `channel` is given). `resume` (default True) makes streams resume
    their sessions by themselves, as `retry` (a RetryPolicy) allows. Unary calls are never
    retried. Thread-safe; its streams are not."""

    def __init__(self, target="127.0.0.1:50051", raw=True, timeout=30.0, channel=None,
                 tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, resume=True, retry=None):
        self._channel = channel or make_channel(target, tls_ca=tls_ca, tls_cert=tls_cert,
                                                tls_key=tls_key, token=token,
                                                max_message_bytes=max_message_bytes)
        self._stub = pb2_grpc.RnnServiceStub(self._channel)
        self.raw = raw
        self._timeout = timeout
        self.resume = resume
        self.retry = retry or RetryPolicy()
        self._buffers_until_end = {}

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

    def get_model(self, name, model_version=0):
        """A pb2.ModelInfo: config (the recurrent core's), parameters (full names), pipeline
        (the model as torch prints its pieces), input_kind ("features", or "ids": token ids
        for an Embedding input layer), input_shape and output_shape (-1 for free dims),
        state_shape, layers, version and loaded_versions (model_version 0: the latest READY
        version). describe_model(info) prints it in a few lines."""
        return self._unary(self._stub.GetModel,
                           pb2.GetModelRequest(model=name, model_version=model_version))

    def repository_index(self):
        """Every (model, version) with its state, reason and live sessions, as
        pb2.ModelVersionState messages (needs a server with --allow_model_control)."""
        return list(self._unary(self._stub.RepositoryIndex,
                                pb2.RepositoryIndexRequest()).models)

    def forward(self, model, x=None, h0=None, c0=None, ids=None, model_version=0):
        """torch's model(x, h0) as float32 arrays: (output, h_n) for RNN and GRU models, and
        (output, (h_n, c_n)) for an LSTM, whose initial state is h0 and c0 (each zeros when
        None; c0 is refused by models without cell state). A model whose input is token ids
        (input_kind "ids") takes them as `ids`, or as x when x is an integer numpy array:
        (T, N), (N, T) batch_first, or (T,). model_version 0: the latest READY version."""
        r = self._unary(self._stub.Forward,
                        forward_request(model, x, h0, c0, self.raw, ids, model_version))
        return forward_result(r)

    def get_session(self, session_id, omit_state=False):
        """A session's metadata as a dict (SessionInfo's field names), with 'h_n' and (LSTM)
        'c_n' arrays (None while the batch size is unknown, with omit_state, and 'c_n' for
        models without cell state)."""
        r = self._unary(self._stub.GetSession,
                        pb2.GetSessionRequest(session_id=session_id, omit_state=omit_state,
                                              raw=self.raw))
        return message_dict(r)

    def close_session(self, session_id):
        """Closes a session; returns it as get_session() would, with its final state."""
        r = self._unary(self._stub.CloseSession, pb2.CloseSessionRequest(session_id=session_id))
        return message_dict(r.session)

    def buffers_until_end(self, model):
        """Whether `model` is bidirectional (its sessions answer at `end`); asked once."""
        if model not in self._buffers_until_end:
            info = self.get_model(model)
            self._buffers_until_end[model] = info.streaming_buffers_until_end
        return self._buffers_until_end[model]

    def open_stream(self, metadata=None, resume=None):
        """Opens a bidirectional Stream call: a StreamChannel. `metadata` is sent with the
        call (and again on every reconnect), e.g. [("x-session-id", sid)] so that a
        session-affinity router (deploy/) sends every stream of a session to the same replica.
        `resume` overrides the client's (default on: see StreamChannel)."""
        return StreamChannel(self, metadata, self.resume if resume is None else resume)
