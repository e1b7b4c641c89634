#!/usr/bin/python3
"""Streams a random sequence through an rnnserve session, chunk by chunk, and optionally checks
the result against torch.

It asks the server for the model's config (GetModel), makes a random input of the right
layout, sends it in chunks on one Stream (the first chunk with `start`, the last with `end`),
and prints each chunk's output shape and h_n. A model whose input is token ids (an Embedding
first: ModelInfo.input_kind "ids") gets random ids below its vocabulary size. With --model-dir
it also loads the same model into torch from its folder (config.json + model.safetensors:
torch.nn.RNN/GRU/LSTM, or the whole pipeline with its input layer and head), runs torch over
the whole sequence and prints the max abs difference to the streamed output and final h_n; it
exits 1 if either exceeds 1e-5.

Run it against a server serving an exported model (from the repository root):

    /usr/bin/python3 tools/export_pytorch.py --demo --out /tmp/models/demo
    build/server/rnnserve --model_repository /tmp/models &
    /usr/bin/python3 client/python/example_stream.py --model demo --model-dir /tmp/models/demo

Without --model_repository the server's built-in `demo` has its own weights, so only run the
example without --model-dir against it:

    /usr/bin/python3 client/python/example_stream.py --steps 20 --chunk-steps 5

Against a TLS server that wants a token (mutual TLS: add --tls-cert and --tls-key):

    /usr/bin/python3 client/python/example_stream.py --server rnn.example:50051 \
        --tls-ca ca.crt --token-file token

Use /usr/bin/python3 (Debian's, which has torch, numpy and grpcio).
"""

import argparse
import json
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from rnnserve_client import RnnServeClient, RnnServeError, read_token_file  # noqa: E402

TOLERANCE = 1e-5


def load_torch_rnn(model_dir):
    """(the recurrent core's config dict, the torch module) from an exported model folder:
    torch.nn.RNN/GRU/LSTM, or the pipeline (input layer, core, head) for a pipeline folder."""
    sys.path.insert(0, os.path.join(_HERE, "..", "..", "tools"))
    import export_pytorch

    with open(os.path.join(model_dir, export_pytorch.CONFIG_FILE)) as f:
        config = json.load(f)
    core = config["rnn"] if "rnn" in config else config
    core = export_pytorch.normalize_config({k: v for k, v in core.items() if k != "path"})
    return core, export_pytorch.load_model_folder(model_dir)


def torch_forward(rnn, x):
    import torch
    with torch.no_grad():
        out, h_n = rnn(torch.from_numpy(x))
    if isinstance(h_n, tuple):  # an LSTM's (h_n, c_n)
        h_n = h_n[0]
    return out.numpy(), h_n.numpy()


def vocabulary_size(info):
    """Rows of an ids model's Embedding weight (its first layer's)."""
    weight = f"{info.layers[0].path}.weight"
    return next(p.shape[0] for p in info.parameters if p.name == weight)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    p.add_argument("--model", default="demo", help="model name (default %(default)s)")
    p.add_argument("--model-dir", help="the model's folder, to check the result against torch")
    p.add_argument("--steps", type=int, default=50, help="timesteps T (default %(default)s)")
    p.add_argument("--batch", type=int, default=2, help="batch size N (default %(default)s)")
    p.add_argument("--chunk-steps", type=int, default=7,
                   help="timesteps per chunk (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input")
    p.add_argument("--values", action="store_true",
                   help="send repeated floats instead of raw bytes")
    p.add_argument("--tls-ca", "--tls_ca",
                   help="use TLS, verifying the server against this PEM CA file")
    p.add_argument("--tls-cert", "--tls_cert", help="mutual TLS: PEM client certificate")
    p.add_argument("--tls-key", "--tls_key", help="mutual TLS: PEM key of --tls-cert")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token (prefer --token-file: argv is visible)")
    token.add_argument("--token-file", "--token_file",
                       help="file whose first line is the bearer token")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.chunk_steps < 1:
        p.error("--steps, --batch and --chunk-steps must be >= 1")

    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    try:
        token = read_token_file(args.token_file) if args.token_file else args.token
        client = RnnServeClient(args.server, raw=not args.values, tls_ca=args.tls_ca,
                                tls_cert=args.tls_cert, tls_key=args.tls_key, token=token)
    except ValueError as e:
        p.error(str(e))
    try:
        info = client.get_model(args.model)
    except RnnServeError as e:
        print(f"example_stream: GetModel({args.model!r}) failed: {e}", file=sys.stderr)
        return 1
    cfg = info.config
    rnn = None
    if args.model_dir:
        # Load first, so a folder that is not the served model fails before any streaming.
        config, rnn = load_torch_rnn(args.model_dir)
        served = {f.name: getattr(cfg, f.name) for f in cfg.DESCRIPTOR.fields}
        differ = {k: (served[k], v) for k, v in config.items()
                  if k != "dropout" and served[k] != v}
        if differ:
            print(f"example_stream: {args.model_dir} is not the served model {args.model!r}: "
                  + ", ".join(f"{k} is {s!r} on the server, {v!r} in the folder"
                              for k, (s, v) in differ.items()), file=sys.stderr)
            return 1
    print(f"model {info.name}: {info.pipeline or info.module}")
    print(f"input {info.input_kind or 'features'} {info.input_layout} {list(info.input_shape)}, "
          f"output {list(info.output_shape)}, state {list(info.state_shape)}")
    time_axis = 1 if cfg.batch_first else 0
    ids = info.input_kind == "ids"
    # Features per step: the pipeline's input (the core's input_size from an older server).
    features = info.input_shape[2] if len(info.input_shape) == 3 else cfg.input_size
    shape = [args.steps, args.batch] if ids else [args.steps, args.batch, features]
    if cfg.batch_first:
        shape[0], shape[1] = shape[1], shape[0]
    rng = np.random.default_rng(args.seed)
    if ids:  # int64 token ids: the client sends integer arrays as Tensor.ids
        x = rng.integers(0, vocabulary_size(info), size=shape)
    else:
        x = rng.standard_normal(shape).astype(np.float32)

    outputs, h_n, session = [], None, None
    with client.open_stream() as stream:
        for i, at in enumerate(range(0, args.steps, args.chunk_steps)):
            chunk = np.take(x, range(at, min(at + args.chunk_steps, args.steps)), axis=time_axis)
            last = at + args.chunk_steps >= args.steps
            try:
                if session is None:
                    r = stream.start(args.model, chunk=chunk, end=last)
                    session = r.session_id
                    print(f"session {session}")
                else:
                    r = stream.send(chunk, end=last)
            except RnnServeError as e:
                print(f"example_stream: chunk {i} failed: {e}", file=sys.stderr)
                return 1
            out_shape = "none yet" if r.output is None else r.output.shape
            print(f"chunk {i}: steps {at}..{at + chunk.shape[time_axis] - 1}, "
                  f"steps_seen {r.steps_seen}, output {out_shape}{', ended' if r.ended else ''}")
            print(f"h_n =\n{r.h_n}")
            if r.output is not None:
                outputs.append(r.output)
            h_n = r.h_n
    streamed = np.concatenate(outputs, axis=time_axis)

    if rnn is None:
        print(f"streamed output {streamed.shape}, final h_n {h_n.shape}")
        return 0
    want_out, want_h_n = torch_forward(rnn, x)
    diff_out = float(np.abs(streamed - want_out).max())
    diff_h_n = float(np.abs(h_n - want_h_n).max())
    print(f"max abs diff vs torch: output {diff_out:.3g}, h_n {diff_h_n:.3g} "
          f"(tolerance {TOLERANCE:g})")
    if diff_out >= TOLERANCE or diff_h_n >= TOLERANCE:
        print("example_stream: MISMATCH: does the server serve this folder (rnnserve "
              "--model_repository with it inside)?", file=sys.stderr)
        return 1
    print("OK: streamed result matches torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
