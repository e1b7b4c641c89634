// The engine's kernels (kernels_impl.inc) compiled for x86-64-v3 (AVX2, FMA): chosen on hosts
// without AVX-512.
// The flags and the renamed Eigen namespace come from core/engine/CMakeLists.txt.
#define RNNSERVE_KERNEL_NAMESPACE kernels_avx2
#define RNNSERVE_KERNEL_ISA KernelIsa::kAvx2
#include "core/engine/kernels/kernels_impl.inc"
