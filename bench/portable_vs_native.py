#!/usr/bin/python3
"""The portable binary against a native one on the same host (issue 12, "one binary").

Builds engine_bench twice, as the image is built (-DRNNSERVE_MARCH=x86-64-v3: AVX2 baseline,
AVX-512 kernels chosen at load) in build-bench, and for this machine only
(-DRNNSERVE_MARCH=native) in build-bench-native, then times the same RNN, GRU and LSTM shapes
with: the portable binary on its own choice (auto), the portable binary held to its AVX2
kernels (--kernel_isa=avx2, what a build without the dispatch ran), and the native binary.
Every figure is the best of --repetitions windows of >= --min-time s (wall clock, one thread),
the three binaries interleaved shape by shape. Prints a markdown table; ~3 minutes on 2 cores.

    /usr/bin/python3 bench/portable_vs_native.py [--out FILE] [--no-build]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [f"BM_{family}/H:{h}/L:1/N:{n}/T:10/"
          for family in ("Forward", "GruForward", "LstmForward")
          for h in (256, 1024) for n in (1, 64)]


def build(folder, march):
    subprocess.run(["cmake", "-S", ROOT, "-B", folder, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    f"-DRNNSERVE_MARCH={march}", "-DRNNSERVE_BUILD_SERVER=OFF",
                    "-DRNNSERVE_BUILD_TESTS=OFF", "-DRNNSERVE_BUILD_BENCH=ON"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", folder, "-j2", "engine_bench"], check=True,
                   stdout=sys.stderr)
    return os.path.join(folder, "bench", "engine_bench")


def best_us(binary, isa, shape, args):
    """Best real time per call (us) of one shape over the repetitions."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        subprocess.run([binary, f"--kernel_isa={isa}", "--peak_gflops=0",
                        "--benchmark_filter=^" + re.escape(shape),
                        f"--benchmark_min_time={args.min_time}",
                        f"--benchmark_repetitions={args.repetitions}",
                        "--benchmark_out_format=json", f"--benchmark_out={out.name}"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = json.load(open(out.name))
    times = [b["real_time"] for b in report["benchmarks"] if b.get("run_type") == "iteration"]
    if not times:
        raise SystemExit(f"no timing for {shape}")
    unit = report["benchmarks"][0]["time_unit"]
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]
    return min(times) * scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    parser.add_argument("--min-time", type=float, default=0.1)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    portable = os.path.join(ROOT, "build-bench", "bench", "engine_bench")
    native = os.path.join(ROOT, "build-bench-native", "bench", "engine_bench")
    if not args.no_build:
        portable = build(os.path.join(ROOT, "build-bench"), "x86-64-v3")
        native = build(os.path.join(ROOT, "build-bench-native"), "native")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu).group(1).strip()
    lines = [f"CPU: {model}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} "
             f"at the start; best of {args.repetitions} windows of >= {args.min_time} s", "",
             "| shape (T=10, L=1) | portable, auto us | portable, avx2 us | "
             "native us | portable auto / native | avx2 / auto |",
             "|---|---:|---:|---:|---:|---:|"]
    for shape in SHAPES:
        auto = best_us(portable, "auto", shape, args)
        avx2 = best_us(portable, "avx2", shape, args)
        nat = best_us(native, "auto", shape, args)
        name = shape.rstrip("/").replace("BM_", "").replace("/L:1", "").replace("/T:10", "")
        lines.append(f"| {name} | {auto:.1f} | {avx2:.1f} | {nat:.1f} | {auto / nat:.2f} | "
                     f"{avx2 / auto:.2f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines.append("")
    lines.append(f"load average at the end {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
