// Parity of RnnModel with torch.nn.RNN, GRU and LSTM (with and without proj_size), the oracle.
// tests/parity/gen_cases.py computes every expected number live with PyTorch and writes the
// cases and manifest.json to the folder named by RNNSERVE_PARITY_DIR (ctest runs it first, as
// the fixture parity_generate).
//
// The test names are fixed at compile time (random_000..random_199 for RNN; gru_, lstm_ and
// lstmp_000..199; the named and the error cases) so gtest_discover_tests can list them before
// the cases exist; each test looks its case up in the manifest at run time and fails loudly
// when the manifest or the case is missing.
//
// Per case: Forward() against torch's output, h_n and (LSTM) c_n, and streaming: for
// unidirectional models Forward over chunks of T, carrying h_n (and c_n), and StepBatch() (the
// batch split into sessions, each with its own chunk lengths per round); for bidirectional ones
// the chunks buffered time-major and run through ForwardTimeMajor at the end, as a streamed
// session is served. Error cases: Forward() rejects the input with INVALID_ARGUMENT and a
// message holding the same expected/actual numbers as torch's. Tolerance: see kTolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "base/file_io.h"
#include "base/tensor.h"
#include "core/engine/model_dir.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/safetensors.h"

namespace rnnserve {
namespace {

using json = nlohmann::json;

// Every element: |engine - torch| <= kTolerance * max(1, |torch|). That is 1e-5 absolute for
// values within [-1, 1] (every tanh output) and 1e-5 relative above: float32 rounds relative to
// the value, and at ~100 (edge_relu_large, relu on inputs x100) one ulp is ~8e-6 and torch's own
// float32 result is more than 1e-5 from float64, so 1e-5 absolute is out of any float32
// engine's reach there. The bound is fixed: nothing widens it per case.
constexpr double kTolerance = 1e-5;
// Must match gen_cases.py (MIN_RANDOM_CASES, NAMED_CASES, ERROR_CASES); the ManifestTest
// checks the two agree.
constexpr int kMinRandomCases = 200;
// One set of random cases per prefix (gen_cases.py RANDOM_PREFIXES): RNN, GRU, LSTM, LSTM with
// proj_size.
const char* const kRandomPrefixes[] = {"random", "gru", "lstm", "lstmp"};
// Whole models (issue 13): input layer + core + head built as a user writes them, exported with
// export_module(model, dir, rnn=, head=, input_layer=); the expected output is the user's own
// model(x). gen_cases.py PIPELINE_COUNT and PIPELINE_PREFIX.
constexpr int kPipelineCases = 200;
constexpr char kPipelinePrefix[] = "pipe";
const char* const kNamedCases[] = {
    "seed_a",
    "seed_b",
    "seed_c",
    "edge_t1",
    "edge_n1",
    "edge_h1",
    "edge_relu_large",
    "edge_large_model",
    "edge_unbatched_t1",
    "edge_bidir_batch_first_h0",
    "edge_deep_relu_no_bias",
    "edge_wide_projection",
    "edge_wide_projection_relu",
    "edge_panel_tail",
    "edge_deep_input",
    "gru_large_model",
    "gru_wide_projection",
    "gru_panel_tail",
    "lstm_large_model",
    "lstm_wide_projection",
    "lstmp_large_model",
    "lstmp_bidir_batch_first",
    "lstm_large_input",
};
const char* const kErrorCases[] = {
    "error_input_size",
    "error_input_size_unbatched",
    "error_h0_batch",
    "error_h0_hidden",
    "error_h0_layers_bidirectional",
    "error_h0_batch_first",
    "error_input_4d",
    "error_input_1d",
    "error_2d_input_3d_h0",
    "error_3d_input_2d_h0",
    "error_t0",
    "error_t0_batch_first",
    "error_t0_unbatched",
    "error_gru_h0_hidden",
    "error_lstm_c0_hidden",
    "error_lstm_h0_proj",
    "error_lstm_c0_batch",
    "error_lstm_ranks",
    "error_lstm_unbatched_ranks",
};

std::string RandomCaseName(const char* prefix, int i) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s_%03d", prefix, i);
  return name;
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  for (const char* prefix : kRandomPrefixes) {
    for (int i = 0; i < kMinRandomCases; ++i) names.push_back(RandomCaseName(prefix, i));
  }
  for (int i = 0; i < kPipelineCases; ++i) names.push_back(RandomCaseName(kPipelinePrefix, i));
  names.insert(names.end(), std::begin(kNamedCases), std::end(kNamedCases));
  return names;
}

// ---------------------------------------------------------------------------------------------
// The manifest, loaded once per process.

struct Manifest {
  std::string dir;
  std::string error;  // non-empty when it could not be loaded
  json doc;
  std::map<std::string, json> cases;
  std::map<std::string, json> error_cases;
};

const Manifest& GetManifest() {
  static const Manifest* manifest = [] {
    auto* m = new Manifest;
    const char* dir = std::getenv("RNNSERVE_PARITY_DIR");
    if (dir == nullptr || *dir == '\0') {
      m->error =
          "RNNSERVE_PARITY_DIR is not set: run through ctest (fixture parity_generate) or set "
          "it to a folder written by tests/parity/gen_cases.py --out DIR";
      return m;
    }
    m->dir = dir;
    const std::string path = m->dir + "/manifest.json";
    std::ifstream in(path);
    if (!in) {
      m->error = absl::StrCat("cannot open ", path,
                              ": run /usr/bin/python3 tests/parity/gen_cases.py --out ", m->dir);
      return m;
    }
    try {
      in >> m->doc;
      for (const json& c : m->doc.at("cases")) m->cases[c.at("name").get<std::string>()] = c;
      for (const json& c : m->doc.at("error_cases")) {
        m->error_cases[c.at("name").get<std::string>()] = c;
      }
    } catch (const std::exception& e) {
      m->error = absl::StrCat("bad manifest ", path, ": ", e.what());
    }
    return m;
  }();
  return *manifest;
}

// Returns the case's manifest entry, or null after recording a failure.
const json* FindCase(const std::string& name, bool error_case) {
  const Manifest& m = GetManifest();
  if (!m.error.empty()) {
    ADD_FAILURE() << m.error;
    return nullptr;
  }
  const auto& table = error_case ? m.error_cases : m.cases;
  auto it = table.find(name);
  if (it == table.end()) {
    ADD_FAILURE() << "case " << name << " is not in " << m.dir << "/manifest.json";
    return nullptr;
  }
  return &it->second;
}

Shape ShapeOf(const json& j) { return j.get<Shape>(); }

// ---------------------------------------------------------------------------------------------
// Comparison.

// How far the engine is from torch: the worst |engine - torch| and the worst of
// |engine - torch| / max(1, |torch|), the quantity held to kTolerance. Both +inf on a shape
// mismatch or any NaN.
struct Difference {
  double max_abs = 0.0;
  double max_scaled = 0.0;
};

Difference Compare(const Tensor& actual, const Tensor& expected) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (actual.shape != expected.shape || actual.values.size() != expected.values.size()) {
    return {kInf, kInf};
  }
  Difference worst;
  for (size_t i = 0; i < actual.values.size(); ++i) {
    const double torch_value = expected.values[i];
    const double d = std::fabs(static_cast<double>(actual.values[i]) - torch_value);
    if (std::isnan(d)) return {kInf, kInf};
    worst.max_abs = std::max(worst.max_abs, d);
    worst.max_scaled = std::max(worst.max_scaled, d / std::max(1.0, std::fabs(torch_value)));
  }
  return worst;
}

#define EXPECT_CLOSE(what, actual, expected)                                                  \
  do {                                                                                        \
    const Difference diff_ = Compare((actual), (expected));                                   \
    ::testing::Test::RecordProperty(what "_max_abs_diff", absl::StrCat(diff_.max_abs));       \
    ::testing::Test::RecordProperty(what "_max_scaled_diff", absl::StrCat(diff_.max_scaled)); \
    EXPECT_LE(diff_.max_scaled, kTolerance)                                                   \
        << what << ": max |engine - torch| / max(1, |torch|) = " << diff_.max_scaled          \
        << " (max |engine - torch| = " << diff_.max_abs << "); engine shape "                 \
        << ShapeToString((actual).shape) << ", torch shape "                                  \
        << ShapeToString((expected).shape);                                                   \
  } while (0)

// ---------------------------------------------------------------------------------------------
// A loaded case.

struct Case {
  const json* entry = nullptr;
  RnnConfig config;
  std::unique_ptr<RnnModel> model;
  Tensor input, output, h_n;
  bool has_h0 = false, has_c0 = false;
  Tensor h0, c0;
  Tensor c_n;  // LSTM only
  bool batched = true;
  // Features per step of the input (1 for token ids) and of the output: the pipeline's, which
  // for a bare core are input_size and D*H_out.
  int64_t C = 0, K = 0;

  int64_t steps() const { return batched && config.batch_first ? input.size(1) : input.size(0); }
  int64_t batch() const {
    if (!batched) return 1;
    return config.batch_first ? input.size(0) : input.size(1);
  }
  // Element of the input (t, n, c) whatever the layout.
  float x(int64_t t, int64_t n, int64_t c) const {
    if (!batched) return input.values[t * C + c];
    if (config.batch_first) return input.values[(n * steps() + t) * C + c];
    return input.values[(t * batch() + n) * C + c];
  }
  // Element of torch's output (t, n, k), k < D*H.
  float y(int64_t t, int64_t n, int64_t k) const {
    if (!batched) return output.values[t * K + k];
    if (config.batch_first) return output.values[(n * steps() + t) * K + k];
    return output.values[(t * batch() + n) * K + k];
  }
  const Tensor* h0_or_null() const { return has_h0 ? &h0 : nullptr; }
  const Tensor* c0_or_null() const { return has_c0 ? &c0 : nullptr; }
  bool lstm() const { return config.has_cell_state(); }
  // Element (row, n, j) of a state tensor shaped like h_0/h_n ((rows, N, H) or (rows, H)).
  static float StateAt(const Tensor& s, bool batched, int64_t row, int64_t n, int64_t j) {
    const int64_t H = s.size(-1);
    const int64_t N = batched ? s.size(1) : 1;
    return s.values[(row * N + n) * H + j];
  }
};

// Loads the model through LoadModelDir + RnnModel::Create (with `isa`'s kernels) and the tensors
// from case.safetensors. Records failures and returns false when something is missing.
bool LoadCase(const std::string& name, KernelIsa isa, Case* c) {
  c->entry = FindCase(name, /*error_case=*/false);
  if (c->entry == nullptr) return false;
  const json& e = *c->entry;
  const std::string dir = GetManifest().dir;

  absl::StatusOr<ModelFiles> files = LoadModelDir(dir + "/" + e.at("model_dir").get<std::string>());
  if (!files.ok()) {
    ADD_FAILURE() << "LoadModelDir: " << files.status();
    return false;
  }
  c->config = files->config.rnn;
  // The exported config.json must say what the torch module was built with (a pipeline's
  // core: its "rnn" object).
  const bool pipeline = e.value("pipeline", false);
  const json& cfg = pipeline ? e.at("config").at("rnn") : e.at("config");
  if (pipeline && files->config.core_only()) {
    ADD_FAILURE() << "pipeline case loaded as a bare core";
    return false;
  }
  RnnConfig built;
  absl::StatusOr<RnnModule> module = ParseModule(cfg.at("module").get<std::string>());
  if (!module.ok()) {
    ADD_FAILURE() << module.status();
    return false;
  }
  built.module = *module;
  built.proj_size = cfg.value("proj_size", int64_t{0});
  built.input_size = cfg.at("input_size").get<int64_t>();
  built.hidden_size = cfg.at("hidden_size").get<int64_t>();
  built.num_layers = cfg.at("num_layers").get<int64_t>();
  built.nonlinearity =
      cfg.value("nonlinearity", "tanh") == "relu" ? Nonlinearity::kRelu : Nonlinearity::kTanh;
  built.bias = cfg.at("bias").get<bool>();
  built.batch_first = cfg.at("batch_first").get<bool>();
  built.dropout = cfg.at("dropout").get<double>();
  built.bidirectional = cfg.at("bidirectional").get<bool>();
  if (c->config != built) {
    ADD_FAILURE() << "exported config " << ConfigToString(c->config) << ", torch module "
                  << ConfigToString(built);
    return false;
  }

  absl::StatusOr<std::unique_ptr<RnnModel>> model =
      RnnModel::Create(files->config, files->parameters, isa);
  if (!model.ok()) {
    ADD_FAILURE() << "RnnModel::Create: " << model.status();
    return false;
  }
  c->model = std::move(*model);
  c->C = c->model->input_features();
  c->K = c->model->output_features();
  // torch's repr of each piece, except the nonlinearity='relu' ConfigToString adds for relu
  // RNNs (torch's repr leaves it out).
  const std::string repr = absl::StrReplaceAll(PipelineToString(c->model->pipeline()),
                                               {{", nonlinearity='relu'", ""}});
  if (pipeline && repr != e.at("repr").get<std::string>()) {
    ADD_FAILURE() << "pipeline repr " << repr << ", torch's " << e.at("repr").get<std::string>();
  }

  const std::string case_path = dir + "/" + e.at("case_file").get<std::string>();
  absl::StatusOr<std::string> bytes = ReadFile(case_path);
  if (!bytes.ok()) {
    ADD_FAILURE() << bytes.status();
    return false;
  }
  absl::StatusOr<ParameterMap> tensors = ParseSafetensors(*bytes);
  if (!tensors.ok()) {
    ADD_FAILURE() << case_path << ": " << tensors.status();
    return false;
  }
  c->has_h0 = e.at("has_h0").get<bool>();
  c->has_c0 = e.at("has_c0").get<bool>();
  c->batched = e.at("batched").get<bool>();
  for (const std::string key : {"input", "output", "h_n", "h0", "c0", "c_n"}) {
    if ((key == "h0" && !c->has_h0) || (key == "c0" && !c->has_c0) ||
        (key == "c_n" && !c->lstm())) {
      continue;
    }
    if (tensors->count(key) == 0) {
      ADD_FAILURE() << case_path << " has no tensor '" << key << "'";
      return false;
    }
  }
  c->input = tensors->at("input");
  c->input.ids = e.value("input_kind", "features") == "ids";
  c->output = tensors->at("output");
  c->h_n = tensors->at("h_n");
  if (c->has_h0) c->h0 = tensors->at("h0");
  if (c->has_c0) c->c0 = tensors->at("c0");
  if (c->lstm()) c->c_n = tensors->at("c_n");
  if ((c->lstm() && c->c_n.shape != ShapeOf(e.at("c_n_shape"))) ||
      c->input.shape != ShapeOf(e.at("input_shape")) ||
      c->output.shape != ShapeOf(e.at("output_shape")) ||
      c->h_n.shape != ShapeOf(e.at("h_n_shape"))) {
    ADD_FAILURE() << case_path << ": tensor shapes differ from the manifest's";
    return false;
  }
  return true;
}

std::string Describe(const Case& c) {
  return absl::StrCat(PipelineToString(c.model->pipeline()), " input ",
                      ShapeToString(c.input.shape),
                      c.has_h0 ? absl::StrCat(" h0 ", ShapeToString(c.h0.shape)) : " no h0",
                      c.has_c0 ? absl::StrCat(" c0 ", ShapeToString(c.c0.shape)) : "",
                      "; torch's own float32 error on the tolerance's scale ",
                      c.entry->at("torch_f32_error").get<double>());
}

// Rows [begin, end) of the time axis of an input laid out as the case's input is.
Tensor SliceSteps(const Case& c, int64_t begin, int64_t end) {
  Tensor out;
  out.shape = c.input.shape;
  out.shape[c.batched && c.config.batch_first ? 1 : 0] = end - begin;
  out.ids = c.input.ids;
  out.values.reserve(NumElements(out.shape));
  const int64_t C = c.C;
  const int64_t N = c.batch();
  if (c.batched && c.config.batch_first) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = begin; t < end; ++t)
        for (int64_t k = 0; k < C; ++k) out.values.push_back(c.x(t, n, k));
  } else {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < C; ++k) out.values.push_back(c.x(t, n, k));
  }
  return out;
}

// Joins chunk outputs (each laid out like torch's output) along the time axis.
Tensor ConcatSteps(const Case& c, const std::vector<Tensor>& parts) {
  Tensor out;
  out.shape = c.output.shape;
  out.values.reserve(c.output.values.size());
  const int64_t K = c.K;
  if (c.batched && c.config.batch_first) {
    for (int64_t n = 0; n < c.batch(); ++n) {
      for (const Tensor& p : parts) {
        const int64_t len = p.size(1);
        auto first = p.values.begin() + n * len * K;
        out.values.insert(out.values.end(), first, first + len * K);
      }
    }
  } else {
    for (const Tensor& p : parts)
      out.values.insert(out.values.end(), p.values.begin(), p.values.end());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The checks.

void CheckForward(const Case& c) {
  SCOPED_TRACE(Describe(c));
  absl::StatusOr<ForwardResult> r =
      c.model->Forward(c.input, c.h0_or_null(), c.c0_or_null(), nullptr);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_CLOSE("output", r->output, c.output);
  EXPECT_CLOSE("h_n", r->h_n, c.h_n);
  ASSERT_EQ(r->c_n.has_value(), c.lstm());
  if (c.lstm()) EXPECT_CLOSE("c_n", *r->c_n, c.c_n);
  // Also through a caller-owned Workspace, twice (the second call reuses grown buffers).
  Workspace ws;
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<ForwardResult> again =
        c.model->Forward(c.input, c.h0_or_null(), c.c0_or_null(), &ws);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_CLOSE("output (workspace)", again->output, c.output);
    EXPECT_CLOSE("h_n (workspace)", again->h_n, c.h_n);
    if (c.lstm()) EXPECT_CLOSE("c_n (workspace)", *again->c_n, c.c_n);
  }
}

// The engine's state buffer for the case's whole batch: h_0 (or zeros), then c_0 (or zeros).
std::vector<float> InitialState(const Case& c) {
  const int64_t N = c.batch();
  std::vector<float> state(c.model->StateSize(N), 0.0f);
  if (c.has_h0) std::copy(c.h0.values.begin(), c.h0.values.end(), state.begin());
  if (c.has_c0) {
    std::copy(c.c0.values.begin(), c.c0.values.end(),
              state.begin() + c.model->HiddenStateSize(N));
  }
  return state;
}

// The tail of an engine state buffer (c) shaped as torch's c_n.
Tensor CellPart(const Case& c, const std::vector<float>& state) {
  const int64_t hidden = c.model->HiddenStateSize(c.batch());
  return Tensor(c.c_n.shape, std::vector<float>(state.begin() + hidden, state.end()));
}

// A streamed bidirectional session, as the serving layer runs it: the reverse pass needs the
// whole sequence, so each chunk is appended to a time-major (T, N, C) buffer (batch_first
// chunks transposed first) and ForwardTimeMajor runs over the buffer at `end`, from h_0 or
// zeros; the output goes back to the client's layout.
void CheckBufferedStreaming(const Case& c) {
  SCOPED_TRACE(Describe(c));
  const std::vector<int64_t> chunks = c.entry->at("chunks").get<std::vector<int64_t>>();
  SCOPED_TRACE("chunks " + absl::StrJoin(chunks, ","));
  const int64_t N = c.batch(), C = c.C, K = c.K;
  const bool batch_first = c.batched && c.config.batch_first;
  std::vector<float> buffer;
  int64_t begin = 0;
  for (int64_t len : chunks) {
    const Tensor chunk = SliceSteps(c, begin, begin + len);  // in the client's layout
    if (batch_first) {
      std::vector<float> time_major(chunk.values.size());
      SwapLeadingDims(chunk.data(), N, len, C, time_major.data());
      buffer.insert(buffer.end(), time_major.begin(), time_major.end());
    } else {
      buffer.insert(buffer.end(), chunk.values.begin(), chunk.values.end());
    }
    begin += len;
  }
  ASSERT_EQ(begin, c.steps()) << "chunks do not cover T";
  const std::vector<float> state_in = InitialState(c);
  std::vector<float> output_time_major(c.model->OutputSize(c.steps(), N), std::nanf(""));
  std::vector<float> state_out(c.model->StateSize(N), std::nanf(""));
  Workspace ws;
  c.model->ForwardTimeMajor(buffer.data(), c.steps(), N, state_in.data(),
                            output_time_major.data(), state_out.data(), ws);
  Tensor output(c.output.shape, output_time_major);
  if (batch_first) SwapLeadingDims(output_time_major.data(), c.steps(), N, K, output.data());
  EXPECT_CLOSE("buffered output", output, c.output);
  const int64_t h_size = c.model->HiddenStateSize(N);
  EXPECT_CLOSE("buffered h_n",
               Tensor(c.h_n.shape, std::vector<float>(state_out.begin(),
                                                      state_out.begin() + h_size)),
               c.h_n);
  if (c.lstm()) EXPECT_CLOSE("buffered c_n", CellPart(c, state_out), c.c_n);
}

void CheckStreaming(const Case& c) {
  if (c.config.bidirectional) {
    CheckBufferedStreaming(c);
    return;
  }
  SCOPED_TRACE(Describe(c));
  const std::vector<int64_t> chunks = c.entry->at("chunks").get<std::vector<int64_t>>();
  SCOPED_TRACE("chunks " + absl::StrJoin(chunks, ","));
  std::vector<Tensor> outputs;
  Tensor state, cell;
  bool have_state = c.has_h0, have_cell = c.has_c0;
  if (c.has_h0) state = c.h0;
  if (c.has_c0) cell = c.c0;
  int64_t begin = 0;
  for (int64_t len : chunks) {
    const Tensor chunk = SliceSteps(c, begin, begin + len);
    absl::StatusOr<ForwardResult> r = c.model->Forward(
        chunk, have_state ? &state : nullptr, have_cell ? &cell : nullptr, nullptr);
    ASSERT_TRUE(r.ok()) << "chunk at t=" << begin << ": " << r.status();
    outputs.push_back(std::move(r->output));
    state = std::move(r->h_n);
    have_state = true;
    if (r->c_n.has_value()) {
      cell = std::move(*r->c_n);
      have_cell = true;
    }
    begin += len;
  }
  ASSERT_EQ(begin, c.steps()) << "chunks do not cover T";
  EXPECT_CLOSE("streamed output", ConcatSteps(c, outputs), c.output);
  EXPECT_CLOSE("streamed h_n", state, c.h_n);
  if (c.lstm()) EXPECT_CLOSE("streamed c_n", cell, c.c_n);
}

// Splits the case's batch into sessions (contiguous samples), each advancing by its own chunk
// length per round (0: idle) through one StepBatch() call per round; checks outputs and final
// states. Even sessions update their state in place (state_out == state_in); odd ones ping-pong
// between two buffers, the one written poisoned with NaN first so a partial write shows.
void CheckStepBatch(const Case& c) {
  SCOPED_TRACE(Describe(c));
  const int64_t L = c.config.num_layers, C = c.C, K = c.K;
  const int64_t H = c.config.real_hidden_size(), HC = c.config.hidden_size;
  if (c.config.bidirectional) {
    // StepBatch is unidirectional only: it must refuse, not compute something else.
    std::vector<float> in(C), state(c.model->StateSize(1)), out(K);
    StreamChunk chunk;
    chunk.input = in.data();
    chunk.steps = 1;
    chunk.batch = 1;
    chunk.state_in = state.data();
    chunk.state_out = state.data();
    chunk.output = out.data();
    Workspace ws;
    absl::Status s = c.model->StepBatch({chunk}, &ws);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    return;
  }
  struct Session {
    int64_t begin, size;
    std::vector<int64_t> chunks;
    std::vector<float> state;  // (L, size, H_out) then (LSTM) (L, size, H_cell): the state
    std::vector<float> spare;  // the other buffer, for sessions that do not update in place
    std::vector<float> out;    // (T, size, H), filled chunk by chunk
    int64_t done = 0;          // steps consumed
  };
  std::vector<Session> sessions;
  for (const json& s : c.entry->at("sessions")) {
    Session session{s.at("begin").get<int64_t>(),
                    s.at("size").get<int64_t>(),
                    s.at("chunks").get<std::vector<int64_t>>(),
                    {},
                    {},
                    {},
                    0};
    session.state.assign(c.model->StateSize(session.size), 0.0f);
    if (c.has_h0) {
      for (int64_t l = 0; l < L; ++l)
        for (int64_t n = 0; n < session.size; ++n)
          for (int64_t j = 0; j < H; ++j)
            session.state[(l * session.size + n) * H + j] =
                Case::StateAt(c.h0, c.batched, l, session.begin + n, j);
    }
    if (c.has_c0) {
      float* cell = session.state.data() + c.model->HiddenStateSize(session.size);
      for (int64_t l = 0; l < L; ++l)
        for (int64_t n = 0; n < session.size; ++n)
          for (int64_t j = 0; j < HC; ++j)
            cell[(l * session.size + n) * HC + j] =
                Case::StateAt(c.c0, c.batched, l, session.begin + n, j);
    }
    session.out.assign(c.model->OutputSize(c.steps(), session.size), std::nanf(""));
    sessions.push_back(std::move(session));
  }
  ASSERT_FALSE(sessions.empty());
  const size_t rounds = sessions[0].chunks.size();
  Workspace ws;
  for (size_t round = 0; round < rounds; ++round) {
    std::vector<std::vector<float>> inputs(sessions.size());
    std::vector<StreamChunk> chunks;
    for (size_t i = 0; i < sessions.size(); ++i) {
      Session& s = sessions[i];
      ASSERT_EQ(s.chunks.size(), rounds);
      const int64_t len = s.chunks[round];
      // Time-major (len, size, C) input for this session's chunk.
      for (int64_t t = s.done; t < s.done + len; ++t)
        for (int64_t n = 0; n < s.size; ++n)
          for (int64_t k = 0; k < C; ++k) inputs[i].push_back(c.x(t, s.begin + n, k));
      StreamChunk chunk;
      chunk.input = inputs[i].data();
      chunk.steps = len;
      chunk.batch = s.size;
      chunk.state_in = s.state.data();
      if (i % 2 == 0) {
        chunk.state_out = s.state.data();
      } else {
        s.spare.assign(s.state.size(), std::nanf(""));
        chunk.state_out = s.spare.data();
      }
      chunk.output = s.out.data() + s.done * s.size * K;
      chunks.push_back(chunk);
    }
    absl::Status status = c.model->StepBatch(chunks, &ws);
    ASSERT_TRUE(status.ok()) << "round " << round << ": " << status;
    for (size_t i = 0; i < sessions.size(); ++i) {
      Session& s = sessions[i];
      // A 0-step chunk writes nothing: the state stays in state_in.
      if (i % 2 == 1 && s.chunks[round] > 0) s.state.swap(s.spare);
      s.done += s.chunks[round];
    }
  }
  // Reassemble in torch's layouts and compare.
  Tensor out(c.output.shape, std::vector<float>(c.output.values.size()));
  Tensor h_n(c.h_n.shape, std::vector<float>(c.h_n.values.size()));
  Tensor c_n(c.c_n.shape, std::vector<float>(c.c_n.values.size()));
  for (const Session& s : sessions) {
    ASSERT_EQ(s.done, c.steps());
    SCOPED_TRACE(absl::StrCat("session samples [", s.begin, ", ", s.begin + s.size, ") chunks ",
                              absl::StrJoin(s.chunks, ",")));
    for (int64_t t = 0; t < c.steps(); ++t)
      for (int64_t n = 0; n < s.size; ++n)
        for (int64_t j = 0; j < K; ++j) {
          const int64_t sample = s.begin + n;
          int64_t index;
          if (!c.batched)
            index = t * K + j;
          else if (c.config.batch_first)
            index = (sample * c.steps() + t) * K + j;
          else
            index = (t * c.batch() + sample) * K + j;
          out.values[index] = s.out[(t * s.size + n) * K + j];
        }
    for (int64_t l = 0; l < L; ++l)
      for (int64_t n = 0; n < s.size; ++n)
        for (int64_t j = 0; j < H; ++j)
          h_n.values[(l * c.batch() + s.begin + n) * H + j] = s.state[(l * s.size + n) * H + j];
    if (!c.lstm()) continue;
    const float* cell = s.state.data() + c.model->HiddenStateSize(s.size);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t n = 0; n < s.size; ++n)
        for (int64_t j = 0; j < HC; ++j)
          c_n.values[(l * c.batch() + s.begin + n) * HC + j] = cell[(l * s.size + n) * HC + j];
  }
  EXPECT_CLOSE("StepBatch output", out, c.output);
  EXPECT_CLOSE("StepBatch h_n", h_n, c.h_n);
  if (c.lstm()) EXPECT_CLOSE("StepBatch c_n", c_n, c.c_n);
}

// ---------------------------------------------------------------------------------------------
// Parameterised tests over the fixed names.

class ParityTest : public ::testing::TestWithParam<std::string> {};

// Every case runs on every kernel table this build has and this CPU runs (AVX-512, AVX2, the
// build's baseline): each must match torch on its own.
TEST_P(ParityTest, Forward) {
  for (KernelIsa isa : SupportedKernelIsas()) {
    SCOPED_TRACE(absl::StrCat("kernels ", KernelIsaName(isa)));
    Case c;
    if (LoadCase(GetParam(), isa, &c)) CheckForward(c);
  }
}

// Unidirectional: chunked Forward() and StepBatch() sessions. Bidirectional: chunks buffered
// and run at the end through ForwardTimeMajor (a streamed session's path), and StepBatch()
// refuses.
TEST_P(ParityTest, Streaming) {
  for (KernelIsa isa : SupportedKernelIsas()) {
    SCOPED_TRACE(absl::StrCat("kernels ", KernelIsaName(isa)));
    Case c;
    if (!LoadCase(GetParam(), isa, &c)) continue;
    CheckStreaming(c);
    CheckStepBatch(c);
  }
}

INSTANTIATE_TEST_SUITE_P(Torch, ParityTest, ::testing::ValuesIn(CaseNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// seed notebook (a): one step of one layer, so torch's output equals h_n.
TEST(ParitySeedNotebook, SingleStepOutputEqualsHn) {
  Case c;
  if (!LoadCase("seed_a", BestKernelIsa(), &c)) return;
  absl::StatusOr<ForwardResult> r = c.model->Forward(c.input);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->output.shape, c.h_n.shape);
  EXPECT_EQ(r->output.values, r->h_n.values);
}

// Extracts the maximal runs of decimal digits in `s`, as numbers.
std::vector<int64_t> Integers(const std::string& s) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < s.size();) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      out.push_back(std::stoll(s.substr(i, j - i)));
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

bool ContainsRun(const std::vector<int64_t>& haystack, const std::vector<int64_t>& run) {
  return std::search(haystack.begin(), haystack.end(), run.begin(), run.end()) != haystack.end();
}

class ParityErrorTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityErrorTest, RejectedLikeTorch) {
  const json* e = FindCase(GetParam(), /*error_case=*/true);
  if (e == nullptr) return;
  absl::StatusOr<ModelFiles> files =
      LoadModelDir(GetManifest().dir + "/" + e->at("model_dir").get<std::string>());
  ASSERT_TRUE(files.ok()) << files.status();
  absl::StatusOr<std::unique_ptr<RnnModel>> model =
      RnnModel::Create(files->config, files->parameters);
  ASSERT_TRUE(model.ok()) << model.status();

  const Tensor input = Tensor::Zeros(ShapeOf(e->at("input_shape")));
  const bool has_h0 = !e->at("h0_shape").is_null();
  const Tensor h0 = has_h0 ? Tensor::Zeros(ShapeOf(e->at("h0_shape"))) : Tensor();
  const bool has_c0 = !e->at("c0_shape").is_null();
  const Tensor c0 = has_c0 ? Tensor::Zeros(ShapeOf(e->at("c0_shape"))) : Tensor();
  const std::string torch_error = e->at("torch_error").get<std::string>();
  SCOPED_TRACE(absl::StrCat(PipelineToString(files->config), " input ", ShapeToString(input.shape),
                            has_h0 ? " h0 " + ShapeToString(h0.shape) : std::string(" no h0"),
                            has_c0 ? " c0 " + ShapeToString(c0.shape) : std::string(),
                            "; torch: \"", torch_error, "\""));

  absl::StatusOr<ForwardResult> r =
      (*model)->Forward(input, has_h0 ? &h0 : nullptr, has_c0 ? &c0 : nullptr, nullptr);
  ASSERT_FALSE(r.ok()) << "engine accepted an input torch rejects";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  const std::string message(r.status().message());
  RecordProperty("engine_error", message);
  const std::vector<int64_t> numbers = Integers(message);
  for (const json& key : e->at("key_numbers")) {
    const std::vector<int64_t> run = key.get<std::vector<int64_t>>();
    EXPECT_TRUE(ContainsRun(numbers, run))
        << "engine message \"" << message << "\" lacks " << absl::StrJoin(run, ", ");
  }

  // CheckShapes is the same check without the data.
  absl::StatusOr<InputDims> dims = (*model)->CheckShapes(
      input.shape, has_h0 ? &h0.shape : nullptr, has_c0 ? &c0.shape : nullptr);
  ASSERT_FALSE(dims.ok());
  EXPECT_EQ(dims.status().code(), absl::StatusCode::kInvalidArgument) << dims.status();
}

INSTANTIATE_TEST_SUITE_P(
    Torch, ParityErrorTest,
    ::testing::ValuesIn(std::vector<std::string>(std::begin(kErrorCases), std::end(kErrorCases))),
    [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The manifest must hold at least kMinRandomCases random cases and exactly the named and error
// cases this binary was compiled with; random cases beyond the fixed names are checked here.
TEST(ParityManifest, CompleteAndConsistent) {
  const Manifest& m = GetManifest();
  ASSERT_TRUE(m.error.empty()) << m.error;
  const std::vector<std::string> fixed = CaseNames();
  int random = 0;
  std::vector<std::string> extra;  // random cases beyond the fixed names (--count > 200)
  int pipelines = 0;
  for (const auto& [name, entry] : m.cases) {
    if (entry.at("kind") == "pipeline") ++pipelines;
    if (entry.at("kind") != "random") continue;
    ++random;
    if (std::find(fixed.begin(), fixed.end(), name) == fixed.end()) extra.push_back(name);
  }
  const int random_needed = kMinRandomCases * static_cast<int>(std::size(kRandomPrefixes));
  EXPECT_GE(random, random_needed) << "the parity suite needs at least " << kMinRandomCases
                                   << " random cases per module (gen_cases.py --count)";
  for (const std::string& name : fixed) EXPECT_EQ(m.cases.count(name), 1u) << name;
  for (const char* name : kErrorCases) EXPECT_EQ(m.error_cases.count(name), 1u) << name;
  EXPECT_EQ(pipelines, kPipelineCases);
  EXPECT_EQ(m.doc.at("pipeline_count").get<int>(), kPipelineCases);
  EXPECT_EQ(m.cases.size(), static_cast<size_t>(random + pipelines) + std::size(kNamedCases));
  EXPECT_EQ(m.error_cases.size(), std::size(kErrorCases));
  EXPECT_EQ(m.doc.at("tolerance").get<double>(), kTolerance) << "gen_cases.py states another";
  for (const std::string& name : extra) {
    SCOPED_TRACE(name);
    Case c;
    if (!LoadCase(name, BestKernelIsa(), &c)) continue;
    CheckForward(c);
    CheckStreaming(c);
    CheckStepBatch(c);
  }
}

}  // namespace
}  // namespace rnnserve
