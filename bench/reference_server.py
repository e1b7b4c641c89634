#!/usr/bin/python3
"""The server a user might write instead of rnnserve: the baseline of BENCHMARKS.md "## Server".

Python grpcio (grpc.server over a ThreadPoolExecutor) + torch, serving the same rnnserve.v1 API
for the calls `rnnserve-client bench` makes: Stream (start / chunk / end, omit_state, raw or
values tensors), Forward, ListModels and GetModel. Hidden state lives in a dict keyed by session
id (for an LSTM the pair (h, c)); each chunk is one torch call, `rnn(input, h)`, of the
model's torch.nn.RNN, GRU or LSTM, under torch.inference_mode(), with
torch.set_num_threads(cores). No batching across sessions: that is what rnnserve adds.

Models come from a model repository written by tools/export_pytorch.py (one folder per model:
config.json + model.safetensors), read with export_pytorch.read_safetensors.

    /usr/bin/python3 bench/reference_server.py --model_repository DIR --port 0
    -> "reference_server listening on 127.0.0.1:PORT (gRPC), metrics on 127.0.0.1:-1"

Runs until SIGTERM or SIGINT. Needs torch, numpy, grpcio and protobuf (Debian's python3
packages) and /usr/bin/protoc + /usr/bin/grpc_python_plugin for the stubs, which the test kit
(tests/pykit/rnnserve_testkit) generates once per proto version.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import threading
import uuid
import warnings

import grpc
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "pykit"))
import rnnserve_testkit as kit  # noqa: E402  (the stubs; puts tools/ on the path)
import export_pytorch  # noqa: E402  (tools/export_pytorch.py)

PROTO = "rnnserve/v1/rnn_service.proto"

# torch.from_numpy warns once about read-only (np.frombuffer) arrays; inputs are never written.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

# grpc.StatusCode values, as the proto's error_code field carries them.
INVALID_ARGUMENT = 3
NOT_FOUND = 5
ALREADY_EXISTS = 6


def load_stubs():
    """The rnnserve.v1 Python stubs (rnnserve_testkit generates them once): (pb2, pb2_grpc)."""
    return kit.stubs()[:2]


class Model:
    def __init__(self, name, folder):
        with open(os.path.join(folder, export_pytorch.CONFIG_FILE)) as f:
            raw_config = json.load(f)
            self.config = export_pytorch.normalize_config(raw_config)
        tensors = export_pytorch.read_safetensors(
            os.path.join(folder, export_pytorch.WEIGHTS_FILE))
        self.name = name
        # torch.nn.RNN, GRU or LSTM; an LSTM's state is the pair (h, c), as torch takes it.
        self.module = export_pytorch.config_module(raw_config)
        self.rnn = getattr(torch.nn, self.module)(**self.config)
        self.rnn.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        self.rnn.eval()
        c = self.config
        self.state_rows = c["num_layers"] * (2 if c["bidirectional"] else 1)
        self.h_out = c.get("proj_size") or c["hidden_size"]
        self.output_size = self.h_out * (2 if c["bidirectional"] else 1)


def load_repository(folder):
    models = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            models[name] = Model(name, path)
    if not models:
        raise ValueError(f"no model folders in {folder}")
    return models


def decode(pb_tensor):
    shape = tuple(pb_tensor.shape)
    if pb_tensor.raw:
        array = np.frombuffer(pb_tensor.raw, dtype="<f4")
    else:
        array = np.asarray(pb_tensor.values, dtype=np.float32)
    return torch.from_numpy(array.reshape(shape))  # a read-only view; torch never writes it


def encode(tensor, out, raw):
    out.shape.extend(tensor.shape)
    array = tensor.contiguous().numpy()
    if raw:
        out.raw = array.tobytes()
    else:
        out.values.extend(array.ravel().tolist())


def encode_state(state, response, raw):
    """h_n, or LSTM's (h_n, c_n), into the response."""
    if isinstance(state, tuple):
        encode(state[0], response.h_n, raw)
        encode(state[1], response.c_n, raw)
    else:
        encode(state, response.h_n, raw)


def state_pair(model, x, h0, c0):
    """LSTM's (h_0, c_0) for torch, zeros for the one not given (torch wants both)."""
    c = model.config
    rows = model.state_rows
    batch = () if x.dim() == 2 else (x.shape[0 if c["batch_first"] else 1],)
    if h0 is None:
        h0 = torch.zeros((rows,) + batch + (model.h_out,))
    if c0 is None:
        c0 = torch.zeros((rows,) + batch + (c["hidden_size"],))
    return (h0, c0)


def make_servicer(pb2, pb2_grpc, models):
    class Session:
        __slots__ = ("model", "h", "steps_seen")

        def __init__(self, model):
            self.model = model
            # torch tensor (L*D, N, H) or (L*D, H), for LSTM the pair (h, c); None until the
            # first chunk
            self.h = None
            self.steps_seen = 0

    class Servicer(pb2_grpc.RnnServiceServicer):
        def __init__(self):
            self.sessions = {}
            self.lock = threading.Lock()

        def _model_info(self, model):
            c = model.config
            info = pb2.ModelInfo(name=model.name)
            info.config.input_size = c["input_size"]
            info.config.hidden_size = c["hidden_size"]
            info.config.num_layers = c["num_layers"]
            info.config.module = model.module
            if "nonlinearity" in c:
                info.config.nonlinearity = c["nonlinearity"]
            if c.get("proj_size"):
                info.config.proj_size = c["proj_size"]
            info.config.bias = c["bias"]
            info.config.batch_first = c["batch_first"]
            info.config.dropout = c["dropout"]
            info.config.bidirectional = c["bidirectional"]
            count = 0
            for name, p in model.rnn.named_parameters():
                info.parameters.add(name=name, shape=list(p.shape))
                count += p.numel()
            info.parameter_count = count
            info.input_shape.extend([-1, -1, c["input_size"]])
            info.input_layout = "(N, T, C)" if c["batch_first"] else "(T, N, C)"
            info.state_shape.extend([model.state_rows, -1, model.h_out])
            if model.module == "LSTM":
                info.cell_state_shape.extend([model.state_rows, -1, c["hidden_size"]])
            info.streaming_buffers_until_end = c["bidirectional"]
            return info

        def ListModels(self, request, context):
            return pb2.ListModelsResponse(models=[self._model_info(m) for m in models.values()])

        def GetModel(self, request, context):
            model = models.get(request.model)
            if model is None:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"unknown model '{request.model}'")
            return self._model_info(model)

        def Forward(self, request, context):
            model = models.get(request.model)
            if model is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.model}'")
            raw = bool(request.input.raw)
            try:
                x = decode(request.input)
                h0 = decode(request.h_0) if request.HasField("h_0") else None
                if model.module == "LSTM" and (h0 is not None or request.HasField("c_0")):
                    h0 = state_pair(model, x, h0, decode(request.c_0)
                                    if request.HasField("c_0") else None)
                with torch.inference_mode():
                    output, h_n = model.rnn(x, h0)
            except (ValueError, RuntimeError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            response = pb2.ForwardResponse()
            encode(output, response.output, raw)
            encode_state(h_n, response, raw)
            return response

        def _chunk(self, request):
            response = pb2.StreamResponse(request_id=request.request_id)
            if request.HasField("chunk_index"):
                response.chunk_index = request.chunk_index
            if request.start:
                model = models.get(request.model)
                if model is None:
                    response.error_code = NOT_FOUND
                    response.error_message = f"unknown model '{request.model}'"
                    return response
                session_id = request.session_id or uuid.uuid4().hex
                session = Session(model)
                with self.lock:
                    if session_id in self.sessions:
                        response.error_code = ALREADY_EXISTS
                        response.error_message = f"session '{session_id}' is already live"
                        return response
                    self.sessions[session_id] = session
                if request.HasField("h_0"):
                    session.h = decode(request.h_0).clone()
                if model.module == "LSTM" and (request.HasField("h_0") or
                                               request.HasField("c_0")):
                    session.h = state_pair(model, decode(request.input), session.h,
                                           decode(request.c_0).clone()
                                           if request.HasField("c_0") else None)
            else:
                session_id = request.session_id
                with self.lock:
                    session = self.sessions.get(session_id)
                if session is None:
                    response.error_code = NOT_FOUND
                    response.error_message = f"unknown session '{session_id}'"
                    return response
            response.session_id = session_id
            raw = bool(request.input.raw)
            if request.HasField("input") and len(request.input.shape) > 0:
                try:
                    x = decode(request.input)
                    with torch.inference_mode():
                        output, h_n = session.model.rnn(x, session.h)  # one torch call a chunk
                except (ValueError, RuntimeError) as e:
                    response.error_code = INVALID_ARGUMENT
                    response.error_message = str(e)
                    if request.start:
                        with self.lock:
                            self.sessions.pop(session_id, None)
                        response.ended = True
                    return response
                session.h = h_n
                session.steps_seen += x.shape[1 if session.model.config["batch_first"]
                                              and x.dim() == 3 else 0]
                encode(output, response.output, raw)
            response.steps_seen = session.steps_seen
            if session.h is not None and not request.omit_state:
                encode_state(session.h, response, raw)
            if request.end:
                with self.lock:
                    self.sessions.pop(session_id, None)
                response.ended = True
            return response

        def Stream(self, request_iterator, context):
            # One worker thread per open stream; its requests are answered in order.
            for request in request_iterator:
                yield self._chunk(request)

    return Servicer()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_repository", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--workers", type=int, default=128,
                        help="ThreadPoolExecutor size; each open Stream holds one worker, so "
                             "this must exceed the client's stream count")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: the core count)")
    args = parser.parse_args(argv)

    pb2, pb2_grpc = load_stubs()
    torch.set_num_threads(args.threads)
    models = load_repository(args.model_repository)
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.workers),
        options=[("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)])
    pb2_grpc.add_RnnServiceServicer_to_server(make_servicer(pb2, pb2_grpc, models), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"reference_server: cannot bind {args.host}:{args.port}", file=sys.stderr)
        return 1
    server.start()
    print(f"reference_server listening on {args.host}:{port} (gRPC), "
          f"metrics on {args.host}:-1", flush=True)
    print(f"reference_server: models {', '.join(models)}; torch threads {args.threads}; "
          f"{args.workers} workers", file=sys.stderr, flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop(grace=2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
