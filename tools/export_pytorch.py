#!/usr/bin/python3
"""Exports a torch.nn.RNN, GRU or LSTM to an rnnserve model folder (config.json +
model.safetensors).

Needs only Debian's python3-torch and python3-numpy: the safetensors file is written by hand
(8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, then
float32 little-endian data in sorted-name order), so no `safetensors` package is required.

As a module (other scripts import exactly these):
    config_from_module(rnn) -> dict (as config.json holds it, "module" first)
    normalize_config(config) -> dict (torch's constructor arguments; config_module(config)
        names the class)
    build_module(config) -> torch.nn.RNN / GRU / LSTM
    export_module(rnn, out_dir)
    export_state_dict(state_dict, config, out_dir)
    write_safetensors(path, tensors)
    read_safetensors(path) -> dict[str, numpy.ndarray]

From the shell:
    tools/export_pytorch.py --out DIR --module-file model.pt
    tools/export_pytorch.py --out DIR --state-dict sd.pt --config config.json
    tools/export_pytorch.py --out DIR --demo
    tools/export_pytorch.py --out DIR --input-size 100 --hidden-size 10 [--num-layers 2 ...]
    tools/export_pytorch.py --out DIR --module LSTM --input-size 80 --hidden-size 512 \
        --proj-size 128
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

MODULES = ("RNN", "GRU", "LSTM")
# Gate blocks stacked in weight_ih/weight_hh: GRU r, z, n; LSTM i, f, g, o.
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}

# "module", then torch's constructor arguments in its order, with its defaults (None:
# required). "nonlinearity" is RNN's only; "proj_size" is LSTM's only.
CONFIG_DEFAULTS = {
    "module": "RNN",
    "input_size": None,
    "hidden_size": None,
    "num_layers": 1,
    "nonlinearity": "tanh",
    "bias": True,
    "batch_first": False,
    "dropout": 0.0,
    "bidirectional": False,
    "proj_size": 0,
}


def module_keys(module):
    """The config keys a module takes, in order (what the exporter writes)."""
    return [key for key in CONFIG_DEFAULTS
            if not (key == "nonlinearity" and module != "RNN")
            and not (key == "proj_size" and module != "LSTM")]

# Same ceiling as the C++ loader: a larger header is refused as hostile.
_MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def _is_int(value):
    # bool is an int subclass in Python, but `True` is not a size.
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_config(config):
    """The torch constructor arguments of `config`, defaults filled in and checked (see
    full_config): torch.nn.<config_module(config)>(**normalize_config(config)) builds it.
    Every key but "module"."""
    return {key: value for key, value in full_config(config).items() if key != "module"}


def config_module(config):
    """"RNN", "GRU" or "LSTM": the module a config names (absent: RNN), after checking it."""
    return full_config(config)["module"]


def full_config(config):
    """Returns the config as config.json holds it: "module", then every key the module takes,
    defaults filled in, raising ValueError like torch would.

    Mirrors the C++ ParseConfigJson: unknown keys, wrong types and keys the module does not
    take ("nonlinearity" for GRU/LSTM, a non-zero "proj_size" for RNN/GRU) are errors. An
    absent "module" means RNN.
    """
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; known keys: "
                         f"{', '.join(CONFIG_DEFAULTS)}")
    module = config.get("module", "RNN")
    if module not in MODULES:
        raise ValueError(f"Unknown module {module!r}. Select from 'RNN', 'GRU' or 'LSTM'.")
    if module != "RNN" and "nonlinearity" in config:
        raise ValueError(f"config key 'nonlinearity' applies only to module RNN; this config's "
                         f"module is {module}")
    full = {"module": module}
    for key, default in CONFIG_DEFAULTS.items():
        if key == "module":
            continue
        if key not in config:
            if default is None:
                raise ValueError(f"config is missing required key '{key}'")
            full[key] = default
            continue
        value = config[key]
        if key in ("input_size", "hidden_size", "num_layers", "proj_size"):
            if not _is_int(value):
                raise ValueError(f"config key '{key}' must be an integer, got {value!r}")
            if key == "proj_size":
                if value < 0:
                    raise ValueError("proj_size should be a positive integer or zero to "
                                     f"disable projections, got {value}")
            elif value <= 0:
                raise ValueError(f"{key} must be greater than zero, got {value}")
        elif key == "nonlinearity":
            if value not in ("tanh", "relu"):
                raise ValueError(f"Unknown nonlinearity {value!r}. Select from 'tanh' or 'relu'.")
        elif key == "dropout":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"config key 'dropout' must be a number, got {value!r}")
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"dropout should be a number in range [0, 1], got {value}")
        elif not isinstance(value, bool):
            raise ValueError(f"config key '{key}' must be a boolean, got {value!r}")
        full[key] = value
    proj_size = full.pop("proj_size")
    if proj_size >= full["hidden_size"]:
        raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size "
                         f"{proj_size} and hidden_size {full['hidden_size']}")
    if proj_size > 0 and module != "LSTM":
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU "
                         f"(module is {module})")
    if module != "RNN":
        del full["nonlinearity"]
    if module == "LSTM":
        full["proj_size"] = proj_size
    return full


def parameter_shapes(config):
    """{name: shape} of torch.nn.<module>(**config).named_parameters(), in torch's order."""
    c = full_config(config)
    hidden = c["hidden_size"]
    rows = GATES[c["module"]] * hidden
    proj = c.get("proj_size", 0)
    real_hidden = proj if proj > 0 else hidden
    directions = 2 if c["bidirectional"] else 1
    shapes = {}
    for layer in range(c["num_layers"]):
        layer_input = c["input_size"] if layer == 0 else directions * real_hidden
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
            shapes["weight_ih" + suffix] = (rows, layer_input)
            shapes["weight_hh" + suffix] = (rows, real_hidden)
            if c["bias"]:
                shapes["bias_ih" + suffix] = (rows,)
                shapes["bias_hh" + suffix] = (rows,)
            if proj > 0:
                shapes["weight_hr" + suffix] = (proj, hidden)
    return shapes


def _module_name(rnn):
    for name in MODULES:
        if type(rnn) is getattr(torch.nn, name):
            return name
    raise TypeError(f"expected a torch.nn.RNN, GRU or LSTM, got {type(rnn).__name__}")


def config_from_module(rnn):
    """The module name and its constructor arguments under torch's names."""
    module = _module_name(rnn)
    config = {
        "module": module,
        "input_size": int(rnn.input_size),
        "hidden_size": int(rnn.hidden_size),
        "num_layers": int(rnn.num_layers),
        "nonlinearity": str(getattr(rnn, "nonlinearity", "tanh")),
        "bias": bool(rnn.bias),
        "batch_first": bool(rnn.batch_first),
        "dropout": float(rnn.dropout),
        "bidirectional": bool(rnn.bidirectional),
        "proj_size": int(rnn.proj_size),
    }
    return {key: config[key] for key in module_keys(module)}


def build_module(config):
    """A freshly initialised torch module for `config` (torch's default init)."""
    return getattr(torch.nn, config_module(config))(**normalize_config(config))


def _looks_like(state_dict, module):
    """What module a state_dict looks like, from weight_hh_l0 and weight_hr_l0, when that is
    not `module`; else None."""
    hh = state_dict.get("weight_hh_l0")
    shape = tuple(getattr(hh, "shape", ()))
    if len(shape) != 2 or shape[1] <= 0:
        return None
    rows, cols = shape
    if "weight_hr_l0" in state_dict:
        guess, why = "LSTM", "an LSTM with proj_size (it has weight_hr_l0)"
    elif rows == cols:
        guess, why = "RNN", f"an RNN (weight_hh_l0 is {shape}: H rows)"
    elif rows == 3 * cols:
        guess, why = "GRU", f"a GRU (weight_hh_l0 is {shape}: 3H rows r, z, n)"
    elif rows == 4 * cols:
        guess, why = "LSTM", f"an LSTM (weight_hh_l0 is {shape}: 4H rows i, f, g, o)"
    else:
        return None
    return None if guess == module else why


def _encode_tensor(name, value):
    """(safetensors dtype, shape, little-endian bytes) of a torch tensor or array-like."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            # numpy has no bfloat16; bf16 -> f32 is exact, and bf16 is the top half of f32.
            words = (value.float().contiguous().numpy().view(np.uint32) >> 16).astype("<u2")
            return "BF16", list(value.shape), words.tobytes()
        value = value.numpy()
    value = np.asarray(value)
    if value.dtype == np.float16:
        return "F16", list(value.shape), np.ascontiguousarray(value, dtype="<f2").tobytes()
    if value.dtype in (np.float32, np.float64):
        return "F32", list(value.shape), np.ascontiguousarray(value, dtype="<f4").tobytes()
    raise ValueError(f"tensor '{name}' has dtype {value.dtype}; expected a floating-point "
                     "tensor (float32, float64, float16 or bfloat16)")


def write_safetensors(path, tensors):
    """Writes {name: torch.Tensor or numpy array} as safetensors, names sorted, data packed.

    float16 stays F16 and bfloat16 stays BF16 (handy for fixtures); float32 and float64 are
    written as F32; anything else raises ValueError.
    """
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        dtype, shape, data = _encode_tensor(name, tensors[name])
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the data section starts 8-byte aligned, as the format recommends.
    header_bytes += b" " * (-len(header_bytes) % 8)
    _replace_file(path, [struct.pack("<Q", len(header_bytes)), header_bytes] + chunks)


def _replace_file(path, chunks):
    """Writes `chunks` to a temporary file and renames it over `path`, so a server watching
    the folder never reads half a file."""
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp_path, path)


def _reject_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"duplicate keys {duplicates}")
    return dict(pairs)


def _is_index_list(value, length=None):
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(_is_int(v) and v >= 0 for v in value))


def read_safetensors(path):
    """Reads a safetensors file (F32, F16 or BF16) into {name: float32 numpy array}.

    Every dtype comes back as float32, as the C++ loader sees it. Raises ValueError on a
    malformed file.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, shorter than the 8-byte header length")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if header_size > min(_MAX_HEADER_BYTES, len(blob) - 8):
        raise ValueError(f"{path}: header length {header_size} is out of range")
    try:
        header = json.loads(blob[8:8 + header_size].decode("utf-8"),
                            object_pairs_hook=_reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header must be a JSON object")
    data = memoryview(blob)[8 + header_size:]
    tensors = {}
    ranges = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if (not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}
                or not isinstance(entry["dtype"], str) or entry["dtype"] not in _DTYPE_BYTES
                or not _is_index_list(entry["shape"])
                or not _is_index_list(entry["data_offsets"], 2)):
            raise ValueError(f"{path}: tensor '{name}' has a malformed entry {entry!r}; "
                             "supported dtypes: F32, F16, BF16")
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not begin <= end <= len(data) or end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise ValueError(f"{path}: tensor '{name}' has data_offsets {[begin, end]} that do "
                             f"not fit shape {shape} and the {len(data)}-byte data section")
        raw = data[begin:end]
        if dtype == "F32":
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == "F16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        tensors[name] = values.reshape(shape)
        ranges.append((begin, end, name))
    # The tensors must tile the data section exactly: no overlaps, gaps or trailing bytes.
    covered = 0
    for begin, end, name in sorted(ranges):
        if begin != covered:
            raise ValueError(f"{path}: tensor '{name}' starts at data byte {begin}, expected "
                             f"{covered} (overlap or gap)")
        covered = end
    if covered != len(data):
        raise ValueError(f"{path}: {len(data) - covered} trailing bytes after the last tensor")
    return tensors


def export_state_dict(state_dict, config, out_dir):
    """Writes <out_dir>/config.json and <out_dir>/model.safetensors.

    `state_dict` must hold exactly the parameters torch.nn.<module>(**config) has, with their
    shapes; otherwise ValueError lists every missing, unexpected or misshaped name. Values
    are written as float32.
    """
    full = full_config(config)
    expected = parameter_shapes(full)
    problems = []
    tensors = {}
    for name, shape in expected.items():
        if name not in state_dict:
            problems.append(f"missing parameter '{name}' with shape {shape}")
            continue
        value = state_dict[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().to(torch.float32).contiguous().numpy()
        else:
            value = np.ascontiguousarray(value, dtype=np.float32)
        if tuple(value.shape) != shape:
            problems.append(f"parameter '{name}' has shape {tuple(value.shape)}, "
                            f"expected {shape}")
        tensors[name] = value
    for name in state_dict:
        if name not in expected:
            problems.append(f"unexpected parameter '{name}'")
    if problems:
        looks = _looks_like(state_dict, full["module"])
        prefix = f"the weights look like {looks}, but " if looks else ""
        raise ValueError(f"{prefix}state_dict does not match {full['module']} config "
                         f"{full}: " + "; ".join(problems))
    os.makedirs(out_dir, exist_ok=True)
    config_text = json.dumps(full, indent=2) + "\n"
    _replace_file(os.path.join(out_dir, CONFIG_FILE), [config_text.encode("utf-8")])
    write_safetensors(os.path.join(out_dir, WEIGHTS_FILE), tensors)


def export_module(rnn, out_dir):
    """Exports a torch.nn.RNN, GRU or LSTM's config and weights to `out_dir`."""
    export_state_dict(rnn.state_dict(), config_from_module(rnn), out_dir)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a torch.nn.RNN, GRU or LSTM to an rnnserve model folder "
                    "(config.json + model.safetensors).")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="model folder to write (created if missing)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--module-file", metavar="model.pt",
                        help="a torch.save()d torch.nn.RNN, GRU or LSTM module")
    source.add_argument("--state-dict", metavar="sd.pt",
                        help="a torch.save()d state_dict; needs --config")
    source.add_argument("--demo", action="store_true",
                        help="RNN(100, 10, num_layers=2) initialised with torch.manual_seed(0)")
    source.add_argument("--input-size", type=int,
                        help="export a freshly initialised module with this input_size "
                             "(with --hidden-size and the options below)")
    parser.add_argument("--config", metavar="config.json",
                        help="module and constructor arguments for --state-dict")
    fresh = parser.add_argument_group("freshly initialised module (with --input-size)")
    fresh.add_argument("--module", choices=MODULES, default="RNN")
    fresh.add_argument("--hidden-size", type=int)
    fresh.add_argument("--num-layers", type=int, default=1)
    fresh.add_argument("--nonlinearity", choices=("tanh", "relu"),
                       help="RNN only (default tanh)")
    fresh.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True)
    fresh.add_argument("--batch-first", action=argparse.BooleanOptionalAction, default=False)
    fresh.add_argument("--dropout", type=float, default=0.0)
    fresh.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=False)
    fresh.add_argument("--proj-size", type=int, help="LSTM only (default 0: no projection)")
    fresh.add_argument("--seed", type=int, default=0, help="torch.manual_seed (default 0)")
    args = parser.parse_args(argv)
    if args.state_dict and not args.config:
        parser.error("--state-dict needs --config")
    if args.config and not args.state_dict:
        parser.error("--config goes with --state-dict")
    if args.input_size is not None and args.hidden_size is None:
        parser.error("--input-size needs --hidden-size")
    return args


def main(argv=None):
    args = _parse_args(argv)
    try:
        if args.module_file:
            # A whole pickled module: only load files you trust (weights_only cannot apply).
            rnn = torch.load(args.module_file, map_location="cpu", weights_only=False)
            export_module(rnn, args.out)
        elif args.state_dict:
            with open(args.config) as f:
                config = json.load(f)
            state_dict = torch.load(args.state_dict, map_location="cpu", weights_only=True)
            export_state_dict(state_dict, config, args.out)
        else:
            if args.demo:
                config = {"input_size": 100, "hidden_size": 10, "num_layers": 2}
                seed = 0
            else:
                config = {"module": args.module, "input_size": args.input_size,
                          "hidden_size": args.hidden_size, "num_layers": args.num_layers,
                          "bias": args.bias, "batch_first": args.batch_first,
                          "dropout": args.dropout, "bidirectional": args.bidirectional}
                if args.nonlinearity is not None:
                    config["nonlinearity"] = args.nonlinearity
                if args.proj_size is not None:
                    config["proj_size"] = args.proj_size
                seed = args.seed
            # Validate first so a bad flag gets our message rather than torch's.
            config = full_config(config)
            torch.manual_seed(seed)
            export_module(build_module(config), args.out)
    except (ValueError, TypeError, OSError) as e:
        print(f"export_pytorch: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {os.path.join(args.out, CONFIG_FILE)} and "
          f"{os.path.join(args.out, WEIGHTS_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
