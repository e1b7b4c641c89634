// StepLayers: the per-timestep pieces around the recurrent core (an input layer or a head:
// Linear, Embedding, LayerNorm, activations, Softmax/LogSoftmax over the features), laid out
// once at load and applied to a whole block of columns at once, so a chunk's T*N timesteps, or
// every session of a batch, go through each Linear as one matrix product.
//
// Layout: activations are column-major (features x columns), one column per (timestep, batch
// row), as in cell_step.h. Immutable after Create(); Apply is const and allocates nothing
// (scratch is the caller's), so one StepLayers is shared by every thread.
#ifndef RNNSERVE_CORE_ENGINE_STEP_LAYERS_H_
#define RNNSERVE_CORE_ENGINE_STEP_LAYERS_H_

#include <cstdint>
#include <vector>

#include "core/engine/packed_gemm.h"
#include "core/engine/pipeline_config.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

class StepLayers {
 public:
  StepLayers() = default;
  // `layers` and `params` must have passed PipelineConfig::Validate and
  // CheckPipelineParameters. Linear weights are packed for `isa`'s kernels; Dropout is dropped
  // (no effect at inference) and a ReLU or Tanh right after a Linear is fused into its product.
  static StepLayers Create(const std::vector<LayerConfig>& layers, const ParameterMap& params,
                           int64_t in_features, KernelIsa isa);

  bool empty() const { return layers_.empty(); }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  // Floats of each of the two scratch buffers Apply needs per column.
  int64_t scratch_rows() const { return scratch_rows_; }
  // Multiply-adds per column (the Linear products).
  int64_t MacsPerColumn() const;

  // out (out_features x cols) = the pieces applied in order to in (in_features x cols). For an
  // Embedding first, `in` holds one id per column, already checked to be in range. scratch_a
  // and scratch_b hold scratch_rows() * cols floats each; no buffer may overlap another.
  void Apply(const float* in, int64_t cols, float* out, float* scratch_a, float* scratch_b) const;

 private:
  // One piece as Apply runs it.
  struct Op {
    LayerType type = LayerType::kLinear;
    int64_t in = 0, out = 0;
    Epilogue epilogue = Epilogue::kNone;  // Linear: a fused ReLU or Tanh
    PackedMatrix weight;                  // Linear
    std::vector<float, CacheLineAllocator<float>> bias;  // Linear, padded; LayerNorm's beta
    std::vector<float> table;             // Embedding (num x dim, row-major); LayerNorm's gamma
    bool affine = false;                  // LayerNorm
    double eps = 0;                       // LayerNorm
    bool gelu_tanh = false;
  };
  void RunOp(const Op& op, const float* in, int64_t cols, float* out) const;

  std::vector<Op> layers_;
  int64_t in_features_ = 0;
  int64_t out_features_ = 0;
  int64_t scratch_rows_ = 0;
};

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_STEP_LAYERS_H_
