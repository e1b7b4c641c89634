// PipelineConfig: a whole served model as torch builds it: an optional input layer, the
// recurrent core (RnnConfig) and an optional head applied to every timestep of the core's
// output, each piece under its attribute path in the user's nn.Module. Plain value types and
// free functions; thread-compatible. docs/model-format.md describes config.json's form.
#ifndef RNNSERVE_CORE_ENGINE_PIPELINE_CONFIG_H_
#define RNNSERVE_CORE_ENGINE_PIPELINE_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/tensor.h"
#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"

namespace rnnserve {

// The per-timestep pieces an input layer or a head is made of (torch's class names).
enum class LayerType {
  kLinear,
  kEmbedding,  // input layer only, first: the input is integer token ids
  kLayerNorm,
  kRelu,
  kTanh,
  kSigmoid,
  kGelu,
  kDropout,  // no effect at inference
  kSoftmax,
  kLogSoftmax,
};

// "Linear", "Embedding", ...: torch's class names.
absl::string_view LayerTypeName(LayerType type);
absl::StatusOr<LayerType> ParseLayerType(absl::string_view name);

// One piece and its constructor arguments (those its type takes; the rest stay default).
struct LayerConfig {
  LayerType type = LayerType::kLinear;
  std::string path;  // attribute path in the module, e.g. "head.0"; names its parameters
  // Linear: in_features, out_features, bias. Embedding: num_embeddings (in), embedding_dim
  // (out). LayerNorm: normalized_shape (out == in), eps, elementwise_affine (bias).
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;  // Linear's bias; LayerNorm's elementwise_affine
  double eps = 1e-5;
  std::optional<int64_t> padding_idx;  // Embedding; printed only
  bool gelu_tanh = false;              // GELU(approximate='tanh')
  double dropout = 0.5;                // Dropout's p; printed only
  int64_t dim = -1;                    // Softmax/LogSoftmax: only -1 (the features) is served

  bool operator==(const LayerConfig& o) const;
};

// A piece with its type's defaults but `in` and `out` (Linear: in/out_features; Embedding:
// num_embeddings/embedding_dim; LayerNorm: normalized_shape twice): for code that builds
// pipelines (tests, benchmarks) rather than parse them.
LayerConfig MakeLayer(LayerType type, std::string path, int64_t in = 0, int64_t out = 0);

// torch's repr of the piece: "Linear(in_features=256, out_features=40, bias=True)".
std::string LayerToString(const LayerConfig& layer);

struct PipelineConfig {
  std::vector<LayerConfig> input_layer;  // may start with an Embedding
  RnnConfig rnn;
  // The core's attribute path ("rnn"); empty for a core-only folder, whose parameters carry
  // torch.nn.RNN's own names (weight_ih_l0) rather than "<path>.weight_ih_l0".
  std::string rnn_path;
  std::vector<LayerConfig> head;

  // Core only: the folder's config.json is a bare RnnConfig.
  bool core_only() const { return rnn_path.empty() && input_layer.empty() && head.empty(); }
  bool takes_ids() const {
    return !input_layer.empty() && input_layer.front().type == LayerType::kEmbedding;
  }
  // Features per timestep of the input: 1 (one id) for ids, else the input layer's first
  // Linear's in_features or LayerNorm's width (pieces before it take any width), else the
  // core's input_size.
  int64_t input_features() const;
  // For ids: the vocabulary size (ids are in [0, num_embeddings)); 0 otherwise.
  int64_t num_embeddings() const;
  // Features per timestep of the output: the head's last width, else D * H_out.
  int64_t output_features() const;

  // The core's config plus the chaining of feature counts and each piece's arguments; the
  // message names the piece (by path) and what was expected.
  absl::Status Validate() const;
  bool operator==(const PipelineConfig& o) const;
};

// A core-only pipeline around `rnn`.
PipelineConfig CorePipeline(const RnnConfig& rnn);

// The pieces' reprs joined with " -> "; just ConfigToString(rnn) for a core-only model.
std::string PipelineToString(const PipelineConfig& config);

// Every parameter in the order torch's named_parameters() lists a module holding the pieces in
// pipeline order: "<path>.weight", ..., the core's under "<rnn_path>.". A core-only config
// gives ParameterSpecs(rnn) unchanged.
std::vector<ParameterSpec> PipelineParameterSpecs(const PipelineConfig& config);
// The parameters of one piece under their full names.
std::vector<ParameterSpec> LayerParameterSpecs(const LayerConfig& layer);

// OK when `params` holds exactly PipelineParameterSpecs(config), shapes matching (as
// CheckParameters, which a core-only config uses unchanged).
absl::Status CheckPipelineParameters(const PipelineConfig& config, const ParameterMap& params);
// The values PipelineParameterSpecs(config) holds, without listing them; `config` must have
// passed Validate().
int64_t PipelineParameterCount(const PipelineConfig& config);
// The core's parameters under torch.nn.RNN's own names (the "<rnn_path>." prefix removed),
// for RnnModel::Create's core. `params` must have passed CheckPipelineParameters.
ParameterMap CoreParameters(const PipelineConfig& config, const ParameterMap& params);

// Caps that keep a hostile config's sizes small enough to compute with before anything is
// allocated (as RnnConfig's).
inline constexpr int64_t kMaxPipelineLayers = 64;      // per stage
inline constexpr int64_t kMaxLayerFeatures = int64_t{1} << 20;
inline constexpr int64_t kMaxEmbeddings = int64_t{1} << 24;  // ids travel as exact floats
// The wire clamps ids to [-1, kMaxTokenId] (base/tensor.h): both ends must stay out of range.
static_assert(kMaxEmbeddings == kMaxTokenId, "every clamped id must be out of range");
inline constexpr int64_t kMaxLayerPathLength = 256;

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_PIPELINE_CONFIG_H_
