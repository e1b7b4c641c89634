// Helpers shared by the pipeline tests (pipeline_config_test, pipeline_model_test).
#ifndef RNNSERVE_TESTS_CORE_ENGINE_PIPELINE_TEST_UTIL_H_
#define RNNSERVE_TESTS_CORE_ENGINE_PIPELINE_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <utility>

#include "core/engine/pipeline_config.h"

namespace rnnserve {
namespace pipeline_test {

// One piece with its type's defaults but `in` and `out` (Linear: in/out_features; Embedding:
// num_embeddings/embedding_dim; LayerNorm: normalized_shape twice).
inline LayerConfig Layer(LayerType type, std::string path, int64_t in = 0, int64_t out = 0) {
  LayerConfig layer;
  layer.type = type;
  layer.path = std::move(path);
  layer.in_features = in;
  layer.out_features = out;
  return layer;
}

}  // namespace pipeline_test
}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_CORE_ENGINE_PIPELINE_TEST_UTIL_H_
