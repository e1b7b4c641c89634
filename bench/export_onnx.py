#!/usr/bin/env python3
"""Exports torch.nn.RNN(H, H, num_layers=L) (tanh, unidirectional), nn.GRU or nn.LSTM to ONNX
for bench/onnx_bench.js.

The graph takes `input` (T, N, H) with T and N dynamic and returns `output` (T, N, H) and
`h_n` (L, N, H) (and LSTM's `c_n`); h_0 (and c_0) are zeros, as in engine_bench's Forward
benchmark. torch.onnx exports each layer of a GRU or LSTM as one ONNX GRU or LSTM op (ONNX
Runtime's own fused kernel); export() checks that the graph has exactly L of them, so that ORT
is timed on its native op rather than on a graph of MatMuls. Run with /usr/bin/python3 (Debian's
torch 1.13; the `onnx` Python package is not needed).

  /usr/bin/python3 bench/export_onnx.py --out-dir build-bench/onnx --models 256x2 1024x1
  /usr/bin/python3 bench/export_onnx.py --out-dir build-bench/onnx --module lstm --models 512x2
"""
import argparse
import os
import warnings


MODULE_OPS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}  # the ONNX op of each module


def model_path(out_dir, hidden, layers, module="rnn"):
    return os.path.join(out_dir, f"{module}_h{hidden}_l{layers}.onnx")


def count_op(path, op_type):
    """Nodes of `op_type` in an ONNX file, without the onnx package: NodeProto.op_type is field
    4 (a length-delimited string, tag 0x22), so each node of that type holds the bytes 0x22,
    len(op_type), op_type. Weights are stored as raw floats, where those 5-6 bytes turn up by
    chance with a probability of ~1e-5 per model."""
    with open(path, "rb") as f:
        data = f.read()
    return data.count(bytes([0x22, len(op_type)]) + op_type.encode())


def _export(module, path, example, output_names, dynamic_axes):
    import torch

    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 1.13 warns about prim::Constant shape inference
        torch.onnx.export(module, (example,), tmp, input_names=["input"],
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=14)
    os.replace(tmp, path)
    return path


def export(out_dir, hidden, layers, seed=0, module="rnn"):
    """Writes the RNN (GRU, LSTM) model unless it is already there; returns its path. Raises
    RuntimeError unless the graph has one ONNX RNN (GRU, LSTM) op per layer."""
    import torch

    torch.manual_seed(seed)
    if module == "rnn":
        made = torch.nn.RNN(hidden, hidden, num_layers=layers, nonlinearity="tanh")
    elif module == "gru":
        made = torch.nn.GRU(hidden, hidden, num_layers=layers)
    elif module == "lstm":
        made = torch.nn.LSTM(hidden, hidden, num_layers=layers)
    else:
        raise ValueError(f"unknown module {module!r}; known: {', '.join(MODULE_OPS)}")
    outputs = ["output", "h_n"] + (["c_n"] if module == "lstm" else [])
    axes = {"input": {0: "T", 1: "N"}, "output": {0: "T", 1: "N"}}
    axes.update({name: {1: "N"} for name in outputs[1:]})
    path = _export(made.eval(), model_path(out_dir, hidden, layers, module),
                   torch.zeros(2, 3, hidden), outputs, axes)
    found = count_op(path, MODULE_OPS[module])
    if module != "rnn" and found != layers:
        raise RuntimeError(f"{path}: expected {layers} ONNX {MODULE_OPS[module]} op(s), one per "
                           f"layer, found {found}")
    return path


def export_floor(out_dir):
    """A model that does nearly nothing (input + 1, one element): the cost of a call itself."""
    import torch

    class AddOne(torch.nn.Module):
        def forward(self, x):
            return x + 1

    return _export(AddOne().eval(), os.path.join(out_dir, "floor.onnx"), torch.zeros(1),
                   ["output"], None)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--module", choices=list(MODULE_OPS), default="rnn")
    parser.add_argument("--models", nargs="+", required=True, metavar="HxL",
                        help="hidden size x layers, e.g. 256x2")
    args = parser.parse_args()
    for spec in args.models:
        hidden, layers = (int(v) for v in spec.lower().split("x"))
        path = export(args.out_dir, hidden, layers, module=args.module)
        print(path, f"({count_op(path, MODULE_OPS[args.module])} {MODULE_OPS[args.module]} ops)")


if __name__ == "__main__":
    main()
