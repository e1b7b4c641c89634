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
// A PackedMatrix is packed for one kernel table (kernels/kernel_isa.h: AVX-512, AVX2 or the
// build's baseline, chosen at model load), whose register width sets the panel height, and
// every PackedGemm on it runs that table's kernel.
//
// PackedMatrix is immutable after construction and safe to share between threads. PackedGemm
// is a pure function of its arguments; it allocates nothing.
#ifndef RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_
#define RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "core/engine/kernels/kernel_abi.h"
#include "core/engine/kernels/kernel_isa.h"

namespace rnnserve {

// 64-byte aligned storage: the panels are read with aligned loads as wide as the widest kernel
// table's (AVX-512), whatever alignment the build's own -march gives Eigen's allocator.
template <typename T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlignment{64};
  CacheLineAllocator() = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlignment)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlignment); }
  bool operator==(const CacheLineAllocator&) const { return true; }
  bool operator!=(const CacheLineAllocator&) const { return false; }
};

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // From torch's row-major (rows, depth) storage, packed for `isa`'s kernels (which must be in
  // SupportedKernelIsas()).
  static PackedMatrix FromRowMajor(const float* data, int64_t rows, int64_t depth,
                                   KernelIsa isa = BestKernelIsa());

  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  // Rows per panel: the float lanes of the kernel table's SIMD register.
  int64_t panel_rows() const { return kernels_->panel_rows; }
  // rows() rounded up to whole panels: the length a bias vector passed to PackedGemm needs.
  int64_t padded_rows() const { return panels_ * panel_rows(); }
  int64_t panels() const { return panels_; }
  const KernelTable& kernels() const { return *kernels_; }
  // The panels as the kernels read them (kernel_abi.h's PackedPanels).
  PackedPanels panels_view() const { return {data_.data(), rows_, depth_, panels_}; }

 private:
  int64_t rows_ = 0;
  int64_t depth_ = 0;
  int64_t panels_ = 0;
  const KernelTable* kernels_ = &KernelTableFor(KernelIsa::kBaseline);
  std::vector<float, CacheLineAllocator<float>> data_;
};

// C = epilogue(start + W · X) over `cols` columns, where
//   W is `w` (rows x depth), X is column-major (depth x cols) with leading dimension ldx,
//   C is column-major (rows x cols) with leading dimension ldc,
//   start is C's current contents when `accumulate`, else `bias` broadcast over the columns
//   (bias: padded_rows() floats, padding ignored), else zero.
// X and C must not overlap.
inline void PackedGemm(const PackedMatrix& w, const float* x, int64_t ldx, int64_t cols,
                       const float* bias, bool accumulate, Epilogue epilogue, float* c,
                       int64_t ldc) {
  w.kernels().gemm(w.panels_view(), x, ldx, cols, bias, accumulate, epilogue, c, ldc);
}

}  // namespace rnnserve

#endif  // RNNSERVE_CORE_ENGINE_PACKED_GEMM_H_
