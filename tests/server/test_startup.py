"""Start-up against model repositories: a bad repository or model stops the server with a
message naming the file and the problem; an empty one serves the built-in demo model."""
import os
import shutil
import subprocess
import tempfile
import unittest

import torch

import harness as h

STARTUP_TIMEOUT = 60


def run_server(repo):
    """Runs rnnserve on `repo` expecting it to refuse to start; returns (exit code, stderr)."""
    proc = subprocess.run(
        [h.server_binary(), "--host=127.0.0.1", "--port=0", "--metrics_port=-1",
         f"--model_repository={repo}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=h.scaled(STARTUP_TIMEOUT))
    stderr = proc.stderr.decode(errors="replace")
    report = h.kit.sanitizer_report(stderr)
    if report is not None:
        raise AssertionError(f"the sanitizers reported:\n{report}")
    return proc.returncode, stderr


class StartupTest(unittest.TestCase):
    def setUp(self):
        self.repo = tempfile.mkdtemp(prefix="rnnserve-startup-")
        self.addCleanup(shutil.rmtree, self.repo, ignore_errors=True)
        torch.manual_seed(3)
        h.export_repository(self.repo, {"good": torch.nn.RNN(3, 4)})

    def test_missing_weights_file_is_named(self):
        os.makedirs(os.path.join(self.repo, "broken"))
        shutil.copy(os.path.join(self.repo, "good", "config.json"),
                    os.path.join(self.repo, "broken", "config.json"))
        code, err = run_server(self.repo)
        self.assertNotEqual(code, 0)
        self.assertIn("model 'broken'", err)
        self.assertIn(os.path.join("broken", "model.safetensors"), err)

    def test_truncated_weights_are_refused(self):
        path = os.path.join(self.repo, "good", "model.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) - 7])
        code, err = run_server(self.repo)
        self.assertNotEqual(code, 0)
        self.assertIn("model.safetensors", err)
        self.assertIn("model 'good'", err)

    def test_bad_config_is_refused(self):
        with open(os.path.join(self.repo, "good", "config.json"), "w") as f:
            f.write('{"input_size": 3, "hidden_size": 4, "nonlinearity": "sigmoid"}')
        code, err = run_server(self.repo)
        self.assertNotEqual(code, 0)
        self.assertIn("config.json", err)
        self.assertIn("sigmoid", err)

    def test_weights_for_another_config_are_refused(self):
        with open(os.path.join(self.repo, "good", "config.json"), "w") as f:
            f.write('{"input_size": 3, "hidden_size": 5}')
        code, err = run_server(self.repo)
        self.assertNotEqual(code, 0)
        self.assertIn("weight_hh_l0", err)
        self.assertIn("expected (5, 5)", err)

    def test_missing_repository_is_refused(self):
        code, err = run_server(os.path.join(self.repo, "nowhere"))
        self.assertNotEqual(code, 0)
        self.assertIn("nowhere", err)

    def test_empty_repository_serves_demo(self):
        empty = tempfile.mkdtemp(prefix="rnnserve-empty-")
        self.addCleanup(shutil.rmtree, empty, ignore_errors=True)
        with h.ServerProcess(model_repository=empty, metrics=False) as server:
            models = server.stub().ListModels(h.pb2().ListModelsRequest(), timeout=10)
            self.assertEqual([m.name for m in models.models], ["demo"])


if __name__ == "__main__":
    unittest.main()
