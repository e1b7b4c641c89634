"""Seeded torch.nn.RNN, GRU and LSTM modules, model repositories (tools/export_pytorch.py) and
torch's outputs: torch is the oracle every number from the server is checked against."""

import os

import numpy as np


def make_rnn(seed, module="RNN", **config):
    """A freshly initialised torch.nn.<module>(**config) ("RNN", "GRU" or "LSTM") from
    torch.manual_seed(seed), in eval()."""
    import torch
    torch.manual_seed(seed)
    return getattr(torch.nn, module)(**config).eval()


def export_repository(folder, models):
    """Writes {name: torch module} as a model repository (one subfolder per model)."""
    import export_pytorch  # tools/
    for name, rnn in models.items():
        export_pytorch.export_module(rnn, os.path.join(folder, name))
    return folder


def write_model(out_dir, seed, **config):
    """Exports make_rnn(seed, **config) into the model folder `out_dir`; returns the module."""
    import export_pytorch
    rnn = make_rnn(seed, **config)
    export_pytorch.export_module(rnn, out_dir)
    return rnn


def load_torch(model_dir):
    """The torch module of an rnnserve model folder (config.json + model.safetensors): the bare
    torch.nn.RNN/GRU/LSTM of a core-only folder, else the pipeline (export_pytorch's
    load_model_folder), in eval()."""
    import export_pytorch
    return export_pytorch.load_model_folder(model_dir)


def has_cell_state(rnn):
    """True for an LSTM: its state is the pair (h, c)."""
    import torch
    return isinstance(rnn, torch.nn.LSTM)


def state_shapes(rnn, batch=None):
    """The shapes of h and (LSTM; else None) c: (L*D, N, H_out) and (L*D, N, H), or without N
    when batch is None (unbatched)."""
    rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
    h_out = getattr(rnn, "proj_size", 0) or rnn.hidden_size
    lead = (rows,) if batch is None else (rows, batch)
    return lead + (h_out,), (lead + (rnn.hidden_size,) if has_cell_state(rnn) else None)


def torch_forward_state(rnn, x, h0=None, c0=None):
    """torch's (output, h_n, c_n) of the module on x as float32 numpy arrays; c_n is None for
    RNN and GRU. For an LSTM an absent h0 or c0 is zeros (torch takes both or neither)."""
    import torch

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    with torch.no_grad():
        if has_cell_state(rnn):
            state = None
            if h0 is not None or c0 is not None:
                batch = x.shape[0 if rnn.batch_first else 1] if x.ndim == 3 else None
                h_shape, c_shape = state_shapes(rnn, batch)
                state = (tensor(h0 if h0 is not None else np.zeros(h_shape, np.float32)),
                         tensor(c0 if c0 is not None else np.zeros(c_shape, np.float32)))
            out, (h_n, c_n) = rnn(tensor(x), state)
            return out.numpy().copy(), h_n.numpy().copy(), c_n.numpy().copy()
        out, h_n = rnn(tensor(x), None if h0 is None else tensor(h0))
        return out.numpy().copy(), h_n.numpy().copy(), None


def torch_forward(rnn, x, h0=None):
    """torch's (output, h_n) of rnn(x, h0) as float32 numpy arrays (c_0 zeros for an LSTM)."""
    out, h_n, _ = torch_forward_state(rnn, x, h0)
    return out, h_n
