"""Random user-style nn.Modules for the pipeline parity cases (issue 13): what people train and
save, an nn.Module holding a recurrent core (self.rnn, or self.encoder.rnn) with an optional
input layer (self.embed and/or self.proj) and an optional per-step head (self.head), whose
forward returns the head's output at every step. gen_cases.py exports each one with
export_pytorch.export_module(model, dir, rnn=..., head=..., input_layer=...) and records the
model's own model(x).

    specs(count, rng, deck) -> [spec]: dealt from decks so every supported piece, every core (RNN,
        GRU, LSTM, LSTM with proj_size), batch_first, bidirectional, unbatched input, ids
        input and initial states appear
    build(spec, seed) -> UserModel (in eval(), float32)
"""

import itertools

import torch
from torch import nn

# The pieces a head may hold (export_pytorch.HEAD_SUPPORTED) besides Linear; an input layer's
# Sequential draws from the same.
ACTIVATIONS = ["ReLU", "Tanh", "Sigmoid", "GELU", "GELU_tanh", "LayerNorm", "LayerNorm_plain",
               "Dropout"]
# Input layers: none; a Linear; a Sequential of Linear and pieces; an Embedding (ids); an
# Embedding followed by a separate self.proj; a Sequential starting with an Embedding.
INPUT_KINDS = ["none", "linear", "linear_seq", "embed", "embed_proj", "embed_seq"]
# Heads: none; a Linear; a Sequential of pieces ending in a Linear, Softmax or LogSoftmax.
HEAD_KINDS = ["none", "linear", "seq", "seq_softmax", "seq_logsoftmax"]
CORES = ["RNN", "GRU", "LSTM", "LSTMP"]
FLAGS = list(itertools.product([True, False], [True, False], [True, False], [True, False]))
# (batch_first, bidirectional, batched, state given)


class UserModel(nn.Module):
    """A model as a user writes it. `core_path` is "rnn" or "encoder.rnn"."""

    def __init__(self, core, core_path="rnn", embed=None, proj=None, head=None):
        super().__init__()
        if embed is not None:
            self.embed = embed
        if proj is not None:
            self.proj = proj
        if core_path == "rnn":
            self.rnn = core
        else:
            self.encoder = nn.Module()
            self.encoder.rnn = core
        if head is not None:
            self.head = head
        self.core_path = core_path

    def core(self):
        return self.get_submodule(self.core_path)

    def features(self, x):
        """The input layer's output: what the core sees."""
        if hasattr(self, "embed"):
            x = self.embed(x)
        if hasattr(self, "proj"):
            x = self.proj(x)
        return x

    def core_state(self, x, hx=None):
        """The core's final state (h_n, or (h_n, c_n)) for input x."""
        return self.core()(self.features(x), hx)[1]

    def forward(self, x, hx=None):
        output, _ = self.core()(self.features(x), hx)
        return self.head(output) if hasattr(self, "head") else output

    def export_paths(self):
        """export_module's keyword arguments for this model."""
        inputs = [name for name in ("embed", "proj") if hasattr(self, name)]
        return {"rnn": self.core_path, "input_layer": inputs or None,
                "head": "head" if hasattr(self, "head") else None}


def specs(count, rng, deck):
    """`count` random pipeline specs (plain dicts: JSON-able, drawn from rng); deck(values,
    count, rng) deals `count` items cycling through shuffled copies of `values`."""
    cores = deck(CORES, count, rng)
    inputs = deck(INPUT_KINDS, count, rng)
    heads = deck(HEAD_KINDS, count, rng)
    flags = deck(FLAGS, count, rng)
    pieces = deck(ACTIVATIONS, 6 * count, rng)
    out = []
    for i in range(count):
        batch_first, bidirectional, batched, state = flags[i]
        module = "LSTM" if cores[i] == "LSTMP" else cores[i]
        hidden = rng.choice([1, rng.randint(2, 8), rng.randint(9, 64)])
        core = {"module": module, "hidden_size": hidden, "num_layers": rng.randint(1, 3),
                "batch_first": batch_first, "bidirectional": bidirectional,
                "bias": rng.random() < 0.8, "dropout": rng.choice([0.0, 0.0, 0.3])}
        if module == "RNN":
            core["nonlinearity"] = rng.choice(["tanh", "relu"])
        if cores[i] == "LSTMP":
            core["hidden_size"] = hidden = max(hidden, 2)
            core["proj_size"] = rng.randint(1, hidden - 1)
        states = {"LSTM": ["h", "c", "hc"]}.get(module, ["h"])
        input_kind, head_kind = inputs[i], heads[i]
        spec = {"core": core, "core_path": rng.choice(["rnn", "rnn", "encoder.rnn"]),
                "input": input_kind, "head": head_kind,
                "features": rng.randint(1, 16), "vocab": rng.randint(2, 50),
                "padding_idx": rng.choice([None, 0, 1]),
                "input_pieces": [pieces.pop() for _ in range(rng.randint(1, 2))],
                "head_pieces": [pieces.pop() for _ in range(rng.randint(1, 3))],
                "widths": [rng.randint(1, 24) for _ in range(4)],
                "head_bias": rng.random() < 0.8, "steps": rng.randint(1, 12),
                "batch": rng.randint(1, 4) if batched else 1, "batched": batched,
                "state": rng.choice(states) if state else ""}
        out.append(spec)
    return out


def _piece(name, features):
    """One non-Linear piece over `features` features."""
    if name == "GELU":
        return nn.GELU()
    if name == "GELU_tanh":
        return nn.GELU(approximate="tanh")
    if name == "LayerNorm":
        return nn.LayerNorm(features, eps=1e-5)
    if name == "LayerNorm_plain":
        return nn.LayerNorm(features, elementwise_affine=False)
    if name == "Dropout":
        return nn.Dropout(p=0.25)
    return getattr(nn, name)()


def _randomise(module, generator):
    """LayerNorm weights and biases start at 1 and 0; draw them so they are exercised."""
    for sub in module.modules():
        if isinstance(sub, nn.LayerNorm) and sub.elementwise_affine:
            with torch.no_grad():
                sub.weight.copy_(1 + 0.5 * torch.randn(sub.weight.shape, generator=generator))
                sub.bias.copy_(0.5 * torch.randn(sub.bias.shape, generator=generator))


def build(spec, seed):
    """The spec's UserModel with torch's default init under `seed`, in eval(), float32."""
    torch.manual_seed(seed)
    widths = list(spec["widths"])
    kind = spec["input"]
    embed = proj = None
    if kind.startswith("embed"):
        padding = spec["padding_idx"]
        padding = padding if padding is None or padding < spec["vocab"] else None
        embed = nn.Embedding(spec["vocab"], widths[0], padding_idx=padding)
        if kind == "embed_seq":
            embed = nn.Sequential(embed, nn.Linear(widths[0], widths[1]),
                                  *[_piece(p, widths[1]) for p in spec["input_pieces"]])
            features = widths[1]
        elif kind == "embed_proj":
            proj = nn.Sequential(nn.Linear(widths[0], widths[1]),
                                 _piece(spec["input_pieces"][0], widths[1]))
            features = widths[1]
        else:
            features = widths[0]
    elif kind == "linear":
        proj = nn.Linear(spec["features"], widths[0])
        features = widths[0]
    elif kind == "linear_seq":
        proj = nn.Sequential(nn.Linear(spec["features"], widths[0]),
                             *[_piece(p, widths[0]) for p in spec["input_pieces"]])
        features = widths[0]
    else:
        features = spec["features"]
    core_args = dict(spec["core"])
    module = core_args.pop("module")
    core = getattr(nn, module)(features, **core_args)
    out = (2 if core.bidirectional else 1) * (core.proj_size or core.hidden_size)
    head = None
    head_kind = spec["head"]
    if head_kind == "linear":
        head = nn.Linear(out, widths[2], bias=spec["head_bias"])
    elif head_kind != "none":
        layers = [nn.Linear(out, widths[2], bias=spec["head_bias"])]
        layers += [_piece(p, widths[2]) for p in spec["head_pieces"]]
        layers.append(nn.Linear(widths[2], widths[3]))
        if head_kind == "seq_softmax":
            layers.append(nn.Softmax(dim=-1))
        elif head_kind == "seq_logsoftmax":
            layers.append(nn.LogSoftmax(dim=-1))
        head = nn.Sequential(*layers)
    model = UserModel(core, spec["core_path"], embed, proj, head)
    _randomise(model, torch.Generator().manual_seed(seed + 7))
    return model.float().eval()


def takes_ids(spec):
    return spec["input"].startswith("embed")


def input_of(spec, generator):
    """A random input for the spec's model: ids (int64) or float32 features."""
    steps, batch = spec["steps"], spec["batch"]
    dims = ([batch, steps] if spec["core"]["batch_first"] else [steps, batch]) \
        if spec["batched"] else [steps]
    if takes_ids(spec):
        return torch.randint(0, spec["vocab"], dims, generator=generator)
    return torch.randn(dims + [spec["features"]], generator=generator)
