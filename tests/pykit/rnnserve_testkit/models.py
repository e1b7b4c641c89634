"""Seeded torch.nn.RNNs, model repositories (tools/export_pytorch.py) and torch's outputs:
torch is the oracle every number from the server is checked against."""

import json
import os

import numpy as np


def make_rnn(seed, **config):
    """A freshly initialised torch.nn.RNN(**config) from torch.manual_seed(seed), in eval()."""
    import torch
    torch.manual_seed(seed)
    return torch.nn.RNN(**config).eval()


def export_repository(folder, models):
    """Writes {name: torch.nn.RNN} as a model repository (one subfolder per model)."""
    import export_pytorch  # tools/
    for name, rnn in models.items():
        export_pytorch.export_module(rnn, os.path.join(folder, name))
    return folder


def write_model(out_dir, seed, **config):
    """Exports make_rnn(seed, **config) into the model folder `out_dir`; returns the RNN."""
    import export_pytorch
    rnn = make_rnn(seed, **config)
    export_pytorch.export_module(rnn, out_dir)
    return rnn


def load_torch(model_dir):
    """The torch.nn.RNN of an rnnserve model folder (config.json + model.safetensors)."""
    import torch
    import export_pytorch
    with open(os.path.join(model_dir, export_pytorch.CONFIG_FILE)) as f:
        config = json.load(f)
    rnn = torch.nn.RNN(**export_pytorch.normalize_config(config))
    state = export_pytorch.read_safetensors(os.path.join(model_dir, export_pytorch.WEIGHTS_FILE))
    rnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return rnn.eval()


def torch_forward(rnn, x, h0=None):
    """torch's (output, h_n) of rnn(x, h0) as float32 numpy arrays."""
    import torch
    with torch.no_grad():
        out, h_n = rnn(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                       None if h0 is None else
                       torch.from_numpy(np.ascontiguousarray(h0, dtype=np.float32)))
    return out.numpy().copy(), h_n.numpy().copy()
