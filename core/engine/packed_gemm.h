// PackedMatrix and PackedGemm: the engine's own matrix product for the shapes a recurrent step
// has: a weight matrix that never changes times a few to a few hundred columns, with the bias
// and the activation applied while the result is still in registers.
//
// Why not Eigen's GEMM everywhere: Eigen 3.4 packs the weight matrix again on every call and
// its kernel is tuned for square products, so at 1-32 columns it reaches a third to a half of
// the machine's peak (BENCHMARKS.md, "Where the time goes"). Here the weights are laid out once
// at load, in panels of one SIMD register's worth of rows, and each product streams them once
// per block of output columns.
//
// PackedMatrix is immutable after construction and safe to share between threads. PackedGemm
// is a pure function of its arguments; it allocates nothing.
#ifndef RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_
#define RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_

#include <cstdint>
#include <vector>

#include <Eigen/Core>

namespace rnnserve {

enum class Epilogue { kNone, kTanh, kRelu };

class PackedMatrix {
 public:
  // Rows per panel: the float lanes of the widest SIMD register Eigen uses in this build.
  static int64_t PanelRows();

  PackedMatrix() = default;
  // From torch's row-major (rows, depth) storage.
  static PackedMatrix FromRowMajor(const float* data, int64_t rows, int64_t depth);

  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  // rows() rounded up to whole panels: the length a bias vector passed to PackedGemm needs.
  int64_t padded_rows() const { return panels_ * PanelRows(); }
  // Panel p's element (r, k) is row p * PanelRows() + r, column k: panel-major, depth-major
  // within a panel, rows past rows() zero.
  const float* panel(int64_t p) const { return data_.data() + p * depth_ * PanelRows(); }
  int64_t panels() const { return panels_; }

 private:
  int64_t rows_ = 0;
  int64_t depth_ = 0;
  int64_t panels_ = 0;
  std::vector<float, Eigen::aligned_allocator<float>> data_;
};

// C = epilogue(start + W · X) over `cols` columns, where
//   W is `w` (rows x depth), X is column-major (depth x cols) with leading dimension ldx,
//   C is column-major (rows x cols) with leading dimension ldc,
//   start is C's current contents when `accumulate`, else `bias` broadcast over the columns
//   (bias: padded_rows() floats, padding ignored), else zero.
// X and C must not overlap.
void PackedGemm(const PackedMatrix& w, const float* x, int64_t ldx, int64_t cols,
                const float* bias, bool accumulate, Epilogue epilogue, float* c, int64_t ldc);

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_
