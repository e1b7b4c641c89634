#!/usr/bin/python3
"""Exports a torch.nn.RNN, GRU or LSTM, or a user's own nn.Module built around one (an optional
input layer, the recurrent core, an optional per-step head), to an rnnserve model folder
(config.json + model.safetensors; docs/model-format.md describes both forms).

Needs only Debian's python3-torch and python3-numpy: the safetensors file is written by hand
(8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, then
float32 little-endian data in sorted-name order), so no `safetensors` package is required.

As a module (other scripts import exactly these):
    config_from_module(rnn) -> dict (as config.json holds it, "module" first)
    normalize_config(config) -> dict (torch's constructor arguments; config_module(config)
        names the class)
    build_module(config) -> torch.nn.RNN / GRU / LSTM
    export_module(model, out_dir, rnn=None, head=None, input_layer=None, verify=True)
        -> the config written. A bare RNN/GRU/LSTM with no paths: the core-only form. Else
        `rnn`, `head`, `input_layer` are attribute paths in `model` ("rnn", "encoder.lstm";
        head and input_layer may also be lists of paths, applied in order); the folder is
        verified against model(x) before it appears.
    export_state_dict(state_dict, config, out_dir)   (either form of config)
    full_pipeline_config(config) -> dict (a pipeline config checked, defaults filled in)
    load_model_folder(folder) -> torch.nn.Module evaluating the folder's model in torch
    pipeline_repr(module, config) -> "Embedding(1000, 64) -> LSTM(64, 256) -> Linear(...)"
    load_module_file(path, import_paths=()) -> the torch.save()d module
    write_safetensors(path, tensors)
    read_safetensors(path) -> dict[str, numpy.ndarray]

From the shell (every failure exits 2 with a message):
    tools/export_pytorch.py --out DIR --module-file model.pt      (a bare nn.RNN/GRU/LSTM)
    tools/export_pytorch.py --out DIR --module-file model.pt --rnn rnn --head head \
        [--input-layer embed] [--import-path DIR]... [--no-verify]
    tools/export_pytorch.py --out DIR --state-dict sd.pt --config config.json
    tools/export_pytorch.py --out DIR --demo
    tools/export_pytorch.py --out DIR --input-size 100 --hidden-size 10 [--num-layers 2 ...]
    tools/export_pytorch.py --out DIR --module LSTM --input-size 80 --hidden-size 512 \
        --proj-size 128
"""

import argparse
import ast
import contextlib
import glob
import json
import math
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
import types
import warnings

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


def _check_keys(config, known, what):
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"{what} has unknown keys {unknown}; known keys: {', '.join(known)}")


def _given_keys(config, defaults, required, where, full):
    """Fills `full` with the defaults of the keys `config` leaves out (ValueError for a
    `required` one) and yields (key, value) of those it gives, in `defaults`' order."""
    for key, default in defaults.items():
        if key in config:
            yield key, config[key]
        elif default is required:
            raise ValueError(f"{where} is missing required key '{key}'")
        else:
            full[key] = default


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
    _check_keys(config, CONFIG_DEFAULTS, "config")
    module = config.get("module", "RNN")
    if module not in MODULES:
        raise ValueError(f"Unknown module {module!r}. Select from 'RNN', 'GRU' or 'LSTM'.")
    if module != "RNN" and "nonlinearity" in config:
        raise ValueError(f"config key 'nonlinearity' applies only to module RNN; this config's "
                         f"module is {module}")
    full = {"module": module}
    defaults = {key: value for key, value in CONFIG_DEFAULTS.items() if key != "module"}
    for key, value in _given_keys(config, defaults, None, "config", full):
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


class ExportError(ValueError):
    """A model or file the exporter refuses; the message says why and what to do."""


class AssumedDefaultsWarning(UserWarning):
    """A state_dict export's config left out a key whose torch default was assumed."""


def _tensor_float32(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float32).contiguous().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def _checked_tensors(state_dict, expected, what, looks=None):
    """{name: float32 array} of exactly the `expected` {name: shape}; else ValueError listing
    every missing, unexpected or misshaped name."""
    problems = []
    tensors = {}
    for name, shape in expected.items():
        if name not in state_dict:
            problems.append(f"missing parameter '{name}' with shape {shape}")
            continue
        value = _tensor_float32(state_dict[name])
        if tuple(value.shape) != shape:
            problems.append(f"parameter '{name}' has shape {tuple(value.shape)}, "
                            f"expected {shape}")
        tensors[name] = value
    for name in state_dict:
        if name not in expected:
            problems.append(f"unexpected parameter '{name}'")
    if problems:
        prefix = f"the weights look like {looks}, but " if looks else ""
        raise ValueError(f"{prefix}state_dict does not match {what}: " + "; ".join(problems))
    return tensors


def _write_folder(out_dir, config, tensors):
    os.makedirs(out_dir, exist_ok=True)
    config_text = json.dumps(config, indent=2) + "\n"
    _replace_file(os.path.join(out_dir, CONFIG_FILE), [config_text.encode("utf-8")])
    write_safetensors(os.path.join(out_dir, WEIGHTS_FILE), tensors)


def _warn_assumed_defaults(core, where):
    """Warns for each of "module", "batch_first" and (RNN) "nonlinearity" a config leaves to
    torch's default: a model trained with other values would be served differently."""
    if not isinstance(core, dict):
        return
    module = core.get("module", "RNN")
    keys = ["module", "batch_first"] + (["nonlinearity"] if module == "RNN" else [])
    missing = [key for key in keys if key not in core]
    if missing:
        assumed = ", ".join(f"{key}={CONFIG_DEFAULTS[key]!r}" for key in missing)
        warnings.warn(f"{where} does not say {', '.join(missing)}: torch's defaults were "
                      f"assumed ({assumed}); add them if the model was built otherwise",
                      AssumedDefaultsWarning, stacklevel=3)


def export_state_dict(state_dict, config, out_dir):
    """Writes <out_dir>/config.json and <out_dir>/model.safetensors.

    `config` is either form (a config with key "rnn" is a pipeline). `state_dict` must hold
    exactly the parameters the config implies, under their names (bare for a core-only
    config, "<path>.<name>" for a pipeline), with their shapes; otherwise ValueError lists
    every missing, unexpected or misshaped name. Values are written as float32. Warns
    (AssumedDefaultsWarning) when the core's config omits "module", "batch_first" or an RNN's
    "nonlinearity".
    """
    if isinstance(config, dict) and "rnn" in config:
        _warn_assumed_defaults(config["rnn"], "the config's \"rnn\"")
        full = full_pipeline_config(config)
        tensors = _checked_tensors(state_dict, pipeline_parameter_shapes(full),
                                   f"pipeline config {full}")
    else:
        _warn_assumed_defaults(config, "the config")
        full = full_config(config)
        tensors = _checked_tensors(state_dict, parameter_shapes(full),
                                   f"{full['module']} config {full}",
                                   _looks_like(state_dict, full["module"]))
    _write_folder(out_dir, full, tensors)


# ---------------------------------------------------------------------------------------------
# Pipelines: input layer -> recurrent core -> per-step head (docs/model-format.md).

_REQUIRED = object()
# Each layer type's arguments in config.json, in order, with torch's defaults.
LAYER_ARGS = {
    "Linear": {"in_features": _REQUIRED, "out_features": _REQUIRED, "bias": True},
    "Embedding": {"num_embeddings": _REQUIRED, "embedding_dim": _REQUIRED, "padding_idx": None},
    "LayerNorm": {"normalized_shape": _REQUIRED, "eps": 1e-05, "elementwise_affine": True},
    "ReLU": {}, "Tanh": {}, "Sigmoid": {},
    "GELU": {"approximate": "none"},
    "Dropout": {"p": 0.5},
    "Softmax": {"dim": _REQUIRED}, "LogSoftmax": {"dim": _REQUIRED},
}
PIPELINE_KEYS = ("input_layer", "rnn", "head")
MAX_PIPELINE_LAYERS = 64
MAX_LAYER_FEATURES = 1 << 20
MAX_EMBEDDINGS = 1 << 24
MAX_PATH_LENGTH = 256
_PATH_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")

HEAD_SUPPORTED = ("a head is an nn.Linear, or an nn.Sequential of Linear, ReLU, Tanh, Sigmoid, "
                  "GELU, LayerNorm (over the last dimension), Dropout, Softmax(dim=-1) and "
                  "LogSoftmax(dim=-1)")
INPUT_SUPPORTED = ("an input layer is an nn.Linear, an nn.Embedding (without max_norm; its "
                   "input is token ids), or an nn.Sequential of the head's pieces that may "
                   "start with an Embedding")


def _check_path(path, where):
    if (not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH
            or not _PATH_RE.fullmatch(path)):
        raise ValueError(f"{where}: \"path\" must be an attribute path like \"head.0\" "
                         f"(1 to {MAX_PATH_LENGTH} characters of [A-Za-z0-9_.]), got {path!r}")


def _full_layer(layer, where):
    """A layer object checked, its arguments' defaults filled in, "type" and "path" first."""
    if not isinstance(layer, dict):
        raise ValueError(f"{where} must be an object, got {layer!r}")
    kind = layer.get("type")
    if kind not in LAYER_ARGS:
        raise ValueError(f"{where}: unknown layer \"type\" {kind!r}; known: "
                         f"{', '.join(LAYER_ARGS)}")
    _check_path(layer.get("path"), f"{where} ({kind})")
    where = f"{where} ({kind} '{layer['path']}')"
    args = LAYER_ARGS[kind]
    unknown = sorted(set(layer) - set(args) - {"type", "path"})
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; a {kind} takes "
                         f"{', '.join(['type', 'path'] + list(args)) }")
    full = {"type": kind, "path": layer["path"]}
    for key, value in _given_keys(layer, args, _REQUIRED, where, full):
        if key in ("in_features", "out_features", "num_embeddings", "embedding_dim"):
            limit = MAX_EMBEDDINGS if key == "num_embeddings" else MAX_LAYER_FEATURES
            if not _is_int(value) or not 0 < value <= limit:
                raise ValueError(f"{where}: '{key}' must be an integer in [1, {limit}], "
                                 f"got {value!r}")
        elif key in ("bias", "elementwise_affine"):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: '{key}' must be a boolean, got {value!r}")
        elif key == "padding_idx":
            if value is not None and not _is_int(value):
                raise ValueError(f"{where}: 'padding_idx' must be an integer or null, "
                                 f"got {value!r}")
        elif key == "normalized_shape":
            if (not isinstance(value, list) or len(value) != 1 or not _is_int(value[0])
                    or not 0 < value[0] <= MAX_LAYER_FEATURES):
                raise ValueError(f"{where}: 'normalized_shape' must be a list of one positive "
                                 f"integer (the features: LayerNorm over the last dimension "
                                 f"only), got {value!r}")
        elif key in ("eps", "p"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{where}: '{key}' must be a number, got {value!r}")
            value = float(value)
            if key == "p" and not 0.0 <= value <= 1.0:
                raise ValueError(f"{where}: dropout probability has to be between 0 and 1, "
                                 f"but got {value}")
            if key == "eps" and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{where}: 'eps' must be a finite number >= 0, got {value}")
        elif key == "approximate":
            if value not in ("none", "tanh"):
                raise ValueError(f"{where}: 'approximate' must be \"none\" or \"tanh\", "
                                 f"got {value!r}")
        elif key == "dim":
            if value != -1 or not _is_int(value):
                raise ValueError(f"{where}: 'dim' must be -1 (the features), got {value!r}")
        full[key] = value
    if kind == "Embedding" and full["padding_idx"] is not None:
        n = full["num_embeddings"]
        if not -n <= full["padding_idx"] < n:
            raise ValueError(f"{where}: padding_idx must be within num_embeddings")
        full["padding_idx"] %= n  # torch stores it non-negative
    return full


def _chain(layers, features, where):
    """The features after `layers` given `features` reaching them (None: free), checking
    every Linear's in_features and LayerNorm's normalized_shape against them."""
    for i, layer in enumerate(layers):
        kind, name = layer["type"], f"{where}[{i}] ({layer['type']} '{layer['path']}')"
        if kind == "Linear":
            if features is not None and layer["in_features"] != features:
                raise ValueError(f"{name} has in_features {layer['in_features']} but "
                                 f"{features} features reach it")
            features = layer["out_features"]
        elif kind == "LayerNorm":
            if features is not None and layer["normalized_shape"][0] != features:
                raise ValueError(f"{name} has normalized_shape {layer['normalized_shape']} "
                                 f"but {features} features reach it")
            features = layer["normalized_shape"][0]
        elif kind == "Embedding":
            if where != "input_layer" or i != 0:
                raise ValueError(f"{name}: an Embedding may only be the input layer's first "
                                 "piece")
            features = layer["embedding_dim"]
    return features


def core_output_features(core):
    """D * H_out: the features per step the core puts out."""
    return ((2 if core["bidirectional"] else 1)
            * (core.get("proj_size", 0) or core["hidden_size"]))


def full_pipeline_config(config):
    """Returns a pipeline config as config.json holds it ("input_layer", "rnn", "head"; each
    layer's arguments and the core's keys filled in with torch's defaults), raising
    ValueError on unknown keys, bad values, duplicate paths or feature counts that do not
    chain (docs/model-format.md)."""
    _check_keys(config, PIPELINE_KEYS, "pipeline config")
    rnn = config.get("rnn")
    if not isinstance(rnn, dict):
        raise ValueError(f"pipeline config's \"rnn\" must be an object, got {rnn!r}")
    _check_path(rnn.get("path"), "rnn")
    try:
        core = full_config({key: value for key, value in rnn.items() if key != "path"})
    except ValueError as e:
        raise ValueError(f"rnn: {e}") from e
    core["path"] = rnn["path"]
    full = {}
    for stage in ("input_layer", "head"):
        layers = config.get(stage, [])
        if not isinstance(layers, list) or len(layers) > MAX_PIPELINE_LAYERS:
            raise ValueError(f"\"{stage}\" must be a list of at most {MAX_PIPELINE_LAYERS} "
                             f"layer objects, got {layers!r}")
        full[stage] = [_full_layer(layer, f"{stage}[{i}]") for i, layer in enumerate(layers)]
    features = _chain(full["input_layer"], None, "input_layer")
    if features is not None and features != core["input_size"]:
        raise ValueError(f"the input layer puts out {features} features but rnn "
                         f"'{core['path']}' has input_size {core['input_size']}")
    _chain(full["head"], core_output_features(core), "head")
    # One module used twice (a shared nn.ReLU) is fine; a path naming parameters twice, or two
    # different pieces, is not.
    pieces = {}
    for piece in full["input_layer"] + full["head"] + [dict(core, type=core["module"])]:
        path = piece["path"]
        if path in pieces and (pieces[path] != piece or piece["type"] in MODULES
                               or layer_parameter_shapes(piece)):
            raise ValueError(f"path '{path}' names more than one piece")
        pieces[path] = piece
    paths = list(pieces)
    for path in paths:
        nested = [p for p in paths if p.startswith(path + ".")]
        if nested:
            raise ValueError(f"path '{path}' holds another piece's path '{nested[0]}'")
    return {"input_layer": full["input_layer"], "rnn": core, "head": full["head"]}


def _core_of(full):
    return {key: value for key, value in full["rnn"].items() if key != "path"}


def layer_parameter_shapes(layer):
    """{full name: shape} of one layer's parameters."""
    kind, path = layer["type"], layer["path"]
    if kind == "Linear":
        shapes = {f"{path}.weight": (layer["out_features"], layer["in_features"])}
        if layer["bias"]:
            shapes[f"{path}.bias"] = (layer["out_features"],)
        return shapes
    if kind == "Embedding":
        return {f"{path}.weight": (layer["num_embeddings"], layer["embedding_dim"])}
    if kind == "LayerNorm" and layer["elementwise_affine"]:
        features = tuple(layer["normalized_shape"])
        return {f"{path}.weight": features, f"{path}.bias": features}
    return {}


def pipeline_parameter_shapes(config):
    """{full name: shape} of every parameter a pipeline config implies, in pipeline order."""
    full = full_pipeline_config(config)
    shapes = {}
    for layer in full["input_layer"]:
        shapes.update(layer_parameter_shapes(layer))
    prefix = full["rnn"]["path"] + "."
    for name, shape in parameter_shapes(_core_of(full)).items():
        shapes[prefix + name] = shape
    for layer in full["head"]:
        shapes.update(layer_parameter_shapes(layer))
    return shapes


def build_layer(layer):
    """A freshly initialised torch module for a layer object."""
    layer = _full_layer(layer, "layer")
    kind = layer["type"]
    nn = torch.nn
    if kind == "Linear":
        return nn.Linear(layer["in_features"], layer["out_features"], bias=layer["bias"])
    if kind == "Embedding":
        return nn.Embedding(layer["num_embeddings"], layer["embedding_dim"],
                            padding_idx=layer["padding_idx"])
    if kind == "LayerNorm":
        return nn.LayerNorm(layer["normalized_shape"], eps=layer["eps"],
                            elementwise_affine=layer["elementwise_affine"])
    if kind == "GELU":
        return nn.GELU(approximate=layer["approximate"])
    if kind == "Dropout":
        return nn.Dropout(p=layer["p"])
    if kind in ("Softmax", "LogSoftmax"):
        return getattr(nn, kind)(dim=layer["dim"])
    return getattr(nn, kind)()


class PipelineModule(torch.nn.Module):
    """A pipeline config evaluated in torch: input layer -> core -> head, each piece under
    its attribute path, so state_dict() names are the model folder's names.

    forward(input, hx=None) -> (output, h_n) or (output, (h_n, c_n)), as the core returns
    them, with the head applied to every step of the output.
    """

    def __init__(self, config):
        super().__init__()
        full = full_pipeline_config(config)
        self._pipeline_config = full
        for layer in full["input_layer"]:
            self._attach(layer["path"], build_layer(layer))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropout > 0 with num_layers == 1
            self._attach(full["rnn"]["path"], build_module(_core_of(full)))
        for layer in full["head"]:
            self._attach(layer["path"], build_layer(layer))

    def _attach(self, path, module):
        if path in dict(self.named_modules()):
            return  # a parameterless piece used twice (full_pipeline_config checked it)
        parent = self
        *parents, name = path.split(".")
        for part in parents:
            if part not in parent._modules:
                parent.add_module(part, torch.nn.Module())
            parent = parent._modules[part]
        parent.add_module(name, module)

    @property
    def pipeline_config(self):
        return self._pipeline_config

    def forward(self, input, hx=None):
        x = input
        for layer in self._pipeline_config["input_layer"]:
            x = self.get_submodule(layer["path"])(x)
        core = self.get_submodule(self._pipeline_config["rnn"]["path"])
        output, state = core(x) if hx is None else core(x, hx)
        for layer in self._pipeline_config["head"]:
            output = self.get_submodule(layer["path"])(output)
        return output, state


def pipeline_paths(config):
    """The attribute paths of a pipeline's pieces, in order."""
    full = full_pipeline_config(config)
    return ([layer["path"] for layer in full["input_layer"]] + [full["rnn"]["path"]]
            + [layer["path"] for layer in full["head"]])


def pipeline_repr(module, config):
    """torch's repr of each of the pipeline's pieces in `module`, joined with " -> "
    (ModelInfo.pipeline)."""
    return " -> ".join(repr(module.get_submodule(path)) for path in pipeline_paths(config))


def read_config(folder):
    with open(os.path.join(folder, CONFIG_FILE), encoding="utf-8") as f:
        return json.load(f, object_pairs_hook=_reject_duplicate_keys)


def load_model_folder(folder):
    """The model folder at `folder` as a torch module in eval(), float32: the bare
    torch.nn.RNN/GRU/LSTM for a core-only folder, else a PipelineModule. Raises ValueError
    when the weights are not exactly the ones the config implies."""
    config = read_config(folder)
    tensors = read_safetensors(os.path.join(folder, WEIGHTS_FILE))
    if isinstance(config, dict) and "rnn" in config:
        module = PipelineModule(config)
        what = "pipeline config"
    else:
        module = build_module(config)
        what = f"{config_module(config)} config"
    expected = {name: tuple(p.shape) for name, p in module.state_dict().items()}
    _checked_tensors(tensors, expected, f"{folder}'s {what}")
    module.load_state_dict({name: torch.from_numpy(value.copy())
                            for name, value in tensors.items()})
    return module.float().eval()


# ---------------------------------------------------------------------------------------------
# The user's module: finding the pieces, describing them, verifying the export.

def _is_core(module):
    return type(module) in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM)


def _one_line(module, limit=160):
    text = " ".join(repr(module).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _piece_config(piece, path, stage):
    """The layer object of one leaf piece, or ExportError naming it."""
    nn = torch.nn
    kind = type(piece)
    supported = HEAD_SUPPORTED if stage == "head" else INPUT_SUPPORTED

    def refuse(why):
        raise ExportError(f"{stage.replace('_', ' ')} piece '{path}' ({kind.__name__}) is not "
                          f"supported: {why}; {supported}")
    if kind is nn.Linear:
        return {"type": "Linear", "path": path, "in_features": int(piece.in_features),
                "out_features": int(piece.out_features), "bias": piece.bias is not None}
    if kind is nn.Embedding:
        if stage != "input_layer":
            refuse("an Embedding can only start the input layer")
        if piece.max_norm is not None:
            refuse(f"max_norm={piece.max_norm} renormalises the weights it looks up, which "
                   "rnnserve does not do")
        return {"type": "Embedding", "path": path,
                "num_embeddings": int(piece.num_embeddings),
                "embedding_dim": int(piece.embedding_dim),
                "padding_idx": None if piece.padding_idx is None else int(piece.padding_idx)}
    if kind is nn.LayerNorm:
        if len(piece.normalized_shape) != 1:
            refuse(f"normalized_shape {tuple(piece.normalized_shape)} normalises more than "
                   "the last dimension")
        return {"type": "LayerNorm", "path": path,
                "normalized_shape": [int(piece.normalized_shape[0])], "eps": float(piece.eps),
                "elementwise_affine": bool(piece.elementwise_affine)}
    if kind in (nn.ReLU, nn.Tanh, nn.Sigmoid):
        return {"type": kind.__name__, "path": path}
    if kind is nn.GELU:
        return {"type": "GELU", "path": path,
                "approximate": str(getattr(piece, "approximate", "none"))}
    if kind is nn.Dropout:
        return {"type": "Dropout", "path": path, "p": float(piece.p)}
    if kind in (nn.Softmax, nn.LogSoftmax):
        if piece.dim != -1:
            refuse(f"dim={piece.dim}; only dim=-1 (over the features of each step) is served")
        return {"type": kind.__name__, "path": path, "dim": -1}
    refuse("it is not one of the supported pieces")


def _flatten(module, path, stage):
    """The leaf pieces of `module` at `path` as layer objects (Sequentials flattened)."""
    if type(module) is torch.nn.Sequential:
        layers = []
        for name, child in module.named_children():
            layers += _flatten(child, f"{path}.{name}", stage)
        return layers
    return [_piece_config(module, path, stage)]


def _submodules_list(model):
    return "; ".join(f"{path} ({type(m).__name__})" for path, m in model.named_modules()
                     if path) or "none"


def _submodule(model, path, flag):
    if not isinstance(path, str) or not path:
        raise ExportError(f"{flag} must be an attribute path like 'rnn' or 'encoder.lstm', "
                          f"got {path!r}")
    module = model
    for i, part in enumerate(path.split(".")):
        child = module._modules.get(part) if isinstance(module, torch.nn.Module) else None
        if child is None:
            where = ".".join(path.split(".")[:i]) or type(model).__name__
            raise ExportError(f"{flag} {path}: {where} has no submodule '{part}'. The "
                              f"submodules of {type(model).__name__} are: "
                              f"{_submodules_list(model)}")
        module = child
    return module


def _as_paths(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def discover(model):
    """(cores, input layers, heads): [(path, module)] of model's recurrent submodules and of
    the candidate input layers and heads (supported pieces outside the cores; Embeddings and
    those registered before the first core are input-layer candidates)."""
    cores, inputs, heads = [], [], []
    taken = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(t + ".") for t in taken):
            continue
        if _is_core(module):
            cores.append((path, module))
            taken.append(path)
            continue
        is_input = type(module) is torch.nn.Embedding or (
            type(module) is torch.nn.Sequential and len(module) > 0
            and type(module[0]) is torch.nn.Embedding) or not cores
        try:
            _flatten(module, path, "input_layer" if is_input else "head")
        except ExportError:
            continue
        (inputs if is_input else heads).append((path, module))
        taken.append(path)
    return cores, inputs, heads


def suggest_command(model, source="model.pt", out="DIR"):
    """The export command discover() suggests, or None when there is no core."""
    cores, inputs, heads = discover(model)
    if not cores:
        return None
    parts = [f"tools/export_pytorch.py --module-file {source} --rnn {cores[0][0]}"]
    parts += [f"--input-layer {path}" for path, _ in inputs]
    parts += [f"--head {path}" for path, _ in heads]
    return " ".join(parts + [f"--out {out}"])


class NoCoreChosenError(ExportError):
    """A module that is not a bare RNN/GRU/LSTM, exported without naming its core."""

    def __init__(self, model, source="model.pt"):
        self.model = model
        super().__init__(self.message(source))

    def message(self, source):
        model = self.model
        name = type(model).__name__
        cores, inputs, heads = discover(model)
        if not cores:
            return (f"{name} holds no torch.nn.RNN, GRU or LSTM (its submodules: "
                    f"{_submodules_list(model)}); rnnserve serves an optional input layer, "
                    "one recurrent core and an optional per-step head")

        def found(pairs):
            return "; ".join(f"{p} = {_one_line(m)}" for p, m in pairs) or "none"
        command = suggest_command(model, source)
        python = ", ".join([f"rnn={cores[0][0]!r}"] + (
            [f"input_layer={[p for p, _ in inputs]!r}"] if inputs else []) + (
            [f"head={[p for p, _ in heads]!r}"] if heads else []))
        return (f"{name} is not a bare torch.nn.RNN, GRU or LSTM: say which submodule is the "
                f"recurrent core (--rnn) and which pieces run before (--input-layer) and after "
                f"it (--head), as forward applies them. Recurrent submodules: {found(cores)}. "
                f"Candidate input layers: {found(inputs)}. Candidate heads: {found(heads)}. "
                f"If forward is input layer -> core -> head per step, run: {command} "
                f"(from Python: export_module(model, out_dir, {python})); the export checks "
                "the result against model(x).")


def pipeline_config_from_module(model, rnn, head=None, input_layer=None):
    """The pipeline config of `model`'s pieces at the given attribute paths."""
    core_module = _submodule(model, rnn, "--rnn")
    if not _is_core(core_module):
        cores = [path for path, _ in discover(model)[0]]
        raise ExportError(f"--rnn {rnn} is a {type(core_module).__name__}, not a torch.nn.RNN, "
                          f"GRU or LSTM; the recurrent submodules of {type(model).__name__}: "
                          f"{', '.join(cores) or 'none'}")
    config = {"input_layer": [], "rnn": dict(config_from_module(core_module), path=rnn),
              "head": []}
    for stage, flag, paths in (("input_layer", "--input-layer", input_layer),
                               ("head", "--head", head)):
        for path in _as_paths(paths):
            config[stage] += _flatten(_submodule(model, path, flag), path, stage)
    try:
        return full_pipeline_config(config)
    except ValueError as e:
        raise ExportError(f"the pieces do not form a pipeline: {e}") from e


def _state_dict_of(model, config):
    """The parameters of the pipeline's pieces under their full names."""
    state = {}
    for path in pipeline_paths(config):
        for name, value in model.get_submodule(path).state_dict().items():
            state[f"{path}.{name}"] = value
    return state


VERIFY_STEPS, VERIFY_BATCH = 5, 3
VERIFY_TOLERANCE = 1e-4


def random_input(config, steps=VERIFY_STEPS, batch=VERIFY_BATCH, batched=True, generator=None):
    """A random input for a pipeline config: float32 features, or int64 ids in range for an
    Embedding-first pipeline; (T, N, C) / (N, T, C) batch_first / (T, C) unbatched."""
    full = full_pipeline_config(config)
    first = full["input_layer"][0] if full["input_layer"] else None
    batch_first = full["rnn"]["batch_first"]
    dims = ([batch, steps] if batch_first else [steps, batch]) if batched else [steps]
    if first is not None and first["type"] == "Embedding":
        return torch.randint(0, first["num_embeddings"], dims, generator=generator)
    if first is None or first["type"] != "Linear":
        features = full["rnn"]["input_size"]
        for layer in full["input_layer"]:
            if layer["type"] == "LayerNorm":
                features = layer["normalized_shape"][0]
                break
    else:
        features = first["in_features"]
    return torch.randn(dims + [features], generator=generator)


def verify_folder(model, folder, out_dir=None):
    """Runs model(x) and the folder's model (re-read from disk, in torch) on one random batch;
    ExportError with the max difference when they disagree."""
    pipeline = load_model_folder(folder)
    config = pipeline.pipeline_config
    described = pipeline_repr(pipeline, config)
    out_dir = out_dir or folder
    x = random_input(config, generator=torch.Generator().manual_seed(0))
    parameter = next(model.parameters(), None)
    model_x = x
    if parameter is not None:
        model_x = x.to(parameter.device)
        if x.is_floating_point():
            model_x = model_x.to(parameter.dtype)
    was_training = model.training
    model.eval()
    skip = "(verify=False, --no-verify, skips this check)"
    try:
        with torch.inference_mode():
            reference = model(model_x)
            expected = pipeline(x)[0]
    except Exception as e:  # the user's forward: anything may go wrong
        source = sys.modules.get(type(model).__module__)
        script = ""
        if type(model).__module__.startswith(_SCRIPT_MODULE_PREFIX) and source is not None:
            script = (f" ({type(model).__name__} was loaded from {source.__file__} running only "
                      "its imports, classes, functions and constant assignments: a name "
                      "forward needs from the rest of the script is missing; define the class "
                      "in a module your script imports)")
        raise ExportError(f"verification could not run {type(model).__name__}(x) on a random "
                          f"input of shape {tuple(x.shape)} ({x.dtype}): "
                          f"{type(e).__name__}: {e}{script}. Nothing was written to {out_dir} "
                          f"{skip}") from e
    finally:
        model.train(was_training)
    if isinstance(reference, (tuple, list)) and reference:
        reference = reference[0]
    not_described = (f"{type(model).__name__}.forward does something the exported pipeline "
                     f"({described}) does not describe, e.g. keeps only the last step, "
                     "reshapes, or calls a function that is not one of the exported "
                     f"submodules; nothing was written to {out_dir} {skip}")
    if not isinstance(reference, torch.Tensor):
        raise ExportError(f"model(x) returned a {type(reference).__name__}, not a tensor (or "
                          f"a tuple starting with one): {not_described}")
    reference = reference.detach().cpu().double()
    if tuple(reference.shape) != tuple(expected.shape):
        raise ExportError(f"model(x) for an input of shape {tuple(x.shape)} has shape "
                          f"{tuple(reference.shape)} but the exported pipeline gives "
                          f"{tuple(expected.shape)}: {not_described}")
    difference = (reference - expected.double()).abs()
    relative = difference / reference.abs().clamp(min=1.0)
    worst = float(relative.max()) if relative.numel() else 0.0
    if not worst <= VERIFY_TOLERANCE:  # NaN refuses too
        raise ExportError(f"model(x) and the exported pipeline differ by up to "
                          f"{float(difference.max()):.3g} (max |difference| / max(1, "
                          f"|model(x)|) = {worst:.3g} > {VERIFY_TOLERANCE:g}) on a random "
                          f"input of shape {tuple(x.shape)}: {not_described}")
    return worst


def export_module(model, out_dir, rnn=None, head=None, input_layer=None, verify=True):
    """Exports `model` to `out_dir` and returns the config written.

    A bare torch.nn.RNN, GRU or LSTM with no paths: the core-only form. Otherwise `rnn` is
    the attribute path of the recurrent core and `head` / `input_layer` those of the pieces
    after / before it (a path or a list of paths; an nn.Sequential is flattened). Unsupported
    pieces, wrong paths and a module without `rnn` raise ExportError (a ValueError) saying
    what to do. With `verify`, the folder is written beside `out_dir`, re-read and checked
    against model(x) on a random batch, and only then moved into place.
    """
    if _is_core(model) and rnn is None and head is None and input_layer is None:
        config = config_from_module(model)
        export_state_dict(model.state_dict(), config, out_dir)
        return full_config(config)
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if rnn is None:
        raise NoCoreChosenError(model)
    config = pipeline_config_from_module(model, rnn, head, input_layer)
    tensors = _checked_tensors(_state_dict_of(model, config),
                               pipeline_parameter_shapes(config), "its pipeline config")
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.export-", dir=parent)
    try:
        _write_folder(staging, config, tensors)
        if verify:
            verify_folder(model, staging, out_dir)
        if not os.path.exists(out_dir):
            os.rename(staging, out_dir)
        else:
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return config


# ---------------------------------------------------------------------------------------------
# Loading a torch.save()d module: the caller's folder and --import-path on sys.path, and
# classes pickled as __main__.X (defined in the script that saved them) found in its file.

_SCRIPT_MODULE_PREFIX = "rnnserve_user_script_"
_SAFE_STATEMENTS = (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef,
                    ast.AsyncFunctionDef)


def _safe_value(node):
    """Constants and names (and containers / attributes of them): nothing that calls."""
    if isinstance(node, (ast.Constant, ast.Name)):
        return True
    if isinstance(node, ast.Attribute):
        return _safe_value(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_safe_value(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _safe_value(node.operand)
    return False


def _definitions_module(script):
    """A module of `script`'s imports, classes, functions and constant assignments only:
    whatever else the script does (training, saving) does not run."""
    with open(script, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=script)
    body = [node for node in tree.body if isinstance(node, _SAFE_STATEMENTS) or (
        isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None
        and _safe_value(node.value))]
    name = _SCRIPT_MODULE_PREFIX + re.sub(r"\W", "_", os.path.splitext(
        os.path.basename(script))[0])
    module = types.ModuleType(name)
    module.__file__ = script
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        exec(compile(ast.Module(body=body, type_ignores=[]), script, "exec"), module.__dict__)
    finally:
        sys.path.pop(0)
    return module


class _MainClassMissing(Exception):
    def __init__(self, name, reason):
        super().__init__(name)
        self.name, self.reason = name, reason


def _make_pickle_module(search_dirs):
    """The `pickle` module with an Unpickler that finds __main__.X in the user's scripts."""
    scripts = {}

    def main_attribute(name):
        # Called from the user's own script, __main__ is where the class lives; run as a
        # command, __main__ is this file, whose names must not stand in for the user's.
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        if (main is not None and hasattr(main, name) and not (
                main_file and os.path.realpath(main_file) == os.path.realpath(__file__))):
            return getattr(main, name)
        pattern = re.compile(rf"^(class|def)\s+{re.escape(name)}\b", re.M)
        for folder in search_dirs:
            for script in sorted(glob.glob(os.path.join(folder, "*.py"))):
                try:
                    with open(script, encoding="utf-8") as f:
                        if not pattern.search(f.read()):
                            continue
                except (OSError, UnicodeDecodeError):
                    continue
                try:
                    if script not in scripts:
                        scripts[script] = _definitions_module(script)
                except Exception as e:  # the user's script: anything may go wrong
                    raise _MainClassMissing(name, f"{script} defines it, but loading its "
                                            f"definitions failed: {type(e).__name__}: {e}")
                if hasattr(scripts[script], name):
                    return getattr(scripts[script], name)
        raise _MainClassMissing(name, "no .py file in " + ", ".join(search_dirs) +
                                " defines it")

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "__main__":
                return main_attribute(name)
            return super().find_class(module, name)

    pickle_module = types.ModuleType("rnnserve_export_pickle")
    pickle_module.__dict__.update({k: v for k, v in pickle.__dict__.items()
                                   if not k.startswith("__")})
    pickle_module.Unpickler = Unpickler
    return pickle_module


@contextlib.contextmanager
def _import_paths(paths):
    saved = list(sys.path)
    sys.path[1:1] = [os.path.abspath(p) for p in paths]
    try:
        yield
    finally:
        sys.path[:] = saved


def load_module_file(path, import_paths=()):
    """The object torch.save() wrote to `path` (a pickle: only load files you trust), with
    `import_paths` and the current directory importable; ExportError says what to do when
    the class that was saved cannot be found."""
    search = [os.path.abspath(p) for p in list(import_paths) + [os.getcwd()]
              + [os.path.dirname(os.path.abspath(path))]]
    search = list(dict.fromkeys(search))
    hint = ("run the export from the folder that holds that code, or pass --import-path DIR "
            "(the folder that holds it; repeatable)")
    pickle_module = _make_pickle_module(search)
    serialization = torch.serialization
    # torch 1.13's load() ignores its pickle_module argument unless weights_only (it sets
    # pickle_module = pickle): give it ours through the module global too.
    saved_pickle = serialization.pickle
    with _import_paths(search):
        try:
            serialization.pickle = pickle_module
            return torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=pickle_module)
        except _MainClassMissing as e:
            raise ExportError(
                f"{path} holds an instance of class {e.name} that was defined in the script "
                f"that saved it (torch.save pickled it as __main__.{e.name}), and {e.reason}. "
                f"To fix: {hint}, or define the class in a module (e.g. my_model.py) that "
                "your script imports before torch.save") from None
        except ModuleNotFoundError as e:
            raise ExportError(
                f"{path} needs the Python module '{e.name}' (where the saved model's class is "
                f"defined), which is not importable from {', '.join(search)}: {hint}") from None
        except AttributeError as e:
            raise ExportError(f"{path} names a class that its module no longer has ({e}): "
                              "was it renamed or moved since torch.save? Make it importable "
                              f"under its old name: {hint}") from None
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise ExportError(f"{path} is not a file torch.save() wrote: {e}") from None
        finally:
            serialization.pickle = saved_pickle


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Export a torch.nn.RNN, GRU or LSTM, or your own nn.Module around one "
                    "(input layer -> recurrent core -> per-step head), to an rnnserve model "
                    "folder (config.json + model.safetensors).")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="model folder to write (created if missing)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--module-file", metavar="model.pt",
                        help="a torch.save()d module: a bare torch.nn.RNN, GRU or LSTM, or "
                             "your own nn.Module with --rnn (and --head, --input-layer)")
    source.add_argument("--state-dict", metavar="sd.pt",
                        help="a torch.save()d state_dict; needs --config")
    source.add_argument("--demo", action="store_true",
                        help="RNN(100, 10, num_layers=2) initialised with torch.manual_seed(0)")
    source.add_argument("--input-size", type=int,
                        help="export a freshly initialised module with this input_size "
                             "(with --hidden-size and the options below)")
    parser.add_argument("--config", metavar="config.json",
                        help="config.json (either form) for --state-dict")
    own = parser.add_argument_group("your own nn.Module (with --module-file)")
    own.add_argument("--rnn", metavar="ATTR",
                     help="attribute path of the recurrent core, e.g. rnn or encoder.lstm")
    own.add_argument("--head", metavar="ATTR", action="append",
                     help="attribute path of the per-step head applied to the core's output "
                          "(a Linear or a Sequential; repeat for several, in order)")
    own.add_argument("--input-layer", metavar="ATTR", action="append",
                     help="attribute path of the input layer applied before the core (a "
                          "Linear, an Embedding or a Sequential; repeat for several)")
    own.add_argument("--import-path", metavar="DIR", action="append", default=[],
                     help="a folder to import the saved model's classes from (repeatable; "
                          "the current directory is always searched)")
    own.add_argument("--no-verify", action="store_true",
                     help="skip comparing the export with model(x) on a random batch")
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
    if not args.module_file and (args.rnn or args.head or args.input_layer or args.import_path
                                 or args.no_verify):
        parser.error("--rnn, --head, --input-layer, --import-path and --no-verify go with "
                     "--module-file")
    if (args.head or args.input_layer) and not args.rnn:
        parser.error("--head and --input-layer need --rnn (the recurrent core's path)")
    return args


def _export_module_file(args):
    model = load_module_file(args.module_file, args.import_path)
    if isinstance(model, dict):
        raise ExportError(f"{args.module_file} holds a dict (a state_dict?), not a module: "
                          "use --state-dict with --config, or torch.save(model) the module")
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{args.module_file} holds a {type(model).__name__}, not an "
                          "nn.Module")
    try:
        export_module(model, args.out, rnn=args.rnn, head=args.head,
                      input_layer=args.input_layer, verify=not args.no_verify)
    except NoCoreChosenError as e:
        raise ExportError(e.message(args.module_file).replace("--out DIR", f"--out {args.out}")
                          ) from None


def main(argv=None):
    args = _parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AssumedDefaultsWarning)
            try:
                if args.module_file:
                    _export_module_file(args)
                elif args.state_dict:
                    with open(args.config) as f:
                        config = json.load(f)
                    state_dict = torch.load(args.state_dict, map_location="cpu",
                                            weights_only=True)
                    export_state_dict(state_dict, config, args.out)
                else:
                    if args.demo:
                        config = {"input_size": 100, "hidden_size": 10, "num_layers": 2}
                        seed = 0
                    else:
                        config = {"module": args.module, "input_size": args.input_size,
                                  "hidden_size": args.hidden_size,
                                  "num_layers": args.num_layers, "bias": args.bias,
                                  "batch_first": args.batch_first, "dropout": args.dropout,
                                  "bidirectional": args.bidirectional}
                        if args.nonlinearity is not None:
                            config["nonlinearity"] = args.nonlinearity
                        if args.proj_size is not None:
                            config["proj_size"] = args.proj_size
                        seed = args.seed
                    # Validate first so a bad flag gets our message rather than torch's.
                    config = full_config(config)
                    torch.manual_seed(seed)
                    export_module(build_module(config), args.out)
            finally:
                for warning in caught:
                    if issubclass(warning.category, AssumedDefaultsWarning):
                        print(f"export_pytorch: warning: {warning.message}", file=sys.stderr)
                    else:
                        warnings.showwarning(warning.message, warning.category,
                                             warning.filename, warning.lineno)
    except (ValueError, TypeError, OSError, pickle.UnpicklingError, RuntimeError) as e:
        print(f"export_pytorch: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.join(args.out, CONFIG_FILE)} and "
          f"{os.path.join(args.out, WEIGHTS_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
