#include "core/engine/packed_gemm.h"

namespace rnnserve {

PackedMatrix PackedMatrix::FromRowMajor(const float* data, int64_t rows, int64_t depth,
                                        KernelIsa isa) {
  PackedMatrix m;
  m.kernels_ = &KernelTableFor(isa);
  const int64_t lanes = m.panel_rows();
  m.rows_ = rows;
  m.depth_ = depth;
  m.panels_ = (rows + lanes - 1) / lanes;
  m.data_.assign(static_cast<size_t>(m.panels_ * depth * lanes), 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    float* panel = m.data_.data() + (r / lanes) * depth * lanes;
    for (int64_t k = 0; k < depth; ++k) panel[k * lanes + r % lanes] = data[r * depth + k];
  }
  return m;
}

}  // namespace rnnserve
