#!/usr/bin/python3
"""Served throughput and latency: rnnserve vs a Python reference server vs the in-process engine.

For each model (exported with seeded torch init into a temporary model repository; RNNs, and
issue 12's LSTM(256, 256, 2) as --models lstm256x2) and each
count of concurrent sessions (batch N=1, chunks of --chunk_steps steps), runs
`rnnserve-client bench --json` against:
  * rnnserve (server/rnnserve, default flags: max_batch 256, one compute thread per core),
  * bench/reference_server.py (grpcio + torch, one torch call per chunk) at fewer counts,
and bench/inprocess_bench at the same batch (RnnModel::StepBatch with the server's thread
count and max_batch: the engine's ceiling; and ServingCore in-process without gRPC).
Every process listens on and talks to 127.0.0.1 only. Each run is bounded in time.

Besides throughput and latency it records, per run, the CPU seconds the server and the client
used (client and server share the machine's cores) and the server's CPU by thread name (gRPC's
threads vs the compute workers), so the tables say where the time goes.

Prints a markdown report (also written to --out) and writes all raw figures to --json-out.

    bench/run_server_bench.sh                     # builds, then runs this with the defaults
    /usr/bin/python3 bench/server_bench.py --rnnserve build-sbench/server/rnnserve \\
        --client build-sbench/client/rnnserve-client --inprocess PATH/inprocess_bench \\
        [--models demo,rnn256x2,rnn512x3] [--sessions 1,16,64,256,1024,4096] \\
        [--ref-sessions 1,64,1024] [--demo-sessions 1,64,1024] [--duration 8] [--quick]
"""

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "pykit"))
import rnnserve_testkit as kit  # noqa: E402  (server processes, metrics; puts tools/ on the path)

# name -> (input_size, hidden_size, num_layers[, module]); RNNs tanh; all unidirectional,
# time-major. The LSTMs are issue 12's: LSTM(256, 256, 2) beside RNN(256, 256, 2), and the
# speech-sized LSTM(80, 512, 3) of bench/streams_per_core.py's headline.
MODELS = {
    "demo": (100, 10, 2),
    "rnn256x2": (256, 256, 2),
    "rnn512x3": (512, 512, 3),
    "lstm256x2": (256, 256, 2, "LSTM"),
    "lstm80x512x3": (80, 512, 3, "LSTM"),
}


def model_module(name):
    """"RNN" or "LSTM": the torch.nn module of a MODELS entry."""
    return MODELS[name][3] if len(MODELS[name]) > 3 else "RNN"
TICKS = os.sysconf("SC_CLK_TCK")


def log(*parts):
    print("server_bench:", *parts, file=sys.stderr, flush=True)


def int_list(text):
    return [int(x) for x in text.split(",") if x.strip()]


def export_repository(folder, names, seed):
    import torch
    import export_pytorch
    for name in names:
        input_size, hidden, layers = MODELS[name][:3]
        torch.manual_seed(seed)
        module = getattr(torch.nn, model_module(name))
        export_pytorch.export_module(module(input_size, hidden, num_layers=layers),
                                     os.path.join(folder, name))


def model_label(name):
    i, h, l = MODELS[name][:3]
    return f"{model_module(name)}({i}, {h}, num_layers={l})"


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def source_revision():
    """HEAD's short hash, plus the files of core/, server/, proto/ and client/ that differ from
    it: the code the binaries were built from (when they were built from this tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "core", "server", "proto",
                                "client"], cwd=ROOT, text=True, capture_output=True,
                               timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" + uncommitted {', '.join(changed)}" if changed else "")


def proc_cpu_seconds(pid):
    """utime + stime of the whole process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu_seconds(pid):
    """{thread name: CPU seconds summed over the threads of that name}."""
    totals = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return totals
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return totals


def machine_busy_seconds():
    """CPU seconds all processes on the machine have used (non-idle time from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


def scrape_metrics(port):
    """{name: value summed over labels} of the counters and histogram sums/counts rnnserve
    exports, or {} when there is no metrics port."""
    if not port or port < 0:
        return {}
    try:
        samples, _ = kit.parse_samples(kit.scrape(f"http://127.0.0.1:{port}/metrics"))
    except OSError:
        return {}
    return {f"{family}_{part}": kit.metric_sum(samples, f"{family}_{part}")
            for family in ("rnnserve_batch_size", "rnnserve_queue_duration_seconds",
                           "rnnserve_chunk_duration_seconds") for part in ("sum", "count")}


class QuietWaiter:
    """Keeps other processes' CPU use out of the figures, within a time budget: before each
    run it waits until the machine is idle apart from us, and a run during which others took
    more than `retry_cores` is run again, the least disturbed attempt kept. On a shared
    2-core machine another engineer's build would otherwise halve what a run measures."""

    def __init__(self, threshold_cores, retry_cores, budget_s):
        self.threshold = threshold_cores
        self.retry_cores = retry_cores
        self.budget = budget_s
        self.spent = 0.0  # seconds of waiting and of repeated runs

    def left(self):
        return self.spent < self.budget

    def wait(self):
        """Waits for an idle machine (within the budget); returns the cores others used."""
        while True:
            busy0, t0 = machine_busy_seconds(), time.monotonic()
            time.sleep(1.0)
            busy = (machine_busy_seconds() - busy0) / (time.monotonic() - t0)
            if busy <= self.threshold or not self.left():
                return busy
            log(f"machine busy ({busy:.2f} cores used by others); waiting "
                f"({self.spent:.0f} of {self.budget:.0f} s spent)")
            time.sleep(4.0)
            self.spent += 5.0

    def run(self, attempt, what):
        """Calls attempt() (which returns a result with "others_cores"), again while others
        disturbed it and the budget lasts; returns the least disturbed result."""
        best = None
        for tries in range(3):
            self.wait()
            t0 = time.monotonic()
            result = attempt()
            if tries > 0:
                self.spent += time.monotonic() - t0
            if "error" in result:
                return result
            if best is None or result["others_cores"] < best["others_cores"]:
                best = result
            if best["others_cores"] <= self.retry_cores or not self.left():
                break
            log(f"{what}: other processes took {result['others_cores']:.2f} cores; again")
        best["attempts"] = tries + 1
        return best


QUIET = QuietWaiter(0.25, 0.3, 0)


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def Server(name, command, log_path, start_timeout=120):
    """A started server process on 127.0.0.1 with port 0, its ports read from its first line
    (rnnserve_testkit.ListeningProcess); stderr goes to log_path."""
    return kit.ListeningProcess(command, name=name, start_timeout=start_timeout,
                                log_path=log_path, cwd=ROOT).start()


def run_client_bench(args, server, model, sessions, duration, label=""):
    """One `rnnserve-client bench --json` run; returns its JSON plus CPU figures."""
    command = [args.client, "--server", server.address, "--json", "bench", model,
               "--sessions", str(sessions), "--chunk_steps", str(args.chunk_steps),
               "--duration", str(duration)]
    cpu_server0 = proc_cpu_seconds(server.pid)
    threads0 = thread_cpu_seconds(server.pid)
    cpu_client0 = children_cpu_seconds()
    metrics0 = scrape_metrics(server.metrics_port)
    busy0 = machine_busy_seconds()
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        # The client's drain gives up after 30 s; leave room for session set-up too.
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=duration + args.run_timeout_slack)
    except subprocess.TimeoutExpired:
        log(f"{server.name} {model} x{sessions}: client timed out")
        return {"error": "client timed out"}
    wall = time.monotonic() - t0
    cpu_server = proc_cpu_seconds(server.pid) - cpu_server0
    threads1 = thread_cpu_seconds(server.pid)
    cpu_client = children_cpu_seconds() - cpu_client0
    others = machine_busy_seconds() - busy0 - cpu_server - cpu_client
    metrics1 = scrape_metrics(server.metrics_port)
    delta = {k: v - metrics0.get(k, 0.0) for k, v in metrics1.items()}
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    if not lines:
        log(f"{server.name} {model} x{sessions}: client failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-400:]}")
        return {"error": f"client exit {done.returncode}"}
    result = json.loads(lines[-1])
    by_thread = {name: round(sec - threads0.get(name, 0.0), 3)
                 for name, sec in threads1.items() if sec - threads0.get(name, 0.0) > 0.005}
    result.update({
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu_server, 3),
        "client_cpu_s": round(cpu_client, 3),
        "server_cpu_by_thread": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])),
        # Cores' worth of CPU that other processes on the machine took during the run.
        "others_cores": round(max(0.0, others) / wall, 2),
        "load_before": round(load0, 2),
        # From the server's /metrics: engine calls and their mean batch, mean queue wait.
        "batches": int(delta.get("rnnserve_batch_size_count", 0)),
        "mean_batch": (round(delta["rnnserve_batch_size_sum"] / delta["rnnserve_batch_size_count"],
                             1) if delta.get("rnnserve_batch_size_count") else None),
        "mean_queue_ms": (round(1e3 * delta["rnnserve_queue_duration_seconds_sum"] /
                                delta["rnnserve_queue_duration_seconds_count"], 3)
                          if delta.get("rnnserve_queue_duration_seconds_count") else None),
        "load_after": round(os.getloadavg()[0], 2),
    })
    log(f"{server.name:9s} {model:9s} sessions {sessions:5d}{label}: "
        f"{result['timesteps_per_s']:10.0f} timesteps/s  p50 {result['latency_ms']['p50']:8.2f} ms"
        f"  p99 {result['latency_ms']['p99']:8.2f} ms  errors {result['errors']}  "
        f"cpu server {cpu_server:.1f} s client {cpu_client:.1f} s  others "
        f"{result['others_cores']:.2f} cores  load {load0:.1f}"
        + (f"  mean batch {result['mean_batch']}" if result["mean_batch"] else ""))
    return result


def run_inprocess(args, repo, model, sessions, mode):
    command = [args.inprocess, "--repo", repo, "--model", model, "--sessions", str(sessions),
               "--mode", mode, "--threads", str(args.threads), "--max_batch",
               str(args.max_batch), "--chunk_steps", str(args.chunk_steps), "--duration",
               str(args.engine_duration)]
    busy0, cpu0, t0 = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.engine_duration + 120)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    others = (machine_busy_seconds() - busy0) - (children_cpu_seconds() - cpu0)
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    if done.returncode != 0 or not lines:
        log(f"inprocess {mode} {model} x{sessions} failed: {done.stderr.strip()[-400:]}")
        return {"error": f"exit {done.returncode}"}
    result = json.loads(lines[-1])
    result["load"] = round(os.getloadavg()[0], 2)
    result["others_cores"] = round(max(0.0, others) / (time.monotonic() - t0), 2)
    log(f"inprocess {mode:6s} {model:9s} sessions {sessions:5d}: "
        f"{result['timesteps_per_s']:10.0f} timesteps/s  cpu {result['cpu_s']:.2f} s "
        f"in {result['seconds']:.2f} s  others {result['others_cores']:.2f} cores"
        + (f"  mean batch {result['mean_batch']}" if result.get("mean_batch") else ""))
    return result


def fmt_num(value, si=False):
    """About three significant digits; with `si`, k and M suffixes (27.0 k, 1.25 M)."""
    if value is None:
        return "—"
    suffix = ""
    if si:
        for scale, name in ((1e6, " M"), (1e3, " k")):
            if value >= scale:
                value, suffix = value / scale, name
                break
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{digits}f}{suffix}"


def fmt_rate(value):
    return fmt_num(value, si=True)


def fmt_ms(value):
    return fmt_num(value)


def fmt_ratio(a, b, percent=False):
    if a is None or b is None or b <= 0:
        return "—"
    if percent:
        return f"{100 * a / b:.0f}%"
    return f"{a / b:.1f}x"


def ok(run):
    return run is not None and "error" not in run


CPU_TABLE_NOTE = (
    "In the second table of each model, CPU is in cores (CPU seconds per second of run; 2.00 = "
    "both cores): rnnserve's compute threads (named `rnnserve`: the scheduler's workers, which "
    "also encode responses and start the gRPC writes) and its other threads (gRPC), the bench "
    "client, and other processes on the machine (noise); then rnnserve's mean engine batch "
    "(from its /metrics), timesteps per CPU-second of the whole server and of the in-process "
    "engine, and the in-process ServingCore (no gRPC) with its mean batch.\n")


def tables(results):
    """Markdown tables, one pair per model."""
    out = [CPU_TABLE_NOTE]
    for model, rows in results["models"].items():
        out.append(f"#### {model_label(model)} (`{model}`)\n")
        out.append("| sessions | rnnserve timesteps/s | p50 ms | p99 ms | reference timesteps/s "
                   "| p50 ms | p99 ms | rnnserve / reference | engine timesteps/s (same batch) "
                   "| server / engine |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            s, r, e = row.get("rnnserve"), row.get("reference"), row.get("engine")
            s_rate = s["timesteps_per_s"] if ok(s) else None
            r_rate = r["timesteps_per_s"] if ok(r) else None
            e_rate = e["timesteps_per_s"] if ok(e) else None
            flag = lambda run: " (errors!)" if ok(run) and run.get("errors") else ""
            out.append(
                f"| {row['sessions']} | {fmt_rate(s_rate)}{flag(s)} "
                f"| {fmt_ms(s['latency_ms']['p50']) if ok(s) else '—'} "
                f"| {fmt_ms(s['latency_ms']['p99']) if ok(s) else '—'} "
                f"| {fmt_rate(r_rate)}{flag(r)} "
                f"| {fmt_ms(r['latency_ms']['p50']) if ok(r) else '—'} "
                f"| {fmt_ms(r['latency_ms']['p99']) if ok(r) else '—'} "
                f"| {fmt_ratio(s_rate, r_rate)} | {fmt_rate(e_rate)} "
                f"| {fmt_ratio(s_rate, e_rate, percent=True)} |")
        out.append("")
        out.append("| sessions | rnnserve compute | rnnserve gRPC+other | client (vs rnnserve) "
                   "| other processes | rnnserve mean batch | timesteps per server CPU-s "
                   "| engine timesteps per CPU-s | ServingCore in-process timesteps/s (mean "
                   "batch) | reference server CPU | client (vs reference) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            s, r, e, c = row.get("rnnserve"), row.get("reference"), row.get("engine"), row.get("core")
            cells = [str(row["sessions"])]
            if ok(s):
                span = s["wall_s"]
                compute = sum(v for k, v in s["server_cpu_by_thread"].items()
                              if k == "rnnserve")
                cells += [f"{compute / span:.2f}", f"{(s['server_cpu_s'] - compute) / span:.2f}",
                          f"{s['client_cpu_s'] / span:.2f}", f"{s.get('others_cores', 0):.2f}",
                          fmt_num(s.get("mean_batch")),
                          fmt_rate(s["timesteps"] / s["server_cpu_s"]
                                   if s["server_cpu_s"] > 0 else None)]
            else:
                cells += ["—"] * 6
            cells.append(fmt_rate(e["timesteps_per_s"] * e["seconds"] / e["cpu_s"])
                         if ok(e) and e["cpu_s"] > 0 else "—")
            cells.append(f"{fmt_rate(c['timesteps_per_s'])} ({fmt_num(c.get('mean_batch'))})"
                         if ok(c) else "—")
            if ok(r):
                cells += [f"{r['server_cpu_s'] / r['wall_s']:.2f}",
                          f"{r['client_cpu_s'] / r['wall_s']:.2f}"]
            else:
                cells += ["—", "—"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def render(results):
    """The markdown report of a results dict (as written to --json-out)."""
    m, a = results["machine"], results["settings"]
    header = (f"Machine: {m['cpu']}, {m['cores']} cores; load average "
              f"{'/'.join(map(str, m['load_at_start']))} (1/5/15 min) at start, "
              f"{'/'.join(map(str, m['load_at_end']))} at end; {results['elapsed_s']:.0f} s "
              f"in all ({results.get('quiet_spent_s', 0):.0f} s of it waiting for, or "
              f"rerunning after, other processes on the CPU). Chunks of {a['chunk_steps']} "
              f"steps, batch N=1 per session; rnnserve --threads {a['threads']} --max_batch "
              f"{a['max_batch']}{' ' + a['server_args'] if a.get('server_args') else ''}; runs "
              f"of {a['duration']:g} s (reference {a['ref_duration']:g} s, in-process "
              f"{a['engine_duration']:g} s). Client and server share the cores. Source: "
              f"{results.get('source', 'unknown')}.\n")
    merged = results.get("merged_from")
    if merged:
        machine = merged.get("machine") or {}
        header += (f"Merged: the columns this run did not measure come from {merged['file']} "
                   f"(its load average {'/'.join(map(str, machine.get('load_at_start', [])))} "
                   f"at start, {'/'.join(map(str, machine.get('load_at_end', [])))} at end).\n")
    return header + "\n" + tables(results)


def add_output_flags(parser):
    """--out, --json-out and --report, as write_report and a rerender use them."""
    parser.add_argument("--out", default=None, help="write the markdown here too")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="measure nothing: print the markdown of an earlier --json-out")


def print_earlier_report(args, render_fn):
    """With --report: prints render_fn of that earlier --json-out and returns True."""
    if not args.report:
        return False
    with open(args.report) as f:
        print(render_fn(json.load(f)))
    return True


def write_report(text, results, out_path, json_path):
    """Prints the markdown and writes it to out_path, and the raw results to json_path (each
    when given)."""
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rnnserve", default=os.path.join(ROOT, "build-sbench/server/rnnserve"))
    parser.add_argument("--client",
                        default=os.path.join(ROOT, "build-sbench/client/rnnserve-client"))
    parser.add_argument("--inprocess", default=None,
                        help="bench/inprocess_bench binary; without it no engine columns")
    parser.add_argument("--reference", default=os.path.join(ROOT, "bench/reference_server.py"))
    parser.add_argument("--models", default="demo,rnn256x2,rnn512x3",
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--sessions", type=int_list, default=[1, 16, 64, 256, 1024, 4096],
                        help="session counts for the rnnserve and engine runs")
    parser.add_argument("--ref-sessions", type=int_list, default=[1, 64, 1024],
                        help="session counts for the reference server (it is slow)")
    parser.add_argument("--demo-sessions", type=int_list, default=[1, 64, 1024],
                        help="session counts for the demo model (all three servers)")
    parser.add_argument("--duration", type=float, default=8,
                        help="seconds of sending per rnnserve run")
    parser.add_argument("--ref-duration", type=float, default=8,
                        help="seconds of sending per reference-server run")
    parser.add_argument("--engine-duration", type=float, default=2,
                        help="seconds per in-process run")
    parser.add_argument("--warmup", type=float, default=1,
                        help="seconds of unrecorded load before each server's first model run")
    parser.add_argument("--chunk_steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="rnnserve --threads and the in-process thread count")
    parser.add_argument("--max_batch", type=int, default=256,
                        help="rnnserve --max_batch and the in-process batch cap")
    parser.add_argument("--server-args", default="",
                        help="extra rnnserve flags, e.g. '--max_queue_delay=1ms'")
    parser.add_argument("--quiet-budget", type=float, default=300,
                        help="seconds, in all, to spend waiting before runs for other "
                             "processes to leave the CPU idle (below --quiet-cores) and rerunning "
                             "runs they disturbed (above --retry-cores); 0: never")
    parser.add_argument("--quiet-cores", type=float, default=0.25)
    parser.add_argument("--retry-cores", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the weights")
    parser.add_argument("--no-rnnserve", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--merge", metavar="JSON", default=None,
                        help="start from this earlier --json-out and replace only what this run "
                             "measures, e.g. --no-rnnserve --no-reference --merge R.json to "
                             "retake the in-process columns on a quieter machine")
    parser.add_argument("--no-core", action="store_true",
                        help="skip the in-process ServingCore runs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s runs, sessions 1,64,1024")
    parser.add_argument("--run-timeout-slack", type=float, default=120,
                        help="seconds a client run may take beyond --duration before it is "
                             "killed")
    add_output_flags(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if print_earlier_report(args, render):
        return 0
    if args.quick:
        args.sessions = [1, 64, 1024]
        args.duration = args.ref_duration = 2
        args.engine_duration = 1
    QUIET.threshold, QUIET.retry_cores = args.quiet_cores, args.retry_cores
    QUIET.budget = args.quiet_budget
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m}; known: {', '.join(MODELS)}")
    for path in (args.rnnserve, args.client):
        if not os.access(path, os.X_OK):
            parser.error(f"{path} is not an executable; build it first (bench/run_server_bench.sh)")

    work = tempfile.mkdtemp(prefix="rnnserve-sbench-")
    repo = os.path.join(work, "models")
    export_repository(repo, models, args.seed)
    started = time.time()
    results = {
        "source": source_revision(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_at_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "json_out")},
        "models": {},
    }
    counts = {m: (args.demo_sessions if m == "demo" else args.sessions) for m in models}
    ref_counts = {m: (args.demo_sessions if m == "demo" else args.ref_sessions) for m in models}
    for m in models:
        results["models"][m] = [{"sessions": n} for n in counts[m]]
    if args.merge:
        with open(args.merge) as f:
            earlier = json.load(f)
        for m in models:
            for old_row in earlier["models"].get(m, []):
                if old_row["sessions"] in counts[m]:
                    row = next(r for r in results["models"][m]
                               if r["sessions"] == old_row["sessions"])
                    row.update({k: v for k, v in old_row.items() if k != "sessions"})
        results["merged_from"] = {"file": args.merge, "machine": earlier.get("machine")}

    def row(m, n):
        return next(r for r in results["models"][m] if r["sessions"] == n)

    try:
        def bench_server(name, command, counts_by_model, duration, key):
            server = Server(name, command, os.path.join(work, f"{name}.log"))
            try:
                for m in models:
                    if args.warmup > 0:
                        run_client_bench(args, server, m, 16, args.warmup, " (warm-up)")
                    for n in counts_by_model[m]:
                        row(m, n)[key] = QUIET.run(
                            lambda: run_client_bench(args, server, m, n, duration),
                            f"{name} {m} x{n}")
            finally:
                server.stop(timeout=60)

        # 1. rnnserve.
        if not args.no_rnnserve:
            bench_server("rnnserve",
                         [args.rnnserve, "--host", "127.0.0.1", "--port", "0", "--metrics_port",
                          "0", "--model_repository", repo, "--threads", str(args.threads),
                          "--max_batch", str(args.max_batch)] + shlex.split(args.server_args),
                         counts, args.duration, "rnnserve")
        # 2. The reference server, at the counts that also have a rnnserve row.
        if not args.no_reference:
            bench_server("reference",
                         [sys.executable, args.reference, "--model_repository", repo,
                          "--port", "0", "--threads", str(args.threads)],
                         {m: [n for n in ref_counts[m] if n in counts[m]] for m in models},
                         args.ref_duration, "reference")
        # 3. In-process.
        if args.inprocess:
            for m in models:
                for n in counts[m]:
                    for mode in ("engine",) if args.no_core else ("engine", "core"):
                        row(m, n)[mode] = QUIET.run(
                            lambda: run_inprocess(args, repo, m, n, mode),
                            f"inprocess {mode} {m} x{n}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")

    results["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.time() - started, 1)
    results["quiet_spent_s"] = round(QUIET.spent, 1)
    write_report(render(results), results, args.out, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
