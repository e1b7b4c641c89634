#!/usr/bin/env python3
"""Exports torch.nn.RNN(H, H, num_layers=L) (tanh, unidirectional) to ONNX for bench/onnx_bench.js.

The graph takes `input` (T, N, H) with T and N dynamic and returns `output` (T, N, H) and
`h_n` (L, N, H); h_0 is zeros, as in engine_bench's Forward benchmark. Run with /usr/bin/python3
(Debian's torch 1.13; the `onnx` Python package is not needed).

  /usr/bin/python3 bench/export_onnx.py --out-dir build-bench/onnx --models 256x2 1024x1
"""
import argparse
import os
import warnings


def model_path(out_dir, hidden, layers):
    return os.path.join(out_dir, f"rnn_h{hidden}_l{layers}.onnx")


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


def export(out_dir, hidden, layers, seed=0):
    """Writes the RNN model unless it is already there; returns its path."""
    import torch

    torch.manual_seed(seed)
    rnn = torch.nn.RNN(hidden, hidden, num_layers=layers, nonlinearity="tanh").eval()
    return _export(rnn, model_path(out_dir, hidden, layers), torch.zeros(2, 3, hidden),
                   ["output", "h_n"], {"input": {0: "T", 1: "N"}, "output": {0: "T", 1: "N"},
                                       "h_n": {1: "N"}})


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
    parser.add_argument("--models", nargs="+", required=True, metavar="HxL",
                        help="hidden size x layers, e.g. 256x2")
    args = parser.parse_args()
    for spec in args.models:
        hidden, layers = (int(v) for v in spec.lower().split("x"))
        print(export(args.out_dir, hidden, layers))


if __name__ == "__main__":
    main()
