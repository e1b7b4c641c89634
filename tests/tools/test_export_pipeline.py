"""Tests for exporting the user's own nn.Module (issue 13) with tools/export_pytorch.py: the
pipeline form round trip for every piece, the refusals, discovery, the warnings and the command
line as a user runs it. torch is the oracle, live. Run:
    (cd tests/tools && /usr/bin/python3 ../pykit/run_tests.py test_export_pipeline)"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
import warnings

import numpy as np
import torch
from torch import nn

TOOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, TOOLS_DIR)
import export_pytorch  # noqa: E402
sys.path.insert(0, os.path.join(TOOLS_DIR, "..", "tests", "parity"))
import pipelines  # noqa: E402  (tests/parity/pipelines.py)

SCRIPT = os.path.abspath(os.path.join(TOOLS_DIR, "export_pytorch.py"))
TOLERANCE = 1e-5


# The user-style model the parity cases use: optional self.embed / self.proj, a core at
# "rnn" or "encoder.rnn", optional self.head; forward returns the head's output per step.
Model = pipelines.UserModel  # (core, core_path="rnn", embed=, proj=, head=)


class LastStep(pipelines.UserModel):
    def forward(self, x, hx=None):
        y, _ = self.rnn(x, hx)
        return self.head(y[-1])


class FunctionalActivation(pipelines.UserModel):
    def forward(self, x, hx=None):
        y, _ = self.rnn(x, hx)
        return torch.relu(self.head(y))


class SharedActivation(pipelines.UserModel):
    def forward(self, x, hx=None):
        y, _ = self.rnn(self.act(self.proj(x)), hx)
        return self.act(self.head(y))


class TupleOutput(pipelines.UserModel):
    def forward(self, x, hx=None):
        y, state = self.rnn(x, hx)
        return self.head(y), state


def assert_close(test, got, want):
    """|got - want| <= 1e-5 * max(1, |want|) everywhere (want: torch's result)."""
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    test.assertEqual(tuple(got.shape), tuple(want.shape))
    excess = (got - want).abs() - TOLERANCE * want.abs().clamp(min=1.0)
    test.assertLessEqual(float(excess.max()), 0.0)


class PipelineTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = os.path.realpath(self._tmp.name)
        torch.manual_seed(1234)

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def export(self, model, name="m", **paths):
        out = self.path(name)
        config = export_pytorch.export_module(model, out, **paths)
        return out, config

    def assert_round_trip(self, model, x, hx=None, **paths):
        """Exports `model`, then checks config.json, the weights' names and values, the repr
        and the folder's model(x) (re-read from disk) against the user's model(x)."""
        model.eval()
        out, config = self.export(model, **paths)
        self.assertEqual(export_pytorch.read_config(out), config)
        self.assertEqual(list(config), ["input_layer", "rnn", "head"])
        self.assertEqual(config["rnn"]["path"], paths["rnn"])
        tensors = export_pytorch.read_safetensors(os.path.join(out, "model.safetensors"))
        expected = {}
        for path in export_pytorch.pipeline_paths(config):
            for name, value in model.get_submodule(path).state_dict().items():
                expected[f"{path}.{name}"] = value
        self.assertEqual(sorted(tensors), sorted(expected))
        state = model.state_dict()
        for name, value in tensors.items():
            np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)
        loaded = export_pytorch.load_model_folder(out)
        with torch.inference_mode():
            want = model(x, hx)
            got, _ = loaded(x, hx)
        assert_close(self, got, want)
        pieces = [repr(model.get_submodule(p)) for p in export_pytorch.pipeline_paths(config)]
        self.assertEqual(export_pytorch.pipeline_repr(loaded, config), " -> ".join(pieces))
        return config


class RoundTripTest(PipelineTestCase):
    def test_every_head_piece(self):
        head = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(),
                             nn.GELU(approximate="tanh"), nn.LayerNorm(6), nn.Dropout(0.3),
                             nn.LayerNorm(6, eps=1e-3, elementwise_affine=False),
                             nn.Linear(6, 5, bias=False), nn.Softmax(dim=-1),
                             nn.LogSoftmax(dim=-1))
        with torch.no_grad():
            head[6].weight.uniform_(0.5, 1.5)
            head[6].bias.uniform_(-0.5, 0.5)
        model = Model(nn.LSTM(3, 4, proj_size=2, bidirectional=True, num_layers=2), head=head)
        config = self.assert_round_trip(model, torch.randn(7, 2, 3), rnn="rnn", head="head")
        self.assertEqual(config["head"], [
            {"type": "Linear", "path": "head.0", "in_features": 4, "out_features": 6,
             "bias": True},
            {"type": "ReLU", "path": "head.1"}, {"type": "Tanh", "path": "head.2"},
            {"type": "Sigmoid", "path": "head.3"},
            {"type": "GELU", "path": "head.4", "approximate": "none"},
            {"type": "GELU", "path": "head.5", "approximate": "tanh"},
            {"type": "LayerNorm", "path": "head.6", "normalized_shape": [6], "eps": 1e-05,
             "elementwise_affine": True},
            {"type": "Dropout", "path": "head.7", "p": 0.3},
            {"type": "LayerNorm", "path": "head.8", "normalized_shape": [6], "eps": 1e-3,
             "elementwise_affine": False},
            {"type": "Linear", "path": "head.9", "in_features": 6, "out_features": 5,
             "bias": False},
            {"type": "Softmax", "path": "head.10", "dim": -1},
            {"type": "LogSoftmax", "path": "head.11", "dim": -1}])
        self.assertEqual(config["rnn"], {
            "module": "LSTM", "input_size": 3, "hidden_size": 4, "num_layers": 2, "bias": True,
            "batch_first": False, "dropout": 0.0, "bidirectional": True, "proj_size": 2,
            "path": "rnn"})
        self.assertEqual(config["input_layer"], [])

    def test_linear_head_over_each_core(self):
        for core in (nn.RNN(3, 5, nonlinearity="relu", batch_first=True),
                     nn.GRU(3, 5, num_layers=2, bias=False, batch_first=True),
                     nn.LSTM(3, 5, batch_first=True, bidirectional=True)):
            with self.subTest(core=repr(core)):
                out = 5 * (2 if core.bidirectional else 1)
                model = Model(core, head=nn.Linear(out, 4))
                self.assert_round_trip(model, torch.randn(2, 6, 3), rnn="rnn", head="head")
                # unbatched input, and an initial state
                h0 = torch.randn(core.num_layers * (2 if core.bidirectional else 1), 5)
                hx = (h0, torch.randn(h0.shape)) if isinstance(core, nn.LSTM) else h0
                self.assert_round_trip(model, torch.randn(6, 3), hx, rnn="rnn", head="head")

    def test_input_layers(self):
        # a Linear, a Sequential with activations, and a nested core path
        model = Model(nn.GRU(4, 6), head=nn.Linear(6, 2), proj=nn.Sequential(
            nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Dropout(0.1)))
        config = self.assert_round_trip(model, torch.randn(5, 2, 3), rnn="rnn",
                                        input_layer="proj", head="head")
        self.assertEqual([layer["path"] for layer in config["input_layer"]],
                         ["proj.0", "proj.1", "proj.2", "proj.3"])
        model = Model(nn.LSTM(4, 6), proj=nn.Linear(3, 4), core_path="encoder.rnn")
        config = self.assert_round_trip(model, torch.randn(5, 3), rnn="encoder.rnn",
                                        input_layer="proj")
        self.assertEqual(config["head"], [])
        self.assertIn("encoder.rnn.weight_ih_l0", export_pytorch.read_safetensors(
            self.path("m", "model.safetensors")))

    def test_nested_sequentials_flatten_with_their_paths(self):
        head = nn.Sequential(nn.Sequential(nn.Linear(5, 3), nn.ReLU()), nn.Linear(3, 2))
        model = Model(nn.RNN(4, 5, batch_first=True), head=head)
        config = self.assert_round_trip(model, torch.randn(2, 6, 4), rnn="rnn", head="head")
        self.assertEqual([layer["path"] for layer in config["head"]],
                         ["head.0.0", "head.0.1", "head.1"])

    def test_embedding_inputs_take_ids(self):
        ids = torch.randint(0, 30, (4, 6, ))
        # an Embedding alone, then a separate projection, then one Sequential
        model = Model(nn.RNN(8, 5, batch_first=True), head=nn.Linear(5, 3),
                      embed=nn.Embedding(30, 8, padding_idx=0))
        config = self.assert_round_trip(model, ids, rnn="rnn", input_layer="embed",
                                        head="head")
        self.assertEqual(config["input_layer"], [
            {"type": "Embedding", "path": "embed", "num_embeddings": 30, "embedding_dim": 8,
             "padding_idx": 0}])
        model = Model(nn.RNN(4, 5, batch_first=True), head=nn.Linear(5, 3),
                      embed=nn.Embedding(30, 8), proj=nn.Sequential(nn.Linear(8, 4), nn.ReLU()))
        self.assert_round_trip(model, ids, rnn="rnn", input_layer=["embed", "proj"],
                               head="head")
        model = Model(nn.GRU(4, 5), head=nn.Linear(5, 3), embed=nn.Sequential(
            nn.Embedding(30, 8, padding_idx=-1), nn.Linear(8, 4), nn.Sigmoid()))
        config = self.assert_round_trip(model, ids[0], rnn="rnn", input_layer="embed",
                                        head="head")
        self.assertEqual(config["input_layer"][0]["padding_idx"], 29)

    def test_one_activation_module_in_both_stages(self):
        model = SharedActivation(nn.GRU(4, 5), proj=nn.Linear(3, 4), head=nn.Linear(5, 2))
        model.act = nn.Tanh()
        config = self.assert_round_trip(model, torch.randn(5, 2, 3), rnn="rnn",
                                        input_layer=["proj", "act"], head=["head", "act"])
        self.assertEqual(config["input_layer"][1], {"type": "Tanh", "path": "act"})
        self.assertEqual(config["head"][1], {"type": "Tanh", "path": "act"})

    def test_a_tuple_output_counts_by_its_first_element(self):
        model = TupleOutput(nn.GRU(3, 4), head=nn.Linear(4, 2))
        self.export(model, rnn="rnn", head="head")

    def test_bare_core_keeps_the_core_only_form(self):
        rnn = nn.GRU(3, 4)
        config = export_pytorch.export_module(rnn, self.path("bare"))
        self.assertEqual(export_pytorch.read_config(self.path("bare")),
                         export_pytorch.config_from_module(rnn))
        self.assertEqual(config, export_pytorch.config_from_module(rnn))
        self.assertIsInstance(export_pytorch.load_model_folder(self.path("bare")), nn.GRU)

    def test_state_dict_with_a_pipeline_config(self):
        model = Model(nn.LSTM(3, 4, batch_first=True), head=nn.Sequential(nn.Linear(4, 2)),
                      proj=nn.Linear(5, 3))
        _, config = self.export(model, rnn="rnn", input_layer="proj", head="head")
        export_pytorch.export_state_dict(model.state_dict(), config, self.path("sd"))
        self.assertEqual(export_pytorch.read_config(self.path("sd")), config)
        with self.assertRaisesRegex(ValueError, "missing parameter 'head.0.bias'"):
            state = dict(model.state_dict())
            del state["head.0.bias"]
            export_pytorch.export_state_dict(state, config, self.path("sd2"))


class PipelineConfigTest(PipelineTestCase):
    def config(self, **changes):
        config = {"input_layer": [{"type": "Linear", "path": "proj", "in_features": 2,
                                   "out_features": 3}],
                  "rnn": {"module": "GRU", "input_size": 3, "hidden_size": 4, "path": "rnn"},
                  "head": [{"type": "Linear", "path": "head", "in_features": 4,
                            "out_features": 1}]}
        config.update(changes)
        return config

    def test_defaults_filled_in(self):
        full = export_pytorch.full_pipeline_config(self.config())
        self.assertEqual(full["input_layer"][0]["bias"], True)
        self.assertEqual(full["rnn"]["batch_first"], False)
        self.assertEqual(list(export_pytorch.pipeline_parameter_shapes(full))[:2],
                         ["proj.weight", "proj.bias"])

    def test_bad_configs(self):
        cases = [
            (self.config(extra=1), "unknown keys \\['extra'\\]"),
            (self.config(head=[{"type": "Linear", "path": "head", "in_features": 5,
                                "out_features": 1}]), "in_features 5 but 4 features"),
            (self.config(head=[{"type": "Conv1d", "path": "head"}]), "unknown layer"),
            (self.config(head=[{"type": "ReLU", "path": "head/0"}]), "attribute path"),
            (self.config(head=[{"type": "Softmax", "path": "s", "dim": 1}]), "must be -1"),
            (self.config(head=[{"type": "Embedding", "path": "e", "num_embeddings": 3,
                                "embedding_dim": 4}]), "only be the input layer's first"),
            (self.config(head=[{"type": "Linear", "path": "proj", "in_features": 4,
                                "out_features": 2}]), "more than one piece"),
            (self.config(input_layer=[{"type": "Linear", "path": "proj", "in_features": 2,
                                       "out_features": 3}, {"type": "ReLU", "path": "act"}],
                         head=[{"type": "Tanh", "path": "act"}]), "more than one piece"),
            (self.config(head=[{"type": "ReLU", "path": "rnn"}]), "more than one piece"),
            (self.config(head=[{"type": "ReLU", "path": "rnn.x"}]), "holds another piece"),
            (self.config(input_layer=[{"type": "Linear", "path": "p", "in_features": 2,
                                       "out_features": 5}]), "puts out 5 features"),
            (self.config(rnn={"module": "GRU", "input_size": 3, "hidden_size": 4}), "path"),
        ]
        for config, message in cases:
            with self.subTest(message=message):
                with self.assertRaisesRegex(ValueError, message):
                    export_pytorch.full_pipeline_config(config)


class RefusalTest(PipelineTestCase):
    def assert_refused(self, model, pattern, **paths):
        with self.assertRaisesRegex(export_pytorch.ExportError, pattern):
            self.export(model, **paths)
        self.assertEqual(os.listdir(self.dir), [], "a refused export left files behind")

    def test_wrong_attribute_path(self):
        model = Model(nn.GRU(3, 4), head=nn.Linear(4, 2))
        self.assert_refused(model, "--rnn gru: UserModel has no submodule 'gru'. The submodules "
                            "of UserModel are: rnn \\(GRU\\); head \\(Linear\\)", rnn="gru")
        self.assert_refused(model, "--head head.out: head has no submodule 'out'",
                            rnn="rnn", head="head.out")
        self.assert_refused(model, "--rnn head is a Linear, not a torch.nn.RNN", rnn="head")

    def test_unsupported_pieces_are_named(self):
        supported = "a head is an nn.Linear, or an nn.Sequential of Linear, ReLU, Tanh"
        cases = [
            (nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1)), "'head.1' \\(Conv1d\\)"),
            (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1)), "'head.1' \\(Softmax\\).*dim=1"),
            (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "'head.1' \\(BatchNorm1d\\)"),
            (nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.PReLU())),
             "'head.0.1' \\(PReLU\\)"),
        ]
        for head, pattern in cases:
            with self.subTest(pattern=pattern):
                self.assert_refused(Model(nn.GRU(3, 4), head=head), pattern + ".*" + supported,
                                    rnn="rnn", head="head")
        self.assert_refused(Model(nn.GRU(3, 4), embed=nn.Embedding(5, 3, max_norm=1.0)),
                            "'embed' \\(Embedding\\).*max_norm", rnn="rnn", input_layer="embed")
        self.assert_refused(Model(nn.GRU(3, 4), proj=nn.LayerNorm((2, 3))),
                            "'proj' \\(LayerNorm\\).*more than the last", rnn="rnn",
                            input_layer="proj")
        self.assert_refused(Model(nn.GRU(3, 4), head=nn.Linear(5, 2)),
                            "head\\[0\\] \\(Linear 'head'\\) has in_features 5 but 4",
                            rnn="rnn", head="head")

    def test_forward_that_keeps_only_the_last_step_is_refused(self):
        model = LastStep(nn.LSTM(3, 4), head=nn.Linear(4, 2))
        self.assert_refused(model, "model\\(x\\) for an input of shape \\(5, 3, 3\\) has shape "
                            "\\(3, 2\\) but the exported pipeline gives \\(5, 3, 2\\).*"
                            "keeps only the last step", rnn="rnn", head="head")
        # --no-verify writes it anyway
        self.export(model, rnn="rnn", head="head", verify=False)
        self.assertTrue(os.path.exists(self.path("m", "config.json")))

    def test_forward_with_a_function_the_pipeline_lacks_is_refused_with_the_difference(self):
        model = FunctionalActivation(nn.RNN(3, 4), head=nn.Linear(4, 2))
        with self.assertRaises(export_pytorch.ExportError) as caught:
            self.export(model, rnn="rnn", head="head")
        message = str(caught.exception)
        self.assertRegex(message, "differ by up to [0-9.e-]+ \\(max \\|difference\\|")
        self.assertIn("does not describe", message)
        # The difference it states is the real one, from torch.
        with torch.inference_mode():
            x = export_pytorch.random_input(export_pytorch.pipeline_config_from_module(
                model, "rnn", "head"), generator=torch.Generator().manual_seed(0))
            y = model.head(model.rnn(x)[0])
            stated = float(message.split("differ by up to ")[1].split()[0])
            self.assertAlmostEqual(stated, float((torch.relu(y) - y).abs().max()), places=2)
        self.assertEqual(os.listdir(self.dir), [])

    def test_a_refused_export_leaves_an_existing_folder_alone(self):
        good = Model(nn.RNN(3, 4), head=nn.Linear(4, 2))
        out, _ = self.export(good, rnn="rnn", head="head")
        before = {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}
        with self.assertRaises(export_pytorch.ExportError):
            self.export(LastStep(nn.RNN(3, 4), head=nn.Linear(4, 2)), rnn="rnn", head="head")
        after = {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}
        self.assertEqual(before, after)
        self.assertEqual(os.listdir(self.dir), ["m"])


class DiscoveryTest(PipelineTestCase):
    def test_lists_cores_and_candidates_and_suggests_the_command(self):
        model = Model(nn.LSTM(3, 4), head=nn.Sequential(nn.Linear(4, 2), nn.ReLU()),
                      embed=nn.Embedding(9, 3))
        with self.assertRaises(export_pytorch.NoCoreChosenError) as caught:
            export_pytorch.export_module(model, self.path("m"))
        message = str(caught.exception)
        self.assertIn("Recurrent submodules: rnn = LSTM(3, 4)", message)
        self.assertIn("Candidate input layers: embed = Embedding(9, 3)", message)
        self.assertIn("Candidate heads: head = Sequential( (0): Linear(in_features=4, "
                      "out_features=2, bias=True) (1): ReLU() )", message)
        self.assertIn("tools/export_pytorch.py --module-file model.pt --rnn rnn "
                      "--input-layer embed --head head --out DIR", message)
        self.assertEqual(os.listdir(self.dir), [])

    def test_several_cores_and_none(self):
        model = nn.Module()
        model.a = nn.GRU(2, 3)
        model.b = nn.Module()
        model.b.c = nn.RNN(3, 3)
        message = str(export_pytorch.NoCoreChosenError(model))
        self.assertIn("Recurrent submodules: a = GRU(2, 3); b.c = RNN(3, 3)", message)
        model = nn.Sequential(nn.Linear(2, 2))
        with self.assertRaisesRegex(export_pytorch.ExportError,
                                    "holds no torch.nn.RNN, GRU or LSTM.*0 \\(Linear\\)"):
            export_pytorch.export_module(model, self.path("m"))


class WarningTest(PipelineTestCase):
    def test_omitted_keys_warn(self):
        model = Model(nn.RNN(3, 4), head=nn.Linear(4, 2))
        _, config = self.export(model, rnn="rnn", head="head")
        for key in ("nonlinearity", "batch_first", "module"):
            with self.subTest(key=key):
                partial = json.loads(json.dumps(config))
                del partial["rnn"][key]
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    export_pytorch.export_state_dict(model.state_dict(), partial, self.path(key))
                self.assertEqual(len(caught), 1)
                self.assertIs(caught[0].category, export_pytorch.AssumedDefaultsWarning)
                self.assertIn(f"does not say {key}: torch's defaults were assumed",
                              str(caught[0].message))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            export_pytorch.export_state_dict(model.state_dict(), config, self.path("full"))
            gru = nn.GRU(3, 4)  # a GRU takes no nonlinearity: nothing was left out
            export_pytorch.export_state_dict(gru.state_dict(), {
                "module": "GRU", "input_size": 3, "hidden_size": 4, "batch_first": False},
                self.path("gru"))
        self.assertEqual(caught, [])

    def test_cli_prints_the_warning_for_a_core_only_config(self):
        rnn = nn.RNN(3, 4)
        torch.save(rnn.state_dict(), self.path("sd.pt"))
        with open(self.path("c.json"), "w") as f:
            json.dump({"input_size": 3, "hidden_size": 4}, f)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = export_pytorch.main(["--state-dict", self.path("sd.pt"), "--config",
                                      self.path("c.json"), "--out", self.path("out")])
        self.assertEqual(rc, 0, stderr.getvalue())
        self.assertIn("export_pytorch: warning: the config does not say module, batch_first, "
                      "nonlinearity: torch's defaults were assumed (module='RNN', "
                      "batch_first=False, nonlinearity='tanh')", stderr.getvalue())


USER_SCRIPT = """
import sys
import torch
from torch import nn

LOG = "runs.log"


class SpeechModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


with open(LOG, "a") as f:  # training code at top level: the exporter must not run it
    f.write("ran\\n")
torch.manual_seed(0)
torch.save(SpeechModel(), sys.argv[1])
"""


class CommandLineTest(PipelineTestCase):
    """The CLI through the real interpreter, as a user runs it from their own folders."""

    def write(self, path, text):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))

    def run_in(self, cwd, *args):
        os.makedirs(cwd, exist_ok=True)
        return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=cwd,
                              capture_output=True, text=True, timeout=120)

    def assert_failed_cleanly(self, result, *needles):
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(result.stderr.startswith("export_pytorch: error: "), result.stderr)
        for needle in needles:
            self.assertIn(needle, result.stderr)

    def test_class_defined_in_the_users_script(self):
        project = self.path("project")
        self.write(os.path.join(project, "train.py"), USER_SCRIPT)
        subprocess.run([sys.executable, "train.py", "model.pt"], cwd=project, check=True,
                       timeout=120)
        os.makedirs(self.path("elsewhere"))
        os.rename(os.path.join(project, "model.pt"), self.path("elsewhere", "model.pt"))
        model_file = self.path("elsewhere", "model.pt")
        # From another folder, the script that defines the class is nowhere to be found.
        result = self.run_in(self.path("cwd"), "--module-file", model_file, "--rnn", "rnn",
                             "--head", "head", "--out", self.path("out"))
        self.assert_failed_cleanly(result, "__main__.SpeechModel", "--import-path")
        self.assertFalse(os.path.exists(self.path("out")))
        # --import-path finds it; the exported folder serves what model(x) gives.
        result = self.run_in(self.path("cwd"), "--module-file", model_file, "--rnn", "rnn",
                             "--head", "head", "--out", self.path("out"), "--import-path",
                             project)
        self.assertEqual(result.returncode, 0, result.stderr)
        # Run from the project folder itself (the usual case): no flag needed.
        result = self.run_in(project, "--module-file", model_file, "--rnn", "rnn", "--head",
                             "head", "--out", "models/speech")
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(project, "runs.log")) as f:
            self.assertEqual(f.read(), "ran\n", "the exporter ran the user's training code")
        sys.path.insert(0, project)
        try:
            model = export_pytorch.load_module_file(model_file, [project])
        finally:
            sys.path.remove(project)
        x = torch.randn(2, 7, 6)
        with torch.inference_mode():
            want = model.eval()(x)
            for folder in (self.path("out"), os.path.join(project, "models", "speech")):
                got, _ = export_pytorch.load_model_folder(folder)(x)
                assert_close(self, got, want)
        # Without --rnn: the listing and the command to run.
        result = self.run_in(project, "--module-file", model_file, "--out", "models/x")
        self.assert_failed_cleanly(
            result, "Recurrent submodules: rnn = LSTM(6, 8, num_layers=2, batch_first=True)",
            f"tools/export_pytorch.py --module-file {model_file} --rnn rnn --head head "
            "--out models/x")

    def test_a_name_forward_needs_from_the_scripts_other_code(self):
        project = self.path("project")
        self.write(os.path.join(project, "scaled.py"), """
            import torch
            from torch import nn
            SCALE = torch.tensor(2.0)  # a call: the exporter does not run it


            class PipelineModule(nn.Module):  # the exporter's own class name, on purpose
                def __init__(self):
                    super().__init__()
                    self.rnn = nn.GRU(3, 4)
                    self.head = nn.Linear(4, 2)

                def forward(self, x):
                    return self.head(self.rnn(x * SCALE)[0])


            torch.save(PipelineModule(), "scaled.pt")
            """)
        subprocess.run([sys.executable, "scaled.py"], cwd=project, check=True, timeout=120)
        # In this process: the class is found in scaled.py (not taken from __main__ or from
        # export_pytorch), and forward misses SCALE.
        model = export_pytorch.load_module_file(os.path.join(project, "scaled.pt"))
        self.assertIsNot(type(model), export_pytorch.PipelineModule)
        self.assertEqual(type(model).__name__, "PipelineModule")
        with self.assertRaisesRegex(export_pytorch.ExportError,
                                    "NameError: name 'SCALE' is not defined \\(PipelineModule "
                                    "was loaded from .*scaled.py running only its imports"):
            export_pytorch.export_module(model, self.path("out"), rnn="rnn", head="head")
        self.assertFalse(os.path.exists(self.path("out")))

    def test_class_in_a_module_that_is_not_importable(self):
        lib = self.path("lib")
        self.write(os.path.join(lib, "speech_models.py"), USER_SCRIPT.split("with open")[0])
        self.write(os.path.join(self.path("train"), "train.py"), """
            import sys
            import torch
            from speech_models import SpeechModel
            torch.save(SpeechModel(), sys.argv[1])
            """)
        subprocess.run([sys.executable, "train.py", self.path("model.pt")],
                       cwd=self.path("train"), check=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=lib))
        result = self.run_in(self.path("cwd"), "--module-file", self.path("model.pt"),
                             "--rnn", "rnn", "--head", "head", "--out", self.path("out"))
        self.assert_failed_cleanly(result, "needs the Python module 'speech_models'",
                                   "--import-path")
        result = self.run_in(self.path("cwd"), "--module-file", self.path("model.pt"),
                             "--rnn", "rnn", "--head", "head.weight", "--out",
                             self.path("out"), "--import-path", lib)
        self.assert_failed_cleanly(result, "--head head.weight: head has no submodule "
                                   "'weight'")
        result = self.run_in(self.path("cwd"), "--module-file", self.path("model.pt"),
                             "--rnn", "rnn", "--out", self.path("out"), "--import-path", lib)
        self.assert_failed_cleanly(result, "has shape (3, 5, 5) but the exported pipeline "
                                   "gives (3, 5, 8)")
        result = self.run_in(lib, "--module-file", self.path("model.pt"), "--rnn", "rnn",
                             "--head", "head", "--out", self.path("out"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("wrote", result.stdout)


if __name__ == "__main__":
    unittest.main()
