"""Tests for tools/export_pytorch.py. Run:
    (cd tests/tools && /usr/bin/python3 ../pykit/run_tests.py test_export_pytorch)"""

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

TOOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, TOOLS_DIR)
import export_pytorch  # noqa: E402

SCRIPT = os.path.join(TOOLS_DIR, "export_pytorch.py")


def raw_safetensors(header, data=b""):
    """A safetensors file from a raw header (dict or str) and data, for forged inputs."""
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(text)) + text.encode() + data


class ExportTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, *names):
        return os.path.join(self.dir, *names)

    def assert_folder_matches(self, folder, rnn):
        with open(os.path.join(folder, "config.json")) as f:
            self.assertEqual(json.load(f), export_pytorch.config_from_module(rnn))
        tensors = export_pytorch.read_safetensors(os.path.join(folder, "model.safetensors"))
        expected = dict(rnn.named_parameters())
        self.assertEqual(sorted(tensors), sorted(expected))
        for name, value in expected.items():
            np.testing.assert_array_equal(tensors[name], value.detach().numpy(), err_msg=name)
            self.assertEqual(tensors[name].dtype, np.float32)


class ConfigTest(ExportTestCase):
    def test_config_from_module_has_torch_names(self):
        rnn = torch.nn.RNN(4, 3, num_layers=2, nonlinearity="relu", bias=False,
                           batch_first=True, dropout=0.5, bidirectional=True)
        self.assertEqual(export_pytorch.config_from_module(rnn), {
            "module": "RNN", "input_size": 4, "hidden_size": 3, "num_layers": 2,
            "nonlinearity": "relu", "bias": False, "batch_first": True, "dropout": 0.5,
            "bidirectional": True})
        self.assertIsInstance(export_pytorch.config_from_module(torch.nn.RNN(1, 1))["dropout"],
                              float)

    def test_config_from_gru_and_lstm_has_their_own_keys(self):
        gru = torch.nn.GRU(4, 3, num_layers=2, batch_first=True)
        self.assertEqual(export_pytorch.config_from_module(gru), {
            "module": "GRU", "input_size": 4, "hidden_size": 3, "num_layers": 2, "bias": True,
            "batch_first": True, "dropout": 0.0, "bidirectional": False})
        lstm = torch.nn.LSTM(4, 3, proj_size=2, bidirectional=True)
        self.assertEqual(export_pytorch.config_from_module(lstm), {
            "module": "LSTM", "input_size": 4, "hidden_size": 3, "num_layers": 1, "bias": True,
            "batch_first": False, "dropout": 0.0, "bidirectional": True, "proj_size": 2})

    def test_config_from_module_rejects_other_modules(self):
        with self.assertRaisesRegex(TypeError, "expected a torch.nn.RNN, GRU or LSTM, got "
                                    "Linear"):
            export_pytorch.config_from_module(torch.nn.Linear(2, 2))
        with self.assertRaisesRegex(TypeError, "got RNNCell"):
            export_pytorch.config_from_module(torch.nn.RNNCell(2, 2))

    def test_parameter_shapes_match_torch(self):
        for module in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM):
            for kwargs in [{}, {"num_layers": 3}, {"bias": False}, {"bidirectional": True},
                           {"num_layers": 2, "bidirectional": True, "bias": False}]:
                rnn = module(5, 4, **kwargs)
                shapes = export_pytorch.parameter_shapes(export_pytorch.config_from_module(rnn))
                self.assertEqual(list(shapes.items()),
                                 [(n, tuple(p.shape)) for n, p in rnn.named_parameters()],
                                 (module, kwargs))
        for kwargs in [{"proj_size": 1}, {"proj_size": 3, "num_layers": 3, "bidirectional": True},
                       {"proj_size": 2, "bias": False, "num_layers": 2}]:
            rnn = torch.nn.LSTM(5, 4, **kwargs)
            shapes = export_pytorch.parameter_shapes(export_pytorch.config_from_module(rnn))
            self.assertEqual(list(shapes.items()),
                             [(n, tuple(p.shape)) for n, p in rnn.named_parameters()], kwargs)

    def test_module_keys_are_checked_like_torch(self):
        base = {"input_size": 2, "hidden_size": 3}
        self.assertEqual(export_pytorch.config_module(base), "RNN")
        self.assertEqual(export_pytorch.normalize_config(dict(base, module="LSTM", proj_size=1)),
                         {"input_size": 2, "hidden_size": 3, "num_layers": 1, "bias": True,
                          "batch_first": False, "dropout": 0.0, "bidirectional": False,
                          "proj_size": 1})
        self.assertEqual(export_pytorch.full_config(dict(base, module="GRU")), {
            "module": "GRU", "input_size": 2, "hidden_size": 3, "num_layers": 1, "bias": True,
            "batch_first": False, "dropout": 0.0, "bidirectional": False})
        bad = [(dict(base, module="Transformer"), "Unknown module 'Transformer'"),
               (dict(base, module="GRU", nonlinearity="tanh"),
                "'nonlinearity' applies only to module RNN"),
               (dict(base, module="LSTM", proj_size=3), "proj_size has to be smaller"),
               (dict(base, module="LSTM", proj_size=-1), "proj_size should be a positive"),
               (dict(base, module="GRU", proj_size=1), "only supported for LSTM"),
               (dict(base, module="LSTM", proj_size=1.0), "'proj_size' must be an integer")]
        for config, message in bad:
            with self.assertRaisesRegex(ValueError, message, msg=config):
                export_pytorch.normalize_config(config)

    def test_normalize_config_fills_defaults_and_rejects_bad_values(self):
        self.assertEqual(export_pytorch.normalize_config({"input_size": 2, "hidden_size": 3}), {
            "input_size": 2, "hidden_size": 3, "num_layers": 1, "nonlinearity": "tanh",
            "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False})
        bad = [({"hidden_size": 3}, "missing required key 'input_size'"),
               ({"input_size": 2, "hidden_size": 3, "hiden": 1}, "unknown keys"),
               ({"input_size": 2.0, "hidden_size": 3}, "'input_size' must be an integer"),
               ({"input_size": True, "hidden_size": 3}, "'input_size' must be an integer"),
               ({"input_size": 2, "hidden_size": 0}, "hidden_size must be greater than zero"),
               ({"input_size": 2, "hidden_size": 3, "bias": 1}, "'bias' must be a boolean"),
               ({"input_size": 2, "hidden_size": 3, "nonlinearity": "gelu"}, "nonlinearity"),
               ({"input_size": 2, "hidden_size": 3, "dropout": 2.0}, "dropout should be")]
        for config, message in bad:
            with self.assertRaisesRegex(ValueError, message, msg=config):
                export_pytorch.normalize_config(config)


class ExportModuleTest(ExportTestCase):
    def test_exported_folders_read_back_exactly(self):
        torch.manual_seed(1)
        for i, kwargs in enumerate([{}, {"num_layers": 2, "bidirectional": True},
                                    {"bias": False, "nonlinearity": "relu"},
                                    {"batch_first": True, "dropout": 0.25, "num_layers": 2}]):
            rnn = torch.nn.RNN(6, 4, **kwargs)
            folder = self.path(f"model{i}", "nested")
            export_pytorch.export_module(rnn, folder)
            self.assert_folder_matches(folder, rnn)
            self.assertEqual(sorted(os.listdir(folder)), ["config.json", "model.safetensors"])

    def test_gru_and_lstm_folders_read_back_exactly(self):
        torch.manual_seed(2)
        for i, rnn in enumerate([torch.nn.GRU(6, 4, num_layers=2, bidirectional=True),
                                 torch.nn.LSTM(6, 4, bias=False, batch_first=True),
                                 torch.nn.LSTM(6, 5, proj_size=3, num_layers=2)]):
            folder = self.path(f"gated{i}")
            export_pytorch.export_module(rnn, folder)
            self.assert_folder_matches(folder, rnn)

    def test_file_layout_follows_the_format(self):
        rnn = torch.nn.RNN(3, 2)
        export_pytorch.export_module(rnn, self.dir)
        with open(self.path("model.safetensors"), "rb") as f:
            blob = f.read()
        (header_size,) = struct.unpack("<Q", blob[:8])
        self.assertEqual(header_size % 8, 0)
        header = json.loads(blob[8:8 + header_size])
        names = sorted(header)
        self.assertEqual(names, ["bias_hh_l0", "bias_ih_l0", "weight_hh_l0", "weight_ih_l0"])
        offset = 0
        for name in names:  # packed in sorted-name order, F32 little-endian
            entry = header[name]
            self.assertEqual(entry["dtype"], "F32")
            size = 4 * int(np.prod(entry["shape"]))
            self.assertEqual(entry["data_offsets"], [offset, offset + size])
            data = blob[8 + header_size + offset:8 + header_size + offset + size]
            np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(entry["shape"]),
                                          getattr(rnn, name).detach().numpy())
            offset += size
        self.assertEqual(len(blob), 8 + header_size + offset)


class ExportStateDictTest(ExportTestCase):
    CONFIG = {"input_size": 3, "hidden_size": 2}

    def state_dict(self):
        torch.manual_seed(0)
        return torch.nn.RNN(3, 2).state_dict()

    def test_converts_to_float32_contiguous(self):
        sd = {k: v.double() for k, v in self.state_dict().items()}
        sd["weight_ih_l0"] = sd["weight_ih_l0"].t().contiguous().t()  # non-contiguous view
        export_pytorch.export_state_dict(sd, self.CONFIG, self.dir)
        tensors = export_pytorch.read_safetensors(self.path("model.safetensors"))
        for name, value in sd.items():
            np.testing.assert_array_equal(tensors[name], value.float().numpy())

    def test_accepts_numpy_arrays(self):
        sd = {k: v.numpy() for k, v in self.state_dict().items()}
        export_pytorch.export_state_dict(sd, self.CONFIG, self.dir)
        self.assertEqual(len(export_pytorch.read_safetensors(self.path("model.safetensors"))), 4)

    def test_missing_parameter_raises(self):
        sd = self.state_dict()
        del sd["bias_hh_l0"]
        with self.assertRaisesRegex(ValueError,
                                    r"missing parameter 'bias_hh_l0' with shape \(2,\)"):
            export_pytorch.export_state_dict(sd, self.CONFIG, self.dir)
        self.assertFalse(os.path.exists(self.path("model.safetensors")))

    def test_unexpected_parameter_raises(self):
        sd = self.state_dict()
        sd["weight_ih_l1"] = torch.zeros(2, 2)
        with self.assertRaisesRegex(ValueError, "unexpected parameter 'weight_ih_l1'"):
            export_pytorch.export_state_dict(sd, self.CONFIG, self.dir)

    def test_wrong_shape_raises(self):
        sd = self.state_dict()
        sd["weight_hh_l0"] = torch.zeros(2, 3)
        with self.assertRaisesRegex(ValueError,
                                    r"'weight_hh_l0' has shape \(2, 3\), expected \(2, 2\)"):
            export_pytorch.export_state_dict(sd, self.CONFIG, self.dir)

    def test_state_dict_for_another_config_raises(self):
        with self.assertRaisesRegex(ValueError, "missing parameter 'weight_ih_l0_reverse'"):
            export_pytorch.export_state_dict(self.state_dict(),
                                             dict(self.CONFIG, bidirectional=True), self.dir)

    def test_state_dict_of_another_module_is_named(self):
        lstm = torch.nn.LSTM(3, 2).state_dict()
        with self.assertRaisesRegex(ValueError, r"the weights look like an LSTM \(weight_hh_l0 "
                                    r"is \(8, 2\).*does not match GRU config"):
            export_pytorch.export_state_dict(lstm, dict(self.CONFIG, module="GRU"), self.dir)
        with self.assertRaisesRegex(ValueError, "look like a GRU"):
            export_pytorch.export_state_dict(torch.nn.GRU(3, 2).state_dict(), self.CONFIG,
                                             self.dir)
        self.assertFalse(os.path.exists(self.path("model.safetensors")))

    def test_bad_config_raises(self):
        with self.assertRaisesRegex(ValueError, "unknown keys"):
            export_pytorch.export_state_dict(self.state_dict(), dict(self.CONFIG, mode="LSTM"),
                                             self.dir)


class SafetensorsTest(ExportTestCase):
    def test_f16_and_bf16_round_trip_as_float32(self):
        values = np.array([1.0, -2.5, 65504.0, 2.0 ** -24, -0.0, np.inf], dtype=np.float32)
        path = self.path("mixed.safetensors")
        export_pytorch.write_safetensors(path, {
            "half": values.astype(np.float16),
            "bf": torch.tensor(values[[0, 1, 4, 5]]).to(torch.bfloat16),
            "full": torch.tensor(values).reshape(2, 3)})
        with open(path, "rb") as f:
            blob = f.read()
        (header_size,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + header_size])
        self.assertEqual({k: v["dtype"] for k, v in header.items()},
                         {"half": "F16", "bf": "BF16", "full": "F32"})
        tensors = export_pytorch.read_safetensors(path)
        np.testing.assert_array_equal(tensors["half"], values)
        np.testing.assert_array_equal(tensors["bf"], values[[0, 1, 4, 5]])
        np.testing.assert_array_equal(tensors["full"], values.reshape(2, 3))
        self.assertTrue(np.signbit(tensors["half"][4]))

    def test_bf16_bit_patterns(self):
        data = struct.pack("<4H", 0x3F80, 0xC049, 0x7F80, 0x0001)
        path = self.path("bf.safetensors")
        with open(path, "wb") as f:
            f.write(raw_safetensors(
                {"t": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}, data))
        np.testing.assert_array_equal(export_pytorch.read_safetensors(path)["t"],
                                      np.array([1.0, -3.140625, np.inf, 2.0 ** -133], np.float32))

    def test_reader_accepts_metadata_and_empty_tensors(self):
        path = self.path("meta.safetensors")
        with open(path, "wb") as f:
            f.write(raw_safetensors({"__metadata__": {"format": "pt"},
                                     "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
                                     "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}},
                                    struct.pack("<f", 2.5)))
        tensors = export_pytorch.read_safetensors(path)
        self.assertEqual(tensors["e"].shape, (0, 3))
        self.assertEqual(tensors["s"].shape, ())
        self.assertEqual(float(tensors["s"]), 2.5)

    def test_reader_rejects_malformed_files(self):
        entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        cases = [
            (b"\x01\x02", "shorter than the 8-byte header length"),
            (struct.pack("<Q", 100) + b"{}", "header length 100 is out of range"),
            (raw_safetensors("{nope"), "not valid JSON"),
            (raw_safetensors('{"a":{},"a":{}}'), "duplicate keys"),
            (raw_safetensors({"a": dict(entry, dtype="F64")}, b"\0" * 8), "malformed entry"),
            (raw_safetensors({"a": dict(entry, shape=[-1])}, b"\0" * 4), "malformed entry"),
            (raw_safetensors({"a": entry}, b"\0" * 2), "do not fit"),
            (raw_safetensors({"a": entry}, b"\0" * 6), "2 trailing bytes"),
            (raw_safetensors({"a": entry, "b": entry}, b"\0" * 8), "overlap or gap"),
        ]
        for blob, message in cases:
            path = self.path("bad.safetensors")
            with open(path, "wb") as f:
                f.write(blob)
            with self.assertRaisesRegex(ValueError, message, msg=blob[:40]):
                export_pytorch.read_safetensors(path)

    def test_writer_rejects_integer_tensors(self):
        with self.assertRaisesRegex(ValueError, "tensor 'i' has dtype int64"):
            export_pytorch.write_safetensors(self.path("x"), {"i": np.arange(3)})


class CommandLineTest(ExportTestCase):
    def run_cli(self, *args):
        """Runs main() in this process (importing torch again per test would be slow)."""
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                returncode = export_pytorch.main(list(args))
            except SystemExit as e:  # argparse: --help and usage errors
                returncode = e.code
        return subprocess.CompletedProcess(args, returncode, stdout.getvalue(),
                                           stderr.getvalue())

    def test_help(self):
        result = self.run_cli("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--module-file", result.stdout)
        self.assertIn("--state-dict", result.stdout)

    def test_demo_as_a_script_is_seeded_rnn_100_10_2(self):
        # Once through the real interpreter, as users run it.
        result = subprocess.run([sys.executable, SCRIPT, "--out", self.dir, "--demo"],
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        torch.manual_seed(0)
        self.assert_folder_matches(self.dir, torch.nn.RNN(100, 10, num_layers=2))

    def test_module_file_and_state_dict(self):
        torch.manual_seed(3)
        rnn = torch.nn.RNN(4, 3, bidirectional=True, batch_first=True)
        torch.save(rnn, self.path("model.pt"))
        torch.save(rnn.state_dict(), self.path("sd.pt"))
        with open(self.path("cfg.json"), "w") as f:
            json.dump({"input_size": 4, "hidden_size": 3, "bidirectional": True,
                       "batch_first": True}, f)
        result = self.run_cli("--out", self.path("a"), "--module-file", self.path("model.pt"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_folder_matches(self.path("a"), rnn)
        result = self.run_cli("--out", self.path("b"), "--state-dict", self.path("sd.pt"),
                              "--config", self.path("cfg.json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_folder_matches(self.path("b"), rnn)

    def test_fresh_rnn_from_flags(self):
        result = self.run_cli("--out", self.dir, "--input-size", "5", "--hidden-size", "4",
                              "--num-layers", "2", "--nonlinearity", "relu", "--no-bias",
                              "--batch-first", "--bidirectional", "--seed", "7")
        self.assertEqual(result.returncode, 0, result.stderr)
        torch.manual_seed(7)
        self.assert_folder_matches(self.dir, torch.nn.RNN(
            5, 4, num_layers=2, nonlinearity="relu", bias=False, batch_first=True,
            bidirectional=True))

    def test_fresh_gru_and_lstm_from_flags(self):
        result = self.run_cli("--out", self.path("g"), "--module", "GRU", "--input-size", "5",
                              "--hidden-size", "4", "--num-layers", "2", "--seed", "3")
        self.assertEqual(result.returncode, 0, result.stderr)
        torch.manual_seed(3)
        self.assert_folder_matches(self.path("g"), torch.nn.GRU(5, 4, num_layers=2))
        result = self.run_cli("--out", self.path("l"), "--module", "LSTM", "--input-size", "5",
                              "--hidden-size", "4", "--proj-size", "2", "--bidirectional")
        self.assertEqual(result.returncode, 0, result.stderr)
        torch.manual_seed(0)
        self.assert_folder_matches(self.path("l"),
                                   torch.nn.LSTM(5, 4, proj_size=2, bidirectional=True))
        result = self.run_cli("--out", self.path("x"), "--module", "GRU", "--input-size", "5",
                              "--hidden-size", "4", "--nonlinearity", "relu")
        self.assertEqual(result.returncode, 2)
        self.assertIn("'nonlinearity' applies only to module RNN", result.stderr)

    def test_lstm_module_file_and_state_dict(self):
        torch.manual_seed(4)
        lstm = torch.nn.LSTM(4, 3, proj_size=1, batch_first=True)
        torch.save(lstm, self.path("lstm.pt"))
        torch.save(lstm.state_dict(), self.path("lstm_sd.pt"))
        with open(self.path("lstm.json"), "w") as f:
            json.dump({"module": "LSTM", "input_size": 4, "hidden_size": 3, "proj_size": 1,
                       "batch_first": True}, f)
        result = self.run_cli("--out", self.path("a"), "--module-file", self.path("lstm.pt"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_folder_matches(self.path("a"), lstm)
        result = self.run_cli("--out", self.path("b"), "--state-dict", self.path("lstm_sd.pt"),
                              "--config", self.path("lstm.json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assert_folder_matches(self.path("b"), lstm)

    def test_errors_exit_nonzero_with_a_message(self):
        result = self.run_cli("--out", self.dir, "--state-dict", self.path("sd.pt"))
        self.assertEqual(result.returncode, 2)
        self.assertIn("--state-dict needs --config", result.stderr)
        result = self.run_cli("--out", self.dir, "--input-size", "0", "--hidden-size", "2")
        self.assertEqual(result.returncode, 2)
        self.assertIn("input_size must be greater than zero", result.stderr)


if __name__ == "__main__":
    unittest.main()
