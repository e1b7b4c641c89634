#!/usr/bin/env python3
"""Engine vs torch.nn.RNN (and ONNX Runtime) on the same shapes, single-threaded.

Runs build-bench/bench/engine_bench (Google Benchmark, --benchmark_format=json) on the grid,
times torch.nn.RNN(H, H, num_layers=L) (float32, tanh, torch.set_num_threads(1),
torch.inference_mode()) on the same shapes, and, when node and onnxruntime-node are there, the
ONNX export of the same RNN in ONNX Runtime (bench/onnx_bench.js, intraOpNumThreads=1). Prints
markdown tables (engine us/call, torch us/call, torch/engine, ORT us/call, ORT/engine, GFLOP/s,
fraction of the 1-thread sgemm peak) and a check of the performance targets.

Shapes: Forward, input (T, N, H), h_0 zeros. StepBatch, N sessions of batch 1 and 10 steps each
in one call; torch and ORT run the equivalent single call on input (10, N, H).
Every timing is the mean per call over a window of at least --min-time seconds after a warm-up
call, best of --repetitions windows (the same rule for all three). Run with /usr/bin/python3
and without OPENBLAS_CORETYPE (bench/run_engine_bench.sh does both).

  /usr/bin/python3 bench/compare_torch.py --out build-bench/engine_table.md
  /usr/bin/python3 bench/compare_torch.py --H 256 --L 2 --N 1 64 --T 10 --no-ort   # a subset
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

FORWARD_GRID = {"H": [64, 256, 512, 1024], "L": [1, 2], "N": [1, 8, 64, 256], "T": [1, 10, 100]}
STEP_BATCH_SESSIONS = [1, 64, 256, 1024]
CHUNK_STEPS = 10  # engine_bench's StepBatch chunk length


def alternation(values):
    return "(" + "|".join(str(v) for v in values) + ")"


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# engine (Google Benchmark JSON)

NAME_RE = re.compile(r"^(BM_\w+)/(.*?)(?:/manual_time|/real_time)?$")


def parse_args_in_name(rest):
    return {k: int(v) for k, v in (part.split(":") for part in rest.split("/") if ":" in part)}


def grid_filters(args, hidden, layers):
    """engine_bench filters for the Forward and StepBatch shapes of one (H, L)."""
    filters = ["BM_Forward/H:{}/L:{}/N:{}/T:{}/".format(
        hidden, layers, alternation(args.N), alternation(args.T))]
    if args.sessions:
        filters.append("BM_StepBatch/H:{}/L:{}/N:{}/".format(
            hidden, layers, alternation(args.sessions)))
    return filters


def run_investigation(args, peak):
    """engine_bench's per-shape products (Eigen vs OpenBLAS vs PackedGemm), read bandwidth, and the
    Forward stand-in next to the engine's Forward, each group in one run with Google Benchmark's
    random interleaving, so that the machine's drift falls on all of a comparison alike."""
    groups = [["BM_GemmShape/lib:[012]/H:{}/".format(alternation(args.H)),
               "BM_ReadBandwidth/"]]
    for hidden in args.H:
        for layers in args.L:
            groups.append(["BM_(Forward|ForwardProto/lib:[01])/H:{}/L:{}/N:{}/T:{}/".format(
                hidden, layers, alternation(args.N), alternation(args.T))])
    results = {}
    for filters in groups:
        results.update(run_engine(args.engine_bench, filters, args, peak, interleave=True)[1])
    return results


def run_engine(binary, filters, args, peak=None, interleave=False):
    """Runs engine_bench on `filters`; returns its context and {(family, params): entry}.

    peak: the sgemm peak (GFLOP/s, by args.clock) for peak_frac; None measures it in this run,
    which then also runs the GEMM yardstick benchmarks."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_NUM_THREADS", None)  # engine_bench sets its own (1, or 2 for the peak)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    try:
        if peak is None:
            filters = filters + ["BM_SgemmOpenBlas/|BM_EigenGemm/"]
        cmd = [binary, "--benchmark_filter=^(" + "|".join(filters) + ")",
               f"--benchmark_min_time={args.min_time}",
               f"--benchmark_repetitions={args.repetitions}",
               "--benchmark_format=console", "--benchmark_out_format=json",
               f"--benchmark_out={out_path}"]
        if peak is not None:
            cmd.append("--peak_gflops=0")  # no calibration; peak_frac is computed here
        if interleave:
            cmd.append("--benchmark_enable_random_interleaving=true")
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=sys.stderr)
        with open(out_path) as f:
            report = json.load(f)
    finally:
        os.unlink(out_path)
    context = report["context"]
    if peak is None:
        peak = float(context.get("sgemm_peak_1t_gflops" if args.clock == "wall"
                                 else "sgemm_peak_1t_gflops_cpu", 0))
    context["peak_gflops"] = peak
    results = {}
    for bench in report["benchmarks"]:
        if bench.get("run_type") != "iteration" or bench.get("error_occurred"):
            continue
        match = NAME_RE.match(bench["name"])
        if not match:
            continue
        family, params = match.group(1), parse_args_in_name(match.group(2))
        key = (family, tuple(sorted(params.items())))
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[bench["time_unit"]]
        wall_us = bench["real_time"] * scale
        # engine_bench's counters are by wall-clock time; rescale them for --clock cpu.
        us = wall_us if args.clock == "wall" else bench["cpu_time"] * scale
        entry = dict(params, us_per_call=us)
        if "gflops" in bench:
            entry["gflops"] = bench["gflops"] * wall_us / us
            entry["wall_gflops"] = bench["gflops"]
            if peak and family in ("BM_Forward", "BM_StepBatch"):
                entry["peak_frac"] = entry["gflops"] / peak
        if "ns_per_elem" in bench:
            entry["ns_per_elem"] = bench["ns_per_elem"] * us / wall_us
        if "gbytes_per_s" in bench:
            entry["gbytes_per_s"] = bench["gbytes_per_s"] * wall_us / us
        if key not in results or entry["us_per_call"] < results[key]["us_per_call"]:
            results[key] = entry  # best of the repetitions
    return report["context"], results


# ---------------------------------------------------------------------------------------------
# torch

def best_mean_seconds(fn, min_time, repetitions, clock):
    """The window runs for min_time of wall-clock time; `clock` measures it."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repetitions):
        iterations, start, clock_start = 0, time.perf_counter(), clock()
        while True:
            fn()
            iterations += 1
            if time.perf_counter() - start >= min_time:
                break
        best = min(best, (clock() - clock_start) / iterations)
    return best


def run_torch(shapes, min_time, repetitions, clock_name):
    # Debian's torch calls the system BLAS (OpenBLAS), which reads these when it loads.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    # With one thread torch computes on the calling thread, so its CPU time is the call's.
    clock = time.perf_counter if clock_name == "wall" else time.thread_time
    models, results = {}, {}
    for hidden, layers, batch, steps in shapes:
        if (hidden, layers) not in models:
            torch.manual_seed(0)
            models[hidden, layers] = torch.nn.RNN(hidden, hidden, num_layers=layers,
                                                  nonlinearity="tanh").float().eval()
        rnn = models[hidden, layers]
        x = torch.rand(steps, batch, hidden) * 2 - 1
        with torch.inference_mode():
            seconds = best_mean_seconds(lambda: rnn(x), min_time, repetitions, clock)
        results[hidden, layers, batch, steps] = seconds * 1e6
        print(f"torch H={hidden} L={layers} N={batch} T={steps}: {seconds * 1e6:.1f} us",
              file=sys.stderr, flush=True)
    return torch.__version__, results


# ---------------------------------------------------------------------------------------------
# ONNX Runtime (node)

def run_ort(shapes, args, floor=False):
    node = shutil.which(args.node) or (args.node if os.path.exists(args.node) else None)
    if node is None:
        return None, {}, f"node not found ({args.node})"
    import export_onnx

    spec = {"min_time": args.min_time, "repetitions": args.repetitions, "clock": args.clock,
            "shapes": []}
    if floor:
        spec["floor_model"] = export_onnx.export_floor(args.onnx_dir)
    for hidden, layers, batch, steps in shapes:
        path = export_onnx.export(args.onnx_dir, hidden, layers)
        spec["shapes"].append({"model": path, "H": hidden, "L": layers, "N": batch, "T": steps})
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    print(f"+ {node} bench/onnx_bench.js ({len(shapes)} shapes)", file=sys.stderr, flush=True)
    proc = subprocess.run([node, os.path.join(HERE, "onnx_bench.js")], input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None, {}, "onnx_bench.js failed: " + proc.stderr.strip().splitlines()[-1]
    report = json.loads(proc.stdout)
    results = {(r["H"], r["L"], r["N"], r["T"]): r["us_per_call"] for r in report["results"]}
    return report, results, None


# ---------------------------------------------------------------------------------------------
# tables

def fmt_us(us):
    if us is None:
        return "–"
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def fmt_ratio(other, engine):
    return "–" if other is None or engine is None else f"{other / engine:.2f}x"


def table(rows, torch_us, ort_us, with_ort, key_of, head):
    cols = head + ["engine µs/call", "µs/step", "GFLOP/s", "% sgemm peak", "torch µs/call",
                   "torch/engine"]
    if with_ort:
        cols += ["ORT µs/call", "ORT/engine"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for row in rows:
        key = key_of(row)
        steps = key[3]
        cells = [str(row[h]) for h in head]
        engine = row["us_per_call"]
        peak = row.get("peak_frac")
        cells += [fmt_us(engine), fmt_us(engine / steps), f"{row['gflops']:.1f}",
                  "–" if peak is None else f"{100 * peak:.0f}%",
                  fmt_us(torch_us.get(key)), fmt_ratio(torch_us.get(key), engine)]
        if with_ort:
            cells += [fmt_us(ort_us.get(key)), fmt_ratio(ort_us.get(key), engine)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(forward, step_batch, torch_us, ort_us, with_ort, peak):
    """The performance targets, each with its worst shape."""
    lines = []

    def worst(rows, key_of, other):
        ratios = [(other[key_of(r)] / r["us_per_call"], key_of(r)) for r in rows
                  if key_of(r) in other]
        return min(ratios) if ratios else None

    def shape_name(key, kind):
        return f"{kind} H={key[0]} L={key[1]} N={key[2]} T={key[3]}"

    fkey = lambda r: (r["H"], r["L"], r["N"], r["T"])
    skey = lambda r: (r["H"], r["L"], r["N"], CHUNK_STEPS)
    checks = [("engine ≥5x torch at N=1", 5.0, [r for r in forward if r["N"] == 1], fkey,
               torch_us, "Forward"),
              ("engine ≥3x torch at N≥64", 3.0, [r for r in forward if r["N"] >= 64], fkey,
               torch_us, "Forward"),
              ("engine ≥3x torch at N≥64 (StepBatch)", 3.0,
               [r for r in step_batch if r["N"] >= 64], skey, torch_us, "StepBatch")]
    if with_ort:
        checks += [("engine faster than ORT at every shape", 1.0, forward, fkey, ort_us,
                    "Forward"),
                   ("engine faster than ORT at every shape (StepBatch)", 1.0, step_batch, skey,
                    ort_us, "StepBatch")]
    for label, goal, rows, key_of, other, kind in checks:
        found = worst(rows, key_of, other)
        if found is None:
            continue
        ratio, key = found
        misses = sum(1 for r in rows if key_of(r) in other
                     and other[key_of(r)] / r["us_per_call"] < goal)
        verdict = "met" if misses == 0 else f"MISSED at {misses} of {len(rows)} shapes"
        lines.append(f"- {label}: {verdict}; worst {ratio:.2f}x ({shape_name(key, kind)})")
    # torch's own GEMM efficiency caps any speed-up over it: a kernel at 100% of the sgemm peak
    # is peak / torch_gflops times faster, no more.
    torch_fracs = sorted(
        r["gflops"] * r["us_per_call"] / torch_us[(r["H"], r["L"], r["N"], r["T"])] / peak
        for r in forward if r["N"] >= 64 and (r["H"], r["L"], r["N"], r["T"]) in torch_us)
    if torch_fracs and peak:
        median = torch_fracs[len(torch_fracs) // 2]
        lines.append(f"- at N≥64 torch itself runs at {100 * torch_fracs[0]:.0f}–"
                     f"{100 * torch_fracs[-1]:.0f}% of the sgemm peak (median "
                     f"{100 * median:.0f}%), so no engine can be more than "
                     f"{1 / torch_fracs[-1]:.1f}–{1 / torch_fracs[0]:.1f}x faster there "
                     f"(median {1 / median:.1f}x) without beating the peak; 3x is within "
                     f"that ceiling at {sum(1 for f in torch_fracs if f <= 1 / 3)} of "
                     f"{len(torch_fracs)} shapes")
    big = [r for r in forward if r["N"] == 256 and r["H"] == 1024 and r.get("peak_frac")]
    if big:
        frac = min(r["peak_frac"] for r in big)
        verdict = "met" if frac >= 0.6 else "MISSED"
        lines.append("- ≥60% of the 1-thread sgemm peak at N=256 H=1024: "
                     f"{verdict}; " + ", ".join(f"L={r['L']} T={r['T']} {100 * r['peak_frac']:.0f}%"
                                                for r in big))
    return lines


def investigation_tables(shapes_run, torch_us):
    """Where the engine's time goes, from run_investigation()'s results."""
    by_family = {}
    for (family, params), entry in shapes_run.items():
        by_family.setdefault(family, {})[params] = entry
    gemm = {}
    for params, entry in by_family.get("BM_GemmShape", {}).items():
        p = dict(params)
        gemm.setdefault((p["H"], p["cols"]), {})[p["lib"]] = entry
    out = ["", "### Where the time goes", "",
           "Products at the engine's shapes, c (H x cols) += W (H x H) · x (H x cols): cols = N "
           "is one step's recurrent product, cols = T·N a chunk's input projection (OpenBLAS "
           "uses sgemv at cols = 1). PackedGemm is the engine's own kernel (weights packed at "
           "load); the engine uses it except at H <= 128 with cols >= 1024, where it uses Eigen.",
           "",
           "| H | cols | Eigen GFLOP/s | OpenBLAS GFLOP/s | PackedGemm GFLOP/s | "
           "PackedGemm/Eigen | PackedGemm/OpenBLAS |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for (h, cols), libs in sorted(gemm.items()):
        eigen, blas, packed = libs.get(0), libs.get(1), libs.get(2)
        cells = [str(h), str(cols)]
        cells += [f"{e['gflops']:.1f}" if e else "–" for e in (eigen, blas, packed)]
        cells += [f"{packed['gflops'] / other['gflops']:.2f}x" if packed and other else "–"
                  for other in (eigen, blas)]
        out.append("| " + " | ".join(cells) + " |")
    bandwidth = by_family.get("BM_ReadBandwidth", {})
    if bandwidth:
        out += ["", "One core's streaming read bandwidth (a product that streams its weights "
                "reads 2 bytes per FLOP at cols = 1):", "", "| buffer | GB/s |", "|---:|---:|"]
        for params, entry in sorted(bandwidth.items(), key=lambda kv: dict(kv[0])["KiB"]):
            out.append(f"| {dict(params)['KiB'] // 1024 or 0.25} MiB | "
                       f"{entry['gbytes_per_s']:.1f} |")
    proto = {}
    for params, entry in by_family.get("BM_ForwardProto", {}).items():
        p = dict(params)
        proto.setdefault((p["H"], p["L"], p["N"], p["T"]), {})[p["lib"]] = entry
    if proto:
        out += ["", "Forward stand-in (engine_bench BM_ForwardProto: the engine's loop with its "
                "products through Eigen or OpenBLAS, on 64-byte-aligned Eigen matrices), "
                "interleaved with the engine's Forward in one run:", "",
                "| H | L | N | T | engine µs | stand-in Eigen µs | stand-in OpenBLAS µs | "
                "engine / OpenBLAS stand-in | torch µs |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        engine = {(p["H"], p["L"], p["N"], p["T"]): e["us_per_call"]
                  for p, e in ((dict(k), v) for k, v in by_family.get("BM_Forward", {}).items())}
        for key, libs in sorted(proto.items()):
            eigen, blas = libs.get(0), libs.get(1)
            mine = engine.get(key)
            out.append("| " + " | ".join(
                [str(k) for k in key] +
                [fmt_us(mine), fmt_us(eigen and eigen["us_per_call"]),
                 fmt_us(blas and blas["us_per_call"]),
                 fmt_ratio(mine, blas and blas["us_per_call"]), fmt_us(torch_us.get(key))]) + " |")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine-bench", default=os.path.join(ROOT, "build-bench", "bench",
                                                               "engine_bench"))
    for dim, values in FORWARD_GRID.items():
        parser.add_argument(f"--{dim}", type=int, nargs="+", default=values)
    parser.add_argument("--sessions", type=int, nargs="*", default=STEP_BATCH_SESSIONS,
                        help="StepBatch session counts (none: skip StepBatch)")
    parser.add_argument("--min-time", type=float, default=0.1,
                        help="seconds per timing window (engine: --benchmark_min_time)")
    parser.add_argument("--repetitions", type=int, default=1,
                        help="timing windows per shape; the best counts")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time (needs a quiet machine); cpu: CPU time of the "
                        "computing thread (engine, torch) or process (ORT), which leaves out "
                        "time the process waits for a core but not the slowdown from work on the "
                        "other core (shared caches, memory, clocks)")
    parser.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--investigate", action="store_true",
                        help="also run engine_bench's per-shape products (Eigen vs OpenBLAS vs "
                        "PackedGemm), read bandwidth and Forward stand-in, and print where the "
                        "time goes")
    parser.add_argument("--node", default="/usr/bin/node")
    parser.add_argument("--onnx-dir", default=os.path.join(ROOT, "build-bench", "onnx"))
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument("--json-out", help="write every measurement as JSON here")
    args = parser.parse_args()
    if os.environ.get("OPENBLAS_CORETYPE"):
        print("compare_torch: OPENBLAS_CORETYPE is set; torch's OpenBLAS would use "
              f"{os.environ['OPENBLAS_CORETYPE']} kernels (run with env -u OPENBLAS_CORETYPE)",
              file=sys.stderr)

    load_before = load_average()
    started = time.time()
    # One (H, L) at a time, engine then torch then ORT on its shapes, so that a change in the
    # machine's load during the run falls on all three alike rather than on whichever ran last.
    context, engine, torch_us, ort_us = None, {}, {}, {}
    torch_version, ort_report, ort_problem = None, None, "skipped (--no-ort)"
    # The sgemm peak is measured again before every (H, L) group and the best figure of the
    # run is the yardstick: one calibration alone, taken while the clock or the other core was
    # in a slow phase, once came out 25% low and put engine figures above "100%".
    peaks, gemm_best = [], {}
    for hidden in args.H:
        for layers in args.L:
            filters = grid_filters(args, hidden, layers)
            ctx, results = run_engine(args.engine_bench, filters, args, None)
            context = context or ctx
            peaks.append(ctx["peak_gflops"])
            for (fam, params), r in results.items():
                if fam in ("BM_SgemmOpenBlas", "BM_EigenGemm"):
                    best = gemm_best.get((fam, params))
                    if best is None or r["wall_gflops"] > best["wall_gflops"]:
                        gemm_best[(fam, params)] = r
                else:
                    engine[(fam, params)] = r
            shapes = sorted({(hidden, layers, r["N"], r.get("T", CHUNK_STEPS))
                             for (fam, _), r in results.items()
                             if fam in ("BM_Forward", "BM_StepBatch")})
            torch_version, measured = run_torch(shapes, args.min_time, args.repetitions,
                                                args.clock)
            torch_us.update(measured)
            if not args.no_ort:
                report, measured, ort_problem = run_ort(shapes, args, floor=ort_report is None)
                ort_report = ort_report or report
                ort_us.update(measured)
    forward = sorted((r for (fam, _), r in engine.items() if fam == "BM_Forward"),
                     key=lambda r: (r["H"], r["L"], r["N"], r["T"]))
    step_batch = sorted((r for (fam, _), r in engine.items() if fam == "BM_StepBatch"),
                        key=lambda r: (r["H"], r["L"], r["N"]))
    gemm_names = [(fam, r) for (fam, _), r in gemm_best.items()]
    context["peak_gflops"] = max(peaks)
    for r in forward + step_batch:
        if context["peak_gflops"]:
            r["peak_frac"] = r["gflops"] / context["peak_gflops"]
    with_ort = bool(ort_us)
    load_after = load_average()

    out = ["### Machine and run", "",
           f"- CPU: {cpu_model()}, {os.cpu_count()} cores; load average before "
           f"{load_before}, after {load_after}; {time.time() - started:.0f} s in all",
           f"- GEMM yardstick: {context.get('gemm_library', '?')}; 1-thread sgemm peak "
           f"{context['peak_gflops']:.1f} GFLOP/s by {args.clock} time (best square sgemm "
           f"from 256³ to 2048³, measured before each of the {len(peaks)} groups: {min(peaks):.1f}–"
           f"{max(peaks):.1f}; the best is the \"% sgemm peak\" column's yardstick)",
           f"- torch {torch_version} (1 thread, inference_mode, float32); ONNX Runtime "
           + (f"{ort_report.get('ort_version')} via onnxruntime-node (intraOpNumThreads=1); "
              f"a call of a one-element model costs {ort_report.get('floor_us', 0):.1f} µs "
              "there (node binding and session overhead, included in every ORT figure)"
              if with_ort else f"not measured: {ort_problem}"),
           f"- timing: {args.clock}-clock time, mean per call over ≥{args.min_time} s after a "
           f"warm-up, best of {args.repetitions}", ""]
    out += ["### GEMM peak (wall-clock, best of the run)", "", "| GEMM | n | threads | GFLOP/s |",
            "|---|---:|---:|---:|"]
    for fam, r in sorted(gemm_names, key=lambda fr: (fr[0], fr[1].get("threads", 1), fr[1]["n"])):
        lib = "OpenBLAS cblas_sgemm" if fam == "BM_SgemmOpenBlas" else "Eigen 3.4 (engine's)"
        out.append(f"| {lib} | {r['n']} | {r.get('threads', 1)} | {r['wall_gflops']:.1f} |")
    out += ["", "### Forward: RNN(H, H, num_layers=L), input (T, N, H), h_0 zeros", "",
            table(forward, torch_us, ort_us, with_ort, lambda r: (r["H"], r["L"], r["N"], r["T"]),
                  ["H", "L", "N", "T"])]
    if step_batch:
        out += ["", f"### StepBatch: N sessions of batch 1, {CHUNK_STEPS} steps each, one call "
                f"(torch/ORT: one call on ({CHUNK_STEPS}, N, H))", "",
                table(step_batch, torch_us, ort_us, with_ort,
                      lambda r: (r["H"], r["L"], r["N"], CHUNK_STEPS), ["H", "L", "N"])]
    out += ["", "### Targets", ""] + target_lines(forward, step_batch, torch_us, ort_us, with_ort,
                                                  context["peak_gflops"])
    if args.investigate:
        out += investigation_tables(run_investigation(args, context["peak_gflops"]), torch_us)
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"context": context, "forward": forward, "step_batch": step_batch,
                       "gemm": [dict(r, family=fam) for fam, r in gemm_names], "torch_us": {str(k): v for k, v in torch_us.items()},
                       "ort_us": {str(k): v for k, v in ort_us.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
