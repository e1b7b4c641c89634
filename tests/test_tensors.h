// Helpers shared by the C++ tests: seeded random tensors.
#ifndef RNNSERVE_TESTS_TEST_TENSORS_H_
#define RNNSERVE_TESTS_TEST_TENSORS_H_

#include <random>

#include "base/tensor.h"

namespace rnnserve {

// A tensor of N(0, scale^2) values, the same for the same seed.
inline Tensor Random(Shape shape, uint64_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Tensor t = Tensor::Zeros(std::move(shape));
  for (float& v : t.values) v = normal(rng);
  return t;
}

}  // namespace rnnserve

#endif  // RNNSERVE_TESTS_TEST_TENSORS_H_
