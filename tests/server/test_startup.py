"""Start-up against model repositories: a bad repository or model stops the server with a
message naming the file and the problem (symlink loops, FIFOs, absurd configs and NaN weights
included, promptly and in a bounded message); an empty one serves the built-in demo model;
SIGTERM while models load ends the process."""
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import torch

import harness as h

STARTUP_TIMEOUT = 60


def run_server(repo, flags=()):
    """Runs rnnserve on `repo` expecting it to refuse to start; returns (exit code, stderr).
    With --strict_model_repository, the fail-fast start-up these tests check (by default a
    bad model is reported while the others serve: test_lifecycle)."""
    proc = subprocess.run(
        [h.server_binary(), "--host=127.0.0.1", "--port=0", "--metrics_port=-1",
         "--strict_model_repository", f"--model_repository={repo}", *flags],
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


    def test_symlink_loop_is_named(self):
        os.symlink("loop", os.path.join(self.repo, "loop"))
        code, err = run_server(self.repo)
        self.assertEqual(code, 1)
        self.assertIn(os.path.join(self.repo, "loop"), err)
        self.assertIn("symbolic links", err)

    def test_fifo_config_fails_fast_naming_the_file(self):
        os.makedirs(os.path.join(self.repo, "fifo"))
        fifo = os.path.join(self.repo, "fifo", "config.json")
        os.mkfifo(fifo)
        # run_server's timeout bounds a hang (no writer ever opens the FIFO).
        code, err = run_server(self.repo)
        self.assertEqual(code, 1)
        self.assertIn(f"not a regular file: {fifo}", err)

    def test_huge_num_layers_gives_one_short_error_line(self):
        for num_layers in (100000, 10**7):
            with open(os.path.join(self.repo, "good", "config.json"), "w") as f:
                f.write('{"input_size": 3, "hidden_size": 4, "num_layers": %d}' % num_layers)
            code, err = run_server(self.repo)
            self.assertEqual(code, 1)
            self.assertIn(f"num_layers may be at most 1024, got {num_layers}", err)
            self.assertLess(len(err), 2000)

    def test_nan_weights_are_refused_unless_allowed(self):
        nan_repo = tempfile.mkdtemp(prefix="rnnserve-nan-")
        self.addCleanup(shutil.rmtree, nan_repo, ignore_errors=True)
        rnn = torch.nn.RNN(3, 4)
        with torch.no_grad():
            rnn.weight_hh_l0.view(-1)[6] = float("nan")
        h.export_repository(nan_repo, {"nan": rnn})
        code, err = run_server(nan_repo)
        self.assertEqual(code, 1)
        self.assertIn("model 'nan'", err)
        self.assertIn("parameter 'weight_hh_l0' holds nan at flat index 6", err)
        with h.ServerProcess(model_repository=nan_repo, metrics=False,
                             flags=["--allow_non_finite_weights"]) as server:
            models = server.stub().ListModels(h.pb2().ListModelsRequest(), timeout=10)
            self.assertEqual([m.name for m in models.models], ["nan"])

    def test_kernel_isa_is_chosen_and_reported(self):
        """--kernel_isa picks the kernels (GetModel reports them) and any choice gives torch's
        numbers; a name that is not one, or a set this CPU lacks, stops the start-up."""
        code, err = run_server(self.repo, ["--kernel_isa=sse9"])
        self.assertEqual(code, 1)
        self.assertIn("--kernel_isa: unknown kernel instruction set 'sse9'", err)
        self.assertIn("expected auto, baseline, avx2 or avx512", err)
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split())
        has_avx512 = {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags
        has_avx2 = {"avx2", "fma"} <= flags
        if not has_avx512:
            code, err = run_server(self.repo, ["--kernel_isa=avx512"])
            self.assertEqual(code, 1)
            self.assertIn("kernel instruction set 'avx512' is not available", err)
        expected_auto = "avx512" if has_avx512 else ("avx2" if has_avx2 else "baseline")
        rnn = torch.nn.LSTM(5, 24, num_layers=2, proj_size=7)
        repo = tempfile.mkdtemp(prefix="rnnserve-isa-")
        self.addCleanup(shutil.rmtree, repo, ignore_errors=True)
        h.export_repository(repo, {"lstm": rnn})
        x = torch.randn(6, 3, 5)
        with torch.inference_mode():
            want, (want_h, want_c) = rnn(x)
        choices = {"auto": expected_auto, "baseline": "baseline"}
        if has_avx2:
            choices["avx2"] = "avx2"
        if has_avx512:
            choices["avx512"] = "avx512"
        for flag, reported in choices.items():
            with self.subTest(kernel_isa=flag), h.ServerProcess(
                    model_repository=repo, metrics=False,
                    flags=[f"--kernel_isa={flag}"]) as server:
                stub = server.stub()
                info = stub.GetModel(h.pb2().GetModelRequest(model="lstm"), timeout=10)
                self.assertEqual(info.kernel_isa, reported)
                self.assertIn(f"kernels: {reported}", server.stderr_text())
                got = stub.Forward(h.pb2().ForwardRequest(model="lstm",
                                                          input=h.to_tensor(x.numpy())),
                                   timeout=10)
                h.assert_close(h.from_tensor(got.output), want.numpy(), f"{flag} output")
                h.assert_close(h.from_tensor(got.h_n), want_h.numpy(), f"{flag} h_n")
                h.assert_close(h.from_tensor(got.c_n), want_c.numpy(), f"{flag} c_n")

    def test_sigterm_while_loading_ends_the_process(self):
        # Loading is made long (32 links to one 16 MB model: about 512 MB to read, parse and
        # pack) so that the signal, sent as soon as the server blocks it, lands during loading.
        slow = tempfile.mkdtemp(prefix="rnnserve-slow-")
        self.addCleanup(shutil.rmtree, slow, ignore_errors=True)
        h.export_repository(os.path.join(slow, "store"), {"big": torch.nn.RNN(1024, 1024, 2)})
        repo = os.path.join(slow, "repo")
        os.makedirs(repo)
        for i in range(32):
            os.symlink(os.path.join(slow, "store", "big"), os.path.join(repo, f"big{i:02d}"))
        proc = subprocess.Popen(
            [h.server_binary(), "--host=127.0.0.1", "--port=0", "--metrics_port=-1",
             f"--model_repository={repo}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.kill)

        def blocks_sigterm():  # the server blocks SIGTERM first thing, then loads
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("SigBlk:"):
                        return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)) != 0
            return False

        h.wait_until(lambda: proc.poll() is None and blocks_sigterm(), h.scaled(10),
                     "the server to block SIGTERM", interval=0.001)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=h.scaled(20))
        self.assertLess(time.monotonic() - start, h.scaled(10))
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err)
        self.assertNotIn(b"listening", out)
        self.assertIn(b"received SIGTERM while starting (loading models)", err)

if __name__ == "__main__":
    unittest.main()
