#!/usr/bin/python3
"""Server memory per idle session: the "100,000 idle sessions in <= 1 GiB" target of
BENCHMARKS.md "## Server".

Starts rnnserve on 127.0.0.1 with RNN(256, 256, num_layers=2) (seeded torch init, exported to a
temporary model repository), --max_sessions 200000 and a long --session_idle_timeout, then opens
--sessions sessions (each: start + one chunk of 1 step, N=1, omit_state), pipelined over a few
gRPC streams, and leaves them open. Reads the server's resident memory (VmRSS and VmHWM from
/proc/PID/status) before, at checkpoints while opening, and after, plus rnnserve_session_state_bytes
and rnnserve_sessions_active from /metrics; prints the total and the RSS per session.

    /usr/bin/python3 bench/memory_bench.py --rnnserve build-sbench/server/rnnserve
        [--sessions 100000] [--streams 8] [--json-out FILE]

Bounded: --sessions requests in all, and --time_limit seconds for opening them.
"""

import argparse
import json
import os
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
GIB = 1 << 30


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes(pid):
    return status_kib(pid, "VmRSS") * 1024


def settled_rss(pid, timeout=30.0, tolerance=64 << 10):
    """VmRSS once two readings 0.5 s apart differ by less than `tolerance` bytes (the server
    has finished its start-up, or winding down the closed streams); bounded by `timeout`."""
    last = [rss_bytes(pid)]

    def settled():
        time.sleep(0.5)
        now = rss_bytes(pid)
        steady = abs(now - last[0]) < tolerance
        last[0] = now
        return steady

    kit.wait_until(settled, timeout, f"the RSS of pid {pid} to settle", interval=0)
    return last[0]


def metrics(port):
    samples, _ = kit.parse_samples(
        kit.scrape(f"http://127.0.0.1:{port}/metrics", timeout=30))
    return {name: kit.metric_sum(samples, name)
            for name in ("rnnserve_session_state_bytes", "rnnserve_sessions_active")}


def open_sessions(pb2, pb2_grpc, address, count, streams, time_limit, checkpoint):
    """Opens `count` sessions over `streams` streams; returns (opened, errors, samples)."""
    import grpc
    chunk = np.random.default_rng(0).standard_normal((1, 1, 256)).astype("<f4")
    template = pb2.StreamRequest(model=MODEL, start=True, omit_state=True)
    template.input.shape.extend(chunk.shape)
    template.input.raw = chunk.tobytes()
    deadline = time.monotonic() + time_limit
    lock = threading.Lock()
    state = {"opened": 0, "errors": 0, "samples": [], "next_checkpoint": checkpoint}
    on_checkpoint = []  # callbacks (opened) run under no lock by the thread that crosses it

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length",
                                                      64 << 20)])
    stub = pb2_grpc.RnnServiceStub(channel)

    def requests(first, n):
        for i in range(first, first + n):
            if time.monotonic() > deadline:
                return
            request = pb2.StreamRequest()
            request.CopyFrom(template)
            request.request_id = i
            yield request

    def run_stream(first, n):
        try:
            for response in stub.Stream(requests(first, n), timeout=time_limit + 60):
                crossed = None
                with lock:
                    if response.error_code:
                        state["errors"] += 1
                        if len(state["samples"]) < 5:
                            state["samples"].append(response.error_message)
                    else:
                        state["opened"] += 1
                        if state["opened"] >= state["next_checkpoint"]:
                            crossed = state["opened"]
                            state["next_checkpoint"] += checkpoint
                if crossed is not None:
                    for callback in on_checkpoint:
                        callback(crossed)
        except grpc.RpcError as e:
            with lock:
                state["errors"] += 1
                state["samples"].append(f"stream failed: {e.code()}: {e.details()}")

    per_stream = [count // streams + (j < count % streams) for j in range(streams)]
    firsts = [sum(per_stream[:j]) for j in range(streams)]
    threads = [threading.Thread(target=run_stream, args=(firsts[j], per_stream[j]))
               for j in range(streams)]
    return threads, state, on_checkpoint, channel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnnserve",
                        default=os.path.join(os.path.dirname(ROOT), "build-sbench/server/rnnserve"))
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--time_limit", type=float, default=600,
                        help="seconds for opening the sessions at most")
    parser.add_argument("--budget_gib", type=float, default=1.0)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="rnnserve-membench-")
    try:
        repo = os.path.join(work, "models")
        server_bench.export_repository(repo, [MODEL], seed=0)
        pb2, pb2_grpc = kit.stubs()[:2]
        server = server_bench.Server(
            "rnnserve",
            [args.rnnserve, "--host", "127.0.0.1", "--port", "0", "--metrics_port", "0",
             "--model_repository", repo, "--max_sessions", str(max(200_000, args.sessions)),
             "--session_idle_timeout", "2h", "--evict_idle_after", "2h"],
            os.path.join(work, "rnnserve.log"))
        try:
            pid = server.pid
            before = settled_rss(pid)
            metrics_before = metrics(server.metrics_port)
            print(f"memory_bench: rnnserve pid {pid} VmRSS {before / 2**20:.1f} MiB before; "
                  f"opening {args.sessions} sessions over {args.streams} streams",
                  file=sys.stderr, flush=True)
            threads, state, on_checkpoint, channel = open_sessions(
                pb2, pb2_grpc, server.address, args.sessions, args.streams, args.time_limit,
                checkpoint=max(1, args.sessions // 5))
            t0 = time.monotonic()
            curve = []

            def sample(opened):
                rss = rss_bytes(pid)
                curve.append({"sessions": opened, "rss_bytes": rss,
                              "seconds": round(time.monotonic() - t0, 2)})
                print(f"memory_bench: {opened:7d} sessions open  VmRSS {rss / 2**20:8.1f} MiB  "
                      f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)

            on_checkpoint.append(sample)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            open_s = time.monotonic() - t0
            channel.close()
            after = settled_rss(pid)  # the streams wind down; the sessions stay
            hwm = status_kib(pid, "VmHWM") * 1024
            metrics_after = metrics(server.metrics_port)
        finally:
            server.stop(timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    opened = state["opened"]
    active = metrics_after["rnnserve_sessions_active"]
    state_bytes = metrics_after["rnnserve_session_state_bytes"]
    per_session = (after - before) / opened if opened else float("nan")
    result = {
        "model": "RNN(256, 256, num_layers=2)",
        "sessions_requested": args.sessions,
        "sessions_opened": opened,
        "errors": state["errors"],
        "error_samples": state["samples"],
        "open_seconds": round(open_s, 2),
        "sessions_per_s": round(opened / open_s, 1) if open_s > 0 else None,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_peak_bytes": hwm,
        "rss_delta_bytes": after - before,
        "rss_per_session_bytes": round(per_session, 1),
        "state_bytes_metric": state_bytes,
        "state_bytes_per_session": round(state_bytes / opened, 1) if opened else None,
        "sessions_active_metric": active,
        "metrics_before": metrics_before,
        "curve": curve,
        "budget_bytes": int(args.budget_gib * GIB),
        "met": after <= args.budget_gib * GIB and opened == args.sessions,
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"memory_bench: {opened} sessions opened in {open_s:.1f} s "
          f"({result['sessions_per_s']} /s), {state['errors']} errors")
    print(f"  VmRSS before   {before / 2**20:9.1f} MiB")
    print(f"  VmRSS after    {after / 2**20:9.1f} MiB   (peak {hwm / 2**20:.1f} MiB)")
    print(f"  per session    {per_session:9.0f} bytes of RSS "
          f"({state_bytes / max(opened, 1):.0f} bytes of it hidden state, by "
          f"rnnserve_session_state_bytes = {state_bytes / 2**20:.1f} MiB)")
    print(f"  sessions_active metric {active:.0f}")
    print(f"  target: {args.sessions} idle sessions in <= {args.budget_gib:g} GiB total RSS: "
          f"{'MET' if result['met'] else 'MISSED'} ({after / GIB:.3f} GiB)")
    for sample_text in state["samples"]:
        print(f"  error: {sample_text}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0 if opened == args.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
