"""StreamChannel: one Stream call used synchronously, resuming its sessions by itself."""

import queue
import time

import grpc

from ._messages import RnnServeError, StreamResult, chunk_request, pb2, start_request
from .resume import RESUMABLE_CODES, Attempts, Tracker

_CLOSE = object()


class _Broken(Exception):
    """The stream broke in a way a resend may cure."""


class StreamChannel:
    """One open Stream call, used synchronously: each call sends one request and waits for its
    response. Several sessions may share it; `session_id` defaults to the last one started.
    Not thread-safe. Use as a context manager, or call close().

    With resume (the default), start/send/end survive a broken stream, a draining server and a
    replaced replica: the stream reconnects (with backoff, as `retry` allows) and resends, and a
    session the server lost is started again from its last h_n (and an LSTM's c_n; see
    docs/client.md). request() sends a raw request and never retries it."""

    def __init__(self, client, metadata=None, resume=True, retry=None):
        self._client = client
        self._stub = client.stub
        self._raw = client.raw
        self._metadata = metadata
        self._resume = resume
        self._retry = retry or client.retry
        self._tracker = Tracker()
        self._next_id = 1
        self._closed = False
        self._failed = False      # an error of the call itself was raised to the caller
        self._replace = False     # the server is draining: use a new call for the next request
        self._requests = self._responses = None
        self.session_id = None
        self.resumes = 0          # how many times this stream reconnected or restarted a session
        self._open()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the call ----------------------------------------------------------------------------

    def _open(self):
        self._requests = queue.Queue()
        self._responses = self._stub.Stream(iter(self._requests.get, _CLOSE),
                                            metadata=self._metadata)

    def _drop(self):
        """Abandons the current call (nothing on it is unanswered that is not resent)."""
        if self._responses is not None:
            self._requests.put(_CLOSE)
            self._responses.cancel()
            self._responses = None

    def _roundtrip(self, req):
        if self._responses is None or self._replace:
            self._drop()
            self._replace = False
            self._open()
        self._requests.put(req)
        try:
            r = next(self._responses)
        except grpc.RpcError as e:
            if self._resume and e.code() in RESUMABLE_CODES:
                raise _Broken(f"{e.code().name}: {e.details()}") from None
            self._failed = True
            raise RnnServeError.from_rpc_error(e) from None
        except StopIteration:
            if self._resume:
                raise _Broken("the server ended the stream") from None
            self._failed = True
            raise RnnServeError(grpc.StatusCode.UNAVAILABLE,
                                "the server ended the stream") from None
        if r.request_id != req.request_id:
            raise RnnServeError(grpc.StatusCode.INTERNAL,
                                f"response answers request {r.request_id}, "
                                f"expected {req.request_id}")
        if r.draining:
            self._replace = True
        return r

    def request(self, req):
        """Sends a pb2.StreamRequest (giving it a request_id when it has none) and returns the
        pb2.StreamResponse, whatever its error_code. Never retried. RnnServeError when the
        stream is broken."""
        if self._closed:
            raise RnnServeError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")
        if not req.request_id:
            req.request_id = self._next_id
            self._next_id += 1
        try:
            return self._roundtrip(req)
        except _Broken as e:
            self._drop()
            raise RnnServeError(grpc.StatusCode.UNAVAILABLE, str(e)) from None

    def _resumable(self, req):
        """request() for a tracked start/chunk/end: resent across reconnects, the session
        restarted where the server lost it, until the retry policy is spent."""
        if self._closed:
            raise RnnServeError(grpc.StatusCode.FAILED_PRECONDITION, "the stream is closed")
        req.request_id = self._next_id
        self._next_id += 1
        if req.start:
            self._tracker.note_bidirectional(req, self._client.buffers_until_end(req.model))
        attempts = Attempts(self._tracker, req, self._tracker.prepare(req), self._retry)
        while True:
            try:
                for sent in attempts.sends:
                    r = attempts.check(self._roundtrip(sent), sent)
                outcome, value = attempts.outcome(r)
            except _Broken as e:
                outcome, value = attempts.broken(e)
            if outcome == "done":
                return value
            self.resumes += 1
            if outcome == "wait":
                self._drop()
                time.sleep(value)

    def _call(self, req):
        if self._resume:
            r = self._resumable(req)
        else:
            r = self.request(req)
        result = StreamResult.from_response(r)
        if req.start:
            self.session_id = result.session_id
        return result

    # ---- sessions ----------------------------------------------------------------------------

    def start(self, model, session_id=None, h0=None, chunk=None, end=False, omit_state=False,
              chunk_index=None, c0=None, ids=None, model_version=0):
        """Creates a session of `model` (the server picks the id when session_id is None), with
        optional initial state h0 (L*D, N, H_out) and, for an LSTM, c0 (L*D, N, H), and optional
        first chunk (`chunk`, or `ids` for a model taking token ids), pinned to
        `model_version` (0: the latest READY version) for its whole life. Returns a
        StreamResult; the session becomes this stream's default."""
        return self._call(start_request(model, session_id, h0, chunk, end, omit_state,
                                        chunk_index, self._raw, c0, ids, model_version))

    def send(self, chunk=None, session_id=None, end=False, omit_state=False, chunk_index=None,
             ids=None):
        """Applies one chunk, (T, N, C) (or (N, T, C) for batch_first models, or (T, C)), to a
        session (default: the last one started here); for a model taking token ids, `ids`
        (T, N) / (N, T) / (T,), or an integer numpy array as `chunk`. `end` closes it
        afterwards. Numbered with the session's next chunk_index when resuming and chunk_index
        is None."""
        return self._call(chunk_request(self._session(session_id), chunk, end, omit_state,
                                        chunk_index, self._raw, ids))

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
        the server until ended or expired. Idempotent; an error already raised by a call on
        this stream is not raised again."""
        if self._closed:
            return
        self._closed = True
        if self._responses is None:
            return
        self._requests.put(_CLOSE)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError as e:
            if not self._failed and e.code() not in (grpc.StatusCode.CANCELLED,
                                                     grpc.StatusCode.UNAVAILABLE):
                raise RnnServeError.from_rpc_error(e) from None
