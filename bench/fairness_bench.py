#!/usr/bin/python3
"""Fair compute (issue 11): a small client's latency while two clients send huge chunks.

Starts rnnserve on 127.0.0.1 with RNN(256, 256, num_layers=2) (seeded torch init, exported to a
temporary model repository) and --threads workers, then for --duration seconds runs:
  * two "huge" clients, each a stream sending one chunk of --huge_steps timesteps (N=1, raw:
    about 61 MB at 60,000 steps) at a time, omit_state, the next as soon as the last returns;
  * one "small" client, a stream sending a chunk of --small_steps timesteps every
    --small_interval_ms (one in flight), each timed from when it was due to its answer.
Prints the small client's p50/p99/max latency (from when each chunk was due, and from when it
was actually sent) and the huge clients' chunk count and mean time, first with no
huge clients (the baseline), then with them. Run it against a server before and after the
slicing change (--server_flags=--slice_steps=0 turns slicing off) to compare.

    /usr/bin/python3 bench/fairness_bench.py --rnnserve build/server/rnnserve \\
        [--duration 20] [--huge_steps 60000] [--threads 2] [--server_flags=--slice_steps=0]

Bounded: every phase stops after --duration seconds (a huge chunk in flight is waited for, at
most --call_timeout seconds).
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
import server_bench  # noqa: E402  (Server, export_repository; puts the test kit on the path)
import rnnserve_testkit as kit  # noqa: E402

MODEL = "rnn256x2"
MESSAGE_BYTES = 512 << 20


def raw_tensor(pb2, array):
    array = np.ascontiguousarray(array, dtype="<f4")
    return pb2.Tensor(shape=list(array.shape), raw=array.tobytes())


def stream_client(pb2, stub, session_id, steps, stop, call_timeout, latencies, errors,
                  interval=0.0):
    """One stream, one session: chunks of `steps` timesteps, one in flight, until `stop`.
    With `interval`, chunk k is due at k * interval and its latency counts from then, so a
    stall counts for every chunk it delays (no coordinated omission); else back to back."""
    rng = np.random.default_rng(abs(hash(session_id)) % (1 << 32))
    chunk = raw_tensor(pb2, rng.standard_normal((steps, 1, 256)).astype(np.float32))
    requests = []
    ready = threading.Condition()

    def request_iterator():
        while True:
            with ready:
                ready.wait_for(lambda: requests)
                request = requests.pop(0)
            if request is None:
                return
            yield request

    def push(request):
        with ready:
            requests.append(request)
            ready.notify()

    responses = stub.Stream(request_iterator(), timeout=call_timeout * 1000)
    first = True
    due = time.monotonic()
    try:
        while not stop.is_set():
            if interval > 0:
                due += interval
                time.sleep(max(0.0, due - time.monotonic()))  # pacing, not synchronisation
            sent = time.monotonic()
            if interval <= 0:
                due = sent
            push(pb2.StreamRequest(session_id=session_id, model=MODEL, start=first,
                                   omit_state=True, input=chunk))
            first = False
            response = next(responses)
            now = time.monotonic()
            latencies.append((now - due, now - sent))  # from when it was due; from its send
            if response.error_code:
                errors.append(response.error_message[:200])
                break
    finally:
        push(None)
        for _ in responses:
            pass


def run_phase(pb2, make_stub, args, huge_clients):
    """Each client on a connection of its own: on a shared one, a huge message's HTTP/2
    frames would delay the small client's before the server ever saw its chunk."""
    stop = threading.Event()
    small, huge, errors = [], [], []
    threads = [threading.Thread(target=stream_client,
                                args=(pb2, make_stub(), f"small-{huge_clients}",
                                      args.small_steps, stop, args.call_timeout, small, errors,
                                      args.small_interval_ms / 1000.0))]
    for i in range(huge_clients):
        threads.append(threading.Thread(target=stream_client,
                                        args=(pb2, make_stub(), f"huge-{huge_clients}-{i}",
                                              args.huge_steps, stop, args.call_timeout, huge,
                                              errors)))
    for t in threads:
        t.start()
    time.sleep(args.duration)  # the measurement window, not synchronisation
    stop.set()
    for t in threads:
        t.join()
    due_ms = np.array([d for d, _ in small]) * 1000.0
    sent_ms = np.array([s for _, s in small]) * 1000.0

    def pct(values, q):
        return round(float(np.percentile(values, q)), 2) if len(values) else None

    return {
        "huge_clients": huge_clients,
        "small_chunks": len(small),
        "small_p50_ms": pct(due_ms, 50),
        "small_p99_ms": pct(due_ms, 99),
        "small_max_ms": pct(due_ms, 100),
        "small_sent_p50_ms": pct(sent_ms, 50),
        "small_sent_p99_ms": pct(sent_ms, 99),
        "huge_chunks": len(huge),
        "huge_mean_s": round(float(np.mean([s for _, s in huge])), 2) if huge else None,
        "errors": errors[:3],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnnserve",
                        default=os.path.join(os.path.dirname(ROOT), "build/server/rnnserve"))
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--huge_steps", type=int, default=60_000)
    parser.add_argument("--small_steps", type=int, default=10)
    parser.add_argument("--small_interval_ms", type=float, default=10.0,
                        help="the small client sends a chunk every this many ms")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--call_timeout", type=float, default=120.0)
    parser.add_argument("--server_flags", default="", help="extra rnnserve flags")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="rnnserve-fairbench-")
    try:
        server_bench.export_repository(os.path.join(work, "models"), [MODEL], seed=0)
        pb2, pb2_grpc = kit.stubs()[:2]
        flags = ["--threads", str(args.threads), "--max_message_bytes", str(MESSAGE_BYTES)]
        with kit.ServerProcess(model_repository=os.path.join(work, "models"), metrics=False,
                               flags=flags + shlex.split(args.server_flags),
                               binary=args.rnnserve, start_timeout=120,
                               log_path=os.path.join(work, "rnnserve.log")) as server:

            def make_stub():  # a connection of its own (closed when the server stops)
                return pb2_grpc.RnnServiceStub(server.channel(**{
                    "grpc.max_receive_message_length": MESSAGE_BYTES,
                    "grpc.max_send_message_length": MESSAGE_BYTES,
                    "grpc.use_local_subchannel_pool": 1}))

            results = []
            for huge_clients in (0, 2):
                result = run_phase(pb2, make_stub, args, huge_clients)
                print(f"fairness_bench: {huge_clients} huge clients: {json.dumps(result)}",
                      file=sys.stderr, flush=True)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"model": "RNN(256, 256, num_layers=2)", "threads": args.threads,
              "huge_steps": args.huge_steps, "small_steps": args.small_steps,
              "small_interval_ms": args.small_interval_ms,
              "duration_s": args.duration, "server_flags": args.server_flags,
              "phases": results}
    print(json.dumps(report, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
