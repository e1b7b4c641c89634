#!/usr/bin/env python3
"""Engine vs torch.nn.RNN / GRU / LSTM (and ONNX Runtime) on the same shapes, single-threaded.

Runs build-bench/bench/engine_bench (Google Benchmark, --benchmark_format=json) on the grid,
times torch.nn.RNN(H, H, num_layers=L) (float32, tanh), nn.GRU or nn.LSTM (--module; torch runs
its own fused GRU/LSTM kernels; torch.set_num_threads(1), torch.inference_mode()) on the same
shapes, and, when node and onnxruntime-node are there, the ONNX export of the same module in
ONNX Runtime (bench/onnx_bench.js, intraOpNumThreads=1; GRU and LSTM export as ONNX's native
GRU/LSTM ops, one per layer, which bench/export_onnx.py checks). Prints markdown tables (engine
us/call, torch us/call, torch/engine, ORT us/call, ORT/engine, GFLOP/s, fraction of the 1-thread
sgemm peak) and a check of the performance targets.

FLOPs per call: 2 * MACs per timestep per batch row * N * T, where one layer of G gates has
G * H * (in + H_out) MACs (G = 1 RNN, 3 GRU, 4 LSTM; in = H here, H_out = proj_size or H) plus
proj_size * H for LSTM's projection (engine_bench's MacsPerStep; macs_per_step() below).

Shapes: Forward, input (T, N, H), h_0 zeros. StepBatch, N sessions of batch 1 and 10 steps each
in one call; torch and ORT run the equivalent single call on input (10, N, H).
Every timing is the mean per call over a window of at least --min-time seconds after a warm-up
call, best of --repetitions windows (the same rule for all three). Run with /usr/bin/python3
and without OPENBLAS_CORETYPE (bench/run_engine_bench.sh does both).

  /usr/bin/python3 bench/compare_torch.py --out build-bench/engine_table.md
  /usr/bin/python3 bench/compare_torch.py --H 256 --L 2 --N 1 64 --T 10 --no-ort   # a subset
  /usr/bin/python3 bench/compare_torch.py --module gru lstm     # the GRU and LSTM grid

Durations on 2 cores (run_engine_bench.sh, --repetitions 3): --module rnn (the default) ~5 min
on the Xeon of BENCHMARKS.md "## Engine"; --module gru lstm --proj 256 took 6 min 45 s on the
2-core EPYC of "## GRU and LSTM" (sgemm peak 274 GFLOP/s) and should take ~15 min on that Xeon
(125 GFLOP/s), within the 20 minutes budgeted: shapes of more than --long-flops per call get
one timing window instead of --repetitions; the proj_size rows are ~1.5 min of it.
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
# GRU and LSTM (issue 12): StepBatch at the Forward N, so torch and ORT time (10, N, H) once.
GATED_GRID = {"H": [256, 512, 1024], "L": [1, 2], "N": [1, 8, 64, 256], "T": [1, 10, 100]}
GATED_SESSIONS = [1, 8, 64, 256]
CHUNK_STEPS = 10  # engine_bench's StepBatch chunk length
# module -> (engine_bench Forward family, StepBatch family, gates per cell, table name)
MODULES = {"rnn": ("BM_Forward", "BM_StepBatch", 1, "RNN"),
           "gru": ("BM_GruForward", "BM_GruStepBatch", 3, "GRU"),
           "lstm": ("BM_LstmForward", "BM_LstmStepBatch", 4, "LSTM")}
PROJ_FAMILY = "BM_LstmProjForward"  # LSTM(H, H, L, proj_size=P): H=1024, P=256 registered


def macs_per_step(module, hidden, layers, proj=0):
    """Multiply-adds per timestep per batch row of MODULE(H, H, num_layers=L[, proj_size=P]):
    per layer G * H * (in + H_out) + P * H, with G gates (RNN 1, GRU 3, LSTM 4), in = H for
    layer 0 and H_out above, H_out = P or H. The same count as RnnModel::MacsPerStep()."""
    gates = MODULES[module][2]
    h_out = proj or hidden
    return sum(gates * hidden * ((hidden if layer == 0 else h_out) + h_out) + proj * hidden
               for layer in range(layers))


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


def module_of(family, params):
    """The table's module label of an engine_bench result: rnn, gru, lstm or lstm_p{P}."""
    if family == PROJ_FAMILY:
        return "lstm_p{}".format(dict(params)["P"])
    for module, (forward, step_batch, _, _) in MODULES.items():
        if family in (forward, step_batch):
            return module
    return None


def module_parts(label):
    """("lstm", 256) for "lstm_p256"; (label, 0) otherwise."""
    if label.startswith("lstm_p"):
        return "lstm", int(label[len("lstm_p"):])
    return label, 0


def grid_filters(args, module, hidden, layers, sizes):
    """engine_bench filters for the Forward and StepBatch shapes of one (module, H, L) whose
    FLOPs per call are on one side of --long-flops: sizes is "short" or "long"."""
    forward, step_batch, _, _ = MODULES[module]
    grid, sessions = grid_of(args, module)
    want_long = sizes == "long"
    side = lambda n, t, p=0: is_long_call(args, module, hidden, layers, n, t, p) == want_long
    filters = []
    for n in grid["N"]:
        ts = [t for t in grid["T"] if side(n, t)]
        if ts:
            filters.append("{}/H:{}/L:{}/N:{}/T:{}/".format(forward, hidden, layers, n,
                                                             alternation(ts)))
        for p in (args.proj if module == "lstm" else []):
            ts = [t for t in grid["T"] if side(n, t, p)]
            if ts:
                filters.append("{}/H:{}/P:{}/L:{}/N:{}/T:{}/".format(
                    PROJ_FAMILY, hidden, p, layers, n, alternation(ts)))
    ns = [n for n in sessions if side(n, CHUNK_STEPS)]
    if ns:
        filters.append("{}/H:{}/L:{}/N:{}/".format(step_batch, hidden, layers, alternation(ns)))
    return filters


def is_long_call(args, module, hidden, layers, batch, steps, proj=0):
    """Whether a shape's call is long enough for one timing window (--long-flops; GRU and LSTM
    only: the RNN tables keep --repetitions windows everywhere, as published)."""
    return (module != "rnn" and
            2 * macs_per_step(module, hidden, layers, proj) * batch * steps > args.long_flops)


def grid_of(args, module):
    """The Forward grid and StepBatch session counts of a module: the flags, else its
    defaults (RNN: BENCHMARKS.md "## Engine"; GRU and LSTM: "## GRU and LSTM")."""
    defaults, sessions = ((FORWARD_GRID, STEP_BATCH_SESSIONS) if module == "rnn"
                          else (GATED_GRID, GATED_SESSIONS))
    grid = {dim: getattr(args, dim) or values for dim, values in defaults.items()}
    return grid, sessions if args.sessions is None else args.sessions


def run_investigation(args, peak):
    """engine_bench's per-shape products (Eigen vs OpenBLAS vs PackedGemm), read bandwidth, and the
    Forward stand-in next to the engine's Forward, each group in one run with Google Benchmark's
    random interleaving, so that the machine's drift falls on all of a comparison alike."""
    grid, _ = grid_of(args, "rnn")
    groups = [["BM_GemmShape/lib:[012]/H:{}/".format(alternation(grid["H"])),
               "BM_ReadBandwidth/"]]
    for hidden in grid["H"]:
        for layers in grid["L"]:
            groups.append(["BM_(Forward|ForwardProto/lib:[01])/H:{}/L:{}/N:{}/T:{}/".format(
                hidden, layers, alternation(grid["N"]), alternation(grid["T"]))])
    results = {}
    for filters in groups:
        results.update(run_engine(args.engine_bench, filters, args, peak, interleave=True)[1])
    return results


def run_engine(binary, filters, args, peak=None, interleave=False, repetitions=None):
    """Runs engine_bench on `filters`; returns its context and {(family, params): entry}.

    peak: the sgemm peak (GFLOP/s, by args.clock) for peak_frac; None measures it in this run,
    which then also runs the GEMM yardstick benchmarks. repetitions: args.repetitions unless
    given."""
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
               f"--benchmark_repetitions={repetitions or args.repetitions}",
               "--benchmark_format=console", "--benchmark_out_format=json",
               f"--benchmark_out={out_path}"]
        cmd.append(f"--kernel_isa={args.kernel_isa}")
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
        if module_of(family, key[1]):
            entry["module"] = module_of(family, key[1])
        if "gflops" in bench:
            entry["gflops"] = bench["gflops"] * wall_us / us
            entry["wall_gflops"] = bench["gflops"]
            if peak and module_of(family, key[1]):
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


def run_torch(shapes, min_time, repetitions, clock_name, is_long=lambda *shape: False):
    """shapes: (module label, H, L, N, T); those is_long(module, H, L, N, T, proj) says are
    long get one timing window."""
    # Debian's torch calls the system BLAS (OpenBLAS), which reads these when it loads.
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    # With one thread torch computes on the calling thread, so its CPU time is the call's.
    clock = time.perf_counter if clock_name == "wall" else time.thread_time
    models, results = {}, {}
    for label, hidden, layers, batch, steps in shapes:
        module, proj = module_parts(label)
        if (label, hidden, layers) not in models:
            torch.manual_seed(0)
            if module == "rnn":
                made = torch.nn.RNN(hidden, hidden, num_layers=layers, nonlinearity="tanh")
            elif module == "gru":
                made = torch.nn.GRU(hidden, hidden, num_layers=layers)
            else:
                made = torch.nn.LSTM(hidden, hidden, num_layers=layers, proj_size=proj)
            models[label, hidden, layers] = made.float().eval()
        rnn = models[label, hidden, layers]
        x = torch.rand(steps, batch, hidden) * 2 - 1
        windows = 1 if is_long(module, hidden, layers, batch, steps, proj) else repetitions
        with torch.inference_mode():
            seconds = best_mean_seconds(lambda: rnn(x), min_time, windows, clock)
        results[label, hidden, layers, batch, steps] = seconds * 1e6
        print(f"torch {label} H={hidden} L={layers} N={batch} T={steps}: {seconds * 1e6:.1f} us",
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
    for label, hidden, layers, batch, steps in shapes:
        module, proj = module_parts(label)
        if proj:
            continue  # torch.onnx cannot export LSTM's projection (torch 1.13)
        path = export_onnx.export(args.onnx_dir, hidden, layers, module=module)
        long_call = is_long_call(args, module, hidden, layers, batch, steps)
        spec["shapes"].append({"model": path, "module": label, "H": hidden, "L": layers,
                               "N": batch, "T": steps,
                               "repetitions": 1 if long_call else args.repetitions})
    if not spec["shapes"]:
        return None, {}, "no shape ONNX can export"
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    print(f"+ {node} bench/onnx_bench.js ({len(shapes)} shapes)", file=sys.stderr, flush=True)
    proc = subprocess.run([node, os.path.join(HERE, "onnx_bench.js")], input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None, {}, "onnx_bench.js failed: " + proc.stderr.strip().splitlines()[-1]
    report = json.loads(proc.stdout)
    results = {(r["module"], r["H"], r["L"], r["N"], r["T"]): r["us_per_call"]
               for r in report["results"]}
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
    """key_of(row): (module label, H, L, N, T), the key of torch_us and ort_us."""
    cols = head + ["engine µs/call", "µs/step", "GFLOP/s", "% sgemm peak", "torch µs/call",
                   "torch/engine"]
    if with_ort:
        cols += ["ORT µs/call", "ORT/engine"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for row in rows:
        key = key_of(row)
        steps = key[4]
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


def forward_key(r):
    return (r["module"], r["H"], r["L"], r["N"], r["T"])


def step_batch_key(r):
    return (r["module"], r["H"], r["L"], r["N"], CHUNK_STEPS)


def target_lines(module, forward, step_batch, torch_us, ort_us, with_ort, peak):
    """The performance targets of one module, each with its worst shape: RNN's from
    BENCHMARKS.md "## Targets", GRU's and LSTM's from issue 12 (>= 3x torch at N=1, faster than
    ORT everywhere, >= 80% of the sgemm peak at N >= 64)."""
    lines = []

    def worst(rows, key_of, other):
        ratios = [(other[key_of(r)] / r["us_per_call"], key_of(r)) for r in rows
                  if key_of(r) in other]
        return min(ratios) if ratios else None

    def shape_name(key, kind):
        return f"{kind} {key[0]} H={key[1]} L={key[2]} N={key[3]} T={key[4]}"

    gated = module != "rnn"
    n1 = [r for r in forward if r["N"] == 1]
    checks = ([("engine ≥3x torch at N=1", 3.0, n1, forward_key, torch_us, "Forward"),
               ("engine ≥3x torch at N=1 (StepBatch)", 3.0,
                [r for r in step_batch if r["N"] == 1], step_batch_key, torch_us, "StepBatch")]
              if gated else
              [("engine ≥5x torch at N=1", 5.0, n1, forward_key, torch_us, "Forward"),
               ("engine ≥3x torch at N≥64", 3.0, [r for r in forward if r["N"] >= 64],
                forward_key, torch_us, "Forward"),
               ("engine ≥3x torch at N≥64 (StepBatch)", 3.0,
                [r for r in step_batch if r["N"] >= 64], step_batch_key, torch_us, "StepBatch")])
    if with_ort:
        checks += [("engine faster than ORT at every shape", 1.0, forward, forward_key, ort_us,
                    "Forward"),
                   ("engine faster than ORT at every shape (StepBatch)", 1.0, step_batch,
                    step_batch_key, ort_us, "StepBatch")]
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
        r["gflops"] * r["us_per_call"] / torch_us[forward_key(r)] / peak
        for r in forward if r["N"] >= 64 and forward_key(r) in torch_us)
    if torch_fracs and peak:
        median = torch_fracs[len(torch_fracs) // 2]
        lines.append(f"- at N≥64 torch itself runs at {100 * torch_fracs[0]:.0f}–"
                     f"{100 * torch_fracs[-1]:.0f}% of the sgemm peak (median "
                     f"{100 * median:.0f}%), so no engine can be more than "
                     f"{1 / torch_fracs[-1]:.1f}–{1 / torch_fracs[0]:.1f}x faster there "
                     f"(median {1 / median:.1f}x) without beating the peak; 3x is within "
                     f"that ceiling at {sum(1 for f in torch_fracs if f <= 1 / 3)} of "
                     f"{len(torch_fracs)} shapes")
    if gated:
        for kind, rows, key_of in (("Forward", forward, forward_key),
                                   ("StepBatch", step_batch, step_batch_key)):
            big = [r for r in rows if r["N"] >= 64 and r.get("peak_frac") is not None]
            if not big:
                continue
            low = [r for r in big if r["peak_frac"] < 0.8]
            worst_row = min(big, key=lambda r: r["peak_frac"])
            verdict = "met" if not low else f"MISSED at {len(low)} of {len(big)} shapes"
            lines.append(f"- ≥80% of the 1-thread sgemm peak at N≥64 ({kind}): {verdict}; "
                         f"{100 * min(r['peak_frac'] for r in big):.0f}–"
                         f"{100 * max(r['peak_frac'] for r in big):.0f}%, worst "
                         f"{shape_name(key_of(worst_row), kind)}")
        return lines
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
                 fmt_ratio(mine, blas and blas["us_per_call"]), fmt_us(torch_us.get(("rnn",) + key))]) + " |")
    return out


def module_tables(label, forward, step_batch, torch_us, ort_us, with_ort, peak):
    """The Forward and StepBatch tables and the targets of one module label."""
    module, proj = module_parts(label)
    name = MODULES[module][3]
    args_text = f", proj_size={proj}" if proj else ""
    tanh = ", tanh" if module == "rnn" else ""
    title = (f"{name}(H, H, num_layers=L{args_text}){tanh}" if module != "rnn"
             else "RNN(H, H, num_layers=L)")
    out = ["", f"### Forward: {title}, input (T, N, H), h_0 zeros"
           + (", c_0 zeros" if module == "lstm" else ""), "",
           table(forward, torch_us, ort_us, with_ort, forward_key, ["H", "L", "N", "T"])]
    if step_batch:
        out += ["", f"### StepBatch{'' if module == 'rnn' else ' (' + name + ')'}: N sessions "
                f"of batch 1, {CHUNK_STEPS} steps each, one call (torch/ORT: one call on "
                f"({CHUNK_STEPS}, N, H))", "",
                table(step_batch, torch_us, ort_us, with_ort, step_batch_key, ["H", "L", "N"])]
    if proj:
        out += ["", "(ONNX Runtime: torch.onnx cannot export an LSTM with proj_size, so no ORT "
                "figures here.)"]
    heading = "### Targets" + ("" if module == "rnn" else f" ({name}{args_text})")
    out += ["", heading, ""] + target_lines(module if not proj else "lstm", forward, step_batch,
                                            torch_us, ort_us, with_ort and not proj, peak)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine-bench", default=os.path.join(ROOT, "build-bench", "bench",
                                                               "engine_bench"))
    parser.add_argument("--module", nargs="+", choices=list(MODULES), default=["rnn"],
                        help="which torch.nn modules to compare, in this order (default rnn: "
                        "BENCHMARKS.md \"## Engine\"; gru lstm: \"## GRU and LSTM\")")
    for dim, values in FORWARD_GRID.items():
        parser.add_argument(f"--{dim}", type=int, nargs="+", default=None,
                            help=f"default {' '.join(map(str, values))} for rnn, "
                            f"{' '.join(map(str, GATED_GRID[dim]))} for gru and lstm")
    parser.add_argument("--sessions", type=int, nargs="*", default=None,
                        help="StepBatch session counts (none: skip StepBatch; default "
                        f"{' '.join(map(str, STEP_BATCH_SESSIONS))} for rnn, "
                        f"{' '.join(map(str, GATED_SESSIONS))} for gru and lstm)")
    parser.add_argument("--proj", type=int, nargs="*", default=[],
                        help="with --module lstm: also LSTM(H, H, L, proj_size=P) Forward rows "
                        "for these P (engine_bench registers H=1024, P=256)")
    parser.add_argument("--min-time", type=float, default=0.1,
                        help="seconds per timing window (engine: --benchmark_min_time)")
    parser.add_argument("--repetitions", type=int, default=1,
                        help="timing windows per shape; the best counts")
    parser.add_argument("--long-flops", type=float, default=2e9,
                        help="GRU/LSTM shapes of more FLOPs per call than this (2e9: ~10 ms) "
                        "get one timing window instead of --repetitions, all three contenders "
                        "alike, so the full grid fits in ~15 minutes")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time (needs a quiet machine); cpu: CPU time of the "
                        "computing thread (engine, torch) or process (ORT), which leaves out "
                        "time the process waits for a core but not the slowdown from work on the "
                        "other core (shared caches, memory, clocks)")
    parser.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--kernel-isa", default="auto",
                        help="the engine's kernels: auto (the CPU's best), avx512, avx2, baseline")
    parser.add_argument("--investigate", action="store_true",
                        help="also run engine_bench's per-shape products (Eigen vs OpenBLAS vs "
                        "PackedGemm), read bandwidth and Forward stand-in, and print where the "
                        "time goes (RNN)")
    parser.add_argument("--node", default="/usr/bin/node")
    parser.add_argument("--onnx-dir", default=os.path.join(ROOT, "build-bench", "onnx"))
    parser.add_argument("--out", help="also write the markdown here")
    parser.add_argument("--json-out", help="write every measurement as JSON here")
    args = parser.parse_args()
    if os.environ.get("OPENBLAS_CORETYPE"):
        print("compare_torch: OPENBLAS_CORETYPE is set; torch's OpenBLAS would use "
              f"{os.environ['OPENBLAS_CORETYPE']} kernels (run with env -u OPENBLAS_CORETYPE)",
              file=sys.stderr)
    if args.proj and "lstm" not in args.module:
        parser.error("--proj needs --module lstm")

    load_before = load_average()
    started = time.time()
    # One (module, H, L) at a time, engine then torch then ORT on its shapes, so that a change
    # in the machine's load during the run falls on all three alike rather than on whichever
    # ran last.
    context, engine, torch_us, ort_us = None, {}, {}, {}
    torch_version, ort_report, ort_problem = None, None, "skipped (--no-ort)"
    # The sgemm peak is measured again before every group and the best figure of the run is
    # the yardstick: one calibration alone, taken while the clock or the other core was in a
    # slow phase, once came out 25% low and put engine figures above "100%".
    peaks, gemm_best = [], {}
    is_long = lambda module, h, l, n, t, p=0: is_long_call(args, module, h, l, n, t, p)
    for module in args.module:
        grid, _ = grid_of(args, module)
        for hidden in grid["H"]:
            for layers in grid["L"]:
                results = {}
                # Short calls get --repetitions windows, long ones (GRU/LSTM) one.
                for sizes, reps in (("short", None), ("long", 1)):
                    filters = grid_filters(args, module, hidden, layers, sizes)
                    if not filters:
                        continue
                    measure_peak = sizes == "short" or not results
                    ctx, found = run_engine(args.engine_bench, filters, args,
                                            None if measure_peak else peaks[-1],
                                            repetitions=reps)
                    context = context or ctx
                    if measure_peak:
                        peaks.append(ctx["peak_gflops"])
                    results.update(found)
                for (fam, params), r in results.items():
                    if fam in ("BM_SgemmOpenBlas", "BM_EigenGemm"):
                        best = gemm_best.get((fam, params))
                        if best is None or r["wall_gflops"] > best["wall_gflops"]:
                            gemm_best[(fam, params)] = r
                    else:
                        engine[(fam, params)] = r
                shapes = sorted({(r["module"], hidden, layers, r["N"], r.get("T", CHUNK_STEPS))
                                 for r in results.values() if "module" in r})
                if not shapes:
                    continue
                torch_version, measured = run_torch(shapes, args.min_time, args.repetitions,
                                                    args.clock, is_long)
                torch_us.update(measured)
                if not args.no_ort:
                    report, measured, problem = run_ort(shapes, args,
                                                        floor=ort_report is None)
                    ort_report = ort_report or report
                    ort_problem = problem if report is None else ort_problem
                    ort_us.update(measured)
    rows = sorted((r for r in engine.values() if "module" in r),
                  key=lambda r: (r["H"], r["L"], r["N"], r.get("T", 0)))
    labels = []
    for module in args.module:
        labels.append(module)
        if module == "lstm":
            labels += [f"lstm_p{p}" for p in args.proj]
    forward = {lab: [r for r in rows if r["module"] == lab and "T" in r] for lab in labels}
    step_batch = {lab: [r for r in rows if r["module"] == lab and "T" not in r] for lab in labels}
    gemm_names = [(fam, r) for (fam, _), r in gemm_best.items()]
    if context is None:
        sys.exit("compare_torch: no engine_bench results (check --module and the grid flags)")
    context["peak_gflops"] = max(peaks)
    for r in rows:
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
           f"warm-up, best of {args.repetitions}"
           + ("" if args.module == ["rnn"] else
              f" (GRU/LSTM shapes of more than {args.long_flops:.0e} FLOPs per call: one window, "
              "after a warm-up call for torch and ORT)"), ""]
    out += ["### GEMM peak (wall-clock, best of the run)", "", "| GEMM | n | threads | GFLOP/s |",
            "|---|---:|---:|---:|"]
    for fam, r in sorted(gemm_names, key=lambda fr: (fr[0], fr[1].get("threads", 1), fr[1]["n"])):
        lib = "OpenBLAS cblas_sgemm" if fam == "BM_SgemmOpenBlas" else "Eigen 3.4 (engine's)"
        out.append(f"| {lib} | {r['n']} | {r.get('threads', 1)} | {r['wall_gflops']:.1f} |")
    for label in labels:
        if forward[label] or step_batch[label]:
            out += module_tables(label, forward[label], step_batch[label], torch_us, ort_us,
                                 with_ort, context["peak_gflops"])
    if args.investigate:
        out += investigation_tables(run_investigation(args, context["peak_gflops"]), torch_us)
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"context": context, "modules": labels,
                       "forward": [r for lab in labels for r in forward[lab]],
                       "step_batch": [r for lab in labels for r in step_batch[lab]],
                       "gemm": [dict(r, family=fam) for fam, r in gemm_names],
                       "torch_us": {str(k): v for k, v in torch_us.items()},
                       "ort_us": {str(k): v for k, v in ort_us.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
