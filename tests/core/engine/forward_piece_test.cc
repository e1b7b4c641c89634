// ForwardPiece: a ForwardTimeMajor cut into pieces of one layer and direction, for every cell
// and shape, equals the whole call (the torch-checked kernel: see tests/parity) up to float
// rounding (a piece projects its own columns, so the products may be blocked differently),
// with fresh, aliased and absent initial states, and a workspace that other calls use between
// pieces.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/engine/rnn_config.h"
#include "core/engine/rnn_model.h"
#include "core/engine/rnn_parameters.h"
#include "gtest/gtest.h"
#include "tests/test_tensors.h"

namespace rnnserve {
namespace {

struct Case {
  RnnModule module;
  int64_t layers;
  bool bidirectional;
  int64_t proj;
};

RnnConfig Make(const Case& c) {
  RnnConfig config;
  config.module = c.module;
  config.input_size = 3;
  config.hidden_size = 5;
  config.num_layers = c.layers;
  config.bidirectional = c.bidirectional;
  config.proj_size = c.proj;
  return config;
}

constexpr double kRounding = 1e-6;

class ForwardPieceTest : public ::testing::TestWithParam<Case> {};

TEST_P(ForwardPieceTest, PiecesEqualTheWholeCall) {
  const RnnConfig config = Make(GetParam());
  auto model = std::move(RnnModel::Create(config, RandomParameters(config, 11))).value();
  const int64_t steps = 9, batch = 2;
  const Tensor input = Random({steps, batch, config.input_size}, 1);
  const Tensor h0 = Random({model->StateSize(batch)}, 2);
  Workspace whole_ws;
  std::vector<float> want_out(model->OutputSize(steps, batch));
  std::vector<float> want_state(model->StateSize(batch));
  model->ForwardTimeMajor(input.values.data(), steps, batch, h0.values.data(), want_out.data(),
                          want_state.data(), whole_ws);
  std::vector<float> zero_out(want_out.size()), zero_state(want_state.size());
  model->ForwardTimeMajor(input.values.data(), steps, batch, nullptr, zero_out.data(),
                          zero_state.data(), whole_ws);

  for (int64_t max_steps : {1, 2, 4, 8, 9, 100, 0}) {
    SCOPED_TRACE(max_steps);
    Workspace ws, other_ws;
    // Separate state buffers.
    std::vector<float> out(want_out.size()), state(want_state.size());
    ForwardCursor cursor;
    int pieces = 0;
    while (!model->ForwardPiece(input.values.data(), steps, batch, h0.values.data(), out.data(),
                                state.data(), max_steps, cursor, ws)) {
      ++pieces;
      // Another call uses the same workspace between pieces: nothing may live there.
      std::vector<float> scratch_out(want_out.size()), scratch_state(want_state.size());
      model->ForwardTimeMajor(input.values.data(), steps, batch, nullptr, scratch_out.data(),
                              scratch_state.data(), ws);
      ASSERT_LT(pieces, 1000);
    }
    const int64_t passes = config.num_layers * config.num_directions();
    const int64_t per_pass = max_steps <= 0 ? 1 : (steps + max_steps - 1) / max_steps;
    EXPECT_EQ(pieces + 1, passes * per_pass);
    EXPECT_LT(MaxAbsDiff(out, want_out), kRounding);
    EXPECT_LT(MaxAbsDiff(state, want_state), kRounding);
    EXPECT_TRUE(model->ForwardPiece(input.values.data(), steps, batch, h0.values.data(),
                                    out.data(), state.data(), max_steps, cursor, ws));

    // The state updated in place (h_0 in, h_n out, one buffer), as the Forward RPC does.
    std::vector<float> inplace = h0.values;
    ForwardCursor inplace_cursor;
    while (!model->ForwardPiece(input.values.data(), steps, batch, inplace.data(), out.data(),
                                inplace.data(), max_steps, inplace_cursor, other_ws)) {
    }
    EXPECT_LT(MaxAbsDiff(out, want_out), kRounding);
    EXPECT_LT(MaxAbsDiff(inplace, want_state), kRounding);

    // No initial state: zeros.
    ForwardCursor zero_cursor;
    while (!model->ForwardPiece(input.values.data(), steps, batch, nullptr, out.data(),
                                state.data(), max_steps, zero_cursor, other_ws)) {
    }
    EXPECT_LT(MaxAbsDiff(out, zero_out), kRounding);
    EXPECT_LT(MaxAbsDiff(state, zero_state), kRounding);
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryCell, ForwardPieceTest,
    ::testing::Values(Case{RnnModule::kRnn, 1, false, 0}, Case{RnnModule::kRnn, 3, true, 0},
                      Case{RnnModule::kGru, 2, true, 0}, Case{RnnModule::kGru, 1, false, 0},
                      Case{RnnModule::kLstm, 2, true, 0}, Case{RnnModule::kLstm, 3, true, 2},
                      Case{RnnModule::kLstm, 1, false, 0}));

}  // namespace
}  // namespace rnnserve
