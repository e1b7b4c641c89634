// The engine's kernels (kernels_impl.inc) compiled for x86-64-v4 (AVX-512 F, DQ, BW, VL):
// chosen on hosts that have it.
// The flags and the renamed Eigen namespace come from core/engine/CMakeLists.txt.
#define RNNSERVE_KERNEL_NAMESPACE kernels_avx512
#define RNNSERVE_KERNEL_ISA KernelIsa::kAvx512
#include "core/engine/kernels/kernels_impl.inc"
