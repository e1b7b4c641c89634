#!/usr/bin/python3
"""Generates the torch.nn.RNN, GRU and LSTM parity cases that tests/parity/parity_test.cc checks.

PyTorch is the oracle: every expected number in DIR is computed here, live, by torch (float32,
module in eval(), under torch.inference_mode()). Nothing is hard-coded.

    /usr/bin/python3 tests/parity/gen_cases.py --out DIR [--count 200] [--seed S]

Writes, per case, DIR/<name>/model/ (config.json + model.safetensors, via
export_pytorch.export_module) and DIR/<name>/case.safetensors (input, h0 when given, output,
h_n), then DIR/manifest.json last, so an interrupted run leaves no manifest behind.

Cases:
  random_000 ... random_<count-1>: random nn.RNN configs; every combination of nonlinearity,
      bias, batch_first, bidirectional, batched input and h_0 given appears at least
      count // 64 times; num_layers 1-4, dropout values, H/T/N including 1 are dealt from
      shuffled decks so each class appears.
  gru_NNN, lstm_NNN, lstmp_NNN (count each): the same for nn.GRU, nn.LSTM and nn.LSTM with a
      random proj_size in [1, H); every combination of bias, batch_first, bidirectional,
      batched input and the initial state given (GRU: h_0 or not; LSTM: none, h_0 only, c_0
      only, both: torch gets zeros for the one not given) appears.
  seed_a, seed_b, seed_c: the seed notebook's three examples.
  edge_*: T=1, N=1, H=1, relu on large inputs, a larger model, and more.
  pipe_000 ... pipe_<PIPELINE_COUNT-1> (kind "pipeline"): random user-style nn.Modules
      (tests/parity/pipelines.py: an input layer, an RNN/GRU/LSTM core, a per-step head, every
      supported piece, ids input included) exported with export_module(model, dir, rnn=...,
      head=..., input_layer=...); the expected output is the user's own model(x), h_n / c_n
      the core's final state. The entry's "config" is the whole config.json; it also holds
      "pipeline": true, "input_kind" ("features" or "ids": ids are stored as float32 in the
      case file), "repr" (the pieces' torch reprs joined with " -> ") and "rnn_path".
  error cases (manifest "error_cases"): inputs torch rejects; torch's message is stored with
      the numbers ("key facts") the engine's INVALID_ARGUMENT message must also contain.

Tolerance (manifest "tolerance", asserted by the C++ test for every element):
|engine - torch| <= 1e-5 * max(1, |torch|). For values within [-1, 1] (every tanh output) that
is 1e-5 absolute; above, it is 1e-5 relative, because float32 rounds relative to the value: with
values ~100 (edge_relu_large) one float32 ulp is ~8e-6, and torch's own float32 result differs
from float64 by more than 1e-5 absolute, so no float32 engine can match it to 1e-5 absolute.
torch_f32_error records torch's own error on the same scale (max |float32 - float64| /
max(1, |float64|)), so a failure can be read against it.

Every case also holds a random split of T into chunks: unidirectional models stream them
through Forward; bidirectional ones buffer them time-major and run the whole sequence at the
end, as a streamed bidirectional session does. Unidirectional cases also hold a split of the
batch into sessions with their own chunk lengths per round (StepBatch).

Requires tools/export_pytorch.py (found through PYTHONPATH, or ../../tools next to this file).
"""

import argparse
import copy
import itertools
import json
import os
import random
import sys
import time
import warnings

import torch

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import export_pytorch  # noqa: E402  (tools/export_pytorch.py)
import pipelines  # noqa: E402  (tests/parity/pipelines.py, next to this file)

# Names the C++ test is compiled with (parity_test.cc lists the same): keep both in sync.
MIN_RANDOM_CASES = 200
NAMED_CASES = [
    "seed_a", "seed_b", "seed_c",
    "edge_t1", "edge_n1", "edge_h1", "edge_relu_large", "edge_large_model",
    "edge_unbatched_t1", "edge_bidir_batch_first_h0", "edge_deep_relu_no_bias",
    "edge_wide_projection", "edge_wide_projection_relu", "edge_panel_tail", "edge_deep_input",
    "gru_large_model", "gru_wide_projection", "gru_panel_tail", "lstm_large_model",
    "lstm_wide_projection", "lstmp_large_model", "lstmp_bidir_batch_first", "lstm_large_input",
]
# Random cases per module, with their name prefixes (parity_test.cc lists the same).
RANDOM_PREFIXES = {"RNN": "random", "GRU": "gru", "LSTM": "lstm", "LSTMP": "lstmp"}
# Pipeline cases (parity_test.cc lists the same): pipe_000 ... pipe_199.
PIPELINE_COUNT = 200
PIPELINE_PREFIX = "pipe_"
# A pipeline whose float32 torch result strays further than this from float64 (a Softmax or a
# LayerNorm can amplify rounding) is redrawn, so the 1e-5 tolerance stays meaningful.
PIPELINE_MAX_F32_ERROR = 2e-6
ERROR_CASES = [
    "error_input_size", "error_input_size_unbatched", "error_h0_batch", "error_h0_hidden",
    "error_h0_layers_bidirectional", "error_h0_batch_first", "error_input_4d", "error_input_1d",
    "error_2d_input_3d_h0", "error_3d_input_2d_h0", "error_t0", "error_t0_batch_first",
    "error_t0_unbatched", "error_gru_h0_hidden", "error_lstm_c0_hidden", "error_lstm_h0_proj",
    "error_lstm_c0_batch", "error_lstm_ranks", "error_lstm_unbatched_ranks",
]

BOOL_COMBOS = list(itertools.product(
    ["tanh", "relu"],  # nonlinearity
    [True, False],     # bias
    [True, False],     # batch_first
    [True, False],     # bidirectional
    [True, False],     # batched input
    [True, False],     # h_0 given
))


def deck(values, count, rng):
    """`count` items cycling through shuffled copies of `values`: every value appears."""
    out = []
    while len(out) < count:
        block = list(values)
        rng.shuffle(block)
        out.extend(block)
    return out[:count]


def split_positive(total, parts, rng):
    """`parts` positive ints summing to `total` (1 <= parts <= total)."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    bounds = [0] + cuts + [total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def split_nonnegative(total, parts, rng):
    """`parts` ints >= 0 summing to `total`; zeros allowed (a session idle for a round)."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    bounds = [0] + cuts + [total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def sessions_plan(batch, steps, rng):
    """Splits a batch into contiguous sessions, each with its own chunk lengths per round."""
    rounds = rng.randint(1, 4)
    sessions, begin = [], 0
    while begin < batch:
        size = rng.randint(1, min(3, batch - begin))
        sessions.append({"begin": begin, "size": size,
                         "chunks": split_nonnegative(steps, rounds, rng)})
        begin += size
    return sessions


def input_shape(cfg, steps, batch, batched):
    if not batched:
        return [steps, cfg["input_size"]]
    if cfg["batch_first"]:
        return [batch, steps, cfg["input_size"]]
    return [steps, batch, cfg["input_size"]]


def h0_shape(cfg, batch, batched, cell=False):
    """h_0's shape, or c_0's with cell=True (LSTM: H; h_0 is proj_size when set)."""
    rows = cfg["num_layers"] * (2 if cfg["bidirectional"] else 1)
    features = cfg["hidden_size"] if cell else (cfg.get("proj_size") or cfg["hidden_size"])
    return [rows, batch, features] if batched else [rows, features]


def full_config(module="RNN", **kw):
    """The config as the exporter writes it for `module`."""
    cfg = {"module": module, "input_size": None, "hidden_size": None, "num_layers": 1,
           "nonlinearity": "tanh", "bias": True, "batch_first": False, "dropout": 0.0,
           "bidirectional": False, "proj_size": 0}
    unknown = set(kw) - set(cfg)
    assert not unknown, unknown
    cfg.update(kw)
    if module != "RNN":
        assert cfg.pop("nonlinearity") == "tanh"
    if module != "LSTM":
        assert cfg.pop("proj_size") == 0
    return cfg


def deal(combos, count, rng):
    """The decks random cases are dealt from: the flag combinations, num_layers, dropout, and
    the size classes of H, T and N."""
    return (deck(combos, count, rng), deck([1, 2, 3, 4], count, rng),
            deck([0.0, 0.0, 0.1, 0.5, 1.0], count, rng),
            deck(["one", "small", "medium", "large"], count, rng),
            deck(["one", "short", "long"], count, rng), deck(["one", "small", "large"], count, rng))


GATED_COMBOS = {
    "GRU": list(itertools.product([True, False], [True, False], [True, False], [True, False],
                                  ["none", "h"])),
    "LSTM": list(itertools.product([True, False], [True, False], [True, False], [True, False],
                                   ["none", "h", "c", "hc"])),
}


def gated_specs(kind, count, rng):
    """Random GRU / LSTM / LSTM-with-proj_size cases, dealt from decks like random_specs."""
    module = "GRU" if kind == "GRU" else "LSTM"
    combos, layers, dropouts, hidden, steps, batch = deal(GATED_COMBOS[module], count, rng)
    ranges = {"one": (1, 1), "small": (2, 4), "medium": (5, 24), "large": (25, 40),
              "short": (2, 6), "long": (7, 16)}
    specs = []
    for i in range(count):
        bias, batch_first, bidir, batched, state = combos[i]
        h = rng.randint(*ranges[hidden[i]])
        extra = {}
        if kind == "LSTMP":
            h = max(h, 2)  # proj_size must be in [1, H)
            extra["proj_size"] = rng.randint(1, h - 1)
        cfg = full_config(
            module, input_size=rng.choice([1, rng.randint(2, 8), rng.randint(9, 40)]),
            hidden_size=h, num_layers=layers[i], bias=bias, batch_first=batch_first,
            dropout=dropouts[i], bidirectional=bidir, **extra)
        n = {"one": 1, "small": rng.randint(2, 3), "large": rng.randint(4, 7)}[batch[i]]
        specs.append({"name": "%s_%03d" % (RANDOM_PREFIXES[kind], i), "kind": "random",
                      "config": cfg, "steps": rng.randint(*ranges[steps[i]]),
                      "batch": n if batched else 1, "batched": batched,
                      "has_h0": "h" in state, "has_c0": "c" in state})
    return specs


def random_specs(count, rng):
    combos, layers, dropouts, hidden, steps, batch = deal(BOOL_COMBOS, count, rng)
    ranges = {"one": (1, 1), "small": (2, 4), "medium": (5, 24), "large": (25, 48),
              "short": (2, 6), "long": (7, 20)}
    specs = []
    for i in range(count):
        nonlin, bias, batch_first, bidir, batched, has_h0 = combos[i]
        cfg = full_config(
            input_size=rng.choice([1, rng.randint(2, 8), rng.randint(9, 40)]),
            hidden_size=rng.randint(*ranges[hidden[i]]), num_layers=layers[i],
            nonlinearity=nonlin, bias=bias, batch_first=batch_first, dropout=dropouts[i],
            bidirectional=bidir)
        n = {"one": 1, "small": rng.randint(2, 3), "large": rng.randint(4, 7)}[batch[i]]
        specs.append({"name": "random_%03d" % i, "kind": "random", "config": cfg,
                      "steps": rng.randint(*ranges[steps[i]]), "batch": n if batched else 1,
                      "batched": batched, "has_h0": has_h0})
    return specs


def named_specs():
    def spec(name, steps, batch, batched=True, h0=None, scale=1.0, **cfg):
        # h0: None (not given), "randn" or "ones"; an LSTM's c_0 is given with it.
        config = full_config(**cfg)
        return {"name": name, "kind": "named", "config": config, "steps": steps,
                "batch": batch, "batched": batched, "has_h0": h0 is not None, "h0": h0,
                "has_c0": h0 is not None and config["module"] == "LSTM", "input_scale": scale}
    return [
        # Seed notebook (a): RNN(100, 30) on one step of one sequence: output == h_n.
        spec("seed_a", 1, 1, input_size=100, hidden_size=30),
        # (b): two layers, dropout=0.5 (no effect in eval), h_0 = ones(2, 3, 10).
        spec("seed_b", 20, 3, h0="ones", input_size=100, hidden_size=10, num_layers=2,
             dropout=0.5),
        # (c): two bidirectional layers, h_0 = ones(4, 3, 15).
        spec("seed_c", 20, 3, h0="ones", input_size=100, hidden_size=15, num_layers=2,
             bidirectional=True),
        spec("edge_t1", 1, 4, h0="randn", input_size=6, hidden_size=5, num_layers=3),
        spec("edge_n1", 9, 1, h0="randn", input_size=6, hidden_size=5, num_layers=2,
             batch_first=True),
        spec("edge_h1", 12, 3, h0="randn", input_size=4, hidden_size=1, num_layers=2),
        spec("edge_relu_large", 10, 3, h0="randn", scale=100.0, input_size=8,
             hidden_size=6, num_layers=2, nonlinearity="relu"),
        spec("edge_large_model", 16, 4, h0="randn", input_size=64, hidden_size=256,
             num_layers=2),
        spec("edge_unbatched_t1", 1, 1, batched=False, h0="randn", input_size=3,
             hidden_size=4, num_layers=2, bidirectional=True),
        spec("edge_bidir_batch_first_h0", 7, 5, h0="randn", input_size=5, hidden_size=6,
             num_layers=3, bidirectional=True, batch_first=True, nonlinearity="relu",
             bias=False),
        spec("edge_deep_relu_no_bias", 15, 2, h0="randn", input_size=3, hidden_size=9,
             num_layers=4, nonlinearity="relu", bias=False, dropout=0.3),
        # The engine's two product backends and PackedGemm's edges: a wide input projection
        # of a small layer (T*N >= 1024 columns at H <= 128: Eigen's GEMM), H=150 (the last
        # register panel partly filled, several column tiles), and input_size 1100 (the
        # projection's depth split into passes).
        spec("edge_wide_projection", 40, 32, h0="randn", input_size=16, hidden_size=48,
             num_layers=2),
        spec("edge_wide_projection_relu", 36, 30, input_size=10, hidden_size=128,
             nonlinearity="relu", batch_first=True),
        spec("edge_panel_tail", 5, 11, h0="randn", input_size=37, hidden_size=150,
             num_layers=2),
        spec("edge_deep_input", 3, 2, h0="randn", input_size=1100, hidden_size=20),
        # GRU and LSTM at sizes the random cases do not reach: several register panels and
        # column tiles (H=256), the Eigen input projection (G*H <= 128 rows, T*N >= 1024
        # columns), a partly filled last panel (3*50, 4*37 rows), the projection's depth split.
        spec("gru_large_model", 12, 5, h0="randn", module="GRU", input_size=64,
             hidden_size=256, num_layers=2),
        spec("gru_wide_projection", 40, 30, h0="randn", module="GRU", input_size=12,
             hidden_size=40, batch_first=True),
        spec("gru_panel_tail", 6, 11, module="GRU", input_size=37, hidden_size=50,
             num_layers=2, bidirectional=True),
        spec("lstm_large_model", 12, 5, h0="randn", module="LSTM", input_size=64,
             hidden_size=256, num_layers=2),
        spec("lstm_wide_projection", 36, 32, h0="randn", module="LSTM", input_size=10,
             hidden_size=32),
        spec("lstmp_large_model", 10, 4, h0="randn", module="LSTM", input_size=80,
             hidden_size=300, proj_size=128, num_layers=2),
        spec("lstmp_bidir_batch_first", 9, 6, h0="randn", module="LSTM", input_size=7,
             hidden_size=37, proj_size=13, num_layers=3, bidirectional=True, batch_first=True,
             bias=False),
        spec("lstm_large_input", 3, 2, h0="randn", module="LSTM", input_size=1100,
             hidden_size=20),
    ]


def error_specs():
    """Inputs torch rejects. key_numbers: integer runs the engine's message must contain
    (each list contiguously, in any bracket style): the expected and the actual values."""
    def spec(name, x_shape, h_shape, key_numbers, c_shape=None, **cfg):
        return {"name": name, "config": full_config(**cfg), "input_shape": x_shape,
                "h0_shape": h_shape, "c0_shape": c_shape, "key_numbers": key_numbers}
    return [
        spec("error_input_size", [4, 3, 13], None, [[7], [13]], input_size=7, hidden_size=5),
        spec("error_input_size_unbatched", [4, 13], None, [[7], [13]], input_size=7,
             hidden_size=5, num_layers=2),
        spec("error_h0_batch", [4, 3, 7], [2, 6, 5], [[2, 3, 5], [2, 6, 5]], input_size=7,
             hidden_size=5, num_layers=2),
        spec("error_h0_hidden", [4, 3, 7], [2, 3, 9], [[2, 3, 5], [2, 3, 9]], input_size=7,
             hidden_size=5, num_layers=2),
        spec("error_h0_layers_bidirectional", [4, 3, 7], [2, 3, 5], [[4, 3, 5], [2, 3, 5]],
             input_size=7, hidden_size=5, num_layers=2, bidirectional=True),
        # batch_first: N is input dim 0 (3), never dim 1 (4); h_0 stays (L*D, N, H).
        spec("error_h0_batch_first", [3, 4, 7], [1, 4, 5], [[1, 3, 5], [1, 4, 5]],
             input_size=7, hidden_size=5, batch_first=True),
        # torch 1.13 unsqueezes a non-3-D input first, so it reports "got 5" for a 4-D
        # input ("got 2" for 1-D); the key fact is the input's real rank.
        spec("error_input_4d", [4, 3, 7, 1], None, [[4]], input_size=7, hidden_size=5),
        spec("error_input_1d", [7], None, [[1]], input_size=7, hidden_size=5),
        spec("error_2d_input_3d_h0", [4, 7], [1, 1, 5], [[2], [3]], input_size=7,
             hidden_size=5),
        spec("error_3d_input_2d_h0", [4, 3, 7], [1, 5], [[3], [2]], input_size=7,
             hidden_size=5),
        spec("error_t0", [0, 3, 7], None, [[0]], input_size=7, hidden_size=5),
        spec("error_t0_batch_first", [3, 0, 7], None, [[0]], input_size=7, hidden_size=5,
             batch_first=True),
        spec("error_t0_unbatched", [0, 7], None, [[0]], input_size=7, hidden_size=5),
        spec("error_gru_h0_hidden", [4, 3, 7], [2, 3, 9], [[2, 3, 5], [2, 3, 9]], module="GRU",
             input_size=7, hidden_size=5, num_layers=2),
        # LSTM: hidden[0] is h_0 (H_out), hidden[1] is c_0 (H).
        spec("error_lstm_c0_hidden", [4, 3, 7], [1, 3, 5], [[1, 3, 5], [1, 3, 6]],
             c_shape=[1, 3, 6], module="LSTM", input_size=7, hidden_size=5),
        spec("error_lstm_h0_proj", [4, 3, 7], [1, 3, 5], [[1, 3, 2], [1, 3, 5]],
             c_shape=[1, 3, 5], module="LSTM", input_size=7, hidden_size=5, proj_size=2),
        spec("error_lstm_c0_batch", [3, 4, 7], [2, 3, 2], [[2, 3, 5], [2, 4, 5]],
             c_shape=[2, 4, 5], module="LSTM", input_size=7, hidden_size=5, proj_size=2,
             batch_first=True, bidirectional=True),
        spec("error_lstm_ranks", [4, 3, 7], [1, 3, 5], [[3, 3, 2]], c_shape=[1, 5],
             module="LSTM", input_size=7, hidden_size=5),
        spec("error_lstm_unbatched_ranks", [4, 7], [1, 1, 5], [[2, 3, 2]], c_shape=[1, 5],
             module="LSTM", input_size=7, hidden_size=5),
    ]


def make_module(cfg, seed):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout > 0 with num_layers == 1
        rnn = export_pytorch.build_module(cfg)
    return rnn.float().eval()


def call(rnn, x, h0, c0):
    """torch's forward with the state given as the module takes it: an LSTM gets (h_0, c_0),
    zeros for the one not given, or nothing when neither is."""
    if not isinstance(rnn, torch.nn.LSTM):
        return rnn(x) if h0 is None else rnn(x, h0)
    if h0 is None and c0 is None:
        output, (h_n, c_n) = rnn(x)
    else:
        cfg = export_pytorch.config_from_module(rnn)
        batched = x.dim() == 3
        batch = (x.shape[0] if cfg["batch_first"] else x.shape[1]) if batched else 1
        zeros = lambda shape: torch.zeros(shape, dtype=x.dtype)  # noqa: E731
        h = h0 if h0 is not None else zeros(h0_shape(cfg, batch, batched))
        c = c0 if c0 is not None else zeros(h0_shape(cfg, batch, batched, cell=True))
        output, (h_n, c_n) = rnn(x, (h, c))
    return output, h_n, c_n


def write_case_file(case_dir, x, h0, c0, results):
    """<case_dir>/case.safetensors: input (ids as float32), h0 / c0 when given, and torch's
    results (output, h_n[, c_n])."""
    tensors = {"input": x.to(torch.float32).numpy(), "output": results[0].numpy(),
               "h_n": results[1].numpy()}
    if h0 is not None:
        tensors["h0"] = h0.numpy()
    if c0 is not None:
        tensors["c0"] = c0.numpy()
    if len(results) == 3:
        tensors["c_n"] = results[2].numpy()
    export_pytorch.write_safetensors(os.path.join(case_dir, "case.safetensors"), tensors)


def run_case(spec, seed, out_dir, rng):
    cfg = spec["config"]
    rnn = make_module(cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(input_shape(cfg, spec["steps"], spec["batch"], spec["batched"]),
                    generator=gen) * spec.get("input_scale", 1.0)
    h0 = c0 = None
    if spec["has_h0"]:
        shape = h0_shape(cfg, spec["batch"], spec["batched"])
        h0 = torch.ones(shape) if spec.get("h0") == "ones" else torch.randn(shape, generator=gen)
    if spec.get("has_c0"):
        c0 = torch.randn(h0_shape(cfg, spec["batch"], spec["batched"], cell=True), generator=gen)
    with torch.inference_mode():
        results = call(rnn, x, h0, c0)
        # torch's own float32 rounding error against the same module in float64, on the
        # tolerance's scale: |float32 - float64| / max(1, |float64|).
        rnn64 = copy.deepcopy(rnn).double()
        results64 = call(rnn64, x.double(), None if h0 is None else h0.double(),
                         None if c0 is None else c0.double())
        f32_error = _f32_error(results, results64)
    output, h_n = results[0], results[1]

    case_dir = os.path.join(out_dir, spec["name"])
    export_pytorch.export_module(rnn, os.path.join(case_dir, "model"))
    write_case_file(case_dir, x, h0, c0, results)

    entry = {"name": spec["name"], "kind": spec["kind"], "config": cfg,
             "batched": spec["batched"], "has_h0": spec["has_h0"],
             "has_c0": c0 is not None, "input_shape": list(x.shape),
             "output_shape": list(output.shape), "h_n_shape": list(h_n.shape),
             "c_n_shape": list(results[2].shape) if len(results) == 3 else None,
             "seed": seed, "torch_f32_error": f32_error,
             "model_dir": spec["name"] + "/model",
             "case_file": spec["name"] + "/case.safetensors"}
    steps = spec["steps"]
    entry["chunks"] = split_positive(steps, rng.randint(1, min(steps, 5)), rng)
    if not cfg["bidirectional"]:
        entry["sessions"] = sessions_plan(spec["batch"], steps, rng)
    return entry


def _f32_error(results, results64):
    """torch's own float32 rounding error on the tolerance's scale."""
    return max(float(((a.double() - b).abs() / b.abs().clamp(min=1.0)).max())
               for a, b in zip(results, results64))


def _state_arg(model, x, spec, gen, dtype=torch.float32):
    """(h0, c0, hx): the initial state the spec gives (None when not) and what the model
    takes: h_0, or (h_0, c_0) for an LSTM with zeros for the one not given."""
    given = spec["state"]
    if not given:
        return None, None, None
    cfg = export_pytorch.config_from_module(model.core())
    h0 = torch.randn(h0_shape(cfg, spec["batch"], spec["batched"]), generator=gen) \
        if "h" in given else None
    if cfg["module"] != "LSTM":
        return h0, None, h0
    c0 = torch.randn(h0_shape(cfg, spec["batch"], spec["batched"], cell=True), generator=gen) \
        if "c" in given else None
    h = h0 if h0 is not None else torch.zeros(h0_shape(cfg, spec["batch"], spec["batched"]))
    c = c0 if c0 is not None else torch.zeros(
        h0_shape(cfg, spec["batch"], spec["batched"], cell=True))
    return h0, c0, (h, c)


def _as_double(hx):
    if hx is None:
        return None
    return tuple(t.double() for t in hx) if isinstance(hx, tuple) else hx.double()


def _pipeline_results(model, x, hx):
    """(output, h_n[, c_n]): the user's model(x) and its core's final state."""
    with torch.inference_mode():
        output = model(x, hx)
        state = model.core_state(x, hx)
    return (output,) + (tuple(state) if isinstance(state, tuple) else (state,))


def run_pipeline_case(name, spec, seed, out_dir, rng):
    """Exports the spec's user model (redrawn with another seed while torch's own float32
    error exceeds PIPELINE_MAX_F32_ERROR) and writes its case."""
    for attempt in range(20):
        model_seed = seed + 100003 * attempt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropout > 0 with num_layers == 1
            model = pipelines.build(spec, model_seed)
        gen = torch.Generator().manual_seed(model_seed + 1)
        x = pipelines.input_of(spec, gen)
        h0, c0, hx = _state_arg(model, x, spec, gen)
        results = _pipeline_results(model, x, hx)
        model64 = copy.deepcopy(model).double()
        x64 = x if not x.is_floating_point() else x.double()
        f32_error = _f32_error(results, _pipeline_results(model64, x64, _as_double(hx)))
        if f32_error <= PIPELINE_MAX_F32_ERROR:
            break
    else:
        raise AssertionError(f"{name}: no draw with torch float32 error <= "
                             f"{PIPELINE_MAX_F32_ERROR}")
    case_dir = os.path.join(out_dir, name)
    paths = model.export_paths()
    config = export_pytorch.export_module(model, os.path.join(case_dir, "model"), **paths)
    output, h_n = results[0], results[1]
    write_case_file(case_dir, x, h0, c0, results)
    entry = {"name": name, "kind": "pipeline", "pipeline": True, "config": config,
             "input_kind": "ids" if pipelines.takes_ids(spec) else "features",
             "repr": export_pytorch.pipeline_repr(model, config),
             "rnn_path": config["rnn"]["path"],
             "batched": spec["batched"], "has_h0": h0 is not None, "has_c0": c0 is not None,
             "input_shape": list(x.shape), "output_shape": list(output.shape),
             "h_n_shape": list(h_n.shape),
             "c_n_shape": list(results[2].shape) if len(results) == 3 else None,
             "seed": model_seed, "torch_f32_error": f32_error,
             "model_dir": name + "/model", "case_file": name + "/case.safetensors"}
    steps = spec["steps"]
    entry["chunks"] = split_positive(steps, rng.randint(1, min(steps, 5)), rng)
    if not config["rnn"]["bidirectional"]:
        entry["sessions"] = sessions_plan(spec["batch"], steps, rng)
    return entry


def run_error_case(spec, seed, out_dir):
    cfg = spec["config"]
    rnn = make_module(cfg, seed)
    x = torch.zeros(spec["input_shape"])
    h0 = None if spec["h0_shape"] is None else torch.zeros(spec["h0_shape"])
    c0 = None if spec["c0_shape"] is None else torch.zeros(spec["c0_shape"])
    try:
        with torch.inference_mode():
            call(rnn, x, h0, c0)
    except (RuntimeError, ValueError) as e:
        message = str(e)
    else:
        raise AssertionError("%s: torch accepted input %s h0 %s" %
                             (spec["name"], spec["input_shape"], spec["h0_shape"]))
    case_dir = os.path.join(out_dir, spec["name"])
    export_pytorch.export_module(rnn, os.path.join(case_dir, "model"))
    return {"name": spec["name"], "config": cfg, "input_shape": spec["input_shape"],
            "h0_shape": spec["h0_shape"], "c0_shape": spec["c0_shape"], "torch_error": message,
            "key_numbers": spec["key_numbers"], "model_dir": spec["name"] + "/model"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--count", type=int, default=MIN_RANDOM_CASES,
                        help="random cases (the C++ test requires at least %d)" %
                        MIN_RANDOM_CASES)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args(argv)

    started = time.time()
    torch.set_num_threads(1)  # shared 2-core machines; the shapes are small
    os.makedirs(args.out, exist_ok=True)
    manifest_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # never leave a stale manifest next to fresh cases

    rng = random.Random(args.seed)
    specs = random_specs(args.count, rng)
    for kind in ("GRU", "LSTM", "LSTMP"):
        specs += gated_specs(kind, args.count, rng)
    specs += named_specs()
    cases = [run_case(spec, args.seed * 1000 + i, args.out, rng)
             for i, spec in enumerate(specs)]
    errors = [run_error_case(spec, args.seed * 1000 + len(specs) + i, args.out)
              for i, spec in enumerate(error_specs())]
    pipeline_seed = args.seed * 1000 + len(specs) + len(errors)
    cases += [run_pipeline_case("%s%03d" % (PIPELINE_PREFIX, i), spec, pipeline_seed + i,
                                args.out, rng)
              for i, spec in enumerate(pipelines.specs(PIPELINE_COUNT, rng, deck))]
    assert [s["name"] for s in named_specs()] == NAMED_CASES
    assert [s["name"] for s in error_specs()] == ERROR_CASES

    manifest = {"format": 1, "seed": args.seed, "torch_version": torch.__version__,
                "tolerance": 1e-5, "random_count": args.count,
                "random_prefixes": sorted(RANDOM_PREFIXES.values()),
                "pipeline_count": PIPELINE_COUNT, "pipeline_prefix": PIPELINE_PREFIX,
                "cases": cases,
                "error_cases": errors}
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, manifest_path)
    print("gen_cases: %d cases (%d random per module, %d named, %d pipelines), %d error cases "
          "in %s (%.1f s)" % (len(cases), args.count, len(NAMED_CASES), PIPELINE_COUNT,
                              len(errors), args.out, time.time() - started))


if __name__ == "__main__":
    main()
