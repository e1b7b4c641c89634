"""What a stream needs to resume its sessions after a broken stream, a draining server or a
replaced replica: the retry policy, its backoff, and per-session tracking (last h_n and, for
an LSTM, c_n; next chunk_index; steps seen), shared by the blocking and the asyncio streams.

A tracked request always carries a chunk_index (the library numbers chunks when the caller
does not), so resending it is safe: a chunk already applied is acknowledged as a duplicate,
never applied twice. A session the server no longer knows (NOT_FOUND: the replica was replaced)
is started again with h_0 = the last h_n (c_0 = the last c_n for an LSTM) and chunk_index =
the next index, carrying the chunk
being resent; a bidirectional session (which buffers until `end`) is replayed from its start
instead, so the client keeps its requests until `end`.
"""

import copy
import random
import secrets
import time
from dataclasses import dataclass

import grpc

from ._messages import RnnServeError, status_code

# Codes of a broken stream (the transport, a proxy or a dying server), after which a tracked
# request may be resent. Anything else (a refused token, a message too large) is final.
RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                             grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
                             grpc.StatusCode.ABORTED})


@dataclass
class RetryPolicy:
    """How hard a stream tries to resume before the error reaches the caller."""
    # Reconnects per request, the first included.
    max_attempts: int = 10
    # Backoff before the n-th reconnect: min(max_backoff, initial_backoff * 2**n) seconds,
    # times a random factor in [0.5, 1) (jitter, so clients do not reconnect in lockstep).
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    # Seconds a request may spend resuming in all.
    deadline: float = 30.0


class Backoff:
    """The delays of one request's resume attempts; raises once they are spent."""

    def __init__(self, policy):
        self._policy = policy
        self._attempt = 0
        self._deadline = time.monotonic() + policy.deadline

    def next_delay(self, cause):
        """Seconds to wait before the next attempt, or RnnServeError(UNAVAILABLE) naming
        `cause` when the attempts or the deadline are spent."""
        p = self._policy
        if self._attempt >= p.max_attempts or time.monotonic() >= self._deadline:
            raise RnnServeError(grpc.StatusCode.UNAVAILABLE,
                                f"gave up resuming after {self._attempt} attempt(s) in "
                                f"{p.deadline:g} s at most: {cause}")
        delay = min(p.max_backoff, p.initial_backoff * 2 ** self._attempt)
        self._attempt += 1
        return min(delay * random.uniform(0.5, 1.0),
                   max(0.0, self._deadline - time.monotonic()))


_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class Attempts:
    """The resume loop of one tracked request, without the I/O (shared by the blocking and
    the asyncio streams): send `sends` in order; give each answer to check(); then outcome()
    of the last says what next; a broken stream: broken()."""

    def __init__(self, tracker, req, caller_omit, policy):
        self._tracker = tracker
        self._req = req
        self._caller_omit = caller_omit
        self._backoff = Backoff(policy)
        self.sends = [req]

    def check(self, response, sent):
        """A replayed bidirectional request that failed ends the resume."""
        if response.error_code and sent is not self.sends[-1]:
            raise RnnServeError(status_code(response.error_code),
                                "replaying a bidirectional session failed: "
                                + response.error_message)
        return response

    def broken(self, cause):
        """("wait", seconds): reconnect after that backoff (raises when spent)."""
        return "wait", self._backoff.next_delay(cause)

    def outcome(self, response):
        """("done", response as the caller sees it), ("wait", seconds) to reconnect and
        resend, or ("again", 0) to send the new `sends` (a restart) at once."""
        if response.error_code == _UNAVAILABLE:  # a draining server refused it: go elsewhere
            return self.broken(response.error_message)
        if self._tracker.should_restart(self._req, response):
            self.sends = self._tracker.restart_requests(self._req)
            self._backoff.next_delay(response.error_message)  # counts, without waiting
            return "again", 0
        return "done", self._tracker.answered(self._req, response, self._caller_omit)


class _Session:
    """What the client knows of one live session."""

    def __init__(self, session_id, model, bidirectional, start_h0, start_c0):
        self.session_id = session_id
        self.model = model
        self.model_version = 0  # pinned by the server's answer; until then, as the start asked
        self.bidirectional = bidirectional
        self.h_n = start_h0         # pb2.Tensor, the state to resume from (None: zeros)
        self.c_n = start_c0         # pb2.Tensor, an LSTM's cell state to resume from (None: zeros)
        self.next_index = 0         # the chunk_index after the last one answered
        self.steps_seen = 0         # as the caller sees it, across restarts
        self.steps_offset = 0       # steps applied before the server's copy was (re)started
        self.log = []               # bidirectional: the requests applied since start


class Tracker:
    """Per-stream session tracking. Not thread-safe (one per stream)."""

    def __init__(self):
        self._sessions = {}
        self._next_index = {}  # session_id -> next chunk_index to number a request with
        self._bidirectional = {}  # id(start request) -> True while it is unanswered

    def prepare(self, req):
        """Makes a caller's start/chunk/end request resumable, in place: numbers it, asks for
        h_n (and c_n), and gives a server-assigned start an idempotency key. Returns whether
        the caller asked to leave the state out."""
        caller_omit = req.omit_state
        req.omit_state = False
        if req.start:
            if not req.session_id and not req.idempotency_key:
                req.idempotency_key = secrets.token_hex(16)
            if req.HasField("input") and not req.HasField("chunk_index"):
                req.chunk_index = 0
        elif not req.HasField("chunk_index") and req.session_id in self._next_index:
            req.chunk_index = self._next_index.get(req.session_id, 0)
        if req.session_id and req.HasField("chunk_index"):
            # A start without a chunk begins the numbering at its own index.
            consumed = req.HasField("input") or not req.start
            self._next_index[req.session_id] = req.chunk_index + (1 if consumed else 0)
        elif req.session_id and req.start:
            self._next_index[req.session_id] = 0
        return caller_omit

    def session(self, session_id):
        return self._sessions.get(session_id)

    def should_restart(self, req, response):
        """True when the server does not know a session this client holds."""
        return (response.error_code == grpc.StatusCode.NOT_FOUND.value[0] and not req.start
                and req.session_id in self._sessions)

    def restart_requests(self, req):
        """The requests that start `req`'s session again where it was, answering `req` with
        the last one: one start (h_0 = last h_n, c_0 = last c_n, chunk_index = next index)
        carrying req's
        chunk; for a bidirectional session its whole log, then req."""
        s = self._sessions[req.session_id]
        if s.bidirectional:
            s.steps_offset = 0
            return [copy.deepcopy(r) for r in s.log] + [req]
        restart = copy.deepcopy(req)
        restart.start = True
        restart.model = s.model
        restart.model_version = s.model_version
        if s.h_n is not None:
            restart.h_0.CopyFrom(s.h_n)
        if s.c_n is not None:
            restart.c_0.CopyFrom(s.c_n)
        restart.chunk_index = s.next_index
        s.steps_offset = s.steps_seen
        return [restart]

    def answered(self, req, response, caller_omit):
        """Updates the tracking from a response to `req` and returns the response as the
        caller sees it (steps counted across restarts, h_n left out if asked)."""
        bidirectional = self._bidirectional.pop(id(req), False)
        if response.error_code:
            s = self._sessions.get(req.session_id)
            if s is not None:  # refused, not applied: the next chunk takes its index
                self._next_index[req.session_id] = s.next_index
            elif req.start:
                self._next_index.pop(req.session_id, None)  # a refused start leaves nothing
            return response
        sid = response.session_id or req.session_id
        s = self._sessions.get(sid)
        if req.start and s is None:
            s = _Session(sid, req.model, bidirectional,
                         copy.deepcopy(req.h_0) if req.HasField("h_0") else None,
                         copy.deepcopy(req.c_0) if req.HasField("c_0") else None)
            s.model_version = req.model_version
            self._sessions[sid] = s
            if not req.HasField("chunk_index"):
                self._next_index[sid] = 0
        if s is not None:
            if response.model_version:  # pinned: a resume elsewhere keeps this version
                s.model_version = response.model_version
            if response.HasField("chunk_index"):
                s.next_index = max(s.next_index, response.chunk_index + 1)
                self._next_index[sid] = max(self._next_index.get(sid, 0), s.next_index)
            if response.HasField("h_n"):
                s.h_n = copy.deepcopy(response.h_n)
                # Both parts of an LSTM's state move together (c_n is present exactly when
                # h_n is); a model without cell state has none.
                s.c_n = copy.deepcopy(response.c_n) if response.HasField("c_n") else None
            if s.bidirectional and not response.duplicate:
                logged = copy.deepcopy(req)
                logged.request_id = 0
                logged.session_id = sid  # a server-assigned id is kept on a replay
                s.log.append(logged)
            response.steps_seen += s.steps_offset
            s.steps_seen = response.steps_seen
            if response.ended:
                del self._sessions[sid]
                self._next_index.pop(sid, None)
        if caller_omit:
            response.ClearField("h_n")
            response.ClearField("c_n")
        return response

    def note_bidirectional(self, req, bidirectional):
        """Records, for a start request, whether its model buffers until `end`."""
        if bidirectional:
            self._bidirectional[id(req)] = True
