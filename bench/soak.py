#!/usr/bin/env python3
"""Soak test: many sessions for a long time against a real rnnserve; bench/soak.sh runs it.

A pool of --sessions session ids is kept live on one rnnserve (the built-in demo model,
RNN(100, 10, num_layers=2)). --workers concurrent asyncio tasks each pick a free session at
random and do one thing to it on a new stream:
  start (with its first chunk, chunk_index 0) when the session is not live;
  chunks: 1-4 chunks, each chunk_index next, each answered before the next is sent (these
          round trips are the latency samples);
  duplicate: the last applied chunk again (same index, same data): must be answered as a
          duplicate, not applied;
  cancel: two chunks written, then the stream cancelled without reading (the session's next
          index is then read back with GetSession);
  end: a last chunk with end=true (the id is then replaced by a fresh one);
  close: CloseSession.
Every --interval seconds (10) one row is written to the CSV (--csv) and printed: elapsed
time, the server's RSS, p99 chunk latency of the interval, chunks answered, sessions_active
(the server's rnnserve_sessions_active) and errors.

At the end every session that may be live is closed, and the run fails (exit 1) unless
  - rnnserve_sessions_active returns to 0 (polled, 30 s at most);
  - RSS is flat after warm-up: the samples after --warmup seconds are split into thirds by
    time, and the largest RSS of the last third must be at most 1.10 x the largest of the
    first third + --rss_slack_mib (8 MiB): growth that continues after warm-up fails, the
    noise of the allocator does not;
  - no request failed unexpectedly (gRPC errors other than a cancelled stream, error codes
    other than the re-synchronisation ones after a cancel, a duplicate not flagged as one);
  - the server is still alive and exits cleanly on SIGTERM.
"""

import argparse
import asyncio
import csv
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "pykit"))
import rnnserve_testkit as kit  # noqa: E402

import grpc  # noqa: E402
import grpc.aio  # noqa: E402
import numpy as np  # noqa: E402

pb2, pb2_grpc = kit.stubs()[0], kit.stubs()[1]
MODEL = "demo"
INPUT_SIZE = 100
# Error codes that only mean "re-synchronise": a chunk_index the server already applied or
# did not expect, right after a cancelled stream whose chunks may still have been in flight
# (FAILED_PRECONDITION), or a session that ended meanwhile (NOT_FOUND).
RESYNC_CODES = {grpc.StatusCode.FAILED_PRECONDITION.value[0], grpc.StatusCode.NOT_FOUND.value[0]}


class Session:
    def __init__(self, slot):
        self.slot = slot
        self.generation = 0
        self.live = False
        self.next_index = 0  # None: unknown (after a cancel), read back with GetSession
        self.last = None     # (chunk_index, request input) of the last applied chunk
        self.busy = False

    @property
    def id(self):
        return f"soak-{self.slot}-{self.generation}"

    def replace(self):
        self.generation += 1
        self.live = False
        self.next_index = 0
        self.last = None


class Stats:
    def __init__(self):
        self.latencies = []  # seconds, this interval
        self.chunks = 0
        self.counts = {}
        self.errors = []

    def count(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def error(self, what):
        self.count("error")
        if len(self.errors) < 20:
            self.errors.append(what)


class Rng(random.Random):
    """Decisions (random.Random) and tensor values (numpy), from one seed."""

    def __init__(self, seed):
        super().__init__(seed)
        self.values = np.random.default_rng(seed)


def tensor(rng, steps):
    values = rng.values.standard_normal((steps, 1, INPUT_SIZE)).astype(np.float32)
    return pb2.Tensor(shape=values.shape, raw=values.tobytes())


class Soak:
    def __init__(self, args, target):
        self.args = args
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb2_grpc.RnnServiceStub(self.channel)
        self.sessions = [Session(i) for i in range(args.sessions)]
        self.stats = Stats()
        self.stop = asyncio.Event()

    def check(self, session, request, response, what):
        """True when applied; errors that only call for a re-sync mark the index unknown."""
        if response.error_code == 0:
            return True
        if response.error_code in RESYNC_CODES:
            self.stats.count("resync")
            session.next_index = None
            if response.error_code == grpc.StatusCode.NOT_FOUND.value[0]:
                session.replace()
            return False
        self.stats.error(f"{what} {session.id}: code {response.error_code}: "
                         f"{response.error_message[:200]}")
        return False

    async def round_trip(self, call, session, request, what):
        start = time.monotonic()
        await call.write(request)
        response = await call.read()
        if response is grpc.aio.EOF:
            self.stats.error(f"{what} {session.id}: stream ended early")
            return None
        self.stats.latencies.append(time.monotonic() - start)
        self.stats.chunks += 1
        return response

    def chunk_request(self, session, rng, end=False):
        request = pb2.StreamRequest(session_id=session.id, input=tensor(rng, rng.randint(1, 8)),
                                    chunk_index=session.next_index, end=end, omit_state=True)
        return request

    async def resync(self, session):
        try:
            info = await self.stub.GetSession(
                pb2.GetSessionRequest(session_id=session.id, omit_state=True), timeout=30)
            session.next_index = info.next_chunk_index
            session.last = None
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                session.replace()
            else:
                self.stats.error(f"GetSession {session.id}: {e.code()}: {e.details()}")

    async def act(self, session, rng):
        if session.live and session.next_index is None:
            await self.resync(session)
        if not session.live:
            return await self.start(session, rng)
        roll = rng.random()
        if roll < 0.10 and session.last is not None:
            return await self.duplicate(session)
        if roll < 0.20:
            return await self.cancel(session, rng)
        if roll < 0.28:
            return await self.chunks(session, rng, 1, end=True)
        if roll < 0.30:
            return await self.close(session)
        return await self.chunks(session, rng, rng.randint(1, 4))

    async def start(self, session, rng):
        self.stats.count("start")
        request = pb2.StreamRequest(session_id=session.id, model=MODEL, start=True,
                                    input=tensor(rng, rng.randint(1, 8)), chunk_index=0,
                                    omit_state=True)
        call = self.stub.Stream(timeout=60)
        response = await self.round_trip(call, session, request, "start")
        await call.done_writing()
        if response is not None and response.error_code == 0:
            session.live = True
            session.next_index = 1
            session.last = (0, request.input)
        elif response is not None:
            self.stats.error(f"start {session.id}: code {response.error_code}: "
                             f"{response.error_message[:200]}")
        await self.drain(call)

    async def chunks(self, session, rng, n, end=False):
        self.stats.count("end" if end else "chunks")
        call = self.stub.Stream(timeout=60)
        for i in range(n):
            request = self.chunk_request(session, rng, end=end and i == n - 1)
            response = await self.round_trip(call, session, request, "chunk")
            if response is None or not self.check(session, request, response, "chunk"):
                break
            if response.duplicate:  # a cancelled stream's chunk landed after the re-sync
                self.stats.count("resync")
                session.next_index = None
                break
            session.last = (session.next_index, request.input)
            session.next_index += 1
            if request.end:
                if not response.ended:
                    self.stats.error(f"end {session.id}: answered without ended")
                session.replace()
        await call.done_writing()
        await self.drain(call)

    async def duplicate(self, session):
        self.stats.count("duplicate")
        index, data = session.last
        request = pb2.StreamRequest(session_id=session.id, input=data, chunk_index=index,
                                    omit_state=True)
        call = self.stub.Stream(timeout=60)
        response = await self.round_trip(call, session, request, "duplicate")
        await call.done_writing()
        if response is not None and self.check(session, request, response, "duplicate"):
            if not response.duplicate:
                self.stats.error(f"duplicate {session.id} #{index} was not flagged duplicate")
        await self.drain(call)

    async def cancel(self, session, rng):
        self.stats.count("cancel")
        call = self.stub.Stream(timeout=60)
        for _ in range(2):
            request = self.chunk_request(session, rng)
            await call.write(request)
            session.next_index += 1
        call.cancel()
        session.next_index = None  # some, all or none of them were applied
        session.last = None

    async def close(self, session):
        self.stats.count("close")
        try:
            await self.stub.CloseSession(pb2.CloseSessionRequest(session_id=session.id),
                                         timeout=30)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                self.stats.error(f"CloseSession {session.id}: {e.code()}: {e.details()}")
        session.replace()

    async def drain(self, call):
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as e:
            self.stats.error(f"stream: {e.code()}: {e.details()}")

    async def worker(self, seed):
        rng = Rng(seed)
        while not self.stop.is_set():
            session = self.sessions[rng.randrange(len(self.sessions))]
            if session.busy:
                await asyncio.sleep(0)
                continue
            session.busy = True
            try:
                await self.act(session, rng)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    self.stats.error(f"{session.id}: {e.code()}: {e.details()}")
                    session.next_index = None
            finally:
                session.busy = False

    async def close_all(self):
        """Closes every session that may be live: each slot's current id (an id is retired only
        once its session is known to be gone: ended, closed or NOT_FOUND)."""
        closed = 0
        for session_id in [session.id for session in self.sessions]:
            try:
                await self.stub.CloseSession(pb2.CloseSessionRequest(session_id=session_id),
                                             timeout=30)
                closed += 1
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    self.stats.error(f"final CloseSession {session_id}: {e.code()}")
        return closed


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for pid {pid}")


def sessions_active(server):
    return kit.metric_sum(kit.parse_samples(server.scrape())[0], "rnnserve_sessions_active")


def p99(values):
    return float(np.percentile(values, 99)) * 1000.0 if values else float("nan")


def flat_after_warmup(rows, warmup, slack_mib):
    """(ok, message) for the RSS rule in the module docstring."""
    after = [r for r in rows if r["elapsed_s"] >= warmup]
    if len(after) < 3:
        return False, f"only {len(after)} samples after the {warmup:.0f} s warm-up (need 3)"
    third = len(after) // 3
    first = max(r["rss_mib"] for r in after[:third])
    last = max(r["rss_mib"] for r in after[-third:])
    bound = first * 1.10 + slack_mib
    message = (f"RSS after warm-up: first third max {first:.1f} MiB, last third max "
               f"{last:.1f} MiB, bound {bound:.1f} MiB (1.10 x first + {slack_mib} MiB)")
    return last <= bound, message


async def run(args, server):
    soak = Soak(args, server.target)
    rows = []
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    fields = ["elapsed_s", "rss_mib", "p99_ms", "chunks", "sessions_active", "errors"]
    print(" ".join(f"{f:>15}" for f in fields), flush=True)
    workers = [asyncio.create_task(soak.worker(args.seed * 1000 + i))
               for i in range(args.workers)]
    began = time.monotonic()
    with open(args.csv, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        while time.monotonic() - began < args.minutes * 60:
            await asyncio.sleep(min(args.interval, args.minutes * 60 - (time.monotonic() - began)))
            if not server.alive():
                raise AssertionError("rnnserve exited during the soak:\n" + server.stderr_tail())
            latencies, soak.stats.latencies = soak.stats.latencies, []
            loop = asyncio.get_running_loop()
            active = await loop.run_in_executor(None, sessions_active, server)
            row = {"elapsed_s": round(time.monotonic() - began), "rss_mib": rss_mib(server.pid),
                   "p99_ms": p99(latencies), "chunks": soak.stats.chunks,
                   "sessions_active": int(active), "errors": soak.stats.counts.get("error", 0)}
            rows.append(row)
            writer.writerow(row)
            out.flush()
            print(" ".join(f"{row[f]:>15.1f}" if isinstance(row[f], float) else f"{row[f]:>15}"
                           for f in fields), flush=True)
    soak.stop.set()
    await asyncio.gather(*workers)
    closed = await soak.close_all()
    await soak.channel.close()
    return soak, rows, closed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1024)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=32, help="concurrent streams")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before RSS must be flat (default: 20%% of the run, "
                             "at least 30)")
    parser.add_argument("--rss_slack_mib", type=float, default=8)
    parser.add_argument("--csv", default=os.path.join(ROOT, "build", "soak", "soak.csv"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flags", default="", help="extra rnnserve flags, space separated")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(30.0, args.minutes * 60 * 0.2)

    flags = ["--log_level=warning"] + args.flags.split()
    with kit.ServerProcess(flags=flags) as server:
        server.wait_serving()
        soak, rows, closed = asyncio.run(run(args, server))
        active = None

        def drained():
            nonlocal active
            active = sessions_active(server)
            return active == 0
        failures = []
        try:
            kit.wait_until(drained, timeout=30, what="rnnserve_sessions_active to return to 0")
        except AssertionError:
            failures.append(f"rnnserve_sessions_active is {active} after closing every session")
        flat, message = flat_after_warmup(rows, warmup, args.rss_slack_mib)
        if not flat:
            failures.append(message)
        if soak.stats.counts.get("error", 0):
            failures.append(f"{soak.stats.counts['error']} unexpected errors, first ones:\n  " +
                            "\n  ".join(soak.stats.errors))
        if server.stop() != 0:
            failures.append("rnnserve did not exit cleanly on SIGTERM:\n" + server.stderr_tail())
    print(f"soak: {args.sessions} sessions, {args.workers} concurrent streams, "
          f"{args.minutes:g} min; {soak.stats.chunks} chunks answered; operations "
          f"{dict(sorted(soak.stats.counts.items()))}; {closed} sessions closed at the end; "
          f"sessions_active {active}; {message}; CSV {args.csv}")
    if failures:
        print("soak: FAILED\n- " + "\n- ".join(failures), file=sys.stderr)
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
