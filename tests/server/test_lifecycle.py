"""Model versions and reload against the real server (issue 14): a repository with stray
folders and a corrupt model serves the good ones (health per model, RepositoryIndex reports the
failure, the failure counter counts it); a version rolled in while the server runs (written
under a temporary name, then renamed; SIGHUP or the poll) serves new sessions while a session
started on the old version keeps giving the old version's exact outputs (torch is the oracle);
UnloadModel and the model control flag."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest

import grpc
import numpy as np
import torch

import harness as h


def roll_in(repo, name, version, rnn):
    """Writes version `version` of `name` as the docs advise: export under a hidden temporary
    name in the model's folder (skipped by rescans), then rename it into place."""
    tmp = os.path.join(repo, name, f".tmp-{version}")
    h.export_repository(os.path.join(repo, name), {f".tmp-{version}": rnn})
    os.rename(tmp, os.path.join(repo, name, str(version)))


def cli_binary():
    """rnnserve-client: $RNNSERVE_CLIENT_BIN, else the one built beside the server."""
    return os.environ.get("RNNSERVE_CLIENT_BIN") or os.path.join(
        os.path.dirname(os.path.dirname(h.server_binary())), "client", "rnnserve-client")


def torch_chunks(rnn, x, sizes):
    """torch's output for x fed whole: the reference each chunked session must give."""
    with torch.inference_mode():
        out, _ = rnn(torch.from_numpy(x))
    return out.numpy()


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.repo = tempfile.mkdtemp(prefix="rnnserve-lifecycle-")
        self.addCleanup(shutil.rmtree, self.repo, ignore_errors=True)

    def index(self, stub):
        rows = stub.RepositoryIndex(h.pb2().RepositoryIndexRequest(), timeout=h.CALL_TIMEOUT)
        return {(m.model, m.version): m for m in rows.models}

    def test_stray_folders_and_a_corrupt_model_do_not_stop_the_good_ones(self):
        good_a = h.make_rnn(1, "RNN", input_size=3, hidden_size=4)
        good_b = h.make_rnn(2, "GRU", input_size=2, hidden_size=3)
        h.export_repository(self.repo, {"a": good_a, "corrupt": h.make_rnn(3, "RNN",
                                                                           input_size=3,
                                                                           hidden_size=4)})
        roll_in(self.repo, "b", 2, good_b)
        weights = os.path.join(self.repo, "corrupt", "model.safetensors")
        with open(weights, "rb") as f:
            data = f.read()
        with open(weights, "wb") as f:
            f.write(data[:len(data) // 2])
        os.makedirs(os.path.join(self.repo, "lost+found"))
        os.makedirs(os.path.join(self.repo, "empty"))
        h.export_repository(os.path.join(self.repo, ".ipynb_checkpoints"), {"a": good_a})

        with h.ServerProcess(model_repository=self.repo,
                             flags=["--allow_model_control"]) as server:
            stub = server.stub()
            models = stub.ListModels(h.pb2().ListModelsRequest(), timeout=h.CALL_TIMEOUT)
            self.assertEqual([(m.name, m.version, list(m.loaded_versions))
                              for m in models.models], [("a", 1, [1]), ("b", 2, [2])])
            x = np.random.default_rng(0).standard_normal((5, 2, 2)).astype(np.float32)
            got = stub.Forward(h.pb2().ForwardRequest(model="b", input=h.to_tensor(x)),
                               timeout=h.CALL_TIMEOUT)
            h.assert_close(h.from_tensor(got.output), torch_chunks(good_b, x, None), "b")

            self.assertEqual(server.health(""), "SERVING")
            self.assertEqual(server.health(f"{h.SERVICE}/a"), "SERVING")
            self.assertEqual(server.health(f"{h.SERVICE}/b"), "SERVING")
            self.assertEqual(server.health(f"{h.SERVICE}/corrupt"), "NOT_SERVING")
            self.assertEqual(server.health(f"{h.SERVICE}/empty"), "NOT_FOUND")

            index = self.index(stub)
            self.assertEqual(index[("corrupt", 1)].state, "FAILED")
            self.assertIn("model.safetensors", index[("corrupt", 1)].reason)
            self.assertEqual(index[("a", 1)].state, "READY")
            self.assertFalse([k for k in index if k[0] in ("lost+found", "empty",
                                                           ".ipynb_checkpoints")])
            with self.assertRaises(grpc.RpcError) as refused:
                stub.GetModel(h.pb2().GetModelRequest(model="corrupt"), timeout=h.CALL_TIMEOUT)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertEqual(h.metric(h.parse_metrics(server.scrape()), "rnnserve_model_load_failures_total",
                                      model="corrupt"), 1)
            log = server.stderr_text()
            for skipped in ("lost+found", "empty", ".ipynb_checkpoints"):
                self.assertEqual(log.count(f"skipping '{os.path.join(self.repo, skipped)}'"), 1,
                                 skipped)

            # Repaired and rescanned on SIGHUP: served, health follows.
            with open(weights, "wb") as f:
                f.write(data)
            server.process.send_signal(signal.SIGHUP)
            h.wait_until(lambda: server.health(f"{h.SERVICE}/corrupt") == "SERVING",
                         h.scaled(30), "the repaired model to serve")

    def test_version_rollover_keeps_old_sessions_on_their_version(self):
        v1 = h.make_rnn(11, "LSTM", input_size=3, hidden_size=5)
        v2 = h.make_rnn(22, "LSTM", input_size=3, hidden_size=5)
        roll_in(self.repo, "m", 1, v1)
        rng = np.random.default_rng(1)
        x = rng.standard_normal((8, 2, 3)).astype(np.float32)
        want_v1, want_v2 = torch_chunks(v1, x, None), torch_chunks(v2, x, None)

        with h.ServerProcess(model_repository=self.repo, metrics=False,
                             flags=["--allow_model_control",
                                    "--repository_poll_interval=100ms"]) as server:
            stub = server.stub()
            with server.stream() as old:
                first = old.call(model="m", start=True, input=x[:3])
                h.check_ok(first)
                session = first.session_id
                info = stub.GetSession(h.pb2().GetSessionRequest(session_id=session),
                                       timeout=h.CALL_TIMEOUT)
                self.assertEqual(info.model_version, 1)

                roll_in(self.repo, "m", 2, v2)
                h.wait_until(lambda: stub.GetModel(h.pb2().GetModelRequest(model="m"),
                                                   timeout=h.CALL_TIMEOUT).version == 2,
                             h.scaled(30), "version 2 to load (poll)")
                with server.stream() as fresh:
                    new = fresh.call(model="m", start=True, input=x)
                    h.check_ok(new)
                    h.assert_close(h.from_tensor(new.output), want_v2, "new session on v2")
                    info = stub.GetSession(h.pb2().GetSessionRequest(
                        session_id=new.session_id), timeout=h.CALL_TIMEOUT)
                    self.assertEqual(info.model_version, 2)

                # The old session continues on v1, with v1's exact outputs.
                outputs = [h.from_tensor(first.output)]
                for b, e in ((3, 4), (4, 8)):
                    r = old.call(session_id=session, input=x[b:e])
                    h.check_ok(r)
                    outputs.append(h.from_tensor(r.output))
                h.assert_close(np.concatenate(outputs), want_v1, "old session on v1")

                # v1 left the policy (latest 1): new sessions on it are refused, naming why.
                with server.stream() as pinned:
                    r = pinned.call(model="m", model_version=1, start=True, input=x)
                    self.assertEqual(h.grpc_code_name(r.error_code), "FAILED_PRECONDITION")
                    self.assertIn("version 1 of model 'm' is UNAVAILABLE", r.error_message)
                    self.assertIn("READY versions: 2", r.error_message)
                index = self.index(stub)
                self.assertEqual(index[("m", 1)].state, "UNAVAILABLE")
                self.assertEqual(index[("m", 1)].live_sessions, 1)
                stub.CloseSession(h.pb2().CloseSessionRequest(session_id=session),
                                  timeout=h.CALL_TIMEOUT)
            h.wait_until(lambda: self.index(stub)[("m", 1)].live_sessions == 0, h.scaled(30),
                         "version 1 to be freed")

            # UnloadModel: the latest goes too; LoadModel brings it back.
            stub.UnloadModel(h.pb2().UnloadModelRequest(model="m", model_version=2),
                             timeout=h.CALL_TIMEOUT)
            self.assertEqual(server.health(f"{h.SERVICE}/m"), "NOT_SERVING")
            with self.assertRaises(grpc.RpcError) as refused:
                stub.Forward(h.pb2().ForwardRequest(model="m", input=h.to_tensor(x)),
                             timeout=h.CALL_TIMEOUT)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            loaded = stub.LoadModel(h.pb2().LoadModelRequest(model="m"), timeout=h.CALL_TIMEOUT)
            self.assertEqual(list(loaded.loaded_versions), [2])
            self.assertEqual(server.health(f"{h.SERVICE}/m"), "SERVING")

    def test_clients_name_a_version(self):
        """Under version_policy all, both versions serve: the Python client and the CLI pick
        one by number (torch's outputs of that version), and list versions and states."""
        v1 = h.make_rnn(31, "GRU", input_size=2, hidden_size=3)
        v2 = h.make_rnn(32, "GRU", input_size=2, hidden_size=3)
        roll_in(self.repo, "g", 1, v1)
        roll_in(self.repo, "g", 2, v2)
        with open(os.path.join(self.repo, "g", "serving.json"), "w") as f:
            f.write('{"version_policy": {"all": true}}')
        x = np.random.default_rng(2).standard_normal((4, 1, 2)).astype(np.float32)
        rc = h.kit.client_module()
        with h.ServerProcess(model_repository=self.repo, metrics=False,
                             flags=["--allow_model_control"]) as server:
            client = rc.RnnServeClient(server.target, timeout=h.CALL_TIMEOUT)
            self.addCleanup(client.close)
            self.assertEqual(list(client.get_model("g").loaded_versions), [1, 2])
            self.assertEqual(client.get_model("g", model_version=1).version, 1)
            for version, rnn in ((1, v1), (2, v2), (0, v2)):
                out, _ = client.forward("g", x, model_version=version)
                h.assert_close(out, torch_chunks(rnn, x, None), f"forward v{version}")
                with client.open_stream() as stream:
                    r = stream.start("g", chunk=x, model_version=version)
                    h.assert_close(r.output, torch_chunks(rnn, x, None), f"stream v{version}")
                    info = client.get_session(r.session_id)
                    self.assertEqual(info["model_version"], version or 2)
            server.stub().UnloadModel(h.pb2().UnloadModelRequest(model="g", model_version=1),
                                      timeout=h.CALL_TIMEOUT)
            states = {(m.model, m.version): m.state for m in client.repository_index()}
            self.assertEqual(states, {("g", 1): "UNAVAILABLE", ("g", 2): "READY"})

            cli = cli_binary()
            run = lambda *args: subprocess.run(  # noqa: E731
                [cli, f"--server={server.target}", *args], capture_output=True, text=True,
                timeout=h.CALL_TIMEOUT)
            models = run("models")
            self.assertEqual(models.returncode, 0, models.stderr)
            self.assertRegex(models.stdout, r"g\s+v2\s.*\(loaded: 2\)")
            self.assertRegex(models.stdout, r"g\s+v1\s+UNAVAILABLE")
            info = run("info", "g:2")
            self.assertEqual(info.returncode, 0, info.stderr)
            self.assertIn("version     2 (loaded: 2)", info.stdout)
            refused = run("info", "g:1")
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("UNAVAILABLE", refused.stderr)

    def test_rollout_under_load_refuses_nothing(self):
        """The docs' rollout while streams keep sending: version 2 is renamed into place and
        picked up by the poll as three sessions stream without pause; every chunk, before,
        during and after the load, is answered OK with its own version's exact outputs (the
        old sessions finish on version 1, sessions started after the load get version 2), and
        version 1 is freed once its sessions end. Bounded: each session sends at most
        max_chunks chunks, and ends 8 chunks after it sees the load."""
        v1 = h.make_rnn(41, "GRU", input_size=3, hidden_size=4)
        v2 = h.make_rnn(42, "GRU", input_size=3, hidden_size=4)
        roll_in(self.repo, "m", 1, v1)
        warmup, after_load, max_chunks = 4, 8, 20000
        loaded = threading.Event()
        warmed = [threading.Event() for _ in range(6)]
        results = {}

        def run_session(i, server):
            rng = np.random.default_rng(100 + i)
            sent, outputs, errors, versions, seen_load = [], [], [], set(), 0
            with server.stream() as stream:
                for c in range(max_chunks):
                    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
                    fields = dict(model="m", start=True) if c == 0 else {}
                    r = stream.call(session_id=f"s{i}", input=x, **fields)
                    if r.error_code:
                        errors.append(r.error_message)
                        break
                    sent.append(x)
                    versions.add(r.model_version)
                    outputs.append(h.from_tensor(r.output))
                    if c + 1 == warmup:
                        warmed[i].set()
                    seen_load += loaded.is_set()
                    if c + 1 >= warmup and seen_load >= after_load:
                        break
            results[i] = (errors, versions, sent, outputs, seen_load)

        with h.ServerProcess(model_repository=self.repo, metrics=False,
                             flags=["--allow_model_control",
                                    "--repository_poll_interval=50ms"]) as server:
            stub = server.stub()
            threads = [threading.Thread(target=run_session, args=(i, server)) for i in range(6)]
            for t in threads[:3]:
                t.start()
            for i in range(3):
                self.assertTrue(warmed[i].wait(h.scaled(60)), f"session {i} to start")
            roll_in(self.repo, "m", 2, v2)
            h.wait_until(lambda: stub.GetModel(h.pb2().GetModelRequest(model="m"),
                                               timeout=h.CALL_TIMEOUT).version == 2,
                         h.scaled(30), "version 2 to load (poll)")
            loaded.set()
            for t in threads[3:]:
                t.start()
            for t in threads:
                t.join(h.scaled(120))
                self.assertFalse(t.is_alive())
            for i in range(6):
                errors, versions, sent, outputs, seen_load = results[i]
                self.assertEqual(errors, [], f"session {i}")
                self.assertGreaterEqual(seen_load, after_load, f"session {i} ran past the load")
                want = 1 if i < 3 else 2
                self.assertEqual(versions, {want}, f"session {i}")
                h.assert_close(np.concatenate(outputs),
                               torch_chunks(v1 if want == 1 else v2, np.concatenate(sent), None),
                               f"session {i} on version {want}")
                stub.CloseSession(h.pb2().CloseSessionRequest(session_id=f"s{i}"),
                                  timeout=h.CALL_TIMEOUT)
            h.wait_until(lambda: self.index(stub)[("m", 1)].live_sessions == 0, h.scaled(30),
                         "version 1 to be freed once its sessions are done")

    def test_a_resumed_session_keeps_its_version(self):
        """The Python client restarts a lost session (as on another replica) on the version the
        server pinned it to, not on whatever is latest by then; the CLI's stream and forward
        take --model_version."""
        v1 = h.make_rnn(51, "RNN", input_size=2, hidden_size=3)
        v2 = h.make_rnn(52, "RNN", input_size=2, hidden_size=3)
        roll_in(self.repo, "r", 1, v1)
        with open(os.path.join(self.repo, "r", "serving.json"), "w") as f:
            f.write('{"version_policy": {"latest": 2}}')
        x = np.random.default_rng(5).standard_normal((6, 1, 2)).astype(np.float32)
        rc = h.kit.client_module()
        with h.ServerProcess(model_repository=self.repo, metrics=False) as server:
            client = rc.RnnServeClient(server.target, timeout=h.CALL_TIMEOUT)
            self.addCleanup(client.close)
            with client.open_stream() as stream:
                first = stream.start("r", session_id="kept", chunk=x[:2])
                self.assertEqual(first.model_version, 1)
                outputs = [first.output]
                roll_in(self.repo, "r", 2, v2)
                server.process.send_signal(signal.SIGHUP)
                h.wait_until(lambda: client.get_model("r").version == 2, h.scaled(30),
                             "version 2 to load (SIGHUP)")
                client.close_session("kept")  # lost, as a replaced replica loses it
                for b, e in ((2, 4), (4, 6)):
                    outputs.append(stream.send(x[b:e]).output)
                self.assertEqual(stream.resumes, 1)
                self.assertEqual(client.get_session("kept")["model_version"], 1)
            h.assert_close(np.concatenate(outputs), torch_chunks(v1, x, None), "resumed on v1")

            cli = cli_binary()
            np.save(os.path.join(self.repo, "x.npy"), x)
            for version, rnn in ((1, v1), (2, v2)):
                for command in (["stream", "r", "--chunk_steps=2"], ["forward", "r"]):
                    out = os.path.join(self.repo, f"y{version}.npy")
                    run = subprocess.run(
                        [cli, f"--server={server.target}", *command,
                         f"--input={os.path.join(self.repo, 'x.npy')}",
                         f"--model_version={version}", f"--save_output={out}"],
                        capture_output=True, text=True, timeout=h.CALL_TIMEOUT)
                    self.assertEqual(run.returncode, 0, run.stderr)
                    h.assert_close(np.load(out), torch_chunks(rnn, x, None),
                                   f"CLI {command[0]} on v{version}")

    def test_a_folder_rewritten_under_a_fast_poll_never_serves_a_torn_model(self):
        """The real server polls every 1 ms while a writer rewrites m/1 in place, file by file
        and not atomically, alternating two weight sets of one config (every 5th rewrite
        leaves the weights truncated for a while); Forward calls run all along. Every answer is
        OK and exactly one weight set's (torch), and the server lives on. Bounded: 60
        rewrites."""
        a = h.make_rnn(61, "LSTM", input_size=3, hidden_size=4)
        b = h.make_rnn(62, "LSTM", input_size=3, hidden_size=4)
        staging = tempfile.mkdtemp(prefix="rnnserve-torn-")
        self.addCleanup(shutil.rmtree, staging, ignore_errors=True)
        h.export_repository(staging, {"a": a, "b": b})
        files = {}
        for name in ("a", "b"):
            with open(os.path.join(staging, name, "model.safetensors"), "rb") as f:
                files[name] = f.read()
        self.assertEqual(len(files["a"]), len(files["b"]))
        roll_in(self.repo, "m", 1, a)
        weights = os.path.join(self.repo, "m", "1", "model.safetensors")
        x = np.random.default_rng(6).standard_normal((5, 2, 3)).astype(np.float32)
        refs = [torch_chunks(a, x, None), torch_chunks(b, x, None)]
        done = threading.Event()
        answered = threading.Semaphore(0)  # a rewrite per answered call: they interleave

        def rewrite():
            try:
                for i in range(60):
                    if not answered.acquire(timeout=h.scaled(30)):
                        return
                    data = files["b" if i % 2 == 0 else "a"]
                    with open(weights, "wb") as f:
                        cut = len(data) // 3 if i % 5 == 4 else len(data) // 2
                        f.write(data[:cut])
                        f.flush()
                        if i % 5 != 4:
                            f.write(data[cut:])
            finally:
                done.set()

        with h.ServerProcess(model_repository=self.repo, metrics=False,
                             flags=["--repository_poll_interval=1ms"]) as server:
            stub = server.stub()
            writer = threading.Thread(target=rewrite)
            writer.start()
            calls, torn = 0, 0
            while not done.is_set() or calls == 0:
                got = h.from_tensor(stub.Forward(h.pb2().ForwardRequest(
                    model="m", input=h.to_tensor(x)), timeout=h.CALL_TIMEOUT).output)
                calls += 1
                answered.release()
                torn += not any(np.abs(got - ref).max() <= h.ATOL for ref in refs)
            writer.join(h.scaled(60))
            self.assertFalse(writer.is_alive())
            self.assertEqual(torn, 0, f"{torn} of {calls} answers matched neither weight set")
            self.assertGreaterEqual(calls, 60)
            with open(weights, "wb") as f:  # the last rewrite, whole: served once settled
                f.write(files["b"])
            h.wait_until(lambda: np.abs(h.from_tensor(stub.Forward(h.pb2().ForwardRequest(
                model="m", input=h.to_tensor(x)), timeout=h.CALL_TIMEOUT).output)
                - refs[1]).max() <= h.ATOL, h.scaled(30), "the final weights to serve")

    def test_model_control_is_off_by_default(self):
        h.export_repository(self.repo, {"m": h.make_rnn(1, "RNN", input_size=2, hidden_size=2)})
        with h.ServerProcess(model_repository=self.repo, metrics=False) as server:
            stub = server.stub()
            for call, request in ((stub.RepositoryIndex, h.pb2().RepositoryIndexRequest()),
                                  (stub.LoadModel, h.pb2().LoadModelRequest(model="m")),
                                  (stub.UnloadModel, h.pb2().UnloadModelRequest(model="m"))):
                with self.assertRaises(grpc.RpcError) as refused:
                    call(request, timeout=h.CALL_TIMEOUT)
                self.assertEqual(refused.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
                self.assertIn("--allow_model_control", refused.exception.details())
            self.assertEqual(server.health(f"{h.SERVICE}/m"), "SERVING")


if __name__ == "__main__":
    unittest.main()
