"""The asyncio client (grpc.aio): AsyncRnnServeClient and its AsyncStreamChannel, with the
same calls, results, errors and resume behaviour as the blocking ones.

    from rnnserve_client.aio import AsyncRnnServeClient

    async with AsyncRnnServeClient("127.0.0.1:50051") as client:
        out, h_n = await client.forward("demo", x)
        async with client.open_stream() as stream:
            first = await stream.start("demo", chunk=x[:5])
            nxt = await stream.send(x[5:10])
            await stream.end()

One event loop; a stream handles one call at a time (concurrent calls on it wait their turn).
"""

import asyncio

import grpc

from ._channel import DEFAULT_MAX_MESSAGE_BYTES, _read_pem
from ._messages import (RnnServeError, StreamResult, chunk_request, forward_request,
                        forward_result, message_dict, pb2, pb2_grpc, start_request)
from .resume import RESUMABLE_CODES, Attempts, RetryPolicy, Tracker


class _Broken(Exception):
    """The stream broke in a way a resend may cure."""


def make_aio_channel(target, tls_ca=None, tls_cert=None, tls_key=None,
                     max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, options=()):
    """A grpc.aio channel, as make_channel makes a blocking one (the token is added by
    AsyncRnnServeClient to each call's metadata)."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert needs tls_key" if tls_key is None else "tls_key needs tls_cert")
    if tls_cert is not None and tls_ca is None:
        raise ValueError("tls_cert/tls_key (mutual TLS) need tls_ca")
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)] + list(options)
    if tls_ca is None:
        return grpc.aio.insecure_channel(target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls_ca, "TLS CA file"),
        private_key=None if tls_key is None else _read_pem(tls_key, "TLS client key file"),
        certificate_chain=None if tls_cert is None else _read_pem(tls_cert,
                                                                  "TLS client certificate file"))
    return grpc.aio.secure_channel(target, credentials, options=options)


class AsyncRnnServeClient:
    """The asyncio counterpart of RnnServeClient (same arguments)."""

    def __init__(self, target="127.0.0.1:50051", raw=True, timeout=30.0, channel=None,
                 tls_ca=None, tls_cert=None, tls_key=None, token=None,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, resume=True, retry=None):
        if token is not None and (not token or any(c <= " " or c > "~" for c in token)):
            raise ValueError("the token must be non-empty printable ASCII without spaces")
        self._channel = channel or make_aio_channel(target, tls_ca, tls_cert, tls_key,
                                                    max_message_bytes)
        self.stub = pb2_grpc.RnnServiceStub(self._channel)
        self.raw = raw
        self._timeout = timeout
        self._auth = [] if token is None else [("authorization", "Bearer " + token)]
        self.resume = resume
        self.retry = retry or RetryPolicy()
        self._buffers_until_end = {}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        await self._channel.close()

    def metadata(self, extra=None):
        """The call metadata: the token, then `extra`."""
        return self._auth + list(extra or [])

    async def _unary(self, method, request):
        try:
            return await method(request, timeout=self._timeout, metadata=self.metadata())
        except grpc.RpcError as e:
            raise RnnServeError.from_rpc_error(e) from None

    async def list_models(self):
        return list((await self._unary(self.stub.ListModels, pb2.ListModelsRequest())).models)

    async def get_model(self, name, model_version=0):
        return await self._unary(self.stub.GetModel,
                                 pb2.GetModelRequest(model=name, model_version=model_version))

    async def forward(self, model, x=None, h0=None, c0=None, ids=None, model_version=0):
        """As RnnServeClient.forward: (output, h_n), or (output, (h_n, c_n)) for an LSTM."""
        r = await self._unary(self.stub.Forward,
                              forward_request(model, x, h0, c0, self.raw, ids, model_version))
        return forward_result(r)

    async def get_session(self, session_id, omit_state=False):
        r = await self._unary(self.stub.GetSession, pb2.GetSessionRequest(
            session_id=session_id, omit_state=omit_state, raw=self.raw))
        return message_dict(r)

    async def close_session(self, session_id):
        r = await self._unary(self.stub.CloseSession,
                              pb2.CloseSessionRequest(session_id=session_id))
        return message_dict(r.session)

    async def buffers_until_end(self, model):
        if model not in self._buffers_until_end:
            info = await self.get_model(model)
            self._buffers_until_end[model] = info.streaming_buffers_until_end
        return self._buffers_until_end[model]

    def open_stream(self, metadata=None, resume=None):
        """An AsyncStreamChannel; the call opens with the first request."""
        return AsyncStreamChannel(self, metadata, self.resume if resume is None else resume)


class AsyncStreamChannel:
    """The asyncio counterpart of StreamChannel: start/send/end resume by themselves unless
    resume=False; request() is raw and never retried."""

    def __init__(self, client, metadata=None, resume=True):
        self._client = client
        self._metadata = client.metadata(metadata)
        self._resume = resume
        self._retry = client.retry
        self._tracker = Tracker()
        self._lock = asyncio.Lock()
        self._call = None
        self._replace = False
        self._closed = False
        self._next_id = 1
        self.session_id = None
        self.resumes = 0

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def _drop(self):
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def _roundtrip(self, req):
        if self._call is None or self._replace:
            self._drop()
            self._replace = False
            self._call = self._client.stub.Stream(metadata=self._metadata)
        try:
            await self._call.write(req)
            r = await self._call.read()
        except grpc.RpcError as e:
            if self._resume and e.code() in RESUMABLE_CODES:
                raise _Broken(f"{e.code().name}: {e.details()}") from None
            self._drop()
            raise RnnServeError.from_rpc_error(e) from None
        if r is grpc.aio.EOF:
            if self._resume:
                raise _Broken("the server ended the stream")
            self._drop()
            raise RnnServeError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
        if r.request_id != req.request_id:
            raise RnnServeError(grpc.StatusCode.INTERNAL, f"response answers request "
                                f"{r.request_id}, expected {req.request_id}")
        if r.draining:
            self._replace = True
        return r

    def _number(self, req):
        if self._closed:
            raise RnnServeError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")
        if not req.request_id:
            req.request_id = self._next_id
            self._next_id += 1

    async def request(self, req):
        """Sends a raw pb2.StreamRequest and returns its pb2.StreamResponse. Never retried."""
        async with self._lock:
            self._number(req)
            try:
                return await self._roundtrip(req)
            except _Broken as e:
                self._drop()
                raise RnnServeError(grpc.StatusCode.UNAVAILABLE, str(e)) from None

    async def _resumable(self, req):
        self._number(req)
        if req.start:
            self._tracker.note_bidirectional(
                req, await self._client.buffers_until_end(req.model))
        attempts = Attempts(self._tracker, req, self._tracker.prepare(req), self._retry)
        while True:
            try:
                for sent in attempts.sends:
                    r = attempts.check(await self._roundtrip(sent), sent)
                outcome, value = attempts.outcome(r)
            except _Broken as e:
                outcome, value = attempts.broken(e)
            if outcome == "done":
                return value
            self.resumes += 1
            if outcome == "wait":
                self._drop()
                await asyncio.sleep(value)

    async def _do(self, req):
        if self._resume:
            async with self._lock:
                r = await self._resumable(req)
        else:
            r = await self.request(req)
        result = StreamResult.from_response(r)
        if req.start:
            self.session_id = result.session_id
        return result

    async def start(self, model, session_id=None, h0=None, chunk=None, end=False,
                    omit_state=False, chunk_index=None, c0=None, ids=None, model_version=0):
        return await self._do(start_request(model, session_id, h0, chunk, end, omit_state,
                                            chunk_index, self._client.raw, c0, ids,
                                            model_version))

    async def send(self, chunk=None, session_id=None, end=False, omit_state=False,
                   chunk_index=None, ids=None):
        return await self._do(chunk_request(self._session(session_id), chunk, end, omit_state,
                                            chunk_index, self._client.raw, ids))

    async def end(self, session_id=None):
        return await self._do(pb2.StreamRequest(session_id=self._session(session_id), end=True))

    def _session(self, session_id):
        sid = session_id or self.session_id
        if not sid:
            raise ValueError("no session: call start() first or pass session_id")
        return sid

    async def close(self):
        """Half-closes the stream; sessions stay alive on the server. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._call is not None:
            try:
                await self._call.done_writing()
                while await self._call.read() is not grpc.aio.EOF:
                    pass
            except grpc.RpcError:
                pass  # the stream's own errors were raised by the calls that met them
            self._call = None
