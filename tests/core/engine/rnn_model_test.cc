// Engine tests against a deliberately naive double-precision reference written from torch's
// documented equations. The live-torch oracle is the parity suite (tests/parity); these catch
// layout and bookkeeping mistakes with small, readable cases.
#include "core/engine/rnn_model.h"

#include <cmath>
#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

using ::testing::HasSubstr;

RnnConfig Make(int64_t in, int64_t hidden, int64_t layers, bool bidir, bool batch_first,
               Nonlinearity act = Nonlinearity::kTanh, bool bias = true) {
  RnnConfig c;
  c.input_size = in;
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.bidirectional = bidir;
  c.batch_first = batch_first;
  c.nonlinearity = act;
  c.bias = bias;
  return c;
}

// Reference: time-major, batched input (T, N, C); h0 (L*D, N, H).
ForwardResult Reference(const RnnConfig& c, const ParameterMap& p, const Tensor& x,
                        const Tensor& h0) {
  const int64_t T = x.shape[0], N = x.shape[1], H = c.hidden_size, D = c.num_directions();
  std::vector<double> in(x.values.begin(), x.values.end());
  int64_t in_size = c.input_size;
  Tensor hn = Tensor::Zeros({c.num_state_rows(), N, H});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::vector<double> out(T * N * D * H);
    for (int64_t d = 0; d < D; ++d) {
      const std::string sfx = "_l" + std::to_string(l) + (d ? "_reverse" : "");
      const Tensor& wih = p.at("weight_ih" + sfx);
      const Tensor& whh = p.at("weight_hh" + sfx);
      std::vector<double> h(N * H);
      for (int64_t i = 0; i < N * H; ++i) h[i] = h0.values[(l * D + d) * N * H + i];
      for (int64_t s = 0; s < T; ++s) {
        const int64_t t = d == 0 ? s : T - 1 - s;
        std::vector<double> next(N * H);
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t j = 0; j < H; ++j) {
            double acc = 0;
            if (c.bias) acc += p.at("bias_ih" + sfx).values[j] + p.at("bias_hh" + sfx).values[j];
            for (int64_t k = 0; k < in_size; ++k) {
              acc += wih.values[j * in_size + k] * in[(t * N + n) * in_size + k];
            }
            for (int64_t k = 0; k < H; ++k) acc += whh.values[j * H + k] * h[n * H + k];
            next[n * H + j] = c.nonlinearity == Nonlinearity::kTanh ? std::tanh(acc)
                                                                    : std::max(acc, 0.0);
            out[(t * N + n) * D * H + d * H + j] = next[n * H + j];
          }
        }
        h = next;
      }
      for (int64_t i = 0; i < N * H; ++i) hn.values[(l * D + d) * N * H + i] = h[i];
    }
    in = out;
    in_size = D * H;
  }
  return {Tensor({T, N, D * H}, std::vector<float>(in.begin(), in.end())), hn, std::nullopt};
}


// (N, T, C) <-> (T, N, C)
Tensor SwapFirstTwo(const Tensor& x) {
  const int64_t A = x.shape[0], B = x.shape[1], C = x.shape[2];
  Tensor y = Tensor::Zeros({B, A, C});
  SwapLeadingDims(x.data(), A, B, C, y.data());
  return y;
}

std::unique_ptr<RnnModel> MakeModel(const RnnConfig& c, ParameterMap* params, uint64_t seed) {
  *params = RandomParameters(c, seed);
  auto model = RnnModel::Create(c, *params);
  EXPECT_TRUE(model.ok()) << model.status();
  return std::move(model).value();
}

struct Case {
  int64_t in, hidden, layers;
  bool bidir, batch_first;
  Nonlinearity act;
  bool bias;
  int64_t steps, batch;
};

class ForwardVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardVsReference, Matches) {
  const Case k = GetParam();
  RnnConfig c = Make(k.in, k.hidden, k.layers, k.bidir, k.batch_first, k.act, k.bias);
  ParameterMap p;
  auto model = MakeModel(c, &p, 11);
  Tensor x_tm = Random({k.steps, k.batch, k.in}, 1);
  Tensor h0 = Random({c.num_state_rows(), k.batch, k.hidden}, 2);
  ForwardResult want = Reference(c, p, x_tm, h0);
  Tensor x = k.batch_first ? SwapFirstTwo(x_tm) : x_tm;
  auto got = model->Forward(x, &h0);
  ASSERT_TRUE(got.ok()) << got.status();
  Tensor out = k.batch_first ? SwapFirstTwo(got->output) : got->output;
  EXPECT_LT(MaxAbsDiff(out, want.output), 1e-5);
  EXPECT_LT(MaxAbsDiff(got->h_n, want.h_n), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ForwardVsReference,
    ::testing::Values(Case{100, 30, 1, false, false, Nonlinearity::kTanh, true, 1, 1},
                      Case{100, 10, 2, false, false, Nonlinearity::kTanh, true, 20, 3},
                      Case{100, 15, 2, true, false, Nonlinearity::kTanh, true, 20, 3},
                      Case{7, 5, 3, true, true, Nonlinearity::kRelu, false, 6, 4},
                      Case{3, 1, 1, false, true, Nonlinearity::kRelu, true, 9, 2},
                      Case{4, 6, 2, true, true, Nonlinearity::kTanh, true, 1, 1}));

TEST(RnnModelTest, SeedNotebookShapes) {
  RnnConfig c = Make(100, 15, 2, true, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 3);
  Tensor h0 = Tensor::Filled({4, 3, 15}, 1.0f);
  auto r = model->Forward(Random({20, 3, 100}, 4), &h0);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output.shape, (Shape{20, 3, 30}));
  EXPECT_EQ(r->h_n.shape, (Shape{4, 3, 15}));
}

TEST(RnnModelTest, OneStepOutputEqualsHidden) {
  RnnConfig c = Make(100, 30, 1, false, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  auto r = model->Forward(Random({1, 1, 100}, 6));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output.values, r->h_n.values);
}

TEST(RnnModelTest, UnbatchedMatchesBatchOfOne) {
  RnnConfig c = Make(5, 4, 2, true, true);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  Tensor x = Random({7, 5}, 8);
  Tensor h0 = Random({4, 4}, 9);
  auto unbatched = model->Forward(x, &h0);
  ASSERT_TRUE(unbatched.ok()) << unbatched.status();
  EXPECT_EQ(unbatched->output.shape, (Shape{7, 8}));
  EXPECT_EQ(unbatched->h_n.shape, (Shape{4, 4}));
  Tensor xb({1, 7, 5}, x.values);
  Tensor h0b({4, 1, 4}, h0.values);
  auto batched = model->Forward(xb, &h0b);
  ASSERT_TRUE(batched.ok());
  EXPECT_EQ(unbatched->output.values, batched->output.values);
  EXPECT_EQ(unbatched->h_n.values, batched->h_n.values);
}

TEST(RnnModelTest, MissingH0IsZeros) {
  RnnConfig c = Make(3, 4, 2, true, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  Tensor x = Random({5, 2, 3}, 1);
  Tensor zeros = Tensor::Zeros({4, 2, 4});
  EXPECT_EQ(model->Forward(x)->output.values, model->Forward(x, &zeros)->output.values);
}

TEST(RnnModelTest, ReluWithLargeValuesIsExact) {
  RnnConfig c = Make(6, 8, 2, false, false, Nonlinearity::kRelu);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  Tensor x = Random({12, 2, 6}, 1, 100.0f);
  Tensor h0 = Random({2, 2, 8}, 2, 10.0f);
  ForwardResult want = Reference(c, p, x, h0);
  auto got = model->Forward(x, &h0);
  ASSERT_TRUE(got.ok());
  // Values reach the thousands; compare relative to magnitude.
  float scale = 1;
  for (float v : want.output.values) scale = std::max(scale, std::abs(v));
  EXPECT_LT(MaxAbsDiff(got->output, want.output) / scale, 1e-6);
}

TEST(RnnModelTest, EmptyBatchGivesEmptyResults) {
  RnnConfig c = Make(4, 3, 1, false, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  auto r = model->Forward(Tensor::Zeros({2, 0, 4}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output.shape, (Shape{2, 0, 3}));
  EXPECT_EQ(r->h_n.shape, (Shape{1, 0, 3}));
}

TEST(RnnModelTest, ShapeErrorsFollowTorch) {
  RnnConfig c = Make(100, 10, 2, false, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 5);
  auto wrong_features = model->Forward(Tensor::Zeros({3, 2, 50}));
  EXPECT_EQ(wrong_features.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_features.status().message(),
              HasSubstr("input.size(-1) must be equal to input_size. Expected 100, got 50"));
  Tensor bad_h0 = Tensor::Zeros({2, 3, 10});
  auto wrong_h0 = model->Forward(Tensor::Zeros({3, 2, 100}), &bad_h0);
  EXPECT_THAT(wrong_h0.status().message(), HasSubstr("Expected hidden size (2, 2, 10), got [2, 3, 10]"));
  auto four_d = model->Forward(Tensor::Zeros({1, 3, 2, 100}));
  EXPECT_THAT(four_d.status().message(), HasSubstr("Expected input to be 2D or 3D, got 4D"));
  Tensor h0_3d = Tensor::Zeros({2, 1, 10});
  auto mixed = model->Forward(Tensor::Zeros({3, 100}), &h0_3d);
  EXPECT_THAT(mixed.status().message(), HasSubstr("For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"));
  auto empty = model->Forward(Tensor::Zeros({0, 2, 100}));
  EXPECT_THAT(empty.status().message(), HasSubstr("Expected sequence length to be larger than 0"));
  Tensor short_values({3, 2, 100}, std::vector<float>(10));
  EXPECT_EQ(model->Forward(short_values).status().code(), absl::StatusCode::kInvalidArgument);
}

// Carry h_n across chunks of arbitrary sizes: same as one call over the whole sequence.
TEST(RnnModelTest, ChunkedStreamingEqualsWholeSequence) {
  for (bool batch_first : {false, true}) {
    RnnConfig c = Make(5, 7, 3, false, batch_first);
    ParameterMap p;
    auto model = MakeModel(c, &p, 21);
    const int64_t T = 17, N = 3;
    Tensor x_tm = Random({T, N, 5}, 22);
    auto whole = model->Forward(batch_first ? SwapFirstTwo(x_tm) : x_tm);
    ASSERT_TRUE(whole.ok());
    Tensor whole_out = batch_first ? SwapFirstTwo(whole->output) : whole->output;
    Tensor h = Tensor::Zeros({3, N, 7});
    std::vector<float> streamed;
    int64_t t = 0;
    for (int64_t len : {1, 4, 2, 7, 3}) {
      Tensor chunk({len, N, 5}, std::vector<float>(x_tm.values.begin() + t * N * 5,
                                                   x_tm.values.begin() + (t + len) * N * 5));
      auto r = model->Forward(batch_first ? SwapFirstTwo(chunk) : chunk, &h);
      ASSERT_TRUE(r.ok());
      Tensor out = batch_first ? SwapFirstTwo(r->output) : r->output;
      streamed.insert(streamed.end(), out.values.begin(), out.values.end());
      h = r->h_n;
      t += len;
    }
    ASSERT_EQ(t, T);
    EXPECT_LT(MaxAbsDiff(Tensor(whole_out.shape, streamed), whole_out), 1e-6);
    EXPECT_LT(MaxAbsDiff(h, whole->h_n), 1e-6);
  }
}

// Sessions of different lengths and batch sizes advanced together equal separate calls.
TEST(RnnModelTest, StepBatchEqualsSeparateForwards) {
  RnnConfig c = Make(6, 9, 2, false, false, Nonlinearity::kTanh);
  ParameterMap p;
  auto model = MakeModel(c, &p, 31);
  struct Session {
    Tensor x, h, out;
  };
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{5, 1}, {1, 2}, {8, 1}, {5, 3}, {3, 1}, {0, 1}};
  std::vector<Session> sessions;
  std::vector<StreamChunk> chunks;
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto [steps, batch] = shapes[i];
    sessions.push_back({Random({steps, batch, 6}, 40 + i), Random({2, batch, 9}, 50 + i),
                        Tensor::Zeros({steps, batch, 9})});
  }
  std::vector<Tensor> h_before;
  for (Session& s : sessions) {
    h_before.push_back(s.h);
    chunks.push_back({s.x.data(), s.x.shape[0], s.x.shape[1], s.h.data(), s.h.data(), s.out.data()});
  }
  Workspace ws;
  for (int round = 0; round < 2; ++round) {  // second round reuses the workspace
    ASSERT_TRUE(model->StepBatch(chunks, &ws).ok());
    for (size_t i = 0; i < sessions.size(); ++i) {
      if (shapes[i].first == 0) {
        EXPECT_EQ(sessions[i].h.values, h_before[i].values);
        continue;
      }
      auto want = model->Forward(sessions[i].x, &h_before[i]);
      ASSERT_TRUE(want.ok());
      EXPECT_LT(MaxAbsDiff(sessions[i].out, want->output), 1e-6) << "session " << i;
      EXPECT_LT(MaxAbsDiff(sessions[i].h, want->h_n), 1e-6) << "session " << i;
      h_before[i] = sessions[i].h;
    }
  }
}

TEST(RnnModelTest, WorkspaceShrinksAfterAnOutsizedCallAndStillWorks) {
  // Two layers: the first layer's output is scratch (a single layer writes in place).
  RnnConfig c = Make(4, 16, 2, false, false, Nonlinearity::kTanh);
  ParameterMap p;
  auto model = MakeModel(c, &p, 33);
  Workspace ws;
  EXPECT_EQ(ws.bytes(), 0);
  Tensor big = Random({2000, 8, 4}, 60);  // scratch of at least 2000 * 8 * 16 floats
  auto first = model->Forward(big, nullptr, &ws);
  ASSERT_TRUE(first.ok());
  const int64_t grown = ws.bytes();
  EXPECT_GE(grown, 2000 * 8 * 16 * 4);
  ws.ShrinkTo(grown);  // at the cap: kept
  EXPECT_EQ(ws.bytes(), grown);
  const int64_t cap = 64 << 10;
  ws.ShrinkTo(cap);
  EXPECT_LE(ws.bytes(), cap);
  auto again = model->Forward(big, nullptr, &ws);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->output.values, first->output.values);
}

TEST(RnnModelTest, StepBatchRefusesBidirectional) {
  RnnConfig c = Make(3, 2, 1, true, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 1);
  Workspace ws;
  EXPECT_EQ(model->StepBatch({}, &ws).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RnnModelTest, CreateRejectsMismatchedParameters) {
  RnnConfig c = Make(3, 2, 1, false, false);
  ParameterMap p = RandomParameters(c, 1);
  p.erase("weight_hh_l0");
  auto model = RnnModel::Create(c, p);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("missing parameter 'weight_hh_l0'"));
}

TEST(RnnModelTest, MacsPerStep) {
  RnnConfig c = Make(100, 10, 2, true, false);
  ParameterMap p;
  auto model = MakeModel(c, &p, 1);
  EXPECT_EQ(model->MacsPerStep(), 2 * 10 * (100 + 10) + 2 * 10 * (20 + 10));
}

}  // namespace
}  // namespace rnnserve
