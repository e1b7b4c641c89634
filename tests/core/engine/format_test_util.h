// Helpers shared by the model format tests (safetensors_test, model_dir_test).
#ifndef RNNSERVE_TESTS_CORE_ENGINE_FORMAT_TEST_UTIL_H_
#define RNNSERVE_TESTS_CORE_ENGINE_FORMAT_TEST_UTIL_H_

#include <cstdint>
#include <cstring>

#include "core/engine/rnn_config.h"
#include "core/engine/rnn_parameters.h"
#include "gtest/gtest.h"

namespace rnnserve {
namespace format_test {

inline uint32_t Bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// RNN(3, 2): the smallest config the format tests build on.
inline RnnConfig SmallConfig() {
  RnnConfig config;
  config.input_size = 3;
  config.hidden_size = 2;
  return config;
}

// Same names, shapes and bit patterns (NaN payloads and -0.0 included).
inline void ExpectSameParameters(const ParameterMap& actual, const ParameterMap& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (const auto& [name, tensor] : expected) {
    auto it = actual.find(name);
    ASSERT_NE(it, actual.end()) << name;
    EXPECT_EQ(it->second.shape, tensor.shape) << name;
    ASSERT_EQ(it->second.values.size(), tensor.values.size()) << name;
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      EXPECT_EQ(Bits(it->second.values[i]), Bits(tensor.values[i])) << name << "[" << i << "]";
    }
  }
}

}  // namespace format_test
}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_CORE_ENGINE_FORMAT_TEST_UTIL_H_
