#include "core/engine/step_layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace rnnserve {
namespace {

const Tensor& Param(const ParameterMap& params, const std::string& name) {
  return params.at(name);  // present: CheckPipelineParameters passed
}

}  // namespace

StepLayers StepLayers::Create(const std::vector<LayerConfig>& layers, const ParameterMap& params,
                              int64_t in_features, KernelIsa isa) {
  StepLayers result;
  result.in_features_ = in_features;
  int64_t features = in_features;
  int64_t widest = 0;
  for (const LayerConfig& layer : layers) {
    if (layer.type == LayerType::kDropout) continue;  // the identity in eval()
    // A ReLU or Tanh straight after a Linear runs inside its product's last pass.
    const bool fusable = layer.type == LayerType::kRelu || layer.type == LayerType::kTanh;
    if (fusable && !result.layers_.empty() &&
        result.layers_.back().type == LayerType::kLinear &&
        result.layers_.back().epilogue == Epilogue::kNone) {
      result.layers_.back().epilogue =
          layer.type == LayerType::kRelu ? Epilogue::kRelu : Epilogue::kTanh;
      continue;
    }
    Op op;
    op.type = layer.type;
    op.in = features;
    switch (layer.type) {
      case LayerType::kLinear: {
        op.out = layer.out_features;
        op.weight = PackedMatrix::FromRowMajor(Param(params, layer.path + ".weight").data(),
                                               layer.out_features, layer.in_features, isa);
        op.bias.assign(op.weight.padded_rows(), 0.0f);
        if (layer.bias) {
          const Tensor& b = Param(params, layer.path + ".bias");
          std::copy(b.values.begin(), b.values.end(), op.bias.begin());
        }
        break;
      }
      case LayerType::kEmbedding: {
        op.in = layer.in_features;  // the vocabulary; one id per column comes in
        op.out = layer.out_features;
        op.table = Param(params, layer.path + ".weight").values;
        break;
      }
      case LayerType::kLayerNorm: {
        op.out = features;
        op.eps = layer.eps;
        op.affine = layer.bias;
        if (op.affine) {
          op.table = Param(params, layer.path + ".weight").values;
          const Tensor& b = Param(params, layer.path + ".bias");
          op.bias.assign(b.values.begin(), b.values.end());
        }
        break;
      }
      default:
        op.out = features;
        op.gelu_tanh = layer.gelu_tanh;
        break;
    }
    features = op.out;
    widest = std::max(widest, features);
    result.layers_.push_back(std::move(op));
  }
  result.out_features_ = features;
  result.scratch_rows_ = widest;
  return result;
}

int64_t StepLayers::MacsPerColumn() const {
  int64_t macs = 0;
  for (const Op& op : layers_) {
    if (op.type == LayerType::kLinear) macs += op.in * op.out;
  }
  return macs;
}

void StepLayers::Apply(const float* in, int64_t cols, float* out, float* scratch_a,
                       float* scratch_b) const {
  if (layers_.empty()) {
    std::memcpy(out, in, sizeof(float) * in_features_ * cols);
    return;
  }
  const float* current = in;
  for (size_t i = 0; i < layers_.size(); ++i) {
    // Ping-pong between the scratch buffers; the last piece writes `out`.
    float* target = i + 1 == layers_.size() ? out : (current == scratch_a ? scratch_b : scratch_a);
    RunOp(layers_[i], current, cols, target);
    current = target;
  }
}

// The pieces, per column x (one timestep of one sequence), as torch defines them:
//   Linear:     y = W x + b                      (one product over all columns)
//   Embedding:  y = weight[id]
//   LayerNorm:  y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta   (biased variance)
//   ReLU max(x, 0); Tanh tanh(x); Sigmoid 1 / (1 + exp(-x))
//   GELU        0.5 x (1 + erf(x / sqrt(2)))   or, approximate='tanh',
//               0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
//   Softmax     exp(x_i - max x) / sum_j exp(x_j - max x);  LogSoftmax its log, computed as
//               (x_i - max x) - log(sum_j exp(x_j - max x))
void StepLayers::RunOp(const Op& op, const float* in, int64_t cols, float* out) const {
  const int64_t n = op.out * cols;
  switch (op.type) {
    case LayerType::kLinear:
      PackedGemm(op.weight, in, op.in, cols, op.bias.data(), /*accumulate=*/false, op.epilogue,
                 out, op.out);
      return;
    case LayerType::kEmbedding:
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t id = static_cast<int64_t>(in[c]);
        std::memcpy(out + c * op.out, op.table.data() + id * op.out, sizeof(float) * op.out);
      }
      return;
    case LayerType::kLayerNorm:
      for (int64_t c = 0; c < cols; ++c) {
        const float* x = in + c * op.in;
        float* y = out + c * op.out;
        double sum = 0;
        for (int64_t i = 0; i < op.in; ++i) sum += x[i];
        const double mean = sum / static_cast<double>(op.in);
        double squares = 0;
        for (int64_t i = 0; i < op.in; ++i) squares += (x[i] - mean) * (x[i] - mean);
        const double inv_std = 1.0 / std::sqrt(squares / static_cast<double>(op.in) + op.eps);
        for (int64_t i = 0; i < op.in; ++i) {
          const float normalized = static_cast<float>((x[i] - mean) * inv_std);
          y[i] = op.affine ? normalized * op.table[i] + op.bias[i] : normalized;
        }
      }
      return;
    case LayerType::kRelu:
      for (int64_t i = 0; i < n; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];  // NaN stays NaN
      return;
    case LayerType::kTanh:
      for (int64_t i = 0; i < n; ++i) out[i] = std::tanh(in[i]);
      return;
    case LayerType::kSigmoid:
      for (int64_t i = 0; i < n; ++i) out[i] = 1.0f / (1.0f + std::exp(-in[i]));
      return;
    case LayerType::kGelu:
      if (op.gelu_tanh) {
        constexpr float kSqrt2OverPi = 0.7978845608028654f;
        for (int64_t i = 0; i < n; ++i) {
          const float x = in[i];
          out[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
        }
      } else {
        constexpr float kInvSqrt2 = 0.7071067811865476f;
        for (int64_t i = 0; i < n; ++i) out[i] = 0.5f * in[i] * (1.0f + std::erf(in[i] * kInvSqrt2));
      }
      return;
    case LayerType::kSoftmax:
    case LayerType::kLogSoftmax:
      for (int64_t c = 0; c < cols; ++c) {
        const float* x = in + c * op.in;
        float* y = out + c * op.out;
        const float max = *std::max_element(x, x + op.in);
        float sum = 0.0f;
        for (int64_t i = 0; i < op.in; ++i) sum += std::exp(x[i] - max);
        if (op.type == LayerType::kSoftmax) {
          const float inv = 1.0f / sum;
          for (int64_t i = 0; i < op.in; ++i) y[i] = std::exp(x[i] - max) * inv;
        } else {
          const float log_sum = std::log(sum);
          for (int64_t i = 0; i < op.in; ++i) y[i] = (x[i] - max) - log_sum;
        }
      }
      return;
    case LayerType::kDropout:
      std::memcpy(out, in, sizeof(float) * n);
      return;
  }
}

}  // namespace rnnserve
