"""Parity of the real rnnserve server with torch.nn.RNN, GRU and LSTM (with and without
proj_size): every case tests/parity/gen_cases.py wrote (the ctest fixture parity_cases; torch
computed the expected numbers live) through ONE rnnserve process over gRPC.

The model repository is a temporary folder of symlinks, one model per case named after it, to
the case folders' model/ (the same files the engine's parity_test loads). For every case:

- Forward, in both tensor encodings (float `values` and `raw` little-endian bytes), with h_0 and
  c_0 when the case has them: output, h_n and (LSTM) c_n against torch's; a model without cell
  state answers without c_n; the response uses the request's encoding.
- Stream: a session started with h_0/c_0 (when the case has them) and fed the case's chunk split
  with chunk_index. Unidirectional: the chunk outputs concatenated along time equal torch's
  output and the last response's h_n/c_n torch's; the last chunk does not end the session, which
  is exported: GetSession (in its encoding) and CloseSession give torch's h_n and c_n.
  Bidirectional: `end` on the last chunk; every chunk before it is answered with no output
  (buffered) and the `end` response carries the output over the whole sequence and the final
  state. The encoding alternates between cases.
- Sessions batched by the scheduler (unidirectional cases): the case's batch split into
  sessions of contiguous rows, each with its own chunk lengths per round (the manifest's
  "sessions", the plan the engine's StepBatch test follows), all sent interleaved on one stream
  with the whole-batch session above, so the server's batches mix sessions of one model with
  different chunk lengths; the rows reassembled must equal torch's output, h_n and c_n.
- ModelInfo (ListModels): one model per folder name, and each describes the case's torch
  module: ModelConfig, named_parameters() (names, shapes, order), parameter_count, input and
  state shapes, streaming_buffers_until_end, and the `module` string equal to torch's repr()
  (once the nonlinearity='relu' it adds for relu RNNs, which torch's repr leaves out, is
  taken away).
- Error cases (manifest "error_cases", inputs torch rejects), in both encodings: Forward is
  refused with INVALID_ARGUMENT and a message holding the manifest's key facts (the expected
  and the actual numbers torch names); a Stream start with the same tensors is refused with
  INVALID_ARGUMENT and leaves no session, and holds the key facts when the chunk alone is wrong
  (a start's h_0/c_0 is a state import, checked on its own: see stream_start_refusal).

Tolerance: the manifest's, as the engine's test applies it: every element
|server - torch| <= tolerance * max(1, |torch|). A failure names the case, the call, the worst
difference and the tolerance. Needs RNNSERVE_PARITY_DIR (the cases) and RNNSERVE_BIN (ctest sets
both):

    (cd tests/parity && RNNSERVE_PARITY_DIR=../../build/tests/parity/cases \\
        /usr/bin/python3 ../pykit/run_tests.py server_parity)
"""

import concurrent.futures
import json
import os
import re
import shutil
import sys
import tempfile
import time
import unittest
import warnings

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "server"))
import harness as h  # noqa: E402  (tests/server/harness.py: tensors, Stream, the kit)
import export_pytorch  # noqa: E402  (tools/, on sys.path through the kit)

ENCODINGS = ("values", "raw")
INVALID_ARGUMENT = h.grpc.StatusCode.INVALID_ARGUMENT
# Cases per window: one window is one Stream call (all its requests pipelined) plus its
# Forward calls in flight together; WORKERS windows run at once on one channel.
WINDOW = 48
WORKERS = 3
# Lets a compute worker wait this long for a fuller batch, so that the sessions of one case
# (sent together) share engine calls, with their different chunk lengths.
QUEUE_DELAY = "--max_queue_delay=2ms"
# Failures listed in full; the rest are counted.
MAX_LISTED_FAILURES = 40


def parity_dir():
    path = os.environ.get("RNNSERVE_PARITY_DIR")
    if not path:
        raise AssertionError("RNNSERVE_PARITY_DIR is not set: run through ctest (fixture "
                             "parity_cases) or set it to a folder written by "
                             "tests/parity/gen_cases.py --out DIR")
    manifest = os.path.join(path, "manifest.json")
    if not os.path.exists(manifest):
        raise AssertionError(f"no {manifest}: run /usr/bin/python3 tests/parity/gen_cases.py "
                             f"--out {path}")
    return path


# ---- layouts ------------------------------------------------------------------------------
# The cases' tensors are in torch's layouts: (T, N, F), (N, T, F) batch_first, or (T, F)
# unbatched; states (L*D, N, F) or (L*D, F). Sessions slice rows and steps time-major.


def note_differences(failures, what, got, expected, source):
    """Appends to `failures` one line naming every field where `got` differs from `expected`
    (both dicts over the same keys); nothing when they agree."""
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    if wrong:
        failures.append(f"{what}: " + "; ".join(
            f"{k} {g!r}, {source} {e!r}" for k, (g, e) in sorted(wrong.items())))


class Case:
    """One manifest case with its tensors (from case.safetensors)."""

    def __init__(self, entry, folder):
        self.entry = entry
        self.name = entry["name"]
        # A pipeline case (the user's own nn.Module) holds the whole config.json; its
        # recurrent core is under "rnn".
        self.pipeline = bool(entry.get("pipeline"))
        self.core = entry["config"]["rnn"] if self.pipeline else entry["config"]
        self.lstm = self.core["module"] == "LSTM"
        self.bidirectional = self.core["bidirectional"]
        self.batch_first = self.core["batch_first"]
        self.batched = entry["batched"]
        # Token ids (an Embedding first) go as Tensor.ids; the case file stores them as floats.
        self.ids = entry.get("input_kind") == "ids"
        self.encodings = ("ids",) if self.ids else ENCODINGS
        tensors = export_pytorch.read_safetensors(os.path.join(folder, entry["case_file"]))
        self.input = tensors["input"].astype(np.int64) if self.ids else tensors["input"]
        self.output = tensors["output"]
        self.h_n = tensors["h_n"]
        self.c_n = tensors.get("c_n") if self.lstm else None
        self.h0 = tensors["h0"] if entry["has_h0"] else None
        self.c0 = tensors["c0"] if entry["has_c0"] else None
        if self.lstm and self.c_n is None:
            raise AssertionError(f"{self.name}: an LSTM case without c_n")
        self.time_axis = 1 if self.batched and self.batch_first else 0
        self.steps = self.input.shape[self.time_axis]

    def describe(self):
        if self.pipeline:
            module = self.entry["repr"]
        else:
            config = self.entry["config"]
            flags = [f"{k}={v}" for k, v in sorted(config.items()) if k != "module"]
            module = f"{config['module']}({', '.join(flags)})"
        return (f"{module} input {list(self.input.shape)}{' ids' if self.ids else ''}"
                f"{' h0' if self.h0 is not None else ''}{' c0' if self.c0 is not None else ''}")

    def time_major(self, x):
        """(T, N, F) view of an input or output in the case's layout ((T, N) for ids)."""
        if not self.batched:
            return x[:, None]
        return np.swapaxes(x, 0, 1) if self.batch_first else x

    def from_time_major(self, x):
        if not self.batched:
            return x[:, 0]
        return np.swapaxes(x, 0, 1) if self.batch_first else x

    def state_rows(self, s):
        """(L*D, N, F) view of a state in the case's layout."""
        return s if self.batched else s[:, None, :]

    def from_state_rows(self, s):
        return s if self.batched else s[:, 0, :]

    def chunk(self, begin, end, rows=None):
        """Steps [begin, end) of the input (of batch rows [rows) when given), in the case's
        layout."""
        x = self.time_major(self.input)[begin:end]
        if rows is not None:
            x = x[:, rows[0]:rows[1]]
        return np.ascontiguousarray(self.from_time_major(x))

    def state_slice(self, s, rows):
        """Batch rows [rows) of a state (all of it when rows is None), in the case's layout."""
        if s is None or rows is None:
            return s
        return np.ascontiguousarray(self.from_state_rows(self.state_rows(s)[:, rows[0]:rows[1]]))


# ---- comparison ---------------------------------------------------------------------------

def difference(actual, expected):
    """(worst |actual - torch| / max(1, |torch|), worst |actual - torch|): inf on a shape
    mismatch or a NaN."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf"), float("inf")
    if actual.size == 0:
        return 0.0, 0.0
    d = np.abs(actual - expected)
    if np.isnan(d).any():
        return float("inf"), float("inf")
    return float((d / np.maximum(1.0, np.abs(expected))).max()), float(d.max())


class Checker:
    """Collects every failure (case, call, what, worst difference, tolerance) and the worst
    difference seen, so one run reports all broken cases, not the first."""

    def __init__(self, tolerance):
        self.tolerance = tolerance
        self.failures = []
        self.checked = 0
        self.worst = (0.0, "")

    def fail(self, case, call, message):
        self.failures.append(f"{case.name} {call}: {message} [{case.describe()}]")

    def close(self, case, call, what, actual, expected):
        self.checked += 1
        scaled, absolute = difference(actual, expected)
        if scaled > self.worst[0]:
            self.worst = (scaled, f"{case.name} {call} {what}")
        if not scaled <= self.tolerance:
            self.fail(case, call,
                      f"{what}: max |server - torch| / max(1, |torch|) = {scaled:.3g} (max "
                      f"|server - torch| = {absolute:.3g}) > tolerance {self.tolerance}; "
                      f"server shape {list(np.shape(actual))}, torch shape "
                      f"{list(np.shape(expected))}; torch's own float32 error "
                      f"{case.entry['torch_f32_error']:.3g}")

    def state(self, case, call, message, expected_h, expected_c):
        """h_n (and c_n exactly for an LSTM) of a response against torch's."""
        if not message.HasField("h_n"):
            self.fail(case, call, "no h_n in the response")
        else:
            self.close(case, call, "h_n", h.from_tensor(message.h_n), expected_h)
        if expected_c is None:
            if message.HasField("c_n"):
                self.fail(case, call, "c_n on a model without cell state")
        elif not message.HasField("c_n"):
            self.fail(case, call, "no c_n in an LSTM's response")
        else:
            self.close(case, call, "c_n", h.from_tensor(message.c_n), expected_c)

    def encoding(self, case, call, tensor, encoding):
        # An ids request is answered in values (floats).
        expected = "values" if encoding == "ids" else encoding
        if tensor.shape and int(np.prod(tensor.shape)) > 0 and h.encoding_of(tensor) != expected:
            self.fail(case, call, f"answered in {h.encoding_of(tensor)}, asked in {encoding}")

    def merge(self, other):
        self.failures += other.failures
        self.checked += other.checked
        self.worst = max(self.worst, other.worst)

    def summary(self):
        listed = self.failures[:MAX_LISTED_FAILURES]
        more = len(self.failures) - len(listed)
        return "\n".join(listed + ([f"... and {more} more"] if more > 0 else []))


# ---- the calls ----------------------------------------------------------------------------

class Session:
    """One streamed session of a case: its rows (None: the whole batch), its chunks
    [(begin, end)] in order and the round each is sent in; responses are filled in by chunk
    index. `exported`: the last chunk does not end it; its state is read with GetSession and
    CloseSession instead."""

    def __init__(self, case, key, rows, lengths, encoding, exported=False):
        self.case = case
        self.exported = exported
        self.id = f"{case.name}:{key}"
        self.rows = rows
        # A round with length 0 leaves the session idle (nothing is sent for it).
        self.bounds, self.rounds = [], []
        begin = 0
        for round_index, length in enumerate(lengths):
            if length > 0:
                self.bounds.append((begin, begin + length))
                self.rounds.append(round_index)
            begin += length
        self.encoding = encoding
        self.responses = [None] * len(self.bounds)

    def request(self, k):
        begin, end = self.bounds[k]
        fields = dict(session_id=self.id, input=self.case.chunk(begin, end, self.rows),
                      chunk_index=k, end=k == len(self.bounds) - 1 and not self.exported)
        if k == 0:
            fields.update(start=True, model=self.case.name,
                          h_0=self.case.state_slice(self.case.h0, self.rows),
                          c_0=self.case.state_slice(self.case.c0, self.rows))
        return fields

    @property
    def call(self):
        return f"Stream[{self.encoding}, session {self.id}, chunks {self.bounds}]"


def sessions_of(case, index):
    """The whole-batch session and (unidirectional) the row sessions of a case."""
    encodings = case.encodings
    encoding = encodings[index % len(encodings)]
    # A bidirectional session answers at `end` only; a unidirectional one stays open for the
    # state export.
    sessions = [Session(case, "batch", None, case.entry["chunks"], encoding,
                        exported=not case.bidirectional)]
    if not case.bidirectional:
        n = case.time_major(case.input).shape[1]
        for j, plan in enumerate(case.entry["sessions"]):
            rows = (plan["begin"], plan["begin"] + plan["size"])
            if rows[1] > n:
                raise AssertionError(f"{case.name}: session rows {rows} beyond N={n}")
            sessions.append(Session(case, f"rows{rows[0]}-{rows[1]}", rows,
                                    plan["chunks"], encodings[(index + j + 1) % len(encodings)]))
    return sessions


def state_encoding(encoding):
    """States are floats: an ids request sends them as values."""
    return "values" if encoding == "ids" else encoding


def forward_request(case, encoding):
    request = h.pb2().ForwardRequest(model=case.name, input=h.to_tensor(case.input, encoding))
    if case.h0 is not None:
        request.h_0.CopyFrom(h.to_tensor(case.h0, state_encoding(encoding)))
    if case.c0 is not None:
        request.c_0.CopyFrom(h.to_tensor(case.c0, state_encoding(encoding)))
    return request


def check_forward(checker, case, encoding, future):
    call = f"Forward[{encoding}]"
    try:
        response = future.result()
    except grpc.RpcError as e:
        checker.fail(case, call, f"failed with {e.code().name}: {e.details()}")
        return
    checker.close(case, call, "output", h.from_tensor(response.output), case.output)
    checker.state(case, call, response, case.h_n, case.c_n)
    checker.encoding(case, call, response.output, encoding)


def check_session(checker, session):
    case, call = session.case, session.call
    for k, response in enumerate(session.responses):
        if response is None:
            checker.fail(case, call, f"no response to chunk {k}")
            return
        if response.error_code:
            checker.fail(case, call, f"chunk {k} failed with "
                         f"{h.grpc_code_name(response.error_code)}: {response.error_message}")
            return
        if response.chunk_index != k or response.duplicate or response.session_id != session.id:
            checker.fail(case, call, f"chunk {k} answered as chunk_index "
                         f"{response.chunk_index} of session {response.session_id!r}, "
                         f"duplicate={response.duplicate}")
        if not case.bidirectional:
            if response.steps_seen != session.bounds[k][1]:
                checker.fail(case, call, f"chunk {k}: steps_seen {response.steps_seen}, "
                             f"expected {session.bounds[k][1]}")
            checker.encoding(case, f"{call} chunk {k}", response.output, session.encoding)
    last = session.responses[-1]
    rows = session.rows or (0, case.time_major(case.input).shape[1])
    expected_out = case.from_time_major(case.time_major(case.output)[:, rows[0]:rows[1]])
    expected_h = case.state_slice(case.h_n, rows)
    expected_c = case.state_slice(case.c_n, rows)
    if case.bidirectional:
        for k, response in enumerate(session.responses[:-1]):
            if response.output.raw or response.output.values:
                checker.fail(case, call, f"chunk {k} of a bidirectional session answered with "
                             "output before end")
        output = h.from_tensor(last.output)
    else:
        output = np.concatenate([h.from_tensor(r.output) for r in session.responses],
                                axis=case.time_axis)
    checker.close(case, call, "output", output, expected_out)
    checker.state(case, call, last, expected_h, expected_c)
    checker.encoding(case, call, last.output, session.encoding)
    if last.ended == session.exported or last.steps_seen != case.steps:
        checker.fail(case, call, f"last response: ended={last.ended}, steps_seen="
                     f"{last.steps_seen}, expected ended={not session.exported} after "
                     f"{case.steps} steps")


def check_export(checker, session, got, closed):
    """GetSession (in the session's encoding) and CloseSession (values) of an open session:
    the state export equals torch's h_n and c_n."""
    case = session.case
    for call, future in ((f"GetSession[{session.encoding}, session {session.id}]", got),
                         (f"CloseSession[session {session.id}]", closed)):
        try:
            info = future.result()
        except grpc.RpcError as e:
            checker.fail(case, call, f"failed with {e.code().name}: {e.details()}")
            continue
        if call.startswith("CloseSession"):
            info = info.session
        else:
            checker.encoding(case, call, info.h_n, session.encoding)
        checker.state(case, call, info, case.h_n, case.c_n)
        n = case.time_major(case.input).shape[1]
        if (info.steps_seen, info.batch_size, info.unbatched) != (case.steps, n,
                                                                   not case.batched):
            checker.fail(case, call, f"steps_seen {info.steps_seen}, batch_size "
                         f"{info.batch_size}, unbatched {info.unbatched}; expected "
                         f"{case.steps}, {n}, {not case.batched}")


def run_window(stub, tolerance, window):
    """Forward (both encodings) and every session of the cases in `window` [(index, case)]:
    all Forward calls in flight together, all stream requests pipelined on one Stream, round
    by round, so sessions of one case are batched together. Returns (its Checker, sessions,
    stream requests)."""
    checker = Checker(tolerance)
    forwards = [(case, encoding, stub.Forward.future(forward_request(case, encoding),
                                                     timeout=h.CALL_TIMEOUT))
                for _, case in window for encoding in case.encodings]
    sessions = [s for index, case in window for s in sessions_of(case, index)]
    pending = {}
    with h.Stream(stub, timeout=h.scaled(300.0)) as stream:
        # Round by round (the sessions' plan), each round's chunks of all sessions together.
        order = sorted((round_index, i, k) for i, session in enumerate(sessions)
                       for k, round_index in enumerate(session.rounds))
        for _, i, k in order:
            request_id = stream.send(sessions[i].encoding, **sessions[i].request(k))
            pending[request_id] = (sessions[i], k)
        responses, _ = stream.recv_many(len(pending), timeout=h.scaled(120.0))
        status = stream.close()
    if status != grpc.StatusCode.OK:
        raise AssertionError(f"Stream of cases {window[0][1].name}..{window[-1][1].name} ended "
                             f"with {status}")
    for request_id, (session, k) in pending.items():
        session.responses[k] = responses[request_id]
    for case, encoding, future in forwards:
        check_forward(checker, case, encoding, future)
    for session in sessions:
        check_session(checker, session)
    exported = [s for s in sessions if s.exported]
    reads = [stub.GetSession.future(h.pb2().GetSessionRequest(
        session_id=s.id, raw=s.encoding == "raw"), timeout=h.CALL_TIMEOUT) for s in exported]
    for session, got in zip(exported, reads):
        got.exception()  # read before the close
        closed = stub.CloseSession.future(h.pb2().CloseSessionRequest(session_id=session.id),
                                          timeout=h.CALL_TIMEOUT)
        check_export(checker, session, got, closed)
    return checker, len(sessions), len(pending)


# ---- error cases --------------------------------------------------------------------------

def integers(text):
    return [int(m) for m in re.findall(r"\d+", text)]


def contains_run(haystack, run):
    return any(haystack[i:i + len(run)] == run for i in range(len(haystack) - len(run) + 1))


def missing_key_facts(entry, message, names):
    """The manifest's key numbers (each a contiguous run) not in `message`; the model and
    session names are taken out first, so digits in them never count."""
    for name in names:
        message = message.replace(name, " ")
    numbers = integers(message)
    return [run for run in entry["key_numbers"] if not contains_run(numbers, run)]


# ---- pipelines ----------------------------------------------------------------------------

def torch_repr(text):
    """A ModelInfo repr as torch prints it: the server names nonlinearity='relu' for relu RNN
    cores, which torch's repr leaves out."""
    return text.replace(", nonlinearity='relu'", "")


def pipeline_layers(entry):
    """[(path, type, stage, in_features, out_features)] of a pipeline case's pieces, the
    features counted from its input (1 per step for ids)."""
    config, core = entry["config"], entry["config"]["rnn"]
    features = 1 if entry["input_kind"] == "ids" else entry["input_shape"][-1]
    layers = []

    def walk(pieces, stage, features):
        for layer in pieces:
            kind = layer["type"]
            taken = 1 if kind == "Embedding" else features
            if kind == "Linear":
                features = layer["out_features"]
            elif kind == "Embedding":
                features = layer["embedding_dim"]
            layers.append((layer["path"], kind, stage, taken, features))
        return features

    features = walk(config.get("input_layer", []), "input_layer", features)
    core_out = (2 if core["bidirectional"] else 1) * (core.get("proj_size") or
                                                      core["hidden_size"])
    layers.append((core["path"], core["module"], "core", features, core_out))
    walk(config.get("head", []), "head", core_out)
    return layers


class ServerParityTest(unittest.TestCase):
    """One rnnserve serving every case's model; the tests share it."""

    @classmethod
    def setUpClass(cls):
        cls.dir = parity_dir()
        with open(os.path.join(cls.dir, "manifest.json")) as f:
            cls.manifest = json.load(f)
        cls.tolerance = cls.manifest["tolerance"]
        cls.repo = tempfile.mkdtemp(prefix="rnnserve-server-parity-")
        cls.server = None
        try:
            entries = cls.manifest["cases"] + cls.manifest["error_cases"]
            for entry in entries:
                os.symlink(os.path.join(os.path.abspath(cls.dir), entry["model_dir"]),
                           os.path.join(cls.repo, entry["name"]))
            started = time.monotonic()
            cls.server = h.ServerProcess(model_repository=cls.repo, name="rnnserve-parity",
                                         metrics=True, flags=[QUEUE_DELAY],
                                         start_timeout=h.scaled(120.0)).start()
            print(f"server_parity: {len(entries)} models loaded and serving in "
                  f"{time.monotonic() - started:.1f}s", file=sys.stderr)
            cls.channel = cls.server.channel()
            cls.stub = cls.server.stub(cls.channel)
        except BaseException:
            if cls.server is not None:
                cls.server.stop()
            shutil.rmtree(cls.repo, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        shutil.rmtree(cls.repo, ignore_errors=True)
        if rc != 0:
            raise AssertionError(f"rnnserve exited with {rc}:\n{cls.server.stderr_tail()}")

    def test_every_case_matches_torch(self):
        started = time.monotonic()
        cases = [Case(entry, self.dir) for entry in self.manifest["cases"]]
        # The suite's promise: at least random_count random cases per module (RNN, GRU, LSTM,
        # LSTM with proj_size), every one checked below.
        prefixes = self.manifest["random_prefixes"]
        for prefix in prefixes:
            count = sum(1 for c in cases if c.entry["kind"] == "random" and
                        c.name.startswith(prefix + "_"))
            self.assertGreaterEqual(count, self.manifest["random_count"], prefix)
            self.assertGreaterEqual(count, 200, prefix)
        # And every pipeline case (the user's own modules: input layer, core, head).
        pipelines = sum(1 for c in cases if c.pipeline)
        self.assertGreaterEqual(pipelines, self.manifest.get("pipeline_count", 0))
        indexed = list(enumerate(cases))
        windows = [indexed[i:i + WINDOW] for i in range(0, len(indexed), WINDOW)]
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(lambda w: run_window(self.stub, self.tolerance, w),
                                    windows))
        checker = Checker(self.tolerance)
        for window_checker, _, _ in results:
            checker.merge(window_checker)
        sessions = sum(r[1] for r in results)
        requests = sum(r[2] for r in results)
        forwards = sum(len(c.encodings) for c in cases)
        print(f"server_parity: {len(cases)} cases ({pipelines} pipelines), {forwards} Forward "
              f"calls, {sessions} "
              f"streamed sessions ({requests} chunks), {checker.checked} tensors compared in "
              f"{time.monotonic() - started:.1f}s; worst |server - torch| / max(1, |torch|) "
              f"{checker.worst[0]:.3g} ({checker.worst[1]}), tolerance {self.tolerance}",
              file=sys.stderr)
        # The row sessions' chunks were queued together: the scheduler (with --max_queue_delay)
        # must have advanced several sessions of one model in one engine call. Only stream
        # chunks count in rnnserve_batch_size.
        # Summed over the `model` label: all models' engine calls.
        samples, _ = h.kit.parse_samples(h.scrape(self.server.metrics_url))
        batches = h.kit.metric_sum(samples, "rnnserve_batch_size_count")
        shared = batches - h.kit.metric_sum(samples, "rnnserve_batch_size_bucket", le="1")
        print(f"server_parity: {int(shared)} of {int(batches)} engine calls advanced several "
              f"sessions together", file=sys.stderr)
        if checker.failures:
            self.fail(f"{len(checker.failures)} check(s) differ from torch:\n"
                      f"{checker.summary()}")
        self.assertGreater(shared, 0, "no engine call advanced more than one session: the "
                           "row sessions were never batched together")

    def test_model_info_matches_torch_module(self):
        # ListModels names every model after its folder, and each ModelInfo describes the
        # torch module the case was built with: its constructor arguments, named_parameters()
        # (names, shapes, order, count), the input and state shapes, bidirectional buffering.
        listed = self.stub.ListModels(h.pb2().ListModelsRequest(), timeout=h.CALL_TIMEOUT)
        infos = {info.name: info for info in listed.models}
        entries = self.manifest["cases"] + self.manifest["error_cases"]
        self.assertEqual(sorted(infos), sorted(e["name"] for e in entries))
        failures = []
        for entry in entries:
            if entry.get("pipeline"):
                continue  # test_pipeline_model_info_describes_the_users_model
            info, config = infos[entry["name"]], entry["config"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dropout > 0 with num_layers == 1
                rnn = export_pytorch.build_module(config)
            got = {field: getattr(info.config, field) for field in
                   ("module", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
                    "dropout", "bidirectional", "proj_size", "nonlinearity")}
            expected = dict(config, proj_size=config.get("proj_size", 0),
                            nonlinearity=config.get("nonlinearity", ""))
            rows = config["num_layers"] * (2 if config["bidirectional"] else 1)
            h_out = config.get("proj_size") or config["hidden_size"]
            parameters = [(n, list(p.shape)) for n, p in rnn.named_parameters()]
            got.update(
                parameters=[(p.name, list(p.shape)) for p in info.parameters],
                parameter_count=info.parameter_count, input_shape=list(info.input_shape),
                input_layout=info.input_layout, state_shape=list(info.state_shape),
                cell_state_shape=list(info.cell_state_shape),
                buffers_until_end=info.streaming_buffers_until_end,
                module=info.module.replace(", nonlinearity='relu'", ""),
                pipeline=info.pipeline, input_kind=info.input_kind,
                output_shape=list(info.output_shape),
                layers=[(l.path, l.type, l.repr, l.stage, l.in_features, l.out_features)
                        for l in info.layers])
            expected.update(
                parameters=parameters,
                parameter_count=sum(p.numel() for p in rnn.parameters()),
                input_shape=[-1, -1, config["input_size"]],
                input_layout="(N, T, C)" if config["batch_first"] else "(T, N, C)",
                state_shape=[rows, -1, h_out],
                cell_state_shape=[rows, -1, config["hidden_size"]] if config["module"] == "LSTM"
                else [], buffers_until_end=config["bidirectional"],
                module=repr(rnn),
                # A core-only model is a pipeline of its core alone.
                pipeline=info.module, input_kind="features",
                output_shape=[-1, -1, rows // config["num_layers"] * h_out],
                layers=[("", config["module"], info.module, "core", config["input_size"],
                         rows // config["num_layers"] * h_out)])
            note_differences(failures, f"{entry['name']} ({info.module})", got, expected,
                             "torch")
        if failures:
            self.fail(f"{len(failures)} ModelInfo(s) differ from the torch module:\n" +
                      "\n".join(failures[:MAX_LISTED_FAILURES]))

    def forward_refusal(self, entry, tensors, encoding):
        """What is wrong with Forward's answer to an error case (None: refused as torch)."""
        request = h.pb2().ForwardRequest(model=entry["name"], **{
            k: h.to_tensor(v, encoding) for k, v in tensors.items()})
        try:
            self.stub.Forward(request, timeout=h.CALL_TIMEOUT)
            return "accepted"
        except grpc.RpcError as e:
            code, message = e.code(), e.details()
        if code != INVALID_ARGUMENT:
            return f"{code.name}: {message}"
        missing = missing_key_facts(entry, message, [entry["name"]])
        return f"message \"{message}\" lacks {missing}" if missing else None

    def stream_start_refusal(self, stream, entry, tensors, session_id, encoding):
        """What is wrong with the answer to a Stream start with an error case's tensors
        (None: refused, nothing left behind)."""
        name = entry["name"]
        response = stream.call(encoding, session_id=session_id, start=True, model=name,
                               **tensors)
        if response.error_code != h.code_number(INVALID_ARGUMENT):
            return (f"error_code {h.grpc_code_name(response.error_code)}: "
                    f"{response.error_message}")
        # A chunk alone is checked as Forward checks it: torch's key facts. A start's h_0/c_0
        # is a state import, checked before the chunk (with N free; it then fixes the
        # session's N), so its message speaks of the session, not of torch's (input, hx)
        # pair: refused and not applied is what holds there.
        if entry["h0_shape"] is None and entry["c0_shape"] is None:
            missing = missing_key_facts(entry, response.error_message, [session_id, name])
            if missing:
                return f"message \"{response.error_message}\" lacks {missing}"
        try:
            left = self.stub.GetSession(h.pb2().GetSessionRequest(
                session_id=session_id, omit_state=True), timeout=h.CALL_TIMEOUT)
            return f"refused, but left session {left.session_id} behind ({left.steps_seen} steps)"
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                return f"GetSession after the refusal: {e.code().name}: {e.details()}"
        return None

    def test_error_cases_refused_like_torch(self):
        failures = []
        with h.Stream(self.stub, timeout=h.scaled(120.0)) as stream:
            for entry in self.manifest["error_cases"]:
                name = entry["name"]
                tensors = {"input": np.zeros(entry["input_shape"], np.float32)}
                for key, shape in (("h_0", entry["h0_shape"]), ("c_0", entry["c0_shape"])):
                    if shape is not None:
                        tensors[key] = np.zeros(shape, np.float32)
                what = (f"{name} (input {entry['input_shape']} h0 {entry['h0_shape']} "
                        f"c0 {entry['c0_shape']}; torch: \"{entry['torch_error']}\")")
                for encoding in ENCODINGS:
                    problem = self.forward_refusal(entry, tensors, encoding)
                    if problem:
                        failures.append(f"{what} Forward[{encoding}]: {problem}")
                    session_id = f"error:{encoding}:{name}"
                    problem = self.stream_start_refusal(stream, entry, tensors, session_id,
                                                        encoding)
                    if problem:
                        failures.append(f"{what} Stream start[{encoding}, session "
                                        f"{session_id}]: {problem}")
            self.assertEqual(stream.close(), grpc.StatusCode.OK)
        if failures:
            self.fail(f"{len(failures)} error case check(s) failed:\n" + "\n".join(failures))

    # ---- pipelines: the user's own modules ------------------------------------------------

    def pipe_cases(self, ids=None, unidirectional=False, min_steps=1):
        """The manifest's pipeline cases (as Case), filtered."""
        cases = [Case(e, self.dir) for e in self.manifest["cases"] if e.get("pipeline")]
        cases = [c for c in cases if (ids is None or c.ids == ids) and c.steps >= min_steps
                 and not (unidirectional and c.bidirectional)]
        self.assertTrue(cases, f"no pipeline case with ids={ids}, unidirectional="
                        f"{unidirectional}, steps >= {min_steps} in the manifest")
        return cases

    def test_pipeline_model_info_describes_the_users_model(self):
        # ModelInfo of every pipeline case: `pipeline` is the pieces' torch reprs joined with
        # " -> " (the manifest's repr), input_kind and the input/output shapes, every piece in
        # order with its path, type, repr and features, and the parameters under their full
        # names in named_parameters() order of a module holding the pieces.
        listed = self.stub.ListModels(h.pb2().ListModelsRequest(), timeout=h.CALL_TIMEOUT)
        infos = {info.name: info for info in listed.models}
        entries = [e for e in self.manifest["cases"] if e.get("pipeline")]
        self.assertGreaterEqual(len(entries), max(1, self.manifest.get("pipeline_count", 0)))
        failures = []
        for entry in entries:
            info, core = infos[entry["name"]], entry["config"]["rnn"]
            module = export_pytorch.load_model_folder(os.path.join(self.dir, entry["model_dir"]))
            ids = entry["input_kind"] == "ids"
            rows = core["num_layers"] * (2 if core["bidirectional"] else 1)
            h_out = core.get("proj_size") or core["hidden_size"]
            batch_first = core["batch_first"]
            got = dict(
                pipeline=torch_repr(info.pipeline), input_kind=info.input_kind,
                input_shape=list(info.input_shape), input_layout=info.input_layout,
                output_shape=list(info.output_shape), state_shape=list(info.state_shape),
                cell_state_shape=list(info.cell_state_shape),
                buffers_until_end=info.streaming_buffers_until_end,
                module=torch_repr(info.module), core_input_size=info.config.input_size,
                parameters=[(p.name, list(p.shape)) for p in info.parameters],
                parameter_count=info.parameter_count,
                layers=[(l.path, l.type, l.stage, l.in_features, l.out_features)
                        for l in info.layers],
                layer_reprs=[torch_repr(l.repr) for l in info.layers])
            expected = dict(
                pipeline=entry["repr"], input_kind=entry["input_kind"],
                input_shape=[-1, -1] if ids else [-1, -1, entry["input_shape"][-1]],
                input_layout=("(N, T)" if batch_first else "(T, N)") if ids else
                ("(N, T, C)" if batch_first else "(T, N, C)"),
                output_shape=[-1, -1, entry["output_shape"][-1]],
                state_shape=[rows, -1, h_out],
                cell_state_shape=[rows, -1, core["hidden_size"]] if core["module"] == "LSTM"
                else [], buffers_until_end=core["bidirectional"],
                module=repr(module.get_submodule(core["path"])),
                core_input_size=core["input_size"],
                parameters=[(n, list(p.shape)) for n, p in module.named_parameters()],
                parameter_count=sum(p.numel() for p in module.parameters()),
                layers=pipeline_layers(entry),
                layer_reprs=[repr(module.get_submodule(path))
                             for path in export_pytorch.pipeline_paths(entry["config"])])
            note_differences(failures, f"{entry['name']} ({entry['repr']})", got, expected,
                             "expected")
        if failures:
            self.fail(f"{len(failures)} pipeline ModelInfo(s) differ from the user's model:\n" +
                      "\n".join(failures[:MAX_LISTED_FAILURES]))

    def assert_invalid(self, what, code, message, *words):
        self.assertEqual(code, INVALID_ARGUMENT, f"{what}: {code}: {message}")
        for word in words:
            self.assertIn(word, message, what)

    def forward_error(self, model, tensor):
        try:
            self.stub.Forward(h.pb2().ForwardRequest(model=model, input=tensor),
                              timeout=h.CALL_TIMEOUT)
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, "accepted"

    def test_pipeline_inputs_of_the_wrong_kind_or_range_are_refused(self):
        ids_case = self.pipe_cases(ids=True)[0]
        vocab = ids_case.entry["config"]["input_layer"][0]["num_embeddings"]
        x = ids_case.input
        for bad_id in (vocab, vocab + 7, -1, -3, 2 ** 40, -2 ** 40):
            bad = x.copy()
            bad.flat[bad.size // 2] = bad_id
            code, message = self.forward_error(ids_case.name, h.to_tensor(bad, "ids"))
            # The message names the vocabulary's range.
            self.assert_invalid(f"Forward of {ids_case.name} with id {bad_id}", code, message,
                                str(vocab))
        for encoding in ENCODINGS:
            code, message = self.forward_error(ids_case.name, h.to_tensor(x, encoding))
            self.assert_invalid(f"Forward of {ids_case.name} with float `{encoding}`", code,
                                message, ".ids`")
        features = self.pipe_cases(ids=False)[0]
        core_only = next(Case(e, self.dir) for e in self.manifest["cases"]
                         if not e.get("pipeline"))
        for case in (features, core_only):
            ids = np.zeros(case.input.shape[:-1], np.int64)
            code, message = self.forward_error(case.name, h.to_tensor(ids, "ids"))
            self.assert_invalid(f"Forward of {case.name} with `ids`", code, message, ".values`")

    def streamed_with_refusals(self, stream, case, refused):
        """Streams `case` in two chunks with every (tensor, words) of `refused` sent (and
        refused, INVALID_ARGUMENT with the words) between them, on the same session; returns
        the Checker of the session's result against torch."""
        session_id = f"refusals:{case.name}"
        encoding = case.encodings[0]
        cut = case.steps // 2
        checker = Checker(self.tolerance)
        call = f"Stream[{encoding}, session {session_id}, refused chunks after step {cut}]"
        first = stream.call(encoding, session_id=session_id, start=True, model=case.name,
                            input=case.chunk(0, cut), h_0=case.h0, c_0=case.c0)
        h.check_ok(first)
        for tensor, words in refused:
            r = stream.call(encoding, session_id=session_id, input=tensor)
            self.assertEqual(r.error_code, h.code_number(INVALID_ARGUMENT),
                             f"{call}: {r.error_message}")
            for word in words:
                self.assertIn(word, r.error_message, call)
        last = stream.call(encoding, session_id=session_id, input=case.chunk(cut, case.steps),
                           end=True)
        h.check_ok(last)
        output = np.concatenate([h.from_tensor(first.output), h.from_tensor(last.output)],
                                axis=case.time_axis)
        checker.close(case, call, "output", output, case.output)
        checker.state(case, call, last, case.h_n, case.c_n)
        if last.steps_seen != case.steps:
            checker.fail(case, call, f"steps_seen {last.steps_seen}, expected {case.steps}")
        return checker

    def test_pipeline_session_keeps_its_state_across_refused_chunks(self):
        ids_case = self.pipe_cases(ids=True, unidirectional=True, min_steps=2)[0]
        features = self.pipe_cases(ids=False, unidirectional=True, min_steps=2)[0]
        vocab = ids_case.entry["config"]["input_layer"][0]["num_embeddings"]
        rest = ids_case.chunk(ids_case.steps // 2, ids_case.steps)
        too_large, negative = rest.copy(), rest.copy()
        too_large.flat[0] = vocab
        negative.flat[-1] = -3
        c = features.input.shape[-1]
        wide = features.chunk(features.steps // 2, features.steps)
        wide = np.concatenate([wide, wide[..., :1]], axis=-1)
        plan = {
            ids_case: [(h.to_tensor(too_large, "ids"), [str(vocab)]),
                       (h.to_tensor(negative, "ids"), [str(vocab)]),
                       (h.to_tensor(rest, "values"), [".ids`"])],
            features: [(h.to_tensor(np.zeros(wide.shape[:-1], np.int64), "ids"), [".values`"]),
                       (h.to_tensor(wide, "raw"), [str(c), str(c + 1)])],
        }
        checker = Checker(self.tolerance)
        with h.Stream(self.stub, timeout=h.scaled(120.0)) as stream:
            for case, refused in plan.items():
                checker.merge(self.streamed_with_refusals(stream, case, refused))
            self.assertEqual(stream.close(), grpc.StatusCode.OK)
        if checker.failures:
            self.fail(checker.summary())

    def test_pipeline_sessions_are_batched_together(self):
        # Several whole-batch sessions of each unidirectional pipeline case, their chunks sent
        # round by round on one stream: the scheduler advances sessions of one pipeline model
        # in one engine call (rnnserve_batch_size counts stream batches only), and every
        # session's result is still the user's model(x).
        cases = self.pipe_cases(unidirectional=True)[:8]
        copies = 4
        sessions = [Session(case, f"batched{j}", None, case.entry["chunks"],
                            case.encodings[j % len(case.encodings)], exported=False)
                    for case in cases for j in range(copies)]
        before = h.parse_metrics(h.scrape(self.server.metrics_url))
        pending = {}
        with h.Stream(self.stub, timeout=h.scaled(120.0)) as stream:
            order = sorted((round_index, i, k) for i, session in enumerate(sessions)
                           for k, round_index in enumerate(session.rounds))
            for _, i, k in order:
                request_id = stream.send(sessions[i].encoding, **sessions[i].request(k))
                pending[request_id] = (sessions[i], k)
            responses, _ = stream.recv_many(len(pending), timeout=h.scaled(120.0))
            self.assertEqual(stream.close(), grpc.StatusCode.OK)
        after = h.parse_metrics(h.scrape(self.server.metrics_url))
        for request_id, (session, k) in pending.items():
            session.responses[k] = responses[request_id]
        checker = Checker(self.tolerance)
        for session in sessions:
            check_session(checker, session)
        if checker.failures:
            self.fail(checker.summary())

        models = {case.entry["name"] for case in cases}

        def total(samples, name, **labels):
            # The pipeline models' series only (the histogram is labelled by model).
            return sum(v for (n, l), v in samples.items()
                       if n == name and dict(l).get("model") in models
                       and all(dict(l).get(k) == x for k, x in labels.items()))

        def shared(samples):
            return (total(samples, "rnnserve_batch_size_count") -
                    total(samples, "rnnserve_batch_size_bucket", le="1"))
        batches = (total(after, "rnnserve_batch_size_count") -
                   total(before, "rnnserve_batch_size_count"))
        together = shared(after) - shared(before)
        print(f"server_parity: pipelines: {int(together)} of {int(batches)} engine calls "
              f"advanced several sessions together", file=sys.stderr)
        self.assertGreater(together, 0, "no engine call advanced more than one session of a "
                           "pipeline model")


if __name__ == "__main__":
    unittest.main()
