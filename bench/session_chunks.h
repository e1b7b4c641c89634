// SessionChunks: N sessions of batch 1, each with one chunk of `steps` steps, laid out for
// RnnModel::StepBatch the way the benchmarks drive it: every session's state is read and
// written in place, so calling StepBatch again carries it on. Owns every buffer the chunks
// point into; not copyable (the chunks hold pointers into it). Not thread-safe; header-only so
// both engine_bench and inprocess_bench can use it without sharing a library.
#ifndef RNNSERVE_BENCH_SESSION_CHUNKS_H_
#define RNNSERVE_BENCH_SESSION_CHUNKS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "core/engine/rnn_model.h"

namespace rnnserve::bench {

class SessionChunks {
 public:
  // `inputs`: sessions * steps * model.input_features() values, session after session (for a
  // pipeline, the input layer's features).
  SessionChunks(const RnnModel& model, int64_t sessions, int64_t steps, std::vector<float> inputs)
      : inputs_(std::move(inputs)),
        states_(sessions * model.StateSize(1), 0.0f),
        outputs_(sessions * model.OutputSize(steps, 1)),
        chunks_(sessions) {
    const int64_t in_size = model.InputSize(steps, 1);
    const int64_t state_size = model.StateSize(1), out_size = model.OutputSize(steps, 1);
    for (int64_t i = 0; i < sessions; ++i) {
      float* state = states_.data() + i * state_size;
      chunks_[i] = StreamChunk{inputs_.data() + i * in_size, steps, 1, state, state,
                               outputs_.data() + i * out_size};
    }
  }
  SessionChunks(const SessionChunks&) = delete;
  SessionChunks& operator=(const SessionChunks&) = delete;

  absl::Span<const StreamChunk> chunks() const { return chunks_; }
  const float* outputs() const { return outputs_.data(); }

 private:
  const std::vector<float> inputs_;
  std::vector<float> states_;
  std::vector<float> outputs_;
  std::vector<StreamChunk> chunks_;
};

}  // namespace rnnserve::bench

#endif  // RNNSERVE_BENCH_SESSION_CHUNKS_H_
