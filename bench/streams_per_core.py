#!/usr/bin/python3
"""Live streams per core: how many paced streams of a speech-sized LSTM one core serves in time.

Issue 12's headline: sessions of LSTM(80, 512, num_layers=3) (exported with seeded torch init),
each a live stream of 100 frames/s sent as one 10-frame chunk every 100 ms (`rnnserve-client
bench --chunk_steps 10 --chunks_per_second 10`: open loop, each chunk due at its slot, its
latency counted from that slot, so a server that falls behind cannot hide the queueing). The
server runs on one core (`taskset -c SERVER_CORE rnnserve --threads 1`: its compute thread and
all of gRPC's), the client on another. A count of streams passes when, over the run, no chunk
failed, chunk latency p99 < --budget-ms (100), no chunk went out more than --budget-ms after its
slot (the session had fallen a whole chunk behind), and the answered chunks/s is within 5% of
what the streams should send. The search doubles the count from --start until a count fails,
then bisects down to --resolution; every point runs --duration seconds (bounded: a client that
overruns by 60 s is killed and the point fails). Everything listens on 127.0.0.1.

    bench/run_server_bench.sh --headline          # builds, then runs this (~3 min)
    /usr/bin/python3 bench/streams_per_core.py --rnnserve build-sbench/server/rnnserve \\
        --client build-sbench/client/rnnserve-client [--quick] [--json-out R.json]

--quick: 4 s points and a coarser search (~1 min). Needs 2 cores (0 and 1 by default).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import server_bench as sb

MODEL = "lstm80x512x3"


def log(*parts):
    print("streams_per_core:", *parts, file=sys.stderr, flush=True)


def run_point(args, server, streams):
    """One paced run of `streams` sessions; returns the client's JSON plus server CPU and
    the verdict."""
    command = ["taskset", "-c", str(args.client_core), args.client, "--server", server.address,
               "--json", "bench", MODEL, "--sessions", str(streams), "--chunk_steps",
               str(args.chunk_steps), "--chunks_per_second", str(args.chunks_per_second),
               "--duration", str(args.duration), "--streams", str(min(streams, 64))]
    cpu0, t0 = sb.proc_cpu_seconds(server.pid), time.monotonic()
    metrics0 = sb.scrape_metrics(server.metrics_port)
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.duration + 60)
    except subprocess.TimeoutExpired:
        return {"streams": streams, "passed": False, "why": "client timed out"}
    wall = time.monotonic() - t0
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"streams": streams, "passed": False,
                "why": f"client exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    r = json.loads(lines[-1])
    r["streams"] = streams
    r["server_cores"] = round((sb.proc_cpu_seconds(server.pid) - cpu0) / wall, 2)
    delta = {k: v - metrics0.get(k, 0.0) for k, v in sb.scrape_metrics(server.metrics_port).items()}
    count = delta.get("rnnserve_batch_size_count", 0)
    r["mean_batch"] = round(delta["rnnserve_batch_size_sum"] / count, 1) if count else None
    expected = streams * args.chunks_per_second
    why = []
    if r["errors"]:
        why.append(f"{r['errors']} errors")
    if r["latency_ms"]["p99"] >= args.budget_ms:
        why.append(f"p99 {r['latency_ms']['p99']:.1f} ms")
    if r["send_lag_ms"]["max"] >= args.budget_ms:
        why.append(f"a chunk sent {r['send_lag_ms']['max']:.0f} ms after its slot")
    if r["chunks_per_s"] < 0.95 * expected:
        why.append(f"{r['chunks_per_s']:.0f} of {expected:.0f} chunks/s")
    r["passed"] = not why
    r["why"] = ", ".join(why)
    log(f"{streams:5d} streams: {r['chunks_per_s']:8.1f} chunks/s (of {expected:.0f})  p50 "
        f"{r['latency_ms']['p50']:7.2f}  p99 {r['latency_ms']['p99']:7.2f}  max "
        f"{r['latency_ms']['max']:7.2f} ms  send lag max {r['send_lag_ms']['max']:6.1f} ms  "
        f"server {r['server_cores']:.2f} cores  mean batch {r['mean_batch']}  "
        f"{'PASS' if r['passed'] else 'FAIL: ' + r['why']}")
    return r


def search(args, server):
    """Doubling from --start until a count fails, then bisection; returns (best, points)."""
    points = []

    def probe(n):
        point = run_point(args, server, n)
        points.append(point)
        return point["passed"]

    best, failed, n = 0, None, args.start
    while failed is None and n <= args.max_streams:
        if probe(n):
            best, n = n, n * 2
        else:
            failed = n
    if failed is None:
        return best, points  # passed at --max-streams
    while failed - best > max(1, int(best * args.resolution)):
        mid = (best + failed) // 2
        if probe(mid):
            best = mid
        else:
            failed = mid
    return best, points


def render(result):
    a, m = result["settings"], result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; load average "
             f"{'/'.join(map(str, m['load_at_start']))} at start, "
             f"{'/'.join(map(str, m['load_at_end']))} at end; {result['elapsed_s']:.0f} s. "
             f"Source: {result['source']}. Server: `taskset -c {a['server_core']} rnnserve "
             f"--threads 1 --max_batch {a['max_batch']}`; client on core {a['client_core']}; "
             f"{sb.model_label(MODEL)}, chunks of {a['chunk_steps']} steps at "
             f"{a['chunks_per_second']:g} chunks/s per stream, {a['duration']:g} s per point.",
             "",
             "| streams | chunks/s answered (of) | p50 ms | p99 ms | max ms | send lag p99 / max ms "
             "| server cores | mean batch | errors | verdict |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in sorted(result["points"], key=lambda p: p["streams"]):
        if "latency_ms" not in p:
            lines.append(f"| {p['streams']} | — | — | — | — | — | — | — | — | fail: {p['why']} |")
            continue
        lines.append(
            f"| {p['streams']} | {p['chunks_per_s']:.0f} "
            f"({p['streams'] * a['chunks_per_second']:.0f}) | {p['latency_ms']['p50']:.2f} "
            f"| {p['latency_ms']['p99']:.2f} | {p['latency_ms']['max']:.1f} "
            f"| {p['send_lag_ms']['p99']:.1f} / {p['send_lag_ms']['max']:.1f} "
            f"| {p['server_cores']:.2f} | {p.get('mean_batch') or '—'} | {p['errors']} "
            f"| {'pass' if p['passed'] else 'fail: ' + p['why']} |")
    lines += ["", f"**{result['streams_per_core']} live streams per core** (p99 chunk latency "
              f"< {a['budget_ms']:g} ms, none late by a slot; search resolution "
              f"{100 * a['resolution']:.0f}%)."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rnnserve", default=os.path.join(sb.ROOT, "build-sbench/server/rnnserve"))
    parser.add_argument("--client",
                        default=os.path.join(sb.ROOT, "build-sbench/client/rnnserve-client"))
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--chunk_steps", type=int, default=10, help="frames per chunk")
    parser.add_argument("--chunks_per_second", type=float, default=10,
                        help="chunks per second per stream (10 x 10 frames = 100 frames/s)")
    parser.add_argument("--budget-ms", type=float, default=100)
    parser.add_argument("--max_batch", type=int, default=256)
    parser.add_argument("--start", type=int, default=16, help="first stream count")
    parser.add_argument("--max-streams", type=int, default=4096)
    parser.add_argument("--resolution", type=float, default=0.05,
                        help="stop bisecting when the bracket is within this fraction")
    parser.add_argument("--duration", type=float, default=10, help="seconds per point")
    parser.add_argument("--quick", action="store_true",
                        help="4 s points, bisection to 10%% (~1 min)")
    parser.add_argument("--seed", type=int, default=0)
    sb.add_output_flags(parser)
    args = parser.parse_args(argv)
    if sb.print_earlier_report(args, render):
        return 0
    if args.quick:
        args.duration, args.resolution = 4, 0.1
    for path in (args.rnnserve, args.client):
        if not os.access(path, os.X_OK):
            parser.error(f"{path} is not an executable; build it first (bench/run_server_bench.sh)")
    if os.cpu_count() < 2:
        parser.error("needs 2 cores: one for the server, one for the client")

    work = tempfile.mkdtemp(prefix="rnnserve-streams-")
    started = time.time()
    result = {"source": sb.source_revision(),
              "machine": {"cpu": sb.cpu_model(), "cores": os.cpu_count(),
                          "load_at_start": [round(x, 2) for x in os.getloadavg()]},
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json_out")}}
    try:
        repo = os.path.join(work, "models")
        sb.export_repository(repo, [MODEL], args.seed)
        server = sb.Server("rnnserve",
                           ["taskset", "-c", str(args.server_core), args.rnnserve, "--host",
                            "127.0.0.1", "--port", "0", "--metrics_port", "0",
                            "--model_repository", repo, "--threads", "1", "--max_batch",
                            str(args.max_batch)], os.path.join(work, "rnnserve.log"))
        try:
            saved = args.duration
            args.duration = 2
            run_point(args, server, 8)  # warm-up, not recorded
            args.duration = saved
            best, points = search(args, server)
        finally:
            server.stop(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(points=points, streams_per_core=best,
                  elapsed_s=round(time.time() - started, 1))
    result["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    sb.write_report(render(result), result, args.out, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
